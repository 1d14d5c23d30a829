"""Every answer shape the emulator produces is one the official OpenAI client reads.

Each shape (plain, thinking off, reasoning under both of vLLM's field names, named / required / auto
and parallel tool calls, a cut answer, with usage) is asked for on the wire, then each body and each
stream chunk is validated against the SDK's own pydantic types (strict validation: the SDK itself
only constructs, without checking), and the same request made through the SDK's client and stream
helper must give what the wire carried. The fault `tool_delta_no_index` is the counter-example: the
wire assembly of `pytest_vllm.streaming` takes it, the SDK's stream helper refuses it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import openai
import pytest
import yaml
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import ValidationError

from pytest_vllm.emulator import EmulatedModel, EmulatorServer
from pytest_vllm.sdk import OpenAIChat, SdkRejected, client_for, reasoning_of
from pytest_vllm.streaming import StreamResult, consume_chunk

from conftest import SUITES

KEY = "sdk-contract-key"
TOOLS_DATA = yaml.safe_load((SUITES / "cases" / "tools.yml").read_text())
TOOLS = [{"type": "function", "function": {"name": n, **spec}} for n, spec in TOOLS_DATA["tools"].items()]
WEATHER = TOOLS_DATA["cases"][0]["prompt"]
TWO_CITIES = next(c["prompt"] for c in TOOLS_DATA["cases"] if c.get("parallel"))
NO_THINKING = {"chat_template_kwargs": {"enable_thinking": False}}
SHAPES: dict[str, dict] = {
    "plain": {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 64},
    "cut_at_max_tokens": {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 3},
    "thinking_off": {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 64, **NO_THINKING},
    "named_call": {"messages": [{"role": "user", "content": WEATHER}], "tools": TOOLS[:1], "max_tokens": 200,
                   "tool_choice": {"type": "function", "function": {"name": TOOLS[0]["function"]["name"]}}},
    "required_call": {"messages": [{"role": "user", "content": WEATHER}], "tools": TOOLS, "max_tokens": 200,
                      "tool_choice": "required", "parallel_tool_calls": False},
    "parallel_calls": {"messages": [{"role": "user", "content": TWO_CITIES}], "tools": TOOLS, "max_tokens": 300,
                       "tool_choice": "auto"},
}
SDK_PARAMS = {"messages", "max_tokens", "tools", "tool_choice", "parallel_tool_calls"}


@pytest.fixture(scope="module", params=["reasoning", "reasoning_content"])
def emulator(request) -> Iterator[EmulatorServer]:
    log = request.getfixturevalue("tmp_path_factory").mktemp("emulator") / "emulator.log"
    with EmulatorServer(api_key=KEY, model=EmulatedModel(reasoning_field=request.param), log_path=log) as server:
        yield server


def _wire(server: EmulatorServer, body: dict, stream: bool) -> dict | list[dict]:
    payload = {"model": server.model.served_name, **body, "stream": stream}
    if stream:
        payload["stream_options"] = {"include_usage": True}
    with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as http:
        response = http.post("/v1/chat/completions", json=payload)
    assert response.status_code == 200, response.text
    if not stream:
        return response.json()
    lines = [line.removeprefix("data: ") for line in response.text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def _sdk(server: EmulatorServer) -> OpenAIChat:
    return OpenAIChat(client_for(server.base_url, KEY, 30.0), server.model.served_name)


def _split(body: dict) -> tuple[list[dict], dict]:
    """Request body -> (messages, SDK keyword arguments), vLLM's own fields in extra_body."""
    params = {k: v for k, v in body.items() if k in SDK_PARAMS and k != "messages"}
    extra = {k: v for k, v in body.items() if k not in SDK_PARAMS}
    return body["messages"], {**params, **({"extra_body": extra} if extra else {})}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_non_streamed_answers_validate_against_the_sdk_types(emulator, shape):
    raw = _wire(emulator, SHAPES[shape], stream=False)
    strict = ChatCompletion.model_validate(raw)  # raises on any field of the wrong type or shape
    message = raw["choices"][0]["message"]
    messages, params = _split(SHAPES[shape])
    completion = _sdk(emulator).create(messages, **params)
    got = completion.choices[0].message
    assert strict.choices[0].finish_reason == completion.choices[0].finish_reason == raw["choices"][0]["finish_reason"]
    assert got.content == message["content"]
    field = emulator.model.reasoning_field
    assert reasoning_of(got) == (message.get(field) or ""), f"reasoning under '{field}' not read from model_extra"
    wire_calls = [(c["function"]["name"], json.loads(c["function"]["arguments"]))
                  for c in message.get("tool_calls") or []]
    sdk_calls = [(c.function.name, json.loads(c.function.arguments)) for c in got.tool_calls or []]
    assert sdk_calls == wire_calls
    if shape == "parallel_calls":
        assert len(sdk_calls) == 2


