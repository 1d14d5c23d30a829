"""The emulator's pure parts: latency model and prefix cache, tokenizer, scripted answers, eyes, flags."""

from __future__ import annotations

import io
import json
import statistics

import jsonschema
import pytest
from PIL import Image, ImageDraw, ImageFont

from pytest_vllm.emulator import EmulatedModel, LatencyModel
from pytest_vllm.emulator.answers import Answer, Scripts, ToolCall, example_for
from pytest_vllm.emulator.latency import Clock, PrefixCache, block_hashes
from pytest_vllm.emulator.parsing import present
from pytest_vllm.emulator.tokens import json_pieces, output_pieces, prompt_tokens
from pytest_vllm.emulator.vision import colour_of, digit_of, shape_of

SCHEMA = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 40},
                                           "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                                           "days": {"type": "integer", "minimum": 1}},
          "required": ["city", "unit"], "additionalProperties": False}
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": SCHEMA}}


def tokens(n: int, salt: str = "") -> list[str]:
    return [f"{salt}t{i}" for i in range(n)]


def test_block_hashes_chain_full_blocks_only():
    assert len(block_hashes(tokens(47), 16)) == 2
    a, b = block_hashes(tokens(32), 16), block_hashes(["x", *tokens(32)[1:]], 16)
    assert a[0] != b[0] and a[1] != b[1]  # a change in block 0 changes every later hash (chained)


def test_prefix_cache_hits_whole_leading_blocks_and_recomputes_the_last_token():
    cache = PrefixCache(block_size=16, capacity_blocks=100)
    assert cache.lookup_and_insert(tokens(40)) == 0
    assert cache.lookup_and_insert(tokens(40)) == 32
    assert cache.lookup_and_insert(tokens(32)) == 16  # 32 cached, but the last token is always computed
    assert cache.lookup_and_insert(tokens(20) + tokens(20, "other")) == 16  # shared first block only


def test_prefix_cache_evicts_least_recently_used():
    cache = PrefixCache(block_size=16, capacity_blocks=2)
    cache.lookup_and_insert(tokens(33, "a"))
    cache.lookup_and_insert(tokens(33, "b"))
    assert cache.lookup_and_insert(tokens(33, "a")) == 0


def test_timing_without_noise_is_the_formula():
    clock = Clock(LatencyModel(base_ms=4, prefill_ms_per_token=0.5, decode_ms_per_token=2))
    timing = clock.timing(prompt_tokens=100, cached_tokens=64, output_tokens=5)
    assert timing.ttft_s == pytest.approx((4 + 0.5 * 36) / 1000)
    assert timing.token_gaps_s == pytest.approx((0.002,) * 4)
    assert clock.timing(100, 64, 1, uncached_tokens=100).ttft_s == pytest.approx((4 + 50) / 1000)


def test_noise_is_seeded_with_mean_one_and_the_asked_cv():
    model = LatencyModel(base_ms=10, prefill_ms_per_token=0, noise_cv=0.2, seed=7)
    clock, again = Clock(model), Clock(model)
    samples = [clock.timing(1, 0, 1).ttft_s * 1000 for _ in range(4000)]
    assert samples[:50] == [again.timing(1, 0, 1).ttft_s * 1000 for _ in range(50)]
    mean = statistics.fmean(samples)
    assert mean == pytest.approx(10, rel=0.02)
    assert statistics.pstdev(samples) / mean == pytest.approx(0.2, abs=0.015)


def test_tokenizer_round_trips_output_and_splits_prompts():
    text = "Hello, world!\n1. Step one."
    assert "".join(output_pieces(text)) == text
    args = json.dumps({"city": "Paris", "unit": "celsius"})
    assert "".join(json_pieces(args)) == args and len(json_pieces(args)) > 5
    assert prompt_tokens("Hi, you!") == ["Hi", ",", "you", "!"]


def test_example_for_is_valid_against_the_schema():
    jsonschema.validate(example_for(SCHEMA), SCHEMA)


