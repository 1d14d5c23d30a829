"""suites/medium/test_kv_cache.py run as users run it, on the emulator: a good server passes; a server whose
cache does not speed up the prefill, and one with prefix caching off, fail with the cause named."""

from __future__ import annotations

import os

import yaml

from conftest import SUITES

KV_SUITE = str(SUITES / "medium" / "test_kv_cache.py")


def _profile(tmp_path, name: str, server: dict | None = None) -> str:
    path = tmp_path / f"{name}.yml"
    path.write_text(yaml.safe_dump({
        "deployment": {"backend": "emulator", "port": 0, "emulator": {"latency": {
            "base_ms": 2.0, "prefill_ms_per_token": 0.05, "decode_ms_per_token": 0.5, "noise_cv": 0.02}}},
        "model": {"served_name": "emu-kv"}, "server": server or {},
        "thresholds": {"kv_cache_acceleration_min": 2.0, "kv_rounds": 5}, "timeouts": {"health": 20, "test": 60}}))
    return str(path)


def test_good_server_passes_every_kv_test(run_suite, tmp_path):
    result = run_suite(KV_SUITE, f"--profile={_profile(tmp_path, 'emu_good')}", "--no-history", timeout=300)
    result.assert_outcomes(passed=8)
    assert not list((tmp_path / "reports").glob("benchmarks/*/*.json")), "--no-history saves nothing"


def test_cache_without_speed_up_fails_the_acceleration_test(run_suite, tmp_path, monkeypatch):
    monkeypatch.setitem(os.environ, "PYTEST_VLLM_EMULATOR_FAULTS", "no_cache_speedup")
    result = run_suite(KV_SUITE, f"--profile={_profile(tmp_path, 'emu_no_speedup')}", "--no-history",
                       "-k", "acceleration and long_prefix", timeout=300)
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "is below the required ×2" in out and "Prefix caching is ON" in out
    assert "prefill is not what the MISS rounds wait for" in out


def test_prefix_caching_off_fails_saying_it_is_off(run_suite, tmp_path):
    profile = _profile(tmp_path, "emu_off", server={"enable-prefix-caching": False})
    result = run_suite(KV_SUITE, f"--profile={profile}", "--no-history", "-k", "acceleration and long_prefix",
                       timeout=300)
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "Prefix caching is OFF on this deployment" in out and "--no-enable-prefix-caching" in out


def test_hit_rate_below_the_profile_target_fails_and_figures_reach_junit(run_suite, tmp_path):
    """thresholds.prefix_cache_hit_rate_min (the seeds' "> 70 %") is checked on /metrics; the key figures of
    every acceleration measurement land in JUnit XML as test properties."""
    path = _profile(tmp_path, "emu_rate")
    data = yaml.safe_load(open(path))
    data["thresholds"]["prefix_cache_hit_rate_min"] = 1.01  # more than every token: no server can meet it
    open(path, "w").write(yaml.safe_dump(data))
    junit = tmp_path / "junit.xml"
    result = run_suite(KV_SUITE, f"--profile={path}", "--no-history", "-k", "acceleration and long_prefix",
                       f"--junitxml={junit}", timeout=300)
    result.assert_outcomes(failed=1)
    assert "below the 101% required (thresholds.prefix_cache_hit_rate_min" in result.stdout.str()
    xml = junit.read_text()
    for name in ("ttft_miss_ms_median", "ttft_hit_ms_median", "acceleration", "acceleration_interval",
                 "prefix_cache_hit_rate", "prompt_tokens_median", "prefix_caching_effective"):
        assert f'<property name="{name}" value=' in xml, name