@pytest.mark.parametrize("shape", list(SHAPES))
def test_streamed_answers_validate_and_accumulate_with_the_sdk_helper(emulator, shape):
    chunks = _wire(emulator, SHAPES[shape], stream=True)
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
    wire = StreamResult(status=200)
    for i, chunk in enumerate(chunks):
        consume_chunk(wire, chunk, float(i))
    messages, params = _split(SHAPES[shape])
    streamed = _sdk(emulator).stream(messages, **params)
    assert len(streamed.chunks) == len(chunks)
    assert streamed.chunks[0].choices[0].delta.role == "assistant"
    assert (streamed.message.content or "") == wire.content
    assert reasoning_of(streamed.message) == wire.reasoning
    assert streamed.finish_reason == wire.finish_reason
    assert streamed.completion.usage.completion_tokens == wire.usage["completion_tokens"]
    sdk_calls = [(c.function.name, json.loads(c.function.arguments)) for c in streamed.message.tool_calls or []]
    assert sdk_calls == [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in wire.tool_calls]


def test_strict_validation_catches_what_the_sdk_lets_through(emulator):
    """Finding: at run time the SDK constructs its objects without checking types (`created: "soon"` goes
    through); the strict validation above is what catches a field of the wrong type."""
    raw = {**_wire(emulator, SHAPES["plain"], stream=False), "created": "soon"}
    assert ChatCompletion.construct(**raw).created == "soon"
    with pytest.raises(ValidationError, match="created"):
        ChatCompletion.model_validate(raw)


def test_a_tool_delta_without_index_passes_the_wire_assembly_but_not_the_sdk(tmp_path):
    body = SHAPES["named_call"]
    with EmulatorServer(api_key=KEY, faults=["tool_delta_no_index"], log_path=tmp_path / "emulator.log") as server:
        chunks = _wire(server, body, stream=True)
        wire = StreamResult(status=200)
        for i, chunk in enumerate(chunks):
            consume_chunk(wire, chunk, float(i))  # the wire assembly takes it without a word
        assert wire.tool_calls and all("index" not in d for c in chunks for ch in c["choices"]
                                       for d in ch["delta"].get("tool_calls") or [])
        with pytest.raises(SdkRejected, match=r"could not read the streamed answer: \w+Error"):
            _sdk(server).stream(body["messages"], **_split(body)[1])


def test_client_errors_become_operator_errors(tmp_path):
    """A refused key is vLLM's 401 body, not an SDK traceback; a dead port says the server stopped answering."""
    from pytest_vllm.http import ApiError, ServerGone
    with EmulatorServer(api_key=KEY, log_path=tmp_path / "emulator.log") as server:
        wrong = OpenAIChat(client_for(server.base_url, "wrong-key", 5.0), server.model.served_name)
        with pytest.raises(ApiError, match="answered 401: Unauthorized"):
            wrong.create([{"role": "user", "content": "hi"}])
        base_url = server.base_url
    gone = OpenAIChat(client_for(base_url, KEY, 5.0), "m")
    with pytest.raises(ServerGone, match="stopped answering"):
        gone.create([{"role": "user", "content": "hi"}])
    assert isinstance(gone.client, openai.OpenAI) and gone.client.max_retries == 0


def test_a_stream_cut_mid_way_says_the_server_stopped_answering():
    """A stream that breaks after its 200 start is the server gone, not an SDK traceback."""
    import socket
    import threading

    from pytest_vllm.http import ServerGone
    listener = socket.create_server(("127.0.0.1", 0))
    first = ChatCompletionChunk(id="c", object="chat.completion.chunk", created=0, model="m",
                                choices=[{"index": 0, "delta": {"role": "assistant", "content": "Hel"}}])

    def serve_half_a_stream() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            body = f"data: {first.model_dump_json()}\n\n".encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                         + f"{len(body):x}\r\n".encode() + body + b"\r\n")  # then the connection drops

    threading.Thread(target=serve_half_a_stream, daemon=True).start()
    chat = OpenAIChat(client_for(f"http://127.0.0.1:{listener.getsockname()[1]}", KEY, 10.0), "m")
    try:
        with pytest.raises(ServerGone, match="stopped answering"):
            chat.stream([{"role": "user", "content": "hi"}])
    finally:
        listener.close()

