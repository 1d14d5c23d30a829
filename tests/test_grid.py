"""Grid over profiles on the emulator: one deployment at a time, failures recorded, kill and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from conftest import DATA, REPO, SUITES

HEALTH = str(SUITES / "medium" / "test_health.py")
GRID = "--profile=emu_grid_a,emu_grid_b,emu_grid_broken"


def _args(tmp_path):
    return [HEALTH, GRID, f"--profiles-dir={DATA / 'profiles'}", f"--reports-dir={tmp_path / 'reports'}",
            "-p", "no:cacheprovider", "--rootdir", str(REPO), "-c", str(REPO / "pyproject.toml")]


def _state(tmp_path) -> dict:
    return json.loads((tmp_path / "reports" / "grid-state.json").read_text())


def test_grid_runs_each_profile_records_the_broken_one_and_ranks(pytester, tmp_path):
    result = pytester.runpytest_subprocess(*_args(tmp_path), "--grid-baseline=emu_grid_a", timeout=300)
    out = result.stdout.str()
    # Profiles are brought up one after another, never together.
    starts = [line for line in out.splitlines() if ": starting," in line]
    assert [s.split()[1] for s in starts] == ["emu_grid_a", "emu_grid_b", "emu_grid_broken"]
    records = _state(tmp_path)["records"]
    assert records["emu_grid_a"]["status"] == "passed"
    assert records["emu_grid_b"]["status"] == "passed"
    assert records["emu_grid_broken"]["status"] == "deploy_failed"
    assert "not healthy after 2s" in records["emu_grid_broken"]["failure"]
    report = (tmp_path / "reports" / "grid-report.md").read_text()
    assert "`emu_grid_broken` | deploy_failed" in report and "not healthy after 2s" in report
    assert (tmp_path / "reports" / "grid-report.png").stat().st_size > 1000
    # Effective config is what the server says, not what the flags say.
    rows = {r["profile"]: r for r in json.loads((tmp_path / "reports" / "grid-report.json").read_text())["rows"]}
    assert rows["emu_grid_b"]["prefix_caching_effective"] is False
    assert rows["emu_grid_a"]["prefix_caching_effective"] is True


def test_killed_grid_resumes_without_rerunning_finished_profiles(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "pytest", *_args(tmp_path)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            state_path = tmp_path / "reports" / "grid-state.json"
            if state_path.is_file() and "emu_grid_a" in _state(tmp_path)["records"]:
                break
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)  # no teardown, no atexit: the harshest interruption
    finally:
        proc.wait(10)
    first = _state(tmp_path)["records"]
    assert "emu_grid_a" in first and "emu_grid_broken" not in first

    resumed = subprocess.run([sys.executable, "-m", "pytest", *_args(tmp_path), "--resume"], cwd=tmp_path,
                             env=env, capture_output=True, text=True, timeout=300)
    out = resumed.stdout
    assert "--resume: skipping finished profiles emu_grid_a" in out
    assert "emu_grid_a (emulator): starting" not in out
    assert "emu_grid_broken (emulator): starting" in out
    records = _state(tmp_path)["records"]
    assert set(records) == {"emu_grid_a", "emu_grid_b", "emu_grid_broken"}
    assert records["emu_grid_a"] == first["emu_grid_a"]  # kept as measured, not re-run
    report = (tmp_path / "reports" / "grid-report.md").read_text()
    assert all(f"`{p}`" in report for p in records)


def test_failing_baseline_of_a_grid_file_aborts_the_grid(pytester, tmp_path):
    """As the seeds' script did (002: "Si baseline échoue → ABORT grid search"): the baseline runs first,
    and when it does not deploy the others are not started."""
    grid = tmp_path / "grid.yml"
    grid.write_text("baseline: emu_grid_broken\ngrid: [emu_grid_a, emu_grid_b, emu_grid_broken]\n")
    args = [a if not a.startswith("--profile=") else f"--profile={grid}" for a in _args(tmp_path)]
    result = pytester.runpytest_subprocess(*args, timeout=300)
    out = result.stdout.str()
    assert "emu_grid_broken (emulator): starting" in out
    assert "emu_grid_a (emulator): starting" not in out and "emu_grid_b (emulator): starting" not in out
    assert "grid aborted: the baseline profile 'emu_grid_broken' failed to deploy" in out
    state = _state(tmp_path)
    assert set(state["records"]) == {"emu_grid_broken"} and "--grid-keep-going" in state["aborted"]
    report = (tmp_path / "reports" / "grid-report.md").read_text()
    assert "**Grid aborted:**" in report and "2 not run (emu_grid_a, emu_grid_b" in report


def test_keep_going_runs_the_grid_past_a_failing_baseline(pytester, tmp_path):
    result = pytester.runpytest_subprocess(*_args(tmp_path), "--grid-baseline=emu_grid_broken",
                                           "--grid-keep-going", timeout=300)
    starts = [line.split()[1] for line in result.stdout.str().splitlines() if ": starting," in line]
    assert starts == ["emu_grid_broken", "emu_grid_a", "emu_grid_b"]  # the baseline first, then the rest
    assert set(_state(tmp_path)["records"]) == {"emu_grid_a", "emu_grid_b", "emu_grid_broken"}
    assert "aborted" not in _state(tmp_path)


def _record(status="passed", miss=None, hit=None, accel=None, gpu=0.85, prefix=None, failure=None,
            acceleration_min=None, messages=()):
    kv = {} if accel is None else {"kv_cache/agent": {
        "acceleration": accel, "interval": [accel * 0.9, accel * 1.1], "miss_ms_median": miss, "miss_ms_iqr": 5.0,
        "hit_ms_median": hit, "hit_ms_iqr": 1.0}}
    return {"status": status, "duration_s": 70.0, "failure": failure, "failed_tests": [],
            "failure_messages": list(messages), "acceleration_min": acceleration_min, "measurements": kv,
            "requested": {"gpu-memory-utilization": gpu, "enable-prefix-caching": prefix,
                          "enable-chunked-prefill": True, "max-num-seqs": None},
            "deployment": {"engine_config": {"enable_prefix_caching": prefix is not False}}}


def test_grid_report_has_the_seeds_columns_tradeoffs_failures_and_a_recommendation(tmp_path):
    from pytest_vllm.grid import GridState, render_report

    state = GridState(tmp_path / "grid-state.json", ["safe", "champion", "fast_but_slow_hit", "greedy", "oom"])
    state.data["records"] = {
        "safe": _record(miss=3150.0, hit=1981.25, accel=1.59, acceleration_min=1.48),
        "champion": _record(miss=2928.82, hit=908.67, accel=3.22, acceleration_min=3.0),
        "fast_but_slow_hit": _record(miss=1000.0, hit=950.0, accel=1.05),  # below the 1.5 floor
        "greedy": _record(status="failed", miss=2000.0, hit=500.0, accel=4.0, gpu=0.95, prefix=True,
                          messages=["peak VRAM 23.9 GiB above 21.59"]),
        "oom": _record(status="deploy_failed", gpu=0.95, prefix=True,
                       failure="container exited with code 1\ndiagnosis: CUDA out of memory: lower "
                               "--gpu-memory-utilization"),
    }
    md = render_report(state, "acceleration", "safe", tmp_path).read_text()
    table = md.split("\n## ")[0]
    for column in ("TTFT MISS ms", "TTFT HIT ms", "acceleration (interval)", "gain %", "Δ MISS", "Δ HIT", "Δ accel"):
        assert column in table
    champion_row = next(line for line in table.splitlines() if "`champion`" in line)
    # the seeds' own figures: x3.22, gain 69 %, +103 % acceleration (they wrote +102 %, truncated) and -54 % HIT
    # against safe_conservative
    assert "×3.22" in champion_row and "| 69.0 |" in champion_row and "| 0.85 |" in champion_row
    assert "+103 %" in champion_row and "-54 %" in champion_row and "1 min 10 s" in champion_row
    assert "## Trade-offs against the baseline" in md and "gpu-memory-utilization 0.95 vs 0.85" in md
    failures = md.split("## Failures")[1].split("##")[0]
    assert "`oom` | OOM — deploy_failed | container exited with code 1 — diagnosis: CUDA out of memory" in failures
    recommendation = md.split("## Recommendation")[1]
    assert "Rule: the fastest median TTFT on a cache hit among the profiles that deployed" in recommendation
    assert "**Champion: `champion`**" in recommendation  # greedy is faster on HIT but failed a test
    assert "`greedy`: failed" in recommendation and "`fast_but_slow_hit`: acceleration ×1.05 below ×1.5" in md
    assert "{" not in md  # no JSON or dict printed into the Markdown
