"""Tool calling: forced and automatic calls, parallel calls, streaming, schemas, and a full turn.

Cases and tool definitions live in suites/cases/tools.yml. Protocol checks (named and required
choice, streamed deltas assembled equal to the non-streamed call, arguments valid against the
tool's schema, a tool result accepted back) hold for any model, even random weights; the checks
that the right tool is picked with the right arguments need `capabilities.semantic`.

A random-weight model (semantic: false) cannot end a constrained call by itself: its JSON fills
with whitespace until max_tokens. For it, and only for it, the requests carry decoding aids: a
logit_bias of -100 on the tokenizer's whitespace-only tokens and thinking switched off, so vLLM's
grammar (`"strict": true` tools, bounded strings) leads the call to its end.

Calls go through the official OpenAI client; streamed calls are assembled by the SDK's own stream
helper (`chat.completions.stream()`), as applications assemble them, so a delta shape the SDK
cannot accumulate fails here quoting the SDK's error.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from pytest_vllm.http import ApiError, error_message
from pytest_vllm.profile import Profile
from pytest_vllm.sdk import CutAtMaxTokens, SdkRejected

DATA = yaml.safe_load((Path(__file__).parents[1] / "cases" / "tools.yml").read_text(encoding="utf-8"))
TOOLS = {name: {"type": "function", "function": {"name": name, **spec}} for name, spec in DATA["tools"].items()}
CASES = DATA["cases"]
PARALLEL = [c for c in CASES if c.get("parallel")]
PROTOCOL = DATA["protocol_tool"]
CHOICES = {"named": {"type": "function", "function": {"name": PROTOCOL}}, "required": "required"}
_NUMBER = re.compile(r"-?\d+(?:[.,]\d+)?")

pytestmark = pytest.mark.vllm_capability("tool_parser")


def _whitespace_token_ids(model_dir: Path) -> list[int]:
    from tokenizers import Tokenizer
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    return [i for i in range(tokenizer.get_vocab_size()) if (t := tokenizer.decode([i])) and not t.strip()]


def _local_model_dir(profile: Profile) -> Path | None:
    path = profile.model.get("path", "")
    if path == "@tiny":
        from pytest_vllm.tiny_model import tiny_model_path
        return tiny_model_path()
    return Path(path) if path and (Path(path) / "tokenizer.json").is_file() else None


@pytest.fixture(scope="module")
def decoding(vllm_profile) -> dict:
    """Sampling parameters of every tool request (decoding aids for a random model, see above)."""
    params: dict = {"temperature": 0, "seed": 0, "max_tokens": DATA["max_tokens"]}
    if vllm_profile.capabilities.get("semantic"):
        return params
    params["extra_body"] = {"chat_template_kwargs": {"enable_thinking": False}}  # vLLM's field: the SDK's extra_body
    model_dir = _local_model_dir(vllm_profile)
    if model_dir is not None:
        params["logit_bias"] = {str(i): -100 for i in _whitespace_token_ids(model_dir)}
    return params


def _refusal(status: int, body: str, profile: Profile) -> str:
    parser = profile.capabilities["tool_parser"]
    said = error_message(body)
    if status == 400 and "tool-call-parser" in said:
        return (f"the server refuses tool calls: it was started without a tool parser. vLLM said: {said}\n"
                f"  fix: add --enable-auto-tool-choice --tool-call-parser {parser} to the server flags "
                f"(the profile claims tool_parser '{parser}')")
    return f"the tool-calling request answered {status}: {said}"


def _chat(openai, profile: Profile, messages: list[dict], **params):
    try:
        return openai.create(messages, **params)
    except ApiError as exc:
        pytest.fail(_refusal(exc.status, exc.body, profile), pytrace=False)


def _stream(openai, profile: Profile, messages: list[dict], **params):
    try:
        return openai.stream(messages, **params)
    except ApiError as exc:
        failure = _refusal(exc.status, exc.body, profile)
    except CutAtMaxTokens as exc:
        failure = f"{exc}; max_tokens={params.get('max_tokens')} (suites/cases/tools.yml)"
    except SdkRejected as exc:
        failure = str(exc)
    pytest.fail(failure, pytrace=False)  # outside the except blocks: the reason once, without a chained traceback


def _no_call_as_text(calls: list, content: str) -> None:
    if not calls and "<tool_call>" in content:
        pytest.fail(f"the tool call was written as text in content and not returned as tool_calls: {content[:300]!r}. "
                    "The server's tool parser does not parse this model's output: check --enable-auto-tool-choice and "
                    "that --tool-call-parser matches the model (hermes for Qwen)", pytrace=False)


def _checked_calls(calls: list, content: str | None, finish_reason: str | None, params: dict) -> list[dict]:
    """The calls with parsed arguments, after every check an operator needs named in words."""
    content = content or ""
    _no_call_as_text(calls, content)
    if finish_reason == "length":
        pytest.fail(f"the answer was cut at max_tokens={params.get('max_tokens')} (finish_reason=length) before the "
                    f"tool call was complete; content: {content[:200]!r}", pytrace=False)
    assert calls, f"no tool call came back (finish_reason={finish_reason!r}, content {content[:200]!r})"
    checked = []
    for call in calls:
        name, raw = call.function.name, call.function.arguments
        assert call.id and call.type == "function", f"malformed tool call (id/type): {call}"
        assert name in TOOLS, f"the model called '{name}', which is not one of the offered tools {sorted(TOOLS)}"
        try:
            args = json.loads(raw)
        except (TypeError, ValueError) as exc:
            pytest.fail(f"the arguments of {name} are not valid JSON ({exc}): {raw!r}", pytrace=False)
        try:
            jsonschema.validate(args, TOOLS[name]["function"]["parameters"])
        except jsonschema.ValidationError as exc:
            where = "/".join(map(str, exc.absolute_path)) or "(top level)"
            pytest.fail(f"the arguments of {name} break the tool's schema at '{where}': {exc.message}. "
                        f"Arguments: {raw}", pytrace=False)
        checked.append({"id": call.id, "name": name, "arguments": args})
    return checked


def _calls_of(completion, params: dict) -> list[dict]:
    """Checked calls of a completion (the SDK's `ChatCompletion`, or the stream helper's accumulated one)."""
    choice = completion.choices[0]
    return _checked_calls(choice.message.tool_calls or [], choice.message.content, choice.finish_reason, params)


def _same(expected, got, tolerance: float) -> bool:
    if isinstance(expected, str):
        return isinstance(got, str) and expected.casefold() == got.casefold()
    if isinstance(expected, int | float) and not isinstance(expected, bool):
        return isinstance(got, int | float) and abs(got - expected) <= tolerance
    return expected == got


def _mentions(text: str, expected: str, tolerance: float) -> bool:
    """A number is found as a number (18 is not in "2018"); a word as a whole word, case-insensitively."""
    try:
        wanted = float(expected)
    except ValueError:
        return re.search(rf"\b{re.escape(expected)}\b", text, re.IGNORECASE) is not None
    return any(abs(float(n.replace(",", ".")) - wanted) <= tolerance for n in _NUMBER.findall(text))


def _ask(case: dict) -> tuple[list[dict], list[dict]]:
    return [{"role": "user", "content": case["prompt"]}], [TOOLS[name] for name in case["tools"]]


# -- protocol: any model ------------------------------------------------------------------------------
@pytest.mark.parametrize("choice", list(CHOICES))
def test_forced_tool_call_comes_back_as_a_valid_call(vllm_openai, vllm_profile, decoding, choice):
    messages, _ = _ask(CASES[0])
    completion = _chat(vllm_openai, vllm_profile, messages, tools=[TOOLS[PROTOCOL]], tool_choice=CHOICES[choice],
                       parallel_tool_calls=False, **decoding)
    calls = _calls_of(completion, decoding)
    assert all(c["name"] == PROTOCOL for c in calls), f"tool_choice {choice} asked for {PROTOCOL}, got {calls}"
    finish = completion.choices[0].finish_reason
    expected_finish = "stop" if choice == "named" else "tool_calls"
    assert finish == expected_finish, (
        f"finish_reason {finish!r} for tool_choice {choice}; vLLM and OpenAI send {expected_finish!r}")


@pytest.mark.parametrize("choice", list(CHOICES))
def test_streamed_tool_call_assembles_to_the_non_streamed_one(vllm_openai, vllm_profile, decoding, choice):
    messages, _ = _ask(CASES[0])
    params = {"tools": [TOOLS[PROTOCOL]], "tool_choice": CHOICES[choice], "parallel_tool_calls": False, **decoding}
    whole = _calls_of(_chat(vllm_openai, vllm_profile, messages, **params), decoding)
    result = _stream(vllm_openai, vllm_profile, messages, **params)  # the SDK has checked every delta's index
    firsts = {}
    for d in (d for chunk in result.chunks for c in chunk.choices for d in c.delta.tool_calls or []):
        firsts.setdefault(d.index, d)
    for index, first in firsts.items():
        assert first.id and first.function and first.function.name, (
            f"the first delta of tool call {index} must carry its id and function name, got {first}")
    streamed = _calls_of(result.completion, decoding)
    as_pairs = [[(c["name"], c["arguments"]) for c in calls] for calls in (whole, streamed)]
    assert as_pairs[0] == as_pairs[1], (
        f"the streamed tool calls, assembled, differ from the non-streamed ones (arguments compared as parsed "
        f"JSON): streamed {as_pairs[1]} vs non-streamed {as_pairs[0]}")


def test_auto_tool_choice_answers_a_valid_call_or_plain_text(vllm_openai, vllm_profile, decoding):
    messages, tools = _ask(CASES[0])
    choice = _chat(vllm_openai, vllm_profile, messages, tools=tools, tool_choice="auto", **decoding).choices[0]
    content = choice.message.content or ""
    if choice.message.tool_calls:  # the model chose to call: the call must be one an application can run
        calls = _checked_calls(choice.message.tool_calls, content, choice.finish_reason, decoding)
        assert choice.finish_reason == "tool_calls", (
            f"tool_choice auto made {len(calls)} call(s) but finish_reason is {choice.finish_reason!r}; "
            "vLLM and OpenAI send 'tool_calls' (applications loop on it)")
        return
    _no_call_as_text([], content)  # the model chose to answer: plain text, no call hidden in it
    assert content.strip(), f"tool_choice auto answered neither a call nor text: {choice.message}"
    assert choice.finish_reason in ("stop", "length"), (
        f"a text answer to tool_choice auto ends with finish_reason {choice.finish_reason!r}")


def test_a_tool_result_fed_back_is_answered(vllm_openai, vllm_profile, decoding):
    case = CASES[0]
    messages, tools = _ask(case)
    call = case["calls"][0]
    messages += [
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_0", "type": "function", "function": {
            "name": call["name"], "arguments": json.dumps(call["arguments"])}}]},
        {"role": "tool", "tool_call_id": "call_0", "content": json.dumps(case["results"][0])},
    ]
    message = _chat(vllm_openai, vllm_profile, messages, tools=tools, **decoding).choices[0].message
    assert (message.content or "").strip() or message.tool_calls, (
        f"the turn after the tool result came back empty: {message}")


# -- semantic: a model that understands ---------------------------------------------------------------
def _auto_calls(openai, profile: Profile, case: dict, decoding: dict) -> list[dict]:
    messages, tools = _ask(case)
    calls = _calls_of(_chat(openai, profile, messages, tools=tools, tool_choice="auto", **decoding), decoding)
    wanted = case["calls"]
    tolerance = float(case.get("tolerance", 0))
    assert len(calls) == len(wanted), (
        f"'{case['id']}' needs {len(wanted)} call(s) {[w['name'] for w in wanted]}, the model made {len(calls)}: "
        f"{[(c['name'], c['arguments']) for c in calls]}"
        + (" (parallel calls: check the model and --tool-call-parser support them)" if len(wanted) > 1 else ""))
    for want in wanted:
        match = [c for c in calls if c["name"] == want["name"] and all(
            _same(v, c["arguments"].get(k), tolerance) for k, v in want["arguments"].items())]
        assert match, (f"'{case['id']}': expected a call {want['name']}({want['arguments']}), got "
                       f"{[(c['name'], c['arguments']) for c in calls]}")
    return calls


@pytest.mark.vllm_capability("semantic")
@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_auto_tool_choice_calls_the_right_tool(vllm_openai, vllm_profile, decoding, case):
    _auto_calls(vllm_openai, vllm_profile, case, decoding)


@pytest.mark.vllm_capability("semantic")
@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_full_turn_uses_the_tool_results(vllm_openai, vllm_profile, decoding, case):
    calls = _auto_calls(vllm_openai, vllm_profile, case, decoding)
    messages, tools = _ask(case)
    messages.append({"role": "assistant", "content": None, "tool_calls": [
        {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])}}
        for c in calls]})
    for call, result in zip(calls, case["results"], strict=True):
        messages.append({"role": "tool", "tool_call_id": call["id"], "content": json.dumps(result)})
    message = _chat(vllm_openai, vllm_profile, messages, tools=tools, **decoding).choices[0].message
    content = message.content or ""
    assert not message.tool_calls, f"after the tool results the model called tools again: {message}"
    missing = [m for m in case["final_mentions"] if not _mentions(content, m, float(case.get("tolerance", 0)))]
    assert not missing, (f"wrong answer after the tool results of '{case['id']}': the reply does not mention "
                         f"{missing} from {case['results']}. Reply: {content[:300]!r}")


@pytest.mark.vllm_capability("semantic")
@pytest.mark.parametrize("case", PARALLEL, ids=[c["id"] for c in PARALLEL])
def test_parallel_calls_stream_like_they_return(vllm_openai, vllm_profile, decoding, case):
    messages, tools = _ask(case)
    params = {"tools": tools, "tool_choice": "auto", **decoding}
    whole = _calls_of(_chat(vllm_openai, vllm_profile, messages, **params), decoding)
    streamed = _calls_of(_stream(vllm_openai, vllm_profile, messages, **params).completion, decoding)
    assert [(c["name"], c["arguments"]) for c in streamed] == [(c["name"], c["arguments"]) for c in whole], (
        f"the streamed parallel calls, assembled, differ from the non-streamed ones: {streamed} vs {whole}")
