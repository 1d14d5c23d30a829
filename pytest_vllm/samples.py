"""Statistics of timing samples: a summary with spread, and a two-sample comparison that survives noise.

`compare(current, baseline)` estimates the multiplicative change between two sets of timings with the
Hodges-Lehmann estimator on log-timings and its distribution-free confidence interval (the inversion of
the Mann-Whitney U test). Why this and not a bootstrap of the ratio of medians:

- exact at the sample sizes we have (5 rounds a side): the interval's coverage follows from the U
  distribution, computed exactly; a bootstrap of a 5-sample median takes at most 5 distinct values and
  its percentile interval undercovers;
- deterministic: the same samples give the same verdict and interval (a CI gate must not flap on the
  resampling seed);
- robust: one slow round (a GC pause, a noisy neighbour) moves a rank, not the estimate;
- multiplicative: on log-timings a shift is "x % slower", which is how TTFT regressions are stated and
  how noise behaves (its spread grows with the latency).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

# Above this many pairs the exact U distribution is replaced by its normal approximation.
EXACT_PAIRS_MAX = 2500


@dataclass(frozen=True)
class Summary:
    """Median and spread of one series of samples (seconds or any unit)."""

    n: int
    median: float
    q1: float
    q3: float
    min: float
    max: float
    mean: float
    cv: float  # coefficient of variation (stdev / mean); 0 for fewer than 2 samples

    @classmethod
    def of(cls, samples: Sequence[float]) -> Summary:
        if not samples:
            raise ValueError("no samples to summarize")
        data = sorted(samples)
        q1, _, q3 = statistics.quantiles(data, n=4, method="inclusive") if len(data) > 1 else (data[0],) * 3
        mean = statistics.fmean(data)
        cv = statistics.stdev(data) / mean if len(data) > 1 and mean else 0.0
        return cls(len(data), statistics.median(data), q1, q3, data[0], data[-1], mean, cv)

    def as_dict(self, scale: float = 1.0, digits: int = 4) -> dict[str, float | int]:
        """Plain numbers for reports; `scale` converts units (1000: seconds to milliseconds)."""
        out: dict[str, float | int] = {"n": self.n}
        for key in ("median", "q1", "q3", "min", "max", "mean"):
            out[key] = round(getattr(self, key) * scale, digits)
        out["cv"] = round(self.cv, 4)
        return out


@dataclass(frozen=True)
class Comparison:
    """current / baseline as a ratio: point estimate and a two-sided interval at `confidence`."""

    ratio: float
    low: float  # 0.0 when too few samples for any interval at this confidence
    high: float  # inf likewise
    confidence: float
    n_current: int
    n_baseline: int

    @property
    def change(self) -> float:
        """Relative change: +0.20 = 20 % larger (slower, for a latency)."""
        return self.ratio - 1.0

    @property
    def significant_increase(self) -> bool:
        """The whole interval lies above 1: larger with at least the stated confidence."""
        return self.low > 1.0

    @property
    def informative(self) -> bool:
        return self.low > 0.0 and math.isfinite(self.high)


def compare(current: Sequence[float], baseline: Sequence[float], confidence: float = 0.95) -> Comparison:
    """Hodges-Lehmann ratio current/baseline with its Mann-Whitney confidence interval (positive samples)."""
    if not current or not baseline:
        raise ValueError("both samples need at least one value")
    if min(current) <= 0 or min(baseline) <= 0:
        raise ValueError("timings must be positive")
    if not 0.5 < confidence < 1:
        raise ValueError(f"confidence must be between 0.5 and 1, got {confidence}")
    x = [math.log(v) for v in current]
    y = [math.log(v) for v in baseline]
    diffs = sorted(a - b for a in x for b in y)
    estimate = statistics.median(diffs)
    k = _rank_of_bound(len(x), len(y), (1 - confidence) / 2)
    if k == 0:
        low, high = 0.0, math.inf
    else:
        low, high = math.exp(diffs[k - 1]), math.exp(diffs[len(diffs) - k])
    return Comparison(math.exp(estimate), low, high, confidence, len(x), len(y))


def _rank_of_bound(m: int, n: int, alpha: float) -> int:
    """Largest k with P(U <= k-1) <= alpha under H0: the k-th smallest pairwise difference is the lower
    confidence bound (and the k-th largest the upper one). 0 when no k qualifies (too few samples)."""
    if m * n > EXACT_PAIRS_MAX:
        mean, sd = m * n / 2, math.sqrt(m * n * (m + n + 1) / 12)
        z = statistics.NormalDist().inv_cdf(alpha)
        return max(0, math.floor(mean + z * sd + 0.5))  # +0.5: continuity correction
    cdf = _u_cdf(min(m, n), max(m, n))
    k = 0
    while k < len(cdf) and cdf[k] <= alpha:
        k += 1
    return k


@lru_cache(maxsize=512)  # the sequential gate and its bench use many (m, n) pairs
def _u_cdf(m: int, n: int) -> tuple[float, ...]:
    """Exact null distribution of the Mann-Whitney U statistic: cdf[u] = P(U <= u)."""
    # counts[j][u]: arrangements of i x-values and j y-values with U = u, built up over i.
    counts = [[1] + [0] * (m * n) for _ in range(n + 1)]  # i = 0: U is 0 whatever j
    for i in range(1, m + 1):
        row = [[0] * (m * n + 1) for _ in range(n + 1)]
        row[0][0] = 1
        for j in range(1, n + 1):
            # the largest value is an x (it beats all j y's) or a y (it adds nothing)
            for u in range(i * j + 1):
                row[j][u] = (counts[j][u - j] if u >= j else 0) + row[j - 1][u]
        counts = row
    total = math.comb(m + n, m)
    cdf, running = [], 0
    for c in counts[n]:
        running += c
        cdf.append(running / total)
    return tuple(cdf)
