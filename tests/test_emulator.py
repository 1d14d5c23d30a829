"""The emulator over real sockets: routes, vLLM's shapes and errors, streaming, latency ground truth, faults."""

from __future__ import annotations

import base64
import io
import json
import time

import httpx
import pytest
from PIL import Image

from pytest_vllm.emulator import EmulatedModel, EmulatorServer, LatencyModel, UnknownFault, parse_faults
from pytest_vllm.metrics import info_labels, parse_metrics, total
from pytest_vllm.streaming import stream_chat

KEY = "unit-test-key"
FAST = LatencyModel(base_ms=1.0, prefill_ms_per_token=0.01, decode_ms_per_token=0.05)
HELLO = [{"role": "user", "content": "Say hello in one short sentence."}]
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius"]}},
    "required": ["city", "unit"]}}}


@pytest.fixture
def serve(tmp_path):
    """serve(**kwargs) -> (emulator, client); everything stopped at the end of the test."""
    started: list[tuple[EmulatorServer, httpx.Client]] = []

    def start(**kwargs) -> tuple[EmulatorServer, httpx.Client]:
        kwargs.setdefault("latency", FAST)
        kwargs.setdefault("api_key", KEY)
        emulator = EmulatorServer(log_path=tmp_path / "emulator.log", **kwargs).start()
        client = httpx.Client(base_url=emulator.base_url, timeout=10,
                              headers={"Authorization": f"Bearer {kwargs['api_key']}"} if kwargs["api_key"] else {})
        started.append((emulator, client))
        return emulator, client

    yield start
    for emulator, client in started:
        client.close()
        emulator.stop()


def chat(client: httpx.Client, messages=HELLO, **params) -> httpx.Response:
    return client.post("/v1/chat/completions", json={"model": "emulated-qwen3", "messages": messages, **params})


def stream(emulator: EmulatorServer, messages=HELLO, **params):
    with httpx.Client(timeout=10) as http:
        return stream_chat(http, emulator.base_url + "/v1/chat/completions",
                           {"model": "emulated-qwen3", "messages": messages, **params},
                           {"Authorization": f"Bearer {emulator.api_key}"} if emulator.api_key else {}, 10)


def raw_lines(emulator: EmulatorServer, **params) -> list[str]:
    body = {"model": "emulated-qwen3", "messages": HELLO, "stream": True, **params}
    with httpx.stream("POST", emulator.base_url + "/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {KEY}"}, timeout=10) as response:
        return [line for line in response.iter_lines() if line]


def test_unknown_fault_lists_the_known_ones():
    with pytest.raises(UnknownFault, match="known faults: slow_start, crash"):
        parse_faults("think_leek")
    assert parse_faults("crash, think_leak") == {"crash", "think_leak"}


def test_it_says_it_is_the_emulator(serve):
    emulator, client = serve()
    assert "NOT vLLM" in emulator.log_lines[0]
    assert "emulator" in client.get("/version").json()["version"]
    card = client.get("/v1/models").json()["data"][0]
    assert card["owned_by"] == "pytest-vllm-emulator" and card["max_model_len"] == 32768
    assert client.get("/health").headers["server"].startswith("pytest-vllm-emulator")
    assert "pytest_vllm_emulator_info" in client.get("/metrics").text


def test_api_key_guards_v1_only_with_vllms_bare_body(serve):
    emulator, _ = serve()
    open_client = httpx.Client(base_url=emulator.base_url)
    assert open_client.get("/health").status_code == 200
    assert open_client.get("/metrics").status_code == 200
    refused = open_client.post("/v1/chat/completions", json={"messages": HELLO})
    assert (refused.status_code, refused.json()) == (401, {"error": "Unauthorized"})
    # the refused request's body was consumed: the same keep-alive connection still works
    assert open_client.get("/health").status_code == 200


