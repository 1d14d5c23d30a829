"""The regression gate: are this run's TTFT samples slower than the stored history, beyond noise and tolerance?

Two gates, both against the latest comparable runs (`--baseline-runs`, 5 by default, pooled) of the same
profile and deployment that did not themselves regress (one bad night does not become tomorrow's
reference; `--accept-regression` makes a slower run the new baseline on purpose):

**TTFT gate, sequential.** The tolerance τ (`thresholds.regression_tolerance`) is the slowdown the gate
must catch. At each look the ratio current/baseline is estimated by Hodges-Lehmann on log-timings with its
exact Mann-Whitney interval [L, U] (`pytest_vllm.samples`), and
- regressed when L > 1 (the slowdown is established) and the estimate exceeds √(1+τ), the middle of the
  indifference zone in log terms (+4.9 % for τ = 10 %: a real +2 % slowdown, significant with enough rounds,
  is not what τ means);
- faster when U < 1; ok when U < 1 + τ (a τ slowdown is excluded);
- otherwise undecided: `thresholds.kv_rounds` more rounds are measured and it looks again, up to
  `thresholds.kv_rounds_max`; still undecided at the last look, the slowdown was not established: ok.
Error control: `regression_confidence` holds for a workload's three gates together (MISS TTFT, HIT TTFT,
acceleration: a night fails on any), so each gate gets a third of the error (`gate_confidence`). Over the
repeated looks (group-sequential, alpha spending) a TTFT gate's two-sided error is spent evenly over the K
planned looks, each interval taken at confidence 1 - (1 - confidence)/K. By the union bound the false-alarm
rate over all looks stays below the single-look one (conservative: the looks are correlated, so the true rate
is lower still; Pocock's boundary, tried in the bench, gained no power here: the sequential plan's misses come
from small baselines, runs that stopped early, not from the looks). A decided run stops early: most healthy
runs need `kv_rounds`.
`scripts/bench_regression_gate.py` measures false alarms, detections and rounds used, side by side with
pytest-benchmark's `--benchmark-compare-fail=median:10%`.

**Whole-run drift.** The samples of one run share that run's conditions (server start, machine load); a shift
of the whole run is noise the within-run samples cannot show, and an interval from them alone cries wolf on
every slow night (39 % false alarms at 5 % drift in the bench). So the gate measures that drift on the history
(`Drift`, on the last `DRIFT_RUNS` runs up to the last that passed: `drift_history`): the spread of the runs'
log-medians beyond what their within-run noise explains (a one-way random-effects estimate, σ_b² = var(log
medians) - mean(π/2 · σ_w²/n), counted only when that spread exceeds the within-run noise at 1 %: a
chi-square test, so a quiet machine keeps its full power). Comparing one run with k pooled runs adds
σ_b²(1 + 1/k) to the variance, so each side of the interval is widened in quadrature by t · σ_b · √(1 + 1/k),
t Student's at the look's confidence on (runs - 1) degrees of freedom (the estimate's own uncertainty).
With a single earlier run the drift is not estimated and the message says so: then only τ covers it. From two
runs on it is (`DRIFT_MIN_RUNS`): a demo machine whose first runs differ x7 (a CPU hog sharing the server's core
or not) leaves the gate blind to that measurement until its history shows otherwise, rather than failing every
later run against the fast one.

**Acceleration gate, drift-immune.** MISS and HIT rounds of one run share its conditions, so the
acceleration MISS/HIT cancels a whole-run drift that slows both alike. Its drop against the same baseline
runs is estimated on log medians, Δ = mean over baseline runs of log(MISS/HIT) - log(MISS/HIT now), each
run's ratio taken within that run, with a t interval from the medians' sampling variances (π/2 · σ²/n, σ the
within-run standard deviation of MISS and of HIT pooled over runs). The run regressed when the whole
interval shows a drop and the drop exceeds √(1+τ), τ = `thresholds.acceleration_tolerance` (0.10: the loss
HIT rounds 10 % slower relative to MISS would cause; the TTFT gate's rule). It looks once, on the rounds the
TTFT gates measured, at its share of `regression_confidence`; with four medians' noise instead of two groups' it needs
more rounds for the same power, so at 10 % noise it is sure to catch large losses (caching off, partial),
not +10 %. Load that is not uniform (a CPU hog slows the short HIT prefill's overheads more than the long
MISS prefill) does move it: its tolerance too is set per profile.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

from .samples import Comparison, Summary, compare

# What a failure message lists as "changed since the baseline run" (keys of the stored extra_info).
CONTEXT_KEYS = ("vllm_version", "model", "gpus", "effective_flags", "profile_flags")
UNDECIDED = "undecided"


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
class Looks:
    """The sequential plan: first look after `rounds`, then every `rounds` more, the last at `rounds_max`."""

    rounds: int
    rounds_max: int
    confidence: float  # over all looks together

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.rounds_max < self.rounds:
            raise ValueError(f"need 1 <= kv_rounds <= kv_rounds_max, got {self.rounds} and {self.rounds_max}")

    @property
    def count(self) -> int:
        return 1 + math.ceil((self.rounds_max - self.rounds) / self.rounds)

    @property
    def per_look_confidence(self) -> float:
        """Alpha spent evenly over the looks (Bonferroni): 0.95 over 5 looks is 0.99 a look."""
        return 1 - (1 - self.confidence) / self.count

    def more(self, done: int) -> int:
        """Rounds to add after `done` rounds for the next look (0 at the last)."""
        return max(0, min(self.rounds, self.rounds_max - done))


@dataclass(frozen=True)
class Verdict:
    status: str  # no-history | ok | faster | regressed | accepted | undecided (more rounds wanted)
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
                "confidence": None if c is None else c.confidence, "rounds": None if c is None else c.n_current,
                "message": self.message}


def failed_gate(info: dict[str, Any]) -> bool:
    """Whether a stored run (its extra_info) failed its gate, or another gate of the same series (the
    acceleration gate marks both series it judged): such a run is never a baseline."""
    return (info.get("regression") or {}).get("status") == "regressed" or bool(info.get("failed_gates"))


class _Run(Protocol):
    samples: list[float]

    @property
    def regressed(self) -> bool: ...


R = TypeVar("R", bound=_Run)


def pick_baseline(runs: Sequence[R], count: int = 1) -> list[R]:
    """The latest `count` runs (oldest first in `runs`) that did not regress."""
    usable = [r for r in runs if not r.regressed and r.samples]
    return usable[-count:] if count > 0 else []


def drift_history(runs: Sequence[R]) -> list[R]:
    """The latest `DRIFT_RUNS` runs (oldest first in `runs`) the whole-run drift is measured on: those up to the
    last one that passed, failed ones included. A failed run that a passing one followed was a one-off, which is
    what drift is: leaving it out would measure the drift on the quiet runs only, the gate would tighten and fail
    more slow runs, which would be left out in turn (a slow spiral into false alarms: 10 % of nights at 5 % drift
    in the bench). The runs that failed since the last pass are left out: they may be a regression that stays,
    which must not widen the interval that catches it."""
    last = max((i for i, r in enumerate(runs) if not r.regressed), default=-1)
    return [r for r in runs[:last + 1] if r.samples][-DRIFT_RUNS:]


def decide(c: Comparison, tolerance: float) -> str:
    """One look's decision on an interval (see the module docstring): regressed | faster | ok | undecided."""
    if c.significant_increase and math.log(c.ratio) > math.log1p(tolerance) / 2:
        return "regressed"
    if c.high < 1.0:
        return "faster"
    if c.high < 1.0 + tolerance:
        return "ok"
    return UNDECIDED


