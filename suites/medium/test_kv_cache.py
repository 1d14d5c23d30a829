"""KV-cache acceleration: how much faster the first token comes when the prompt's prefix is already cached.

Two workloads (pytest_vllm.kv_cache): the users' multi-turn agent conversation with a growing history,
and one long shared prefix. For each, MISS rounds (salted, never seen) and HIT rounds (primed prefix)
are timed through pytest-benchmark and compared with this profile's history; then the ratio of medians
must reach the profile's `thresholds.kv_cache_acceleration_min` (one number, or one per workload) and hold
against its history (drift-immune: a whole-run slowdown moves MISS and HIT alike), and vLLM's own
`/metrics` counters must confirm that HIT rounds were served from the prefix cache. The report states
whether prefix caching is effectively on, whatever the profile's flags seem to say.
"""

from __future__ import annotations

import pytest

from pytest_vllm.kv_cache import CACHE_STATES, WORKLOADS, KvBench, acceleration_minimum

# The client cannot see a first token before the server has produced it; allow clock granularity only.
CLIENT_BEFORE_SERVER_SLACK_S = 0.002


@pytest.fixture(scope="module")
def kv_bench(vllm_client, vllm_profile, vllm_deployment):
    return KvBench(vllm_client, vllm_profile, vllm_deployment.engine_config)


@pytest.mark.parametrize("cache", CACHE_STATES)
@pytest.mark.parametrize("workload", WORKLOADS)
def test_ttft_holds_against_history(kv_bench, vllm_ttft, vllm_profile, workload, cache):
    result = vllm_ttft.record(kv_bench.series(workload, cache))  # fails here on a regression vs history
    limit_ms = getattr(vllm_profile.thresholds, f"ttft_{cache}_ms_max")
    if limit_ms is not None:
        median_ms = result.summary.median * 1000
        assert median_ms <= limit_ms, (
            f"{workload}: median TTFT on a cache {cache} is {median_ms:.1f} ms, above the {limit_ms} ms allowed "
            f"(thresholds.ttft_{cache}_ms_max in {vllm_profile.path}); rounds: "
            f"{', '.join(f'{v * 1000:.1f}' for v in result.rounds_s)} ms")


@pytest.mark.parametrize("workload", WORKLOADS)
def test_kv_cache_acceleration(kv_bench, vllm_profile, vllm_report, vllm_history, record_property, workload):
    accel = kv_bench.acceleration(workload)
    against_history = vllm_history.gate_acceleration(workload, accel.miss, accel.hit)  # drift-immune gate
    measured = accel.as_dict()
    vllm_report.add_measurement(vllm_profile.name, f"kv_cache/{workload}",
                                {**measured, "regression": against_history.as_dict()})
    for name, value in junit_properties(measured).items():  # CI servers show JUnit properties
        if value is not None:
            record_property(name, value)
    for warning in accel.caching.warnings:
        if warning not in vllm_report.warnings:
            vllm_report.warnings.append(warning)
    minimum, source = acceleration_minimum(vllm_profile, workload)
    problems = accel.problems(minimum, source)
    rate_min = vllm_profile.thresholds.prefix_cache_hit_rate_min
    rate = accel.hit.metrics.hit_rate if accel.hit.metrics else None
    if rate_min is not None and rate is not None and rate < rate_min:
        problems.append(f"only {rate:.0%} of the HIT rounds' prompt tokens came from the prefix cache (/metrics), "
                        f"below the {rate_min:.0%} required (thresholds.prefix_cache_hit_rate_min in "
                        f"{vllm_profile.path}): the cache is too small for the prefix or evicts it between requests")
    if against_history.failed:
        problems.append(against_history.message)
    assert not problems, "\n".join([*problems, accel.describe()])
    if minimum is None:
        pytest.skip(f"no {source}; measured {accel.describe()}")


def junit_properties(measured: dict) -> dict[str, object]:
    """The key figures of one acceleration measurement, flat, for JUnit XML test properties."""
    metrics = measured["hit"].get("metrics") or {}
    low, high = measured["interval"]
    return {"ttft_miss_ms_median": measured["miss_ms_median"], "ttft_hit_ms_median": measured["hit_ms_median"],
            "acceleration": measured["acceleration"], "acceleration_interval": f"{low}-{high}",
            "prefix_cache_hit_rate": metrics.get("hit_rate"),
            "prompt_tokens_median": measured["hit"]["prompt_tokens_median"],
            "prefix_caching_effective": measured["prefix_caching"]["effective"]}


@pytest.mark.parametrize("workload", WORKLOADS)
def test_client_ttft_agrees_with_server_histogram(kv_bench, workload):
    for cache in CACHE_STATES:
        result = kv_bench.result(workload, cache)
        server = result.server_ttft_mean_s
        if server is None:
            pytest.skip("the server exposes no vllm:time_to_first_token_seconds histogram to cross-check with")
        client = result.client_ttft_mean_s
        assert client >= server - CLIENT_BEFORE_SERVER_SLACK_S, (
            f"{workload}/{cache}: client-side TTFT mean {client * 1000:.1f} ms is below the server's own "
            f"{server * 1000:.1f} ms over the same {len(result.client_ttft_s)} requests: the client clock starts "
            "late or counts a chunk before the first token")