def test_non_streamed_answer_has_vllms_fields(serve):
    _, client = serve()
    body = chat(client).json()
    assert body["object"] == "chat.completion" and body["system_fingerprint"] == "pytest-vllm-emulator"
    message = body["choices"][0]["message"]
    assert set(message) == {"role", "content", "refusal", "annotations", "audio", "function_call", "reasoning"}
    assert message["reasoning"] and message["content"]
    assert body["choices"][0]["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["completion_tokens_details"]["reasoning_tokens"] > 0


def test_stream_opens_with_the_role_chunk_and_ends_with_usage_then_done(serve):
    emulator, client = serve()
    lines = raw_lines(emulator, stream_options={"include_usage": True})
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert lines[-1] == "data: [DONE]"
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert "usage" not in json.dumps(raw_lines(emulator))  # no usage chunk unless asked


def test_streamed_and_non_streamed_answers_agree(serve):
    emulator, client = serve()
    whole = chat(client).json()["choices"][0]["message"]
    streamed = stream(emulator)
    assert (streamed.content, streamed.reasoning) == (whole["content"], whole["reasoning"])


def test_reasoning_field_name_is_selectable(serve):
    emulator, client = serve(model=EmulatedModel(reasoning_field="reasoning_content"))
    message = chat(client).json()["choices"][0]["message"]
    assert message["reasoning_content"] and "reasoning" not in message
    assert any("reasoning_content" in line for line in raw_lines(emulator))


def test_thinking_switched_off_per_request(serve):
    _, client = serve()
    message = chat(client, chat_template_kwargs={"enable_thinking": False}).json()["choices"][0]["message"]
    assert message["reasoning"] is None and message["content"]


def test_max_tokens_cuts_with_length_and_ignore_eos_fills(serve):
    _, client = serve()
    cut = chat(client, max_tokens=3).json()
    assert cut["choices"][0]["finish_reason"] == "length" and cut["usage"]["completion_tokens"] == 3
    full = chat(client, max_tokens=200, ignore_eos=True).json()
    assert full["usage"]["completion_tokens"] == 200


@pytest.mark.parametrize("choice, finish", [("auto", "tool_calls"), ("required", "tool_calls"),
                                            ({"type": "function", "function": {"name": "get_weather"}}, "stop")])
def test_tool_calls_and_their_stream_deltas(serve, choice, finish):
    emulator, client = serve()
    ask = [{"role": "user", "content": "What is the weather like in Paris right now? Give me the temperature in "
                                       "celsius."}]
    body = chat(client, ask, tools=[WEATHER], tool_choice=choice).json()
    assert body["choices"][0]["finish_reason"] == finish
    call = body["choices"][0]["message"]["tool_calls"][0]
    assert call["function"]["name"] == "get_weather" and json.loads(call["function"]["arguments"])["city"] == "Paris"
    result = stream(emulator, ask, tools=[WEATHER], tool_choice=choice)
    deltas = [d for c in result.chunks for ch in c["choices"] for d in ch["delta"].get("tool_calls", [])]
    assert deltas[0]["id"] and deltas[0]["type"] == "function" and deltas[0]["function"] == {"name": "get_weather"}
    assert all(set(d) == {"index", "function"} and "arguments" in d["function"] for d in deltas[1:])
    assert json.loads(result.tool_calls[0]["function"]["arguments"]) == json.loads(call["function"]["arguments"])
    assert result.finish_reason == finish


def test_vllm_error_bodies(serve):
    _, client = serve(model=EmulatedModel(max_model_len=1000))
    missing = chat(client, model="nope")  # overrides the model name
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "NotFoundError"
    too_long = chat(client, max_tokens=5000).json()["error"]
    assert too_long == {"message": "max_tokens=5000 cannot be greater than max_model_len=1000. Please "
                                   "request fewer output tokens.", "type": "BadRequestError",
                        "param": "max_tokens", "code": 400}
    assert client.post("/v1/chat/completions", content=b"{bad").json()["error"]["code"] == 400


@pytest.mark.parametrize("choice, message", [
    ("auto", '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'),
    ("required", 'tool_choice="required" requires --tool-call-parser to be set'),
    ({"type": "function", "function": {"name": "get_weather"}},
     'tool_choice=function "get_weather" requires --tool-call-parser to be set')])
def test_without_tool_parser_vllms_400(serve, choice, message):
    _, client = serve(model=EmulatedModel(tool_parser=None))
    answer = chat(client, tools=[WEATHER], tool_choice=choice)
    assert answer.status_code == 400 and answer.json()["error"]["message"] == message
    assert chat(client, tools=[WEATHER], tool_choice="none").status_code == 200


def png_url(colour: str) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_image_limits_and_text_only_model(serve):
    four = [{"role": "user", "content": [*[{"type": "image_url", "image_url": {"url": png_url("red")}}] * 4,
                                         {"type": "text", "text": "What colour?"}]}]
    _, client = serve()
    refused = chat(client, four)
    assert refused.status_code == 400
    assert refused.json()["error"]["message"] == "At most 3 image(s) may be provided in one prompt."
    _, text_only = serve(model=EmulatedModel(served_name="tiny", vision=False))
    one = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": png_url("red")}}]}]
    assert text_only.post("/v1/chat/completions", json={"messages": one}).json()["error"]["message"] == \
        "tiny is not a multimodal model"


HITS = 4


def test_ttft_ground_truth_header_and_prefix_cache(serve):
    emulator, client = serve(latency=LatencyModel(base_ms=5, prefill_ms_per_token=0.5, decode_ms_per_token=0.1,
                                                  block_size=16))
    prompt = [{"role": "user", "content": "salt-1 " + "word " * 400}]
    measured = []  # (client TTFT, the emulator's own) of one MISS then HITS
    for _ in range(1 + HITS):
        result = stream(emulator, prompt)
        measured.append((result.ttft_s * 1000, client.get("/emulator/last").json()))
    miss_truth, hit_truth = measured[0][1], measured[-1][1]
    assert miss_truth["cached_tokens"] == 0
    assert hit_truth["cached_tokens"] == (hit_truth["prompt_tokens"] - 1) // 16 * 16
    assert hit_truth["ttft_ms"] == pytest.approx(5 + 0.5 * (hit_truth["prompt_tokens"] - hit_truth["cached_tokens"]))
    overheads = [ms - truth["ttft_ms"] for ms, truth in measured]
    # The client's clock never starts after the server's; load only adds delay, so the least overhead of a
    # few requests is the loopback's, whatever another process does to the CPU meanwhile.
    assert all(o >= 0 for o in overheads) and min(overheads) < 15, overheads
    samples = parse_metrics(client.get("/metrics").text)
    assert total(samples, "vllm:prefix_cache_hits_total") == HITS * hit_truth["cached_tokens"]
    assert total(samples, "vllm:prefix_cache_queries_total") == (1 + HITS) * hit_truth["prompt_tokens"]
    assert total(samples, "vllm:time_to_first_token_seconds_count") == 1 + HITS
    assert info_labels(samples, "vllm:cache_config_info")["enable_prefix_caching"] == "True"
    response = chat(client, prompt)
    assert response.headers["x-emulator-cached-tokens"] == str(hit_truth["cached_tokens"])


def test_no_cache_speedup_counts_hits_but_pays_the_full_prefill(serve):
    emulator, client = serve(faults=["no_cache_speedup"])
    prompt = [{"role": "user", "content": "word " * 300}]
    times = [float(chat(client, prompt).headers["x-emulator-ttft-ms"]) for _ in range(2)]
    assert times[0] == times[1]
    assert total(parse_metrics(client.get("/metrics").text), "vllm:prefix_cache_hits_total") > 0


def test_prefix_caching_off_leaves_counters_at_zero(serve):
    _, client = serve(model=EmulatedModel(prefix_caching=False))
    prompt = [{"role": "user", "content": "word " * 300}]
    assert {chat(client, prompt).headers["x-emulator-cached-tokens"] for _ in range(2)} == {"0"}
    samples = parse_metrics(client.get("/metrics").text)
    assert total(samples, "vllm:prefix_cache_queries_total") == 0
    assert info_labels(samples, "vllm:cache_config_info")["enable_prefix_caching"] == "False"


def test_reset_empties_cache_and_records(serve):
    _, client = serve()
    prompt = [{"role": "user", "content": "word " * 100}]
    chat(client, prompt)
    client.post("/emulator/reset")
    assert client.get("/emulator/requests").json() == []
    assert chat(client, prompt).headers["x-emulator-cached-tokens"] == "0"


def test_fault_crash_kills_the_server(serve):
    emulator, client = serve(faults=["crash"])
    assert client.get("/health").status_code == 200
    with pytest.raises(httpx.TransportError):
        chat(client)
    time.sleep(0.2)
    assert not emulator.alive
    with pytest.raises(httpx.TransportError):
        httpx.get(emulator.base_url + "/health", timeout=2)


def test_fault_slow_start_answers_nothing_until_ready(serve):
    _, client = serve(faults=["slow_start"], slow_start_s=0.3)
    with pytest.raises(httpx.RemoteProtocolError):  # vLLM never answers 503 while it starts
        client.get("/health")
    time.sleep(0.35)
    assert client.get("/health").status_code == 200


def test_fault_unhealthy_503_answers_health_with_503(serve):
    _, client = serve(faults=["unhealthy_503"])
    assert client.get("/health").status_code == 503
    assert client.get("/v1/models").status_code == 200  # up and answering: only its engine is reported dead


@pytest.mark.parametrize("fault, status", [("http_5xx", 500), ("unauthorized_401", 401)])
def test_faults_with_a_status(serve, fault, status):
    _, client = serve(faults=[fault])
    assert chat(client).status_code == status


def test_fault_think_leak_and_missing_reasoning(serve):
    _, leaky = serve(faults=["think_leak"])
    message = chat(leaky).json()["choices"][0]["message"]
    assert message["content"].startswith("<think>") and message["reasoning"] is None
    _, silent = serve(faults=["missing_reasoning"])
    message = chat(silent).json()["choices"][0]["message"]
    assert message["reasoning"] is None and "<think>" not in message["content"]


def test_fault_tool_call_in_content(serve):
    _, client = serve(faults=["tool_call_in_content"])
    message = chat(client, tools=[WEATHER], tool_choice="required").json()["choices"][0]["message"]
    assert "tool_calls" not in message and message["content"].startswith("<tool_call>")
