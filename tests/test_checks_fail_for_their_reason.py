"""Checks a broken server used to pass: each now fails on the very breakage, and passes on a good server.

The suites run as users run them (pytest in a subprocess, `--base-url`) against the emulator started
here in a thread; the breakage is an emulator fault, or the emulated model or counters replaced for
this one run (what a broken deployment would do), or a profile that claims what the run lacks.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_vllm.emulator import EmulatorServer, LatencyModel
from pytest_vllm.emulator.answers import Answer

from conftest import PROFILES, SUITES

KEY = "holes-test-key-0123456789abcdefghijklmn"
HEALTH, TOOLS = SUITES / "medium" / "test_health.py", SUITES / "medium" / "test_tools.py"
VISION = SUITES / "medium_vl" / "test_vision.py"
FAST = LatencyModel(base_ms=1.0, prefill_ms_per_token=0.01, decode_ms_per_token=0.05)


def _profile(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "emulator_external.yml"
    path.write_text(f"extends: {PROFILES / 'emulator.yml'}\ndeployment:\n  backend: external\n{extra}")
    return path


Breakage = Callable[[EmulatorServer], None]


def _run(run_suite, tmp_path: Path, suite: Path, select: str, *, breakage: Breakage | None = None,
         faults: list[str] | None = None, key: str | None = KEY, profile_extra: str | None = "") -> pytest.RunResult:
    """One suite run; `profile_extra=None` runs without a profile (`--base-url` alone claims nothing)."""
    profile = [] if profile_extra is None else [f"--profile={_profile(tmp_path, profile_extra)}"]
    with EmulatorServer(faults=faults or [], api_key=key, latency=FAST, log_path=tmp_path / "emulator.log") as emu:
        if breakage is not None:
            breakage(emu)
        return run_suite(str(suite), *profile, f"--base-url={emu.base_url}",
                         *([f"--api-key={key}"] if key else []), "-k", select, "-rA", timeout=300)


def test_a_key_the_profile_claims_is_required_not_skipped(run_suite, tmp_path, monkeypatch):
    monkeypatch.delenv("PYTEST_VLLM_NO_SUCH_KEY", raising=False)
    claimed = "auth:\n  api_key_env: PYTEST_VLLM_NO_SUCH_KEY\n  generate: false\n"
    result = _run(run_suite, tmp_path, HEALTH, "test_api_requires_the_key", key=None, profile_extra=claimed)
    result.assert_outcomes(failed=1)
    assert "names auth.api_key_env: PYTEST_VLLM_NO_SUCH_KEY, but no API key was given" in result.stdout.str()
    unclaimed = _run(run_suite, tmp_path, HEALTH, "test_api_requires_the_key", key=None, profile_extra=None)
    unclaimed.assert_outcomes(passed=0, skipped=1)  # no profile, no claim: nothing to show


def test_counters_that_do_not_move_fail_the_metrics_check(run_suite, tmp_path):
    good = _run(run_suite, tmp_path, HEALTH, "test_metrics_count")
    good.assert_outcomes(passed=1)

    def frozen(emu: EmulatorServer) -> None:
        emu.metrics.finished = lambda **_: None  # /metrics answers, its counters never count a request
    broken = _run(run_suite, tmp_path, HEALTH, "test_metrics_count", breakage=frozen)
    broken.assert_outcomes(failed=1)
    assert "moved vllm:prompt_tokens_total by 0" in broken.stdout.str()


@pytest.mark.parametrize("fault, said", [("tool_args_invalid_json", "are not valid JSON"),
                                         ("tool_args_schema_violation", "break the tool's schema")])
def test_auto_tool_choice_fails_on_a_call_no_application_can_run(run_suite, tmp_path, fault, said):
    result = _run(run_suite, tmp_path, TOOLS, "test_auto_tool_choice_answers", faults=[fault])
    result.assert_outcomes(failed=1)
    assert said in result.stdout.str()


def test_auto_tool_choice_fails_on_an_empty_200(run_suite, tmp_path):
    def mute(emu: EmulatorServer) -> None:
        emu.scripts.answer = lambda *args: Answer("", "")
    result = _run(run_suite, tmp_path, TOOLS, "test_auto_tool_choice_answers", breakage=mute)
    result.assert_outcomes(failed=1)
    assert "answered neither a call nor text" in result.stdout.str()


def test_a_vision_answer_naming_every_option_matches_no_case(run_suite, tmp_path):
    def everything(emu: EmulatorServer) -> None:
        emu.scripts._look = lambda images, question, faults: Answer(
            "", "red green blue orange purple black, a square, circle or triangle, digits 0 1 2 3 4 5 6 7 8 9")
    result = _run(run_suite, tmp_path, VISION, "test_the_answer_matches_the_image", breakage=everything)
    result.assert_outcomes(failed=6)
    assert "expected 'red' and no other colour, the answer names ['red', 'green', 'blue'" in result.stdout.str()


def test_a_final_answer_is_read_as_numbers_2018_is_not_18(run_suite, tmp_path):
    def off_by_a_millennium(emu: EmulatorServer) -> None:
        emu.scripts._after_tools = lambda messages, faults: Answer("", "In 2018 it was sunny in Paris.")
    result = _run(run_suite, tmp_path, TOOLS, "test_full_turn_uses_the_tool_results and weather_paris",
                  breakage=off_by_a_millennium)
    result.assert_outcomes(failed=1)
    assert "the reply does not mention ['18']" in result.stdout.str()
