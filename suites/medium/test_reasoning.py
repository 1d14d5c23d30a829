"""Reasoning: checkable answers, thinking kept apart from the answer, thinking switchable per request.

Cases live in suites/cases/reasoning.yml (prompt, expected answer, tolerance). What the deployment
claims comes from the profile: `capabilities.reasoning_parser` turns on the separation checks,
`capabilities.semantic` the answer checks (a random-weight model can only pass the protocol ones).
Calls go through the official OpenAI client, as applications make them; vLLM's reasoning field is one
of the SDK's extra fields (`reasoning` or `reasoning_content`, see pytest_vllm.sdk.reasoning_of).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from pytest_vllm.http import ApiError
from pytest_vllm.sdk import reasoning_of

DATA = yaml.safe_load((Path(__file__).parents[1] / "cases" / "reasoning.yml").read_text(encoding="utf-8"))
ARITHMETIC = [c for c in DATA["cases"] if c["kind"] == "arithmetic"]
PLANS = [c for c in DATA["cases"] if c["kind"] == "plan"]
PROTOCOL_MAX_TOKENS = 64  # enough to see thinking start; the answer is not read in protocol checks
THINK_TAGS = ("<think>", "</think>")
_ANSWER = re.compile(r"ANSWER:\s*\**\s*(-?[\d.,]+)", re.IGNORECASE)
_STEP = re.compile(r"^\s*(?:\*\*)?(\d+)[.)]\s+\S", re.MULTILINE)
_THINK_BLOCK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL)


def _ask(case: dict) -> list[dict]:
    instruction = DATA["instructions"][case["kind"]].format(steps=case.get("steps"))
    return [{"role": "user", "content": f"{case['prompt']}\n\n{instruction}"}]


def _chat(openai, messages: list[dict], **params):
    try:
        return openai.create(messages, **params)
    except ApiError as exc:
        pytest.fail(f"the server refused a plain reasoning request: {exc}", pytrace=False)


def _answer_text(completion, case: dict) -> str:
    """The content the answer is read from; fails with the reason when there is none."""
    choice = completion.choices[0]
    content = _THINK_BLOCK.sub("", choice.message.content or "").strip()
    if not content:
        cut = choice.finish_reason == "length"
        pytest.fail(f"no final answer to '{case['id']}' in content"
                    + (f": the reply was cut at max_tokens={DATA['max_tokens']} (finish_reason=length) while "
                       "still thinking; raise max_tokens in suites/cases/reasoning.yml" if cut else
                       f"; reasoning was {reasoning_of(choice.message)[:200]!r}"), pytrace=False)
    return content


@pytest.mark.vllm_capability("semantic")
@pytest.mark.parametrize("case", ARITHMETIC, ids=[c["id"] for c in ARITHMETIC])
def test_arithmetic_word_problem_final_answer(vllm_openai, case):
    body = _chat(vllm_openai, _ask(case), max_tokens=DATA["max_tokens"], temperature=0)
    content = _answer_text(body, case)
    found = _ANSWER.findall(content)
    assert found, (f"wrong answer format for '{case['id']}': no 'ANSWER: <number>' line in the reply; "
                   f"last line: {content.splitlines()[-1][:200]!r}")
    got = float(found[-1].replace(",", "").rstrip("."))
    expected, tolerance = float(case["answer"]), float(case.get("tolerance", 0))
    assert abs(got - expected) <= tolerance, (
        f"wrong answer to '{case['id']}': expected {case['answer']} (tolerance {tolerance}), the model answered "
        f"{found[-1]}. Question: {' '.join(case['prompt'].split())}")


@pytest.mark.vllm_capability("semantic")
@pytest.mark.parametrize("case", PLANS, ids=[c["id"] for c in PLANS])
def test_plan_has_exactly_the_asked_number_of_steps(vllm_openai, case):
    body = _chat(vllm_openai, _ask(case), max_tokens=DATA["max_tokens"], temperature=0)
    content = _answer_text(body, case)
    steps = [int(n) for n in _STEP.findall(content)]
    assert steps == list(range(1, case["steps"] + 1)), (
        f"wrong answer to '{case['id']}': asked for exactly {case['steps']} numbered steps, got {len(steps)} "
        f"(numbers {steps}). Reply:\n{content[:600]}")


@pytest.mark.vllm_capability("reasoning_parser")
@pytest.mark.parametrize("stream", [False, True], ids=["non-streamed", "streamed"])
def test_reasoning_is_returned_apart_from_the_content(vllm_openai, vllm_profile, stream):
    parser = vllm_profile.capabilities["reasoning_parser"]
    messages = _ask(ARITHMETIC[0])
    if stream:
        try:
            streamed = vllm_openai.stream(messages, max_tokens=PROTOCOL_MAX_TOKENS, temperature=0)
        except ApiError as exc:
            pytest.fail(f"the streamed reasoning request was refused: {exc}", pytrace=False)
        first = streamed.chunks[0].choices[0].delta if streamed.chunks and streamed.chunks[0].choices else None
        assert first is not None and first.role == "assistant", (
            f"the stream does not open with the assistant role chunk: {first}")
        message = streamed.message
    else:
        message = _chat(vllm_openai, messages, max_tokens=PROTOCOL_MAX_TOKENS, temperature=0).choices[0].message
    content, reasoning = message.content or "", reasoning_of(message)
    leaked = [tag for tag in THINK_TAGS if tag in content]
    assert not leaked, (
        f"'{leaked[0]}' leaked into content: the model's thinking comes back as plain answer text. The profile "
        f"declares reasoning parser '{parser}': start vLLM with --reasoning-parser {parser} (and check it matches "
        f"the model). Content starts: {content[:200]!r}")
    assert reasoning.strip(), (
        f"no reasoning text: the profile declares reasoning parser '{parser}' but the answer has neither "
        f"'reasoning' nor 'reasoning_content' (content: {content[:200]!r}). Check --reasoning-parser {parser} is "
        "set and that the model thinks by default (its chat template's enable_thinking)")


@pytest.mark.vllm_capability("reasoning_parser")
def test_thinking_can_be_switched_off_per_request(vllm_openai, vllm_profile):
    completion = _chat(vllm_openai, _ask(ARITHMETIC[0]), max_tokens=PROTOCOL_MAX_TOKENS, temperature=0,
                       extra_body={"chat_template_kwargs": {"enable_thinking": False}})  # vLLM's, not OpenAI's
    message = completion.choices[0].message
    content, reasoning = message.content or "", reasoning_of(message)
    assert not reasoning.strip(), (
        f"thinking was switched off (chat_template_kwargs enable_thinking=false) yet the answer carries "
        f"reasoning: {reasoning[:200]!r}. The model's chat template ignores enable_thinking; requests cannot "
        "skip thinking on this deployment")
    assert content.strip() and not any(tag in content for tag in THINK_TAGS), (
        f"with thinking switched off the answer should be plain content, got content {content[:200]!r}")
