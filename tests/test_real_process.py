"""Real vLLM on CPU through the process backend: the embedded default as users run it (slow: minutes)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from conftest import DATA, PROFILES, SUITES
from interrupting import server_processes

pytestmark = pytest.mark.real
HEALTH = str(SUITES / "medium" / "test_health.py")
PROFILE_DIRS = (f"--profiles-dir={DATA / 'profiles'}", f"--profiles-dir={PROFILES}")


def _summary(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "reports" / "latest.json").read_text())


def test_health_suite_passes_on_real_vllm_and_leaves_nothing_behind(run_suite, tmp_path):
    start = time.monotonic()
    result = run_suite(HEALTH, "--profile=cpu_tiny_8061", *PROFILE_DIRS)
    wall = time.monotonic() - start
    result.assert_outcomes(passed=6, skipped=2)
    assert server_processes(8061) == []
    summary = _summary(tmp_path)
    deployment = summary["profiles"]["cpu_tiny_8061"]
    assert deployment["engine_config"]["enable_prefix_caching"] is True  # V1 default, read from the engine log
    assert deployment["vllm_version"].startswith("0.")
    assert Path(deployment["log"]).is_file()
    timings = deployment["timings"]
    print(f"\nREAL cpu_tiny: start->healthy {timings['start_to_healthy_s']:.1f}s, "
          f"healthy->fixture {timings['healthy_to_ready_s'] * 1000:.0f}ms, whole run {wall:.1f}s")


def test_server_dying_at_start_fails_within_two_seconds_quoting_vllm(run_suite):
    result = run_suite(HEALTH, "--profile=cpu_tiny_dies", *PROFILE_DIRS)
    assert result.ret == 1
    out = result.stdout.str()
    assert "exited with code 1 during start-up" in out
    assert "User-specified max_model_len (65536) is greater than the derived max_model_len" in out, out[-3000:]
    assert "[max_model_len_too_large]" in out  # the diagnosis names the cause
    assert server_processes(8063) == []
    noticed = [float(x) for x in re.findall(r"noticed (\d+\.\d+)s after it exited", out)]
    assert noticed, out[-2000:]
    print(f"\nREAL process exit -> failure noticed: {noticed[0]:.2f}s")
    assert noticed[0] < 2.0


def test_preflight_refuses_an_unknown_flag_before_starting_anything(run_suite):
    start = time.monotonic()
    result = run_suite(HEALTH, "--profile=cpu_tiny_bad_flag", *PROFILE_DIRS)
    assert result.ret == 1
    out = result.stdout.str()
    assert "preflight refused profile 'cpu_tiny_bad_flag' before starting anything" in out
    assert "VF001" in out and "no-such-vllm-flag" in out
    assert "starting, process backend" not in out
    assert time.monotonic() - start < 30
