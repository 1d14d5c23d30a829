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
    failure = records["emu_grid_broken"]["failure"]  # kept as data: headline, diagnosis, log
    assert "not healthy after 2s" in failure["headline"]
    assert failure["diagnosis"]["cause"] == "health_timeout_loading" and failure["log"].endswith("-emulator.log")
    summary = json.loads((tmp_path / "reports" / "latest.json").read_text())
    assert summary["deploy_failures"]["emu_grid_broken"] == failure
    report = (tmp_path / "reports" / "grid-report.md").read_text()
    assert "`emu_grid_broken` | deploy_failed" in report and "not healthy after 2s" in report
    assert "— diagnosis: health timeout" in report
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
