"""Statistics of timing samples and the regression gate's decision and message."""

from __future__ import annotations

import itertools
import math

import pytest

from pytest_vllm import regression
from pytest_vllm.regression import BaselineRun, Looks, check, check_acceleration, pick_baseline
from pytest_vllm.samples import Summary, _u_cdf, compare

BASE = [0.100, 0.104, 0.098, 0.102, 0.101]
ONE_LOOK = Looks(5, 5, 0.95)


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
    v = check("long_prefix/ttft_hit", BASE, [], tolerance=0.1, looks=ONE_LOOK, source="x")
    assert v.status == "no-history" and not v.failed and "becomes the baseline" in v.message


def test_regression_fails_saying_by_how_much_against_which_run_with_the_interval():
    slower = [v * 1.3 for v in BASE]
    baseline = [run("0007 (2026-11-23 12:01 UTC, run 4f9172)", BASE, vllm_version="0.31.0",
                    effective_flags={"enable_chunked_prefill": True})]
    v = check("long_prefix/ttft_hit", slower, baseline, tolerance=0.1, looks=ONE_LOOK,
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
    v = check("m", [x * 1.3 for x in BASE], [run("0001", BASE)], tolerance=0.1, looks=ONE_LOOK, source="x",
              accept=True)
    assert v.status == "accepted" and not v.failed


def test_small_significant_slowdown_within_tolerance_passes():
    base = [0.1 + i * 0.0001 for i in range(30)]
    v = check("m", [x * 1.04 for x in base], [run("0001", base)], tolerance=0.1, looks=ONE_LOOK, source="x")
    assert v.comparison.significant_increase and v.status == "ok"


def test_large_but_noisy_difference_is_not_a_regression():
    # medians 20 % apart, but the samples overlap: not established at 95 %
    v = check("m", [0.09, 0.13, 0.12, 0.15, 0.10], [run("0001", [0.11, 0.08, 0.12, 0.09, 0.10])],
              tolerance=0.1, looks=ONE_LOOK, source="x")
    assert not v.failed and v.status == "ok"


def test_pooled_baseline_names_every_run():
    v = check("m", BASE, [run("0001", BASE), run("0002", BASE)], tolerance=0.1, looks=ONE_LOOK, source="x")
    assert "runs 0001, 0002 (pooled)" in v.message and v.comparison.n_baseline == 10


def test_decision_needs_an_established_slowdown_beyond_the_middle_of_the_tolerance():
    assert regression.decide(compare([v * 1.3 for v in BASE], BASE), 0.1) == "regressed"
    assert regression.decide(compare([v * 1.3 for v in BASE], BASE), 1.0) == "ok"  # +30 % < sqrt(2) - 1
    assert regression.decide(compare([v * 0.7 for v in BASE], BASE), 0.1) == "faster"
    noisy = compare([0.09, 0.13, 0.12, 0.15, 0.10], [0.11, 0.08, 0.12, 0.09, 0.10])
    assert regression.decide(noisy, 0.1) == regression.UNDECIDED


def test_looks_spend_the_error_evenly_and_add_rounds_up_to_the_maximum():
    looks = Looks(5, 22, 0.95)
    assert looks.count == 5 and looks.per_look_confidence == pytest.approx(0.99)
    assert [looks.more(n) for n in (5, 10, 20, 22)] == [5, 5, 2, 0]
    with pytest.raises(ValueError, match="kv_rounds_max"):
        Looks(5, 4, 0.95)


def test_undecided_asks_for_more_rounds_until_the_last_look():
    current, base = [0.09, 0.13, 0.12, 0.15, 0.10], [run("0001", [0.11, 0.08, 0.12, 0.09, 0.10])]
    kwargs = {"tolerance": 0.1, "looks": Looks(5, 10, 0.95), "source": "x"}
    assert check("m", current, base, final=False, **kwargs).status == regression.UNDECIDED
    assert check("m", current, base, **kwargs).status == "ok"  # the last look: not established


def test_more_rounds_establish_a_slowdown_that_five_rounds_leave_undecided():
    spread = [0.08 + 0.04 * i / 14 for i in range(15)]  # CV ~ 13 %
    base = [run(f"{i:04d}", spread) for i in range(3)]
    slower = [v * 1.15 for v in spread[::3] + spread[1::3] + spread[2::3]]  # 5 at a time across the spread
    looks, kwargs = Looks(5, 25, 0.95), {"tolerance": 0.1, "source": "x"}
    assert check("m", slower[:5], base, looks=looks, final=False, **kwargs).status == regression.UNDECIDED
    assert check("m", slower[:5], base, looks=looks, **kwargs).status == "ok"  # stopped there, it would pass
    n = 5
    while (v := check("m", slower[:n], base, looks=looks, final=n >= 15, **kwargs)).status == regression.UNDECIDED:
        n += looks.more(n)
    assert v.failed and n == 15 and "99% interval" in v.message and "5 looks planned" in v.message


MISS = [0.50, 0.52, 0.49, 0.51, 0.50]
HIT = [0.050, 0.052, 0.049, 0.051, 0.050]


def pair(label: str, factor_miss: float, factor_hit: float) -> tuple[BaselineRun, BaselineRun]:
    return run(label, [v * factor_miss for v in MISS]), run(label, [v * factor_hit for v in HIT])


def test_acceleration_gate_stands_a_whole_run_drift_the_ttft_gate_does_not():
    slow_night = ([v * 1.4 for v in MISS], [v * 1.4 for v in HIT])  # the whole machine 40 % slower
    history = [pair("0001", 1.0, 1.0), pair("0002", 1.02, 1.01)]
    assert check("hit", slow_night[1], [h for _, h in history], tolerance=0.1, looks=ONE_LOOK, source="x").failed
    v = check_acceleration("long_prefix/acceleration", *slow_night, history, tolerance=0.1, confidence=0.95,
                           source="x")
    assert v.status == "ok" and "whole-run drift cancels" in v.message


def test_acceleration_gate_fails_when_hits_gain_less_from_the_cache():
    history = [pair("0001", 1.0, 1.0), pair("0002", 1.0, 1.0)]
    v = check_acceleration("long_prefix/acceleration", MISS, [v * 1.5 for v in HIT], history, tolerance=0.1,
                           confidence=0.95, source="thresholds.acceleration_tolerance in p.yml")
    assert v.failed
    assert v.message.startswith("long_prefix/acceleration regressed: acceleration ×6.67 now vs ×10.00")
    assert "thresholds.acceleration_tolerance in p.yml" in v.message and "--accept-regression" in v.message
    assert check_acceleration("a", MISS, HIT, [], tolerance=0.1, confidence=0.95, source="x").status == "no-history"


def nights(levels: list[float]) -> list[list[float]]:
    """One run per level: the same 15 rounds (CV ~ 13 %) scaled by that run's level."""
    spread = [0.08 + 0.04 * i / 14 for i in range(15)]
    return [[v * level for v in spread] for level in levels]


def test_drift_is_measured_only_when_the_runs_spread_beyond_their_own_noise():
    quiet = regression.Drift.of(nights([1.0, 1.01, 0.99, 1.0, 1.005, 0.995]))
    assert quiet.estimated and quiet.sigma == 0.0  # within-run noise explains a 1 % spread
    assert quiet.describe() == "no whole-run drift shown over 6 runs"
    drifting = regression.Drift.of(nights([1.0, 1.15, 0.88, 1.10, 0.92, 1.05]))
    assert drifting.estimated and 0.07 < drifting.sigma < 0.15
    assert drifting.describe() == f"whole-run drift {drifting.sigma:.1%} over 6 runs, in the interval"
    few = regression.Drift.of(nights([1.0]))
    assert not few.estimated and few.describe() == "whole-run drift not estimated: 1 earlier run, 2 needed"
    # two runs x7 apart (the demo's load swings that far): shown, and the t on one degree of freedom is wide
    two = regression.Drift.of(nights([1.0, 7.0]))
    assert two.estimated and two.sigma > 1.0


def test_drift_keeps_one_off_failures_and_leaves_out_the_current_streak():
    """A failed run that a pass followed was whole-run noise: leaving it out would measure the drift on the
    quiet runs only. The failures since the last pass may be a regression that stays: they must not widen the
    interval that catches it."""
    runs = [run("0001", BASE), run("0002", BASE, status="regressed"), run("0003", BASE),
            run("0004", BASE, status="regressed"), run("0005", BASE, status="regressed")]
    assert [r.label for r in regression.drift_history(runs)] == ["0001", "0002", "0003"]
    assert regression.drift_history([run("0001", BASE, status="regressed")]) == []
    many = [run(f"{i:04d}", BASE) for i in range(regression.DRIFT_RUNS + 5)]
    assert regression.drift_history(many) == many[-regression.DRIFT_RUNS:]


def test_a_slower_night_within_the_measured_drift_is_not_a_regression():
    levels = [1.0, 1.15, 0.88, 1.10, 0.92, 1.05]
    history = [run(f"{i:04d}", samples) for i, samples in enumerate(nights(levels))]
    slower = [v * 1.2 for v in nights([1.0])[0]]  # 20 % over the pooled last three runs' level of ~1.02
    kwargs = {"tolerance": 0.1, "looks": ONE_LOOK, "source": "x"}
    alone = regression.Drift(0.0, 0)  # the within-run interval alone: a false alarm
    assert check("hit", slower, history[-3:], drift=alone, **kwargs).failed
    verdict = check("hit", slower, history[-3:], drift=regression.Drift.of([r.samples for r in history]), **kwargs)
    assert not verdict.failed and "whole-run drift" in verdict.message and "in the interval" in verdict.message
    # a slowdown far beyond the drift still fails
    assert check("hit", [v * 2 for v in slower], history[-3:], drift=regression.Drift.of(
        [r.samples for r in history]), **kwargs).failed


def test_a_workloads_three_gates_share_one_error_budget():
    assert regression.gate_confidence(0.95) == pytest.approx(1 - 0.05 / 3)
    assert Looks(5, 22, regression.gate_confidence(0.95)).per_look_confidence == pytest.approx(1 - 0.05 / 15)
