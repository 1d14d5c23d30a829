"""Health: the deployment answers, names its model, guards its API, counts in /metrics, and completes a chat.

Every expectation comes from the profile (served name, context length, API key); nothing here knows
which model or hardware is behind the endpoint. The chats go through the official OpenAI client
(`vllm_openai`), as applications call; /health, /v1/models, /metrics and the 401 checks are read on
the wire (`vllm_client`): there the status code and the raw text are the subject.
"""

from __future__ import annotations

import time

import pytest

from pytest_vllm.metrics import has_vllm_metrics, histogram, kind, total
from pytest_vllm.sdk import reasoning_of

HELLO = [{"role": "user", "content": "Say hello in one short sentence."}]
FINISH_REASONS = {"stop", "length"}
PROMPT, GENERATED = "vllm:prompt_tokens_total", "vllm:generation_tokens_total"
QUERIES = "vllm:prefix_cache_queries_total"
TTFT = "vllm:time_to_first_token_seconds"
METRICS_SETTLE_S = 3.0  # vLLM records a request's stats just after handing its output over


def test_health_endpoint_answers_200(vllm_client):
    response = vllm_client.get("/health", auth=False)
    assert response.status_code == 200, f"/health answered {response.status_code}: {response.text[:300]}"


def test_models_lists_the_served_name(vllm_client, vllm_profile):
    models = {m["id"]: m for m in vllm_client.models()}
    assert vllm_client.model in models, (
        f"/v1/models lists {sorted(models)}, not '{vllm_client.model}': check model.served_name in "
        f"{vllm_profile.path} against the server's --served-model-name")
    expected = vllm_profile.model.get("max_model_len")
    if expected:
        got = models[vllm_client.model].get("max_model_len")
        assert got == expected, (
            f"the server exposes a context of {got} tokens, the profile expects {expected} "
            f"(model.max_model_len); check --max-model-len / rope scaling")


def test_api_requires_the_key(vllm_client, vllm_deployment, vllm_profile):
    if not vllm_deployment.api_key:
        variable = vllm_profile.auth.get("api_key_env")
        if variable:  # the profile claims a guarded API: having no key to show it is a failure, not a skip
            pytest.fail(f"profile '{vllm_profile.name}' names auth.api_key_env: {variable}, but no API key was given, "
                        f"so nothing shows the server refuses strangers: set {variable} (or put it in the profile's "
                        "env_file or ./.env), or pass --api-key", pytrace=False)
        pytest.skip("the profile names no auth.api_key_env: it claims no API key, nothing to refuse")
    without = vllm_client.get("/v1/models", auth=False)
    assert without.status_code == 401, (
        f"/v1/models answered {without.status_code} without an API key: the API is open to anyone on "
        "the network; start vLLM with --api-key (or VLLM_API_KEY)")
    wrong = vllm_client.get("/v1/models", api_key="wrong-" + vllm_deployment.api_key[:8])
    assert wrong.status_code == 401, f"/v1/models accepted a wrong key ({wrong.status_code})"
    right = vllm_client.get("/v1/models")
    assert right.status_code == 200, (
        f"/v1/models refused our key ({right.status_code}): the key given to pytest-vllm (--api-key or "
        "the profile's auth.api_key_env) is not the one the server was started with")