@pytest.mark.parametrize("fault, check", [
    ("tool_args_invalid_json", lambda raw: pytest.raises(ValueError, json.loads, raw)),
    ("tool_args_schema_violation",
     lambda raw: pytest.raises(jsonschema.ValidationError, jsonschema.validate, json.loads(raw), SCHEMA)),
])
def test_argument_faults_break_what_they_say(fault, check):
    request = {"messages": [{"role": "user", "content": "hi"}], "tools": [TOOL], "tool_choice": "required"}
    answer = Scripts([], []).answer(request, [], frozenset({fault}))
    check(answer.tool_calls[0].arguments)


def test_named_choice_makes_exactly_one_call_of_that_function():
    case = {"prompt": "Paris and Lyon", "calls": [{"name": "get_weather", "arguments": {"city": "Paris"}},
                                                  {"name": "get_weather", "arguments": {"city": "Lyon"}}]}
    request = {"messages": [{"role": "user", "content": "Paris and Lyon"}], "tools": [TOOL],
               "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}
    calls = Scripts([], [case]).answer(request, [], frozenset()).tool_calls
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", {"city": "Paris"})]


def test_scripted_answers_and_wrong_answer_fault():
    cases = [{"id": "a", "kind": "arithmetic", "prompt": "What is 6 times 7?", "answer": 42},
             {"id": "p", "kind": "plan", "prompt": "Plan a trip.", "steps": 4}]
    scripts = Scripts(cases, [])
    ask = {"messages": [{"role": "user", "content": "What is 6 times 7?\n\nEnd with ANSWER."}]}
    assert scripts.answer(ask, [], frozenset()).content.endswith("ANSWER: 42")
    assert scripts.answer(ask, [], frozenset({"wrong_answer"})).content.endswith("ANSWER: 49")
    plan = scripts.answer({"messages": [{"role": "user", "content": "Plan a trip."}]}, [], frozenset()).content
    assert len(plan.splitlines()) == 4


def test_tool_results_are_summarised():
    messages = [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": []},
                {"role": "tool", "content": json.dumps({"temperature": 18, "sky": "clear"})}]
    answer = Scripts([], []).answer({"messages": messages}, [], frozenset())
    assert "temperature 18" in answer.content and "sky clear" in answer.content


def _png(draw) -> bytes:
    image = Image.new("RGB", (96, 96), "white")
    draw(ImageDraw.Draw(image))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_eyes_read_colour_shape_and_digit():
    assert colour_of(_png(lambda d: d.ellipse([10, 10, 86, 86], fill="orange"))) == "orange"
    assert shape_of(_png(lambda d: d.ellipse([10, 10, 86, 86], fill="orange"))) == "circle"
    assert shape_of(_png(lambda d: d.rectangle([10, 10, 86, 86], fill="blue"))) == "square"
    assert shape_of(_png(lambda d: d.polygon([(48, 10), (10, 86), (86, 86)], fill="red"))) == "triangle"
    font = ImageFont.load_default(size=60)
    for digit in "0123456789":
        assert digit_of(_png(lambda d, t=digit: d.text((48, 48), t, fill="black", font=font, anchor="mm"))) == digit


def test_model_from_a_profiles_vllm_flags():
    model = EmulatedModel.from_vllm_flags({"max-model-len": 8192, "reasoning_parser": "qwen3",
                                           "tool-call-parser": "hermes", "limit-mm-per-prompt": '{"image": 2}',
                                           "enable-prefix-caching": False}, served_name="m")
    assert (model.served_name, model.max_model_len, model.reasoning_parser, model.max_images) == ("m", 8192, "qwen3", 2)
    assert model.tool_parser is None  # --tool-call-parser without --enable-auto-tool-choice parses nothing
    assert model.prefix_caching is False


def test_a_call_cut_by_max_tokens_comes_back_as_text_like_vllm():
    answer = Answer("think", "", [ToolCall("get_weather", '{"city": "Paris", "unit": "celsius"}')])
    cut = present(answer, {"max_tokens": 6, "tool_choice": "required"}, EmulatedModel(), frozenset())
    assert (cut.finish_reason, cut.completion_tokens, cut.calls) == ("length", 6, [])
    assert cut.content.startswith('<tool_call>\n{"name": "get_weather", "arguments": {')
    whole = present(answer, {"max_tokens": 100, "tool_choice": "required"}, EmulatedModel(), frozenset())
    assert whole.finish_reason == "tool_calls" and whole.content == "" and len(whole.calls) == 1
