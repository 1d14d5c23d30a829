"""Health: the deployment answers, names its model, guards its API, exposes metrics, and completes a chat.

Every expectation comes from the profile (served name, context length, API key); nothing here knows
which model or hardware is behind the endpoint.
"""

from __future__ import annotations

import pytest

from pytest_vllm import has_vllm_metrics, total

HELLO = [{"role": "user", "content": "Say hello in one short sentence."}]
FINISH_REASONS = {"stop", "length"}


def test_health_endpoint_answers_200(vllm_client):
    response = vllm_client.get("/health", auth=False)
    assert response.status_code == 200, f"/health answered {response.status_code}: {response.text[:300]}"


def test_models_lists_the_served_name(vllm_client, vllm_profile):
    models = {m["id"]: m for m in vllm_client.models()}
    assert vllm_client.model in models, (
        f"/v1/models lists {sorted(models)}, not '{vllm_client.model}': check model.served_name in "
        f"{vllm_profile.path} against the server's --served-model-name")
    expected = vllm_profile.model.max_model_len
    if expected:
        got = models[vllm_client.model].get("max_model_len")
        assert got == expected, (
            f"the server exposes a context of {got} tokens, the profile expects {expected} "
            f"(model.max_model_len); check --max-model-len / rope scaling")


def test_api_requires_the_key(vllm_client, vllm_deployment):
    if not vllm_deployment.api_key:
        pytest.skip("no API key configured for this deployment (auth.api_key_env unset): nothing to refuse")
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


def test_metrics_expose_vllm_counters(vllm_client):
    response = vllm_client.get("/metrics", auth=False)
    assert response.status_code == 200, f"/metrics answered {response.status_code}"
    samples = vllm_client.metrics()
    assert has_vllm_metrics(samples), "/metrics has no 'vllm:' metric: is this a vLLM server?"
    names = {s.name for s in samples}
    assert "vllm:prefix_cache_queries_total" in names, (
        "/metrics lacks vllm:prefix_cache_queries_total: KV-cache checks cannot be confirmed on this server")
    assert total(samples, "vllm:prefix_cache_queries_total") >= 0


def _text_of(message: dict) -> str:
    return (message.get("content") or "") + (message.get("reasoning_content") or message.get("reasoning") or "")


def test_chat_completion_returns_text_usage_and_finish_reason(vllm_client):
    body = vllm_client.chat(HELLO, max_tokens=16, temperature=0)
    choice = body["choices"][0]
    assert _text_of(choice["message"]), f"the answer carries no text: {choice['message']}"
    assert choice["finish_reason"] in FINISH_REASONS, f"unexpected finish_reason {choice['finish_reason']!r}"
    usage = body.get("usage") or {}
    assert usage.get("prompt_tokens", 0) > 0 and usage.get("completion_tokens", 0) > 0, f"bad usage: {usage}"


def test_streamed_chat_completion_is_well_formed(vllm_client):
    result = vllm_client.stream_chat(HELLO, max_tokens=16, temperature=0)
    assert result.status == 200, f"streaming answered {result.status}: {result.error_body[:300]}"
    first = result.chunks[0]["choices"][0]["delta"]
    assert first.get("role") == "assistant", f"first chunk should announce the assistant role, got {first}"
    assert result.content or result.reasoning, "the stream carried no content or reasoning text"
    assert result.ttft_s is not None and result.ttft_s <= result.e2e_s
    assert result.finish_reason in FINISH_REASONS, f"unexpected finish_reason {result.finish_reason!r}"
    assert result.usage and result.usage.get("completion_tokens", 0) > 0, (
        f"no usage in the stream despite stream_options.include_usage: {result.usage}")


def test_peak_vram_within_the_profile_limit(vllm_deployment, vllm_profile):
    limit = vllm_profile.thresholds.peak_vram_gib_max
    if limit is None:
        pytest.skip("the profile sets no thresholds.peak_vram_gib_max")
    telemetry = vllm_deployment.telemetry.result()
    if not telemetry.available:
        pytest.skip(f"no GPU telemetry here: {telemetry.reason}")
    violations = telemetry.peak_vram_violations(limit)
    assert not violations, "\n".join(violations)
