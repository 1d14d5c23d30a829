"""TTFT history through pytest-benchmark: the virtual clock, reading stored runs, and whole runs on the emulator
(two runs give a comparable history and a plot; a slower third run fails the test that measured it)."""

from __future__ import annotations

import functools
import json
import os
import xml.etree.ElementTree as ET

import yaml

from pytest_vllm.history import TTFT_CLOCK, VirtualClock, load_runs

from conftest import SUITES

KV_SUITE = str(SUITES / "medium" / "test_kv_cache.py")


def test_virtual_clock_makes_pedantic_durations_exact():
    clock = VirtualClock()
    start = clock()
    clock.advance(0.123)
    assert clock() - start == 0.123
    assert TTFT_CLOCK.__name__ == "ttft_clock"


def _saved(path, when, benchmarks):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"datetime": when, "benchmarks": benchmarks}))


def _bench(key, measurement, data, run_id):
    return {"extra_info": {"history_key": key, "measurement": measurement, "run_id": run_id}, "stats": {"data": data}}


def test_history_is_matched_by_profile_and_deployment_not_machine_folder(tmp_path):
    key = "cpu_tiny@process:tiny"
    _saved(tmp_path / "Linux-CPython-3.11-64bit" / "0002_x.json", "2026-11-23T10:00:00",
           [_bench(key, "long_prefix/ttft_hit", [0.02, 0.03], "bbb")])
    _saved(tmp_path / "Linux-CPython-3.12-64bit" / "0001_x.json", "2026-11-22T10:00:00",
           [_bench(key, "long_prefix/ttft_hit", [0.01], "aaa"), _bench("other@process:tiny", "long_prefix/ttft_hit",
                                                                      [9.0], "ccc")])
    (tmp_path / "Linux-CPython-3.11-64bit" / "0003_broken.json").write_text("{not json")
    runs = load_runs(tmp_path, key, "long_prefix/ttft_hit")
    assert [(r.run_id, r.samples) for r in runs] == [("aaa", [0.01]), ("bbb", [0.02, 0.03])]
    assert runs[1].label == "0002 (2026-11-23 10:00 UTC, run bbb)"


def _profile(dir_, file_name, base_ms, prefill_ms):
    # Same `name` in both files: the same deployment, measured fast then slow.
    path = dir_ / file_name
    path.write_text(yaml.safe_dump({
        "name": "emu_kv",
        "deployment": {"backend": "emulator", "port": 0, "emulator": {"latency": {
            "base_ms": base_ms, "prefill_ms_per_token": prefill_ms, "decode_ms_per_token": 0.5, "noise_cv": 0.03}}},
        "model": {"served_name": "emu-kv"},
        "thresholds": {"kv_cache_acceleration_min": 3.0, "kv_rounds": 8},
        "timeouts": {"health": 20, "test": 60}}))
    return str(path)


