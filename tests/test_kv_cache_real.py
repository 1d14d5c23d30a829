"""The KV-cache suite on real vLLM CPU with the tiny model (slow: a server start each, minutes).

Prefix caching on (vLLM V1's default): both workloads reach the profile's per-workload acceleration and
/metrics counts their hits; every test of the suite passes. `--no-enable-prefix-caching`: no speed-up, no
hits, on both workloads, and a profile demanding ×2 fails both saying why.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from pytest_vllm.kv_cache import WORKLOADS, acceleration_minimum
from pytest_vllm.profile import load_profile

from conftest import DATA, PROFILES, SUITES

pytestmark = pytest.mark.real
KV_SUITE = str(SUITES / "medium" / "test_kv_cache.py")
PROFILE_DIRS = (f"--profiles-dir={DATA / 'profiles'}", f"--profiles-dir={PROFILES}")


def _measurements(tmp_path, profile: str) -> dict:
    return json.loads((tmp_path / "reports" / "latest.json").read_text())["measurements"][profile]


def _outcomes(junit) -> dict[str, str]:
    """test name -> passed / failed / skipped, from the JUnit XML the run wrote."""
    out = {}
    for case in ET.parse(junit).iter("testcase"):
        failed = case.find("failure") is not None or case.find("error") is not None
        out[case.get("name")] = "failed" if failed else ("skipped" if case.find("skipped") is not None else "passed")
    return out


def _show(label: str, kv: dict) -> str:
    lines = [f"REAL {label} {kv['workload']}: acceleration x{kv['acceleration']:.2f} "
             f"(interval x{kv['interval'][0]:.2f}-x{kv['interval'][1]:.2f}); "
             f"prefix caching {kv['prefix_caching']['effective']}"]
    for cache in ("miss", "hit"):
        s = kv[cache]
        t = s["ttft_ms"]
        lines.append(f"  {cache}: median {t['median']:.1f} ms (IQR {t['q1']:.1f}-{t['q3']:.1f}, min {t['min']:.1f}, "
                     f"max {t['max']:.1f}), {s['prompt_tokens_median']} prompt tokens, client mean "
                     f"{s['client_ttft_mean_ms']:.1f} ms vs server histogram {s['server_ttft_mean_ms']} ms, "
                     f"/metrics {s['metrics']}")
    return "\n".join(lines)


def test_prefix_caching_on_accelerates_both_workloads_and_metrics_confirm(run_suite, tmp_path):
    junit = tmp_path / "junit.xml"
    result = run_suite(KV_SUITE, "--profile=kv_tiny_on", *PROFILE_DIRS, f"--junitxml={junit}")
    kv = _measurements(tmp_path, "kv_tiny_on")
    print("\n" + "\n".join(_show("ON", kv[f"kv_cache/{w}"]) for w in WORKLOADS))
    long = kv["kv_cache/long_prefix"]
    assert long["hit"]["prompt_tokens_median"] >= 2500
    assert long["hit"]["metrics"]["hit_rate"] > 0.9
    agent = kv["kv_cache/agent_conversation"]
    assert agent["hit"]["prompt_tokens_median"] >= 1500  # the history grows from ~1.2k to ~3.7k tokens
    assert agent["hit"]["metrics"]["hit_rate"] > 0.75  # each turn finds the previous one cached, not its new text
    profile = load_profile("kv_tiny_on", [DATA / "profiles", PROFILES])
    for workload in WORKLOADS:
        measured = kv[f"kv_cache/{workload}"]
        minimum, _ = acceleration_minimum(profile, workload)
        assert measured["acceleration"] >= minimum, _show("ON", measured)
        assert measured["prefix_caching"]["effective"] == "on"
        assert measured["hit"]["metrics"]["prefix_cache_hits"] > 0
        assert measured["miss"]["metrics"]["prefix_cache_hits"] == 0, "the salt keeps MISS rounds cold"
    outcomes = _outcomes(junit)
    assert len(outcomes) == 8 and set(outcomes.values()) == {"passed"}, result.stdout.str()[-3000:]


def test_prefix_caching_off_gives_no_speed_up_and_the_suite_says_it_is_off(run_suite, tmp_path):
    junit = tmp_path / "junit.xml"
    result = run_suite(KV_SUITE, "--profile=kv_tiny_off", *PROFILE_DIRS, "-k", "acceleration", f"--junitxml={junit}")
    kv = _measurements(tmp_path, "kv_tiny_off")
    print("\n" + "\n".join(_show("OFF", kv[f"kv_cache/{w}"]) for w in WORKLOADS))
    result.assert_outcomes(failed=2)
    failures = {case.get("name"): case.find("failure").text for case in ET.parse(junit).iter("testcase")
                if case.find("failure") is not None}
    assert set(failures) == {f"test_kv_cache_acceleration[kv_tiny_off-{w}]" for w in WORKLOADS}
    for text in failures.values():
        assert "is below the required ×2" in text and "Prefix caching is OFF on this deployment" in text
        assert "enable-prefix-caching: false (--no-enable-prefix-caching)" in text
    for workload in WORKLOADS:
        measured = kv[f"kv_cache/{workload}"]
        assert 0.75 <= measured["acceleration"] <= 1.33, _show("OFF", measured)
        assert measured["hit"]["metrics"]["prefix_cache_hits"] == 0