def check(measurement: str, current: Sequence[float], baseline: Sequence[BaselineRun], *, tolerance: float,
          looks: Looks, source: str, current_info: dict[str, Any] | None = None, accept: bool = False,
          final: bool = True, drift: Drift | None = None) -> Verdict:
    """Compare this run's samples with the baseline runs at one look; the message says by how much, against
    what. `final=False` (more rounds can still come) may answer `undecided`. `drift`: the whole-run drift
    measured on a longer history (`Drift.of`); by default on the baseline runs alone."""
    if not baseline:
        return Verdict("no-history", measurement, f"{measurement}: no earlier comparable run; this run becomes "
                       "the baseline", tolerance=tolerance)
    reference = [v for run in baseline for v in run.samples]
    c = compare(current, reference, looks.per_look_confidence)
    drift = drift or Drift.of([run.samples for run in baseline])
    c = drift.widen(c, len(baseline))
    status = decide(c, tolerance)
    if status == UNDECIDED and final:
        status = "ok"
    labels = tuple(run.label for run in baseline)
    now, then = Summary.of(current), Summary.of(reference)
    planned = f"{looks.count} look{'s' if looks.count > 1 else ''} planned"
    change = (f"median {now.median * 1000:.1f} ms now vs {then.median * 1000:.1f} ms in {_against(labels)}: "
              f"{c.change:+.1%} (Hodges-Lehmann; {c.confidence * 100:.3g}% interval {c.low - 1:+.1%} to "
              f"{c.high - 1:+.1%}, {c.n_current} vs {c.n_baseline} samples, {planned}; {drift.describe()})")
    if status == "regressed":
        lines = [f"{measurement} regressed: {change}, an established slowdown beyond "
                 f"{math.sqrt(1 + tolerance) - 1:+.1%}, the middle of the {tolerance:.0%} tolerance ({source}).",
                 *_what_changed(current_info or {}, baseline[-1].info),
                 f"samples now (ms): {_ms(current)}; baseline (ms): {_ms(reference)}",
                 "if this slowdown is expected, re-run with --accept-regression to make this run the new baseline"]
        return Verdict("accepted" if accept else "regressed", measurement, "\n  ".join(lines), c, labels, tolerance)
    return Verdict(status, measurement, f"{measurement}: {change}; tolerance {tolerance:.0%}: {status}", c, labels,
                   tolerance)


