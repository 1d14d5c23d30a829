"""Unhealthy is not "starting" (issue 13, item 4): /health answering 503 fails the wait at once with what to
look at; a diagnosis that needs a log says when there is none; a failed deployment is reported once."""

from __future__ import annotations

import time

import pytest

from pytest_vllm.emulator import EmulatorServer
from pytest_vllm.errors import EngineUnhealthy
from pytest_vllm.waiting import UNHEALTHY_AFTER, HttpHealth

from conftest import SUITES

HEALTH = str(SUITES / "medium" / "test_health.py")
MESSAGE = "the engine reports unhealthy (503)"


def error_reports(out: str) -> str:
    """The ERRORS section only: pytest's short summary repeats each message, in full when CI is set."""
    return out.split("short test summary info")[0]


def test_three_503_in_a_row_are_unhealthy_and_any_other_answer_resets_the_count():
    with EmulatorServer(faults=["unhealthy_503"]) as server:
        health = HttpHealth(server.base_url)
        for _ in range(UNHEALTHY_AFTER - 1):
            assert health.ready() == (False, f"GET {health.url} -> 503 ({len(health.unhealthy)} in a row)")
        server.faults = frozenset()  # one good answer in between: a blip, not a state
        assert health.ready()[0]
        server.faults = frozenset({"unhealthy_503"})
        for _ in range(UNHEALTHY_AFTER - 1):
            health.ready()
        with pytest.raises(EngineUnhealthy, match=r"answered 503 3 times in a row"):
            health.ready()


def test_external_endpoint_answering_503_fails_fast_reported_once(run_suite):
    with EmulatorServer(faults=["unhealthy_503"]) as server:
        start = time.monotonic()
        result = run_suite(HEALTH, f"--base-url={server.base_url}", "--health-timeout=120")
        elapsed = time.monotonic() - start
    out = error_reports(result.stdout.str())
    print(out[out.index("deployment of profile"):][:1500])
    assert elapsed < 30, f"took {elapsed:.0f}s: the wait ran on as if the server were starting"
    result.assert_outcomes(errors=8)  # every test of the health suite
    assert out.count(MESSAGE) == 1, "the failure is shown in full once, on the first test"
    assert out.count("deployment of profile 'external' failed: shown in full at suites/medium/test_health.py::"
                     "test_health_endpoint_answers_200[external]") == 7
    assert "look at: the server's own log where it runs" in out
    assert "no cause read from a log: pytest-vllm cannot see this server's log [no_log]" in out
    assert "vLLM never got going" not in out and "not healthy after" not in out


def test_started_deployment_answering_503_points_at_its_log(run_suite, monkeypatch):
    monkeypatch.setenv("PYTEST_VLLM_EMULATOR_FAULTS", "unhealthy_503")
    result = run_suite(HEALTH, "--profile=emulator")
    out = error_reports(result.stdout.str())
    result.assert_outcomes(errors=8)  # every test of the health suite
    assert out.count(MESSAGE) == 1
    assert "look at: the server log (last lines below) for the engine's first error" in out
    assert "| " in out and "faults: unhealthy_503" in out  # the log's lines are quoted
    assert "full log: " in out and "-emulator.log" in out


def test_timeout_on_an_endpoint_without_a_log_says_no_cause_can_be_read(run_suite):
    with EmulatorServer(faults=["slow_start"]) as server:  # up, never answering: vLLM before its engine is ready
        result = run_suite(HEALTH, f"--base-url={server.base_url}", "--health-timeout=2")
    out = result.stdout.str()
    assert "not healthy after 2s" in out and "[no_log]" in out
    assert "vLLM never got going" not in out and "(empty log)" not in out
