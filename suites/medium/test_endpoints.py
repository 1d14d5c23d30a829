"""The other endpoints the team calls: /v1/completions (plain and streamed), /tokenize and /detokenize,
and /v1/embeddings where the profile claims an embedding model (`capabilities.embeddings`).

Shape and protocol only: any model, even random weights, must pass; the words are not judged.
"""

from __future__ import annotations

import math

import pytest

from pytest_vllm.http import ApiError, error_message

PROMPT = "The capital of France is"
MAX_TOKENS = 8
# Accents, punctuation and spacing a French operator's text carries: the round trip must keep them all.
ROUND_TRIP = "Déploiement validé à 02h30 : « tout va bien », dit l'équipe.  Next step: 128k context?"
FINISH_REASONS = {"stop", "length"}


def _call(client, path: str, payload: dict) -> dict:
    try:
        return client.call(path, payload)
    except ApiError as exc:
        pytest.fail(f"{path} refused a plain request: {exc}", pytrace=False)


def test_completion_returns_text_usage_and_finish_reason(vllm_client):
    body = _call(vllm_client, "/v1/completions", {"prompt": PROMPT, "max_tokens": MAX_TOKENS, "temperature": 0})
    assert body.get("object") == "text_completion", f"not a completion object: {str(body)[:300]}"
    choice = body["choices"][0]
    assert choice.get("text"), f"the completion carries no text: {choice}"
    assert choice.get("finish_reason") in FINISH_REASONS, f"unexpected finish_reason {choice.get('finish_reason')!r}"
    usage = body.get("usage") or {}
    assert 0 < usage.get("completion_tokens", 0) <= MAX_TOKENS and usage.get("prompt_tokens", 0) > 0, (
        f"usage does not account for the request (max_tokens={MAX_TOKENS}): {usage}")


def test_streamed_completion_assembles_and_ends(vllm_client):
    result = vllm_client.stream_completion(PROMPT, max_tokens=MAX_TOKENS, temperature=0)
    assert result.status == 200, (
        f"streamed /v1/completions answered {result.status}: {error_message(result.error_body)}")
    assert all(c.get("object") == "text_completion" for c in result.chunks), (
        f"chunks are not text_completion objects: {result.chunks[0] if result.chunks else None}")
    assert result.content, "the stream carried no text"
    assert result.ttft_s is not None and result.ttft_s <= result.e2e_s
    assert result.finish_reason in FINISH_REASONS, f"the stream never said why it ended ({result.finish_reason!r})"
    tokens = (result.usage or {}).get("completion_tokens") or 0
    # A chunk carries one token or more (a byte-level tokenizer holds back half a UTF-8 character).
    assert len(result.text_times) <= tokens <= MAX_TOKENS, (
        f"usage says {tokens} completion tokens (max_tokens={MAX_TOKENS}), the stream carried "
        f"{len(result.text_times)} text chunks")


def test_tokenize_detokenize_round_trip(vllm_client, vllm_profile):
    tokenized = _call(vllm_client, "/tokenize", {"prompt": ROUND_TRIP, "add_special_tokens": False})
    tokens = tokenized.get("tokens") or []
    assert tokens and tokenized.get("count") == len(tokens), f"/tokenize: count and tokens disagree: {tokenized}"
    expected_len = vllm_profile.model.max_model_len
    if expected_len:
        assert tokenized.get("max_model_len") == expected_len, (
            f"/tokenize reports max_model_len {tokenized.get('max_model_len')}, the profile expects {expected_len}")
    back = _call(vllm_client, "/detokenize", {"tokens": tokens})
    assert back.get("prompt") == ROUND_TRIP, (
        f"/detokenize did not give the text back:\n  sent {ROUND_TRIP!r}\n  got  {back.get('prompt')!r}\n"
        "the tokenizer served is lossy for this text (accents, spacing): check the model's tokenizer files")


def test_tokenize_counts_what_the_chat_is_billed(vllm_client):
    messages = [{"role": "user", "content": ROUND_TRIP}]
    counted = vllm_client.count_tokens(messages)
    billed = vllm_client.call("/v1/chat/completions", {"messages": messages, "max_tokens": 1})["usage"]["prompt_tokens"]
    assert counted == billed, (
        f"/tokenize counts {counted} tokens for a chat that /v1/chat/completions bills as {billed}: prompt sizes "
        "measured with /tokenize (long-context and throughput suites) would be wrong")


@pytest.mark.vllm_capability("embeddings")
def test_embeddings_are_finite_vectors_of_one_size(vllm_client, vllm_profile):
    try:
        body = vllm_client.call("/v1/embeddings", {"input": [PROMPT, ROUND_TRIP]})
    except ApiError as exc:
        pytest.fail(f"the profile claims embeddings (capabilities.embeddings in {vllm_profile.path}) but "
                    f"/v1/embeddings answered {exc.status}: {error_message(exc.body)}; serve a pooling model "
                    "(vLLM --runner pooling) or set capabilities.embeddings: false", pytrace=False)
    vectors = [d.get("embedding") or [] for d in body.get("data", [])]
    assert len(vectors) == 2, f"asked for 2 embeddings, got {len(vectors)}"
    assert vectors[0] and len(vectors[0]) == len(vectors[1]), f"vector sizes differ: {[len(v) for v in vectors]}"
    assert all(math.isfinite(x) for v in vectors for x in v), "an embedding holds NaN or infinity"
    assert vectors[0] != vectors[1], "two different texts got the same embedding"