GATES_PER_WORKLOAD = 3  # MISS TTFT, HIT TTFT, acceleration: one false-alarm budget for the three


def gate_confidence(confidence: float) -> float:
    """One gate's confidence, so that a workload's three gates together keep `confidence` (union bound)."""
    return 1 - (1 - confidence) / GATES_PER_WORKLOAD


DRIFT_RUNS = 20  # the history the whole-run drift is measured on (10 was too few to tell 5 % drift from none)
DRIFT_MIN_RUNS = 2  # from two runs on: a machine that swings x7 between its first runs shows it (then the t
# quantile on so few degrees of freedom widens the interval that far: the gate cannot tell, and says so)
DRIFT_TEST_ALPHA = 0.01  # the runs' spread must exceed their within-run noise at this level to count as drift
# (at 0.05, drift wrongly shown on one window in twenty stays for DRIFT_RUNS nights and blinds the gate)


@dataclass(frozen=True)
class Drift:
    """Whole-run drift of a measurement: the standard deviation of the runs' log levels beyond their
    within-run noise (see the module docstring), measured on `runs` stored runs."""

    sigma: float
    runs: int

    @classmethod
    def of(cls, runs: Sequence[Sequence[float]]) -> Drift:
        runs = [r for r in runs if r]
        if len(runs) < DRIFT_MIN_RUNS:
            return cls(0.0, len(runs))
        sigma_w, _ = _pooled_sigma(runs)
        levels = [math.log(statistics.median(r)) for r in runs]
        within = statistics.fmean((math.pi / 2) * sigma_w ** 2 / len(r) for r in runs)
        between = statistics.variance(levels)
        if between / within < _chi2_quantile(1 - DRIFT_TEST_ALPHA, len(runs) - 1) / (len(runs) - 1):
            return cls(0.0, len(runs))  # no drift shown: within-run noise explains the runs' spread
        return cls(math.sqrt(between - within), len(runs))

    @property
    def estimated(self) -> bool:
        return self.runs >= DRIFT_MIN_RUNS

    def widen(self, c: Comparison, pooled_runs: int) -> Comparison:
        """The interval of a comparison of one run with `pooled_runs` pooled ones, the drift added."""
        if not self.estimated or self.sigma == 0.0 or not c.informative:
            return c
        add = _t_quantile(1 - (1 - c.confidence) / 2, self.runs - 1) * self.sigma * math.sqrt(1 + 1 / pooled_runs)
        centre = math.log(c.ratio)
        low = centre - math.hypot(centre - math.log(c.low), add)
        high = centre + math.hypot(math.log(c.high) - centre, add)
        return replace(c, low=math.exp(low), high=math.exp(high))

    def describe(self) -> str:
        if not self.estimated:
            return f"whole-run drift not estimated: {self.runs} earlier run{'s' * (self.runs != 1)}, " \
                f"{DRIFT_MIN_RUNS} needed"
        if self.sigma == 0.0:
            return f"no whole-run drift shown over {self.runs} runs"
        return f"whole-run drift {self.sigma:.1%} over {self.runs} runs, in the interval"


