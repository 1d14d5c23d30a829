"""Statistics of timing samples and the regression gate's decision and message."""

from __future__ import annotations

import itertools
import math

import pytest

from pytest_vllm import regression
from pytest_vllm.regression import BaselineRun, check, pick_baseline
from pytest_vllm.samples import Summary, _u_cdf, compare

BASE = [0.100, 0.104, 0.098, 0.102, 0.101]


def test_u_distribution_is_exact():
    m, n = 3, 4
    counts = [0] * (m * n + 1)
    for xs in itertools.combinations(range(m + n), m):  # positions of the x's among the ranks
        ys = [i for i in range(m + n) if i not in xs]
        counts[sum(x > y for x in xs for y in ys)] += 1
    total = math.comb(m + n, m)
    assert _u_cdf(m, n) == pytest.approx([sum(counts[:u + 1]) / total for u in range(m * n + 1)])


def test_identical_samples_are_no_change():
    c = compare(BASE, BASE)
    assert c.ratio == pytest.approx(1.0) and c.low < 1 < c.high and not c.significant_increase


def test_a_clear_shift_is_estimated_and_significant():
    c = compare([v * 1.3 for v in BASE], BASE)
    assert c.ratio == pytest.approx(1.3, rel=0.03)
    assert c.significant_increase and c.low > 1.2 and c.high < 1.4


def test_too_few_samples_give_no_interval():
    c = compare([0.2, 0.21], [0.1, 0.11])
    assert not c.informative and not c.significant_increase  # 2 vs 2 cannot reach 95 %


def test_one_outlier_does_not_move_the_estimate():
    noisy = [*BASE[:4], 1.0]  # one 10x round (a GC pause)
    assert compare(noisy, BASE).ratio == pytest.approx(1.0, abs=0.05)


def test_summary_spread():
    s = Summary.of([4, 1, 3, 2, 5])
    assert (s.n, s.median, s.q1, s.q3, s.min, s.max) == (5, 3, 2, 4, 1, 5)
    assert s.as_dict(1000)["median"] == 3000


def run(label: str, samples, status: str | None = None, **info) -> BaselineRun:
    return BaselineRun(label, list(samples), {**info, **({"regression": {"status": status}} if status else {})})


def test_baseline_is_the_latest_run_that_did_not_regress():
    runs = [run("0001", BASE), run("0002", BASE), run("0003", BASE, status="regressed")]
    assert [r.label for r in pick_baseline(runs)] == ["0002"]
    assert [r.label for r in pick_baseline(runs, 2)] == ["0001", "0002"]
    assert pick_baseline([run("0001", BASE, status="accepted")])[0].label == "0001"


def test_no_history_passes_and_says_this_run_is_the_baseline():
    v = check("long_prefix/ttft_hit", BASE, [], tolerance=0.1, confidence=0.95, source="x")
    assert v.status == "no-history" and not v.failed and "becomes the baseline" in v.message


def test_regression_fails_saying_by_how_much_against_which_run_with_the_interval():
    slower = [v * 1.3 for v in BASE]
    baseline = [run("0007 (2026-11-23 12:01 UTC, run 4f9172)", BASE, vllm_version="0.31.0",
                    effective_flags={"enable_chunked_prefill": True})]
    v = check("long_prefix/ttft_hit", slower, baseline, tolerance=0.1, confidence=0.95,
              source="thresholds.regression_tolerance in profiles/cpu_tiny.yml",
              current_info={"vllm_version": "0.32.0", "effective_flags": {"enable_chunked_prefill": False}})
    assert v.failed
    first = v.message.splitlines()[0]
    assert first.startswith("long_prefix/ttft_hit regressed: median 131.3 ms now vs 101.0 ms in run 0007")
    assert "+30" in first and "95% interval +2" in first and "10% tolerance" in first
    assert "thresholds.regression_tolerance in profiles/cpu_tiny.yml" in first
    assert "vllm_version: '0.31.0' -> '0.32.0'" in v.message
    assert "enable_chunked_prefill: True -> False" in v.message
    assert "--accept-regression" in v.message


def test_accepting_a_regression_does_not_fail():
    v = check("m", [x * 1.3 for x in BASE], [run("0001", BASE)], tolerance=0.1, confidence=0.95, source="x",
              accept=True)
    assert v.status == "accepted" and not v.failed


def test_small_significant_slowdown_within_tolerance_passes():
    base = [0.1 + i * 0.0001 for i in range(30)]
    v = check("m", [x * 1.04 for x in base], [run("0001", base)], tolerance=0.1, confidence=0.95, source="x")
    assert v.comparison.significant_increase and v.status == "ok"


def test_large_but_noisy_difference_is_not_a_regression():
    # medians 20 % apart, but the samples overlap: not established at 95 %
    v = check("m", [0.09, 0.13, 0.12, 0.15, 0.10], [run("0001", [0.11, 0.08, 0.12, 0.09, 0.10])],
              tolerance=0.1, confidence=0.95, source="x")
    assert not v.failed and v.status == "ok"


def test_pooled_baseline_names_every_run():
    v = check("m", BASE, [run("0001", BASE), run("0002", BASE)], tolerance=0.1, confidence=0.95, source="x")
    assert "runs 0001, 0002 (pooled)" in v.message and v.comparison.n_baseline == 10


def test_is_regression_needs_both_significance_and_size():
    c = compare([v * 1.3 for v in BASE], BASE)
    assert regression.is_regression(c, 0.1) and not regression.is_regression(c, 0.5)
