"""Each functional suite passes on a good server and fails, naming the problem, on the fault it exists for.

The suites run as a user runs them (pytest in a subprocess, `--profile` + `--base-url`) against the
emulator started here in a thread with one fault switched on. Outcomes per suite are read from the
JUnit XML. Run with `-s` to see the fault x suite table.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pytest_vllm.emulator import FAULTS, EmulatorServer, LatencyModel

from conftest import PROFILES, SUITES

API_KEY = "emulator-test-key-0123456789abcdefghij"
SUITE_FILES = {"reasoning": SUITES / "medium" / "test_reasoning.py", "tools": SUITES / "medium" / "test_tools.py",
               "vision": SUITES / "medium_vl" / "test_vision.py"}
ALL = {"reasoning", "tools", "vision"}
# fault -> {suite: pattern every failure of that suite must match}; suites not named must pass.
EXPECTED: dict[str | None, dict[str, str]] = {
    None: {},
    "slow_start": dict.fromkeys(ALL, r"not healthy after"),
    "crash": dict.fromkeys(ALL, r"Server disconnected|Connection refused|Connection reset"),
    "http_5xx": dict.fromkeys(ALL, r"answered 500: EngineCore encountered an issue"),
    "unauthorized_401": dict.fromkeys(ALL, r"answered 401"),
    "no_tool_parser": {"tools": r"add --enable-auto-tool-choice --tool-call-parser hermes"},
    "tool_call_in_content": {"tools": r"tool call was written as text in content"},
    "tool_args_invalid_json": {"tools": r"are not valid JSON"},
    "tool_args_schema_violation": {"tools": r"break the tool's schema"},
    "missing_reasoning": {"reasoning": r"no reasoning text"},
    "think_leak": {"reasoning": r"'<think>' leaked into content"},
    "wrong_answer": {"reasoning": r"wrong answer", "tools": r"wrong answer after the tool results"},
    "no_cache_speedup": {},  # the KV-cache suite's fault: these suites must not be fooled into failing
    "image_ignored": {"vision": r"the answer does not match the (image|\d+ images)"},
    "image_limit_not_enforced": {"vision": r"the image limit is not enforced"},
    # answers the wire accepts but the official client cannot read: the SDK's own error is quoted
    "tool_delta_no_index": {"tools": r"the OpenAI SDK \(openai [\d.]+\) could not read the streamed answer: \w+Error"},
}
TABLE: dict[str, dict[str, str]] = {}


def test_every_fault_has_an_expectation():
    assert set(EXPECTED) - {None} == set(FAULTS)


@pytest.fixture(scope="module")
def profile(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("profiles") / "emulator_external.yml"
    path.write_text(f"extends: {PROFILES / 'emulator.yml'}\ndeployment:\n  backend: external\n")
    return path


@pytest.fixture(scope="module", autouse=True)
def show_table():
    yield
    if TABLE:
        lines = ["", "| fault | reasoning | tools | vision |", "|---|---|---|---|"]
        lines += [f"| {fault} | " + " | ".join(row[s] for s in ("reasoning", "tools", "vision")) + " |"
                  for fault, row in TABLE.items()]
        print("\n".join(lines))


def _outcomes(junit: Path) -> dict[str, list[tuple[str, str]]]:
    """suite -> [(outcome, message)] for every test case of that suite."""
    by_suite: dict[str, list[tuple[str, str]]] = {name: [] for name in SUITE_FILES}
    for case in ET.parse(junit).getroot().iter("testcase"):
        suite = next(n for n, f in SUITE_FILES.items() if f.stem in case.get("classname", ""))
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        if bad is not None:
            by_suite[suite].append(("failed", (bad.get("message") or "") + "\n" + (bad.text or "")))
        elif case.find("skipped") is not None:
            by_suite[suite].append(("skipped", case.find("skipped").get("message") or ""))
        else:
            by_suite[suite].append(("passed", ""))
    return by_suite


@pytest.mark.parametrize("fault", list(EXPECTED), ids=lambda f: f or "good_server")
def test_suites_against_the_emulator(run_suite, profile, tmp_path, fault):
    latency = LatencyModel(base_ms=1.0, prefill_ms_per_token=0.01, decode_ms_per_token=0.05)
    with EmulatorServer(faults=[fault] if fault else [], api_key=API_KEY, latency=latency,
                        log_path=tmp_path / "emulator.log") as emulator:
        junit = tmp_path / "junit.xml"
        run_suite(*map(str, SUITE_FILES.values()), f"--profile={profile}", f"--base-url={emulator.base_url}",
                  f"--api-key={API_KEY}", "--health-timeout=1", f"--junitxml={junit}", timeout=300)
    outcomes = _outcomes(junit)
    counts = {suite: {o: sum(1 for r in results if r[0] == o) for o in ("passed", "failed", "skipped")}
              for suite, results in outcomes.items()}
    TABLE[fault or "(good server)"] = {
        suite: ("FAIL " if c["failed"] else "pass ") + ", ".join(f"{n} {o}" for o, n in c.items() if n)
        for suite, c in counts.items()}
    for suite, results in outcomes.items():
        pattern = EXPECTED[fault].get(suite)
        failures = [message for outcome, message in results if outcome == "failed"]
        if pattern is None:
            assert not failures, f"{suite} suite failed on fault {fault}:\n{failures[0][:1500]}"
            assert counts[suite]["passed"], f"{suite} suite passed nothing on fault {fault}"
        else:
            assert failures, f"{suite} suite did not catch fault {fault}"
            unexplained = [m for m in failures if not re.search(pattern, m)]
            assert not unexplained, (f"{suite} suite failed on {fault} without saying /{pattern}/:\n"
                                     f"{unexplained[0][:1500]}")


def test_dry_run_with_the_emulator_profile(run_suite, monkeypatch):
    """What a user types: `--profile=emulator` (the emulator backend), then a fault through the environment."""
    monkeypatch.delenv("PYTEST_VLLM_EMULATOR_FAULTS", raising=False)
    run_suite(*map(str, SUITE_FILES.values()), "--profile=emulator").assert_outcomes(passed=30, skipped=1)
    monkeypatch.setenv("PYTEST_VLLM_EMULATOR_FAULTS", "think_leak")
    leaky = run_suite(str(SUITE_FILES["reasoning"]), "--profile=emulator")
    leaky.assert_outcomes(passed=7, failed=2)
    assert "'<think>' leaked into content" in leaky.stdout.str()