@dataclass(frozen=True)
class RatioChange:
    """log(acceleration then / acceleration now): > 0 is a drop; with its normal interval."""

    drop: float
    low: float
    high: float
    now: float  # acceleration of this run
    then: float  # of the pooled baseline

    @property
    def established_drop(self) -> bool:
        return self.low > 0


def _pooled_sigma(groups: Sequence[Sequence[float]]) -> tuple[float, int]:
    """Within-run standard deviation of log-timings pooled over runs, and its degrees of freedom. (A slow
    round inflates it: the gate then errs towards passing, never towards a false alarm.)"""
    squares, n = 0.0, 0
    for samples in groups:
        logs = [math.log(v) for v in samples]
        mean = statistics.fmean(logs)
        squares += sum((v - mean) ** 2 for v in logs)
        n += len(logs)
    df = max(1, n - len(groups))
    return math.sqrt(squares / df), df


def _t_quantile(p: float, df: int) -> float:
    """Student's t quantile, exact for integer df: bisection on the closed-form CDF (Abramowitz-Stegun
    26.7.3-4). Few runs mean few degrees of freedom, where the normal-based approximations are far off
    (at 1 df and 99.7 %: 106, where Cornish-Fisher gives 20)."""
    low, high = 0.0, 1.0
    while _t_cdf(high, df) < p:
        high *= 2
    for _ in range(100):
        mid = (low + high) / 2
        low, high = (mid, high) if _t_cdf(mid, df) < p else (low, mid)
    return (low + high) / 2


