"""The regression gate: are this run's TTFT samples slower than the stored history, beyond noise and tolerance?

Rule: a measurement regressed when BOTH
1. the slowdown is statistically established: the whole `confidence` interval of the ratio
   current/baseline lies above 1 (Hodges-Lehmann on log-timings with its Mann-Whitney interval, see
   `pytest_vllm.samples` for why that test), and
2. the estimated slowdown exceeds the tolerance (profile `thresholds.regression_tolerance`, 0.10 = 10 %).

(1) keeps noise from failing the gate: a single mean over a threshold (what pytest-benchmark's
`--benchmark-compare-fail=median:10%` does) fails on a noisy A/A pair as soon as one median lands 10 %
high. (2) keeps a real but negligible slowdown (+2 %, significant with many rounds) from failing CI.
`scripts/bench_regression_gate.py` measures both rules' false-alarm and detection rates side by side.

The baseline is the latest comparable runs (`--baseline-runs`, 3 by default, pooled) of the same profile and
deployment that did not themselves regress (so one bad night does not become tomorrow's reference);
`--accept-regression` makes a slower run the new baseline on purpose. Pooling three runs gives the test
15 baseline samples instead of 5: at 5 rounds and 10 % noise it detects a +20 % slowdown as often as
pytest-benchmark's median rule does, with a fifth of its false alarms (see the bench script).
Limit: the samples of one run share that run's conditions (server start, machine state); a shift of the
whole run is noise the within-run samples cannot show. The tolerance is what absorbs it: keep it above
the run-to-run spread of the deployment (the history plot shows it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .samples import Comparison, Summary, compare

# What a failure message lists as "changed since the baseline run" (keys of the stored extra_info).
CONTEXT_KEYS = ("vllm_version", "model", "gpus", "effective_flags", "profile_flags")


@dataclass(frozen=True)
class BaselineRun:
    """One stored run's samples of a measurement, and what it ran with."""

    label: str  # e.g. "0007 (2026-11-23 12:01 UTC, run 4f9172)"
    samples: list[float]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def regressed(self) -> bool:
        return failed_gate(self.info)


@dataclass(frozen=True)
class Verdict:
    status: str  # no-history | ok | faster | regressed | accepted
    measurement: str
    message: str
    comparison: Comparison | None = None
    baseline: tuple[str, ...] = ()
    tolerance: float = 0.0

    @property
    def failed(self) -> bool:
        return self.status == "regressed"

    def as_dict(self) -> dict[str, Any]:
        c = self.comparison
        return {"status": self.status, "baseline": list(self.baseline), "tolerance": self.tolerance,
                "ratio": None if c is None else round(c.ratio, 4),
                "interval": None if c is None else [round(c.low, 4), round(c.high, 4)],
                "confidence": None if c is None else c.confidence, "message": self.message}


def failed_gate(info: dict[str, Any]) -> bool:
    """Whether a stored run (its extra_info) failed the gate: such a run is never a baseline."""
    return (info.get("regression") or {}).get("status") == "regressed"


def pick_baseline(runs: Sequence[BaselineRun], count: int = 1) -> list[BaselineRun]:
    """The latest `count` runs (oldest first in `runs`) that did not regress."""
    usable = [r for r in runs if not r.regressed and r.samples]
    return usable[-count:] if count > 0 else []


def is_regression(c: Comparison, tolerance: float) -> bool:
    return c.significant_increase and c.change > tolerance


def check(measurement: str, current: Sequence[float], baseline: Sequence[BaselineRun], *, tolerance: float,
          confidence: float, source: str, current_info: dict[str, Any] | None = None,
          accept: bool = False) -> Verdict:
    """Compare this run's samples with the baseline runs; the message says by how much, against what."""
    if not baseline:
        return Verdict("no-history", measurement, f"{measurement}: no earlier comparable run; this run becomes "
                       "the baseline", tolerance=tolerance)
    reference = [v for run in baseline for v in run.samples]
    c = compare(current, reference, confidence)
    labels = tuple(run.label for run in baseline)
    against = f"run {labels[0]}" if len(labels) == 1 else f"runs {', '.join(labels)} (pooled)"
    now, then = Summary.of(current), Summary.of(reference)
    change = (f"median {now.median * 1000:.1f} ms now vs {then.median * 1000:.1f} ms in {against}: "
              f"{c.change:+.1%} (Hodges-Lehmann; {confidence:.0%} interval {c.low - 1:+.1%} to {c.high - 1:+.1%}, "
              f"{c.n_current} vs {c.n_baseline} samples)")
    if is_regression(c, tolerance):
        lines = [f"{measurement} regressed: {change}, beyond the {tolerance:.0%} tolerance ({source}).",
                 *_what_changed(current_info or {}, baseline[-1].info),
                 f"samples now (ms): {_ms(current)}; baseline (ms): {_ms(reference)}",
                 "if this slowdown is expected, re-run with --accept-regression to make this run the new baseline"]
        return Verdict("accepted" if accept else "regressed", measurement, "\n  ".join(lines), c, labels, tolerance)
    status = "faster" if c.high < 1.0 else "ok"
    return Verdict(status, measurement, f"{measurement}: {change}; tolerance {tolerance:.0%}: {status}", c, labels,
                   tolerance)


def _what_changed(now: dict[str, Any], then: dict[str, Any]) -> list[str]:
    out = []
    for key in CONTEXT_KEYS:
        a, b = then.get(key), now.get(key)
        if a is None or b is None or a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            diffs = [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
            out.append(f"changed since the baseline run, {key}: " + "; ".join(diffs))
        else:
            out.append(f"changed since the baseline run, {key}: {a!r} -> {b!r}")
    return out


def _ms(values: Sequence[float]) -> str:
    return ", ".join(f"{v * 1000:.1f}" for v in values)