def test_metrics_count_the_requests_served(vllm_client, vllm_openai, vllm_deployment):
    before = vllm_client.metrics()
    assert has_vllm_metrics(before), "/metrics has no 'vllm:' metric: is this a vLLM server?"
    for name in (PROMPT, GENERATED, QUERIES):
        assert kind(before, name) == "counter", (
            f"/metrics declares {name} as {kind(before, name)!r}, not a counter"
            + (": KV-cache checks cannot be confirmed on this server" if name == QUERIES else ""))
    usage = vllm_openai.create(HELLO, max_tokens=8, temperature=0).usage
    deadline = time.monotonic() + METRICS_SETTLE_S
    while True:
        after = vllm_client.metrics()
        moved = {name: total(after, name) - total(before, name) for name in (PROMPT, GENERATED, QUERIES)}
        if moved[PROMPT] >= usage.prompt_tokens or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert moved[PROMPT] >= usage.prompt_tokens, (
        f"a chat of {usage.prompt_tokens} prompt tokens moved {PROMPT} by {moved[PROMPT]:g} within "
        f"{METRICS_SETTLE_S:g}s: the counters do not count what the server serves (dashboards and the KV-cache "
        "confirmation would read nothing)")
    assert moved[GENERATED] >= usage.completion_tokens, (
        f"{usage.completion_tokens} generated tokens moved {GENERATED} by {moved[GENERATED]:g}")
    if vllm_deployment.engine_config.get("enable_prefix_caching"):
        assert moved[QUERIES] > 0, f"prefix caching is on, yet a request moved {QUERIES} by 0"
    ttft = histogram(after, TTFT)
    assert ttft is not None, f"/metrics has no {TTFT} histogram"
    assert not ttft.problems(), "; ".join(ttft.problems())
    earlier = histogram(before, TTFT)
    assert ttft.count > (earlier.count if earlier else 0), f"the chat was not observed in {TTFT}"


def test_chat_completion_returns_text_usage_and_finish_reason(vllm_openai):
    completion = vllm_openai.create(HELLO, max_tokens=16, temperature=0)
    choice = completion.choices[0]
    assert choice.message.role == "assistant", f"the answer's role is {choice.message.role!r}, not 'assistant'"
    text = (choice.message.content or "") + reasoning_of(choice.message)
    assert text, f"the answer carries no text: {choice.message}"
    assert choice.finish_reason in FINISH_REASONS, f"unexpected finish_reason {choice.finish_reason!r}"
    usage = completion.usage
    assert usage and usage.prompt_tokens > 0 and usage.completion_tokens > 0, f"bad usage: {usage}"


def test_streamed_chat_completion_is_well_formed(vllm_openai):
    streamed = vllm_openai.stream(HELLO, max_tokens=16, temperature=0)
    first = streamed.chunks[0].choices[0].delta if streamed.chunks and streamed.chunks[0].choices else None
    assert first is not None and first.role == "assistant", (
        f"the first chunk should announce the assistant role, got {first}")
    text = (streamed.message.content or "") + reasoning_of(streamed.message)
    assert text, "the stream carried no content or reasoning text"
    assert streamed.finish_reason in FINISH_REASONS, f"unexpected finish_reason {streamed.finish_reason!r}"
    usage = streamed.completion.usage
    assert usage and usage.completion_tokens > 0, (
        f"no usage in the stream despite stream_options.include_usage: {usage}")


def test_kv_cache_memory_left_after_loading(vllm_deployment, vllm_profile, record_property):
    minimum = vllm_profile.thresholds.get("kv_cache_free_gib_min")
    if minimum is None:
        pytest.skip("the profile sets no thresholds.kv_cache_free_gib_min")
    free = vllm_deployment.engine_config.get("kv_cache_memory_gib")
    if free is None:
        pytest.skip("the engine log shows no 'Available KV cache memory' line (vLLM CPU, or an endpoint whose "
                    "log we cannot read)")
    record_property("kv_cache_memory_gib", free)
    assert free >= minimum, (
        f"vLLM has {free} GiB per GPU for the KV cache after loading, below the {minimum} GiB required "
        f"(thresholds.kv_cache_free_gib_min in {vllm_profile.path}): long contexts will be refused or preempted. "
        "Fix: raise gpu-memory-utilization, store the KV cache in fp8 (kv-cache-dtype), or use a smaller checkpoint")


def test_peak_vram_within_the_profile_limit(vllm_deployment, vllm_profile):
    limit = vllm_profile.thresholds.get("peak_vram_gib_max")
    if limit is None:
        pytest.skip("the profile sets no thresholds.peak_vram_gib_max")
    telemetry = vllm_deployment.telemetry.result()
    if not telemetry.available:
        pytest.skip(f"no GPU telemetry here: {telemetry.reason}")
    violations = telemetry.peak_vram_violations(limit)
    assert not violations, "\n".join(violations)