def _t_cdf(t: float, df: int) -> float:
    theta = math.atan(t / math.sqrt(df))
    c2, term, total = math.cos(theta) ** 2, 1.0, 0.0
    if df % 2:  # odd: (2/π)(θ + sinθ cosθ (1 + 2/3 cos²θ + 2·4/(3·5) cos⁴θ + ...))
        for k in range(1, (df - 1) // 2 + 1):
            total += term
            term *= c2 * (2 * k) / (2 * k + 1)
        within = 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)  # df 1: the sum is empty
    else:  # even: sinθ (1 + 1/2 cos²θ + 1·3/(2·4) cos⁴θ + ...)
        for k in range(1, df // 2 + 1):
            total += term
            term *= c2 * (2 * k - 1) / (2 * k)
        within = math.sin(theta) * total
    return (1 + within) / 2


def _chi2_quantile(p: float, df: int) -> float:
    """Chi-square quantile (Wilson-Hilferty; within 1 % for df >= 3)."""
    z = statistics.NormalDist().inv_cdf(p)
    c = 2 / (9 * df)
    return df * (1 - c + z * math.sqrt(c)) ** 3


def _log_acceleration(miss: Sequence[float], hit: Sequence[float], sigma_miss: float, sigma_hit: float
                      ) -> tuple[float, float]:
    """log(median MISS / median HIT) and its variance (a median's: π/2 · σ²/n)."""
    value = math.log(statistics.median(miss)) - math.log(statistics.median(hit))
    return value, (math.pi / 2) * (sigma_miss ** 2 / len(miss) + sigma_hit ** 2 / len(hit))


def acceleration_change(miss: Sequence[float], hit: Sequence[float],
                        baseline: Sequence[tuple[Sequence[float], Sequence[float]]], confidence: float) -> RatioChange:
    """This run's acceleration against the mean log-acceleration of the baseline runs, each run on its own
    (pooling their samples would mix their drifts)."""
    sigma_miss, df_miss = _pooled_sigma([miss, *(m for m, _ in baseline)])
    sigma_hit, df_hit = _pooled_sigma([hit, *(h for _, h in baseline)])
    now, var_now = _log_acceleration(miss, hit, sigma_miss, sigma_hit)
    runs = [_log_acceleration(m, h, sigma_miss, sigma_hit) for m, h in baseline]
    then = statistics.fmean(v for v, _ in runs)
    var_then = sum(var for _, var in runs) / len(runs) ** 2
    half = _t_quantile(1 - (1 - confidence) / 2, min(df_miss, df_hit)) * math.sqrt(var_now + var_then)
    drop = then - now
    return RatioChange(drop, drop - half, drop + half, math.exp(now), math.exp(then))


def check_acceleration(measurement: str, miss: Sequence[float], hit: Sequence[float],
                       baseline: Sequence[tuple[BaselineRun, BaselineRun]], *, tolerance: float, confidence: float,
                       source: str, accept: bool = False) -> Verdict:
    """The drift-immune gate: this run's MISS/HIT acceleration against the baseline runs' (pairs miss, hit)."""
    if not baseline:
        return Verdict("no-history", measurement, f"{measurement}: no earlier comparable run; this run becomes "
                       "the baseline", tolerance=tolerance)
    r = acceleration_change(miss, hit, [(m.samples, h.samples) for m, h in baseline], confidence)
    labels = tuple(m.label for m, _ in baseline)
    text = (f"acceleration ×{r.now:.2f} now vs ×{r.then:.2f} in {_against(labels)}: "
            f"{math.exp(-r.drop) - 1:+.1%} ({confidence:.0%} interval {math.exp(-r.high) - 1:+.1%} to "
            f"{math.exp(-r.low) - 1:+.1%}; whole-run drift cancels in MISS/HIT)")
    if r.established_drop and r.drop > math.log1p(tolerance) / 2:  # the TTFT gate's rule, on log(MISS/HIT)
        middle = 1 - 1 / math.sqrt(1 + tolerance)
        message = (f"{measurement} regressed: {text}, an established drop beyond {middle:.1%}, the middle of the "
                   f"{tolerance:.0%} tolerance ({source}). HIT "
                   "rounds gained less from the prefix cache than before: check the cache flags and the KV-cache "
                   "size in the report's engine config; if expected, re-run with --accept-regression")
        return Verdict("accepted" if accept else "regressed", measurement, message, None, labels, tolerance)
    return Verdict("ok", measurement, f"{measurement}: {text}; tolerance {tolerance:.0%}: ok", None, labels,
                   tolerance)


def _against(labels: Sequence[str]) -> str:
    return f"run {labels[0]}" if len(labels) == 1 else f"runs {', '.join(labels)} (pooled)"


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