def test_two_runs_are_comparable_and_a_slower_run_fails_the_named_test(run_suite, tmp_path, monkeypatch):
    fast = _profile(tmp_path, "fast.yml", base_ms=40, prefill_ms=0.05)
    slow = _profile(tmp_path, "slow.yml", base_ms=80, prefill_ms=0.1)  # x2: far beyond any load spike here
    reports = tmp_path / "reports"
    # A wide tolerance (a slowdown beyond sqrt(2) fails): the fast runs share this machine with other work and
    # must not fail on its spikes; the slow run is x2.
    run = functools.partial(run_suite, KV_SUITE, "-k", "long_prefix", "--regression-tolerance=1.0",
                            "--acceleration-tolerance=1.0", timeout=300)
    first = run(f"--profile={fast}")
    first.assert_outcomes(passed=4)
    second = run(f"--profile={fast}")
    second.assert_outcomes(passed=4)

    saved = sorted((reports / "benchmarks").glob("*/*.json"))
    assert [p.name[:4] for p in saved] == ["0001", "0002"]
    latest = json.loads(saved[-1].read_text())
    by_measurement = {b["extra_info"]["measurement"]: b for b in latest["benchmarks"]}
    assert set(by_measurement) == {"long_prefix/ttft_miss", "long_prefix/ttft_hit"}
    miss = by_measurement["long_prefix/ttft_miss"]
    assert len(miss["stats"]["data"]) == 8, "raw samples are kept"
    assert miss["options"]["timer"] == "ttft_clock"
    info = miss["extra_info"]
    assert info["history_key"] == "emu_kv@emulator:emu-kv" and info["profile"] == "emu_kv"
    assert {"model", "vllm_version", "effective_flags", "gpus"} <= set(info)
    assert info["regression"]["status"] in ("ok", "faster")
    assert [label[:4] for label in info["regression"]["baseline"]] == ["0001"]
    # pytest-benchmark stored exactly the TTFTs the series measured
    assert [round(v * 1000, 2) for v in miss["stats"]["data"]] == info["series"]["rounds_ms"]
    assert (reports / "ttft_history_emu_kv.png").stat().st_size > 10_000

    junit = tmp_path / "junit.xml"
    third = run(f"--profile={slow}", f"--junitxml={junit}")
    third.assert_outcomes(passed=2, failed=2)
    out = third.stdout.str()
    assert "long_prefix/ttft_miss regressed: median" in out and "in runs 0001 (" in out and "(pooled)" in out
    failed = {c.get("name"): c.find("failure") for c in ET.parse(junit).iter("testcase")}
    assert failed["test_ttft_holds_against_history[emu_kv-long_prefix-miss]"] is not None
    assert failed["test_ttft_holds_against_history[emu_kv-long_prefix-hit]"] is not None
    assert failed["test_kv_cache_acceleration[emu_kv-long_prefix]"] is None
    message = failed["test_ttft_holds_against_history[emu_kv-long_prefix-miss]"].get("message")
    assert "regressed" in message and "interval" in message and "tolerance" in message

    # The regressed run is kept but is not a baseline: the next fast run is compared with 0001 and 0002 only.
    fourth = run(f"--profile={fast}")
    fourth.assert_outcomes(passed=4)
    last = json.loads(sorted((reports / "benchmarks").glob("*/*.json"))[-1].read_text())
    baseline = last["benchmarks"][0]["extra_info"]["regression"]["baseline"]
    assert [label[:4] for label in baseline] == ["0001", "0002"]

    # The slow run was slower as a whole (as a busy machine is): the acceleration gate did not move. When the
    # cache stops paying off (hits counted, full prefill paid), it names the loss against the same history.
    monkeypatch.setitem(os.environ, "PYTEST_VLLM_EMULATOR_FAULTS", "no_cache_speedup")
    fifth = run(f"--profile={fast}")
    out = fifth.stdout.str()
    assert "long_prefix/acceleration regressed: acceleration ×1.0" in out
    assert "vs ×" in out and "whole-run drift cancels" in out
    # Its MISS series passed its own gate, but the run failed the acceleration gate: never a baseline.
    saved = json.loads(sorted((reports / "benchmarks").glob("*/*.json"))[-1].read_text())
    miss = {b["extra_info"]["measurement"]: b["extra_info"] for b in saved["benchmarks"]}["long_prefix/ttft_miss"]
    assert miss["regression"]["status"] in ("ok", "faster") and miss["failed_gates"] == ["long_prefix/acceleration"]
    monkeypatch.delitem(os.environ, "PYTEST_VLLM_EMULATOR_FAULTS")
    sixth = run(f"--profile={fast}", "-k", "long_prefix and miss")
    sixth.assert_outcomes(passed=1)
    last = json.loads(sorted((reports / "benchmarks").glob("*/*.json"))[-1].read_text())
    assert [label[:4] for label in last["benchmarks"][0]["extra_info"]["regression"]["baseline"]] == \
        ["0001", "0002", "0004"]
