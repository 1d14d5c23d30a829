"""Long context: prompts at fractions of the context the profile claims, timed and answered, and one
over the limit refused.

Sizes: `load.long_context_fractions` of `model.max_model_len` (default 50 % and 90 %), counted by the
server's own /tokenize. Each prompt hides a fact a quarter of the way in (the "needle") and asks for it
at the end: a profile with meaningful answers (`capabilities.semantic`) must give it back; a random
model must still accept the prompt and answer without error. TTFT goes to the report, and the longest
prompt's TTFT must stay under `thresholds.long_context_ttft_ms_max` when the profile sets one.
A prompt longer than the context must be refused with vLLM's 400, not truncated or crashed on.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
import yaml

from pytest_vllm.http import ApiError, error_message
from pytest_vllm.plugin import selected_profiles
from pytest_vllm.prompts import sized_prompt

CASE = yaml.safe_load((Path(__file__).parents[1] / "cases" / "long_context.yml").read_text(encoding="utf-8"))
NEEDLE, QUESTION, NEEDLE_DEPTH = CASE["needle"], CASE["question"], float(CASE["depth"])
MAX_TOKENS = 32
REFUSAL = "maximum context length"  # vLLM's own words (vllm/renderers/params.py)


def pytest_generate_tests(metafunc):
    if "fraction" in metafunc.fixturenames:
        fractions = sorted({float(f) for p in selected_profiles(metafunc.config)
                            for f in p.load.long_context_fractions or []})
        metafunc.parametrize("fraction", fractions, ids=[f"{f:.0%}" for f in fractions])


@pytest.fixture(scope="module")
def context_len(vllm_profile) -> int:
    length = vllm_profile.model.max_model_len
    if not length:
        pytest.skip(f"the profile sets no model.max_model_len ({vllm_profile.path}): no context size to test")
    return int(length)


def _sampling(profile) -> dict:
    params: dict = {"max_tokens": MAX_TOKENS, "temperature": 0}
    if profile.capabilities.reasoning_parser:  # a retrieval needs no thinking; keep the answer short
        params["chat_template_kwargs"] = {"enable_thinking": False}
    return params


def test_long_prompt_is_answered(vllm_client, vllm_profile, vllm_report, context_len, fraction):
    fractions = vllm_profile.load.long_context_fractions or []
    if fraction not in fractions:
        pytest.skip(f"profile '{vllm_profile.name}' does not test {fraction:.0%} (load.long_context_fractions)")
    code = str(secrets.randbelow(900000) + 100000)
    target = int(context_len * fraction) - MAX_TOKENS
    prompt = sized_prompt(vllm_client, target, salt=f"long-{secrets.token_hex(4)}", question=QUESTION,
                          needle=NEEDLE.format(code=code), depth=NEEDLE_DEPTH)
    result = vllm_client.stream_chat(prompt.messages, **_sampling(vllm_profile))
    assert result.status == 200, (
        f"a {prompt.tokens}-token prompt ({fraction:.0%} of the {context_len} tokens the profile claims) answered "
        f"{result.status}: {error_message(result.error_body)}. Check --max-model-len and, past the model's native "
        "context, the rope scaling (hf-overrides rope_parameters)")
    text = result.content or result.reasoning
    assert text and result.ttft_s is not None, f"the {prompt.tokens}-token prompt got no text back"
    assert result.finish_reason in ("stop", "length"), f"unexpected finish_reason {result.finish_reason!r}"
    ttft_ms = result.ttft_s * 1000
    vllm_report.add_measurement(vllm_profile.name, f"long_context/{fraction:.0%}", {
        "prompt_tokens": prompt.tokens, "context": context_len, "ttft_ms": round(ttft_ms, 1),
        "e2e_ms": round(result.e2e_s * 1000, 1), "answer": text[:80], "needle": code})
    limit = vllm_profile.thresholds.long_context_ttft_ms_max
    if limit is not None and fraction == max(fractions):
        assert ttft_ms <= limit, (
            f"TTFT of a {prompt.tokens}-token prompt is {ttft_ms:.0f} ms, above the {limit} ms allowed "
            f"(thresholds.long_context_ttft_ms_max in {vllm_profile.path})")
    if vllm_profile.capabilities.semantic:
        assert code in result.content, (
            f"the model did not retrieve the fact hidden {NEEDLE_DEPTH:.0%} into a {prompt.tokens}-token prompt: "
            f"expected {code}, it answered {result.content[:200]!r}. At this length the context is not really "
            "usable (rope scaling, sliding window, or a truncated prompt)")


def test_prompt_over_the_context_is_refused_with_400(vllm_client, vllm_profile, vllm_report, context_len):
    # Sized below the limit (/tokenize may refuse what is over it), then doubled: about 1.2 x the context.
    half = sized_prompt(vllm_client, int(context_len * 0.6), salt=f"over-{secrets.token_hex(4)}", question=QUESTION)
    body = half.messages[0]["content"]
    messages = [{"role": "user", "content": f"{body}\n{body}"}]
    try:
        answer = vllm_client.call("/v1/chat/completions", {"messages": messages, "max_tokens": MAX_TOKENS})
    except ApiError as exc:
        said = error_message(exc.body)
        assert exc.status == 400 and REFUSAL in said, (
            f"a prompt of about {2 * half.tokens} tokens (context {context_len}) answered {exc.status} instead of "
            f"vLLM's 400 '{REFUSAL} ...': {said}")
        vllm_report.add_measurement(vllm_profile.name, "long_context/over_limit",
                                    {"prompt_tokens_about": 2 * half.tokens, "status": exc.status, "message": said})
        return
    billed = (answer.get("usage") or {}).get("prompt_tokens")
    pytest.fail(f"a prompt of about {2 * half.tokens} tokens was accepted (billed {billed}) although the profile "
                f"claims a context of {context_len}: the server truncates silently or serves a longer context than "
                f"model.max_model_len says ({vllm_profile.path})", pytrace=False)
