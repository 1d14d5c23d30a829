"""The prefix-caching verdict: is caching effectively on (by `/metrics`, else the engine's report), where the
profile's flags disagree with that, and what an acceleration below the threshold means and how to fix it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..profile import Profile
from ..samples import Comparison
from .measurement import PREFIX_HITS
from .series import SeriesResult

HIT_RATE_ON = 0.5  # share of HIT prompt tokens served from cache above which caching is plainly on
MISS_HIT_RATE_MAX = 0.1  # MISS rounds must not hit the cache more than this (the salt works)


def ratio_of_medians(miss: SeriesResult, hit: SeriesResult) -> float:
    """TTFT MISS / HIT, the headline acceleration (the one place it is computed)."""
    return miss.summary.median / hit.summary.median


@dataclass(frozen=True)
class PrefixCaching:
    """Whether prefix caching is effectively on, on what evidence, and where the configuration disagrees."""

    effective: str  # on | off | partial | unknown
    evidence: str
    configured: bool | None  # the profile's enable-prefix-caching (None: not set)
    engine: bool | None  # the engine's own report (start-up log or vllm:cache_config_info)
    warnings: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"effective": self.effective, "evidence": self.evidence, "profile_flag": self.configured,
                "engine_reports": self.engine, "warnings": list(self.warnings)}


def prefix_caching_verdict(profile: Profile, engine_config: dict[str, Any], hit: SeriesResult,
                           ratio: float) -> PrefixCaching:
    configured = profile.flag("enable-prefix-caching")
    configured = None if configured is None else bool(configured)
    engine = engine_config.get("enable_prefix_caching")
    engine = None if engine is None else bool(engine)
    m = hit.metrics
    n = len(hit.rounds_s)
    if m is not None and m.has_prefix_counters:
        counted = (f"/metrics: {PREFIX_HITS} rose by {int(m.hits)} tokens of {int(m.queries)} queried "
                   f"over {n} HIT rounds")
        rate = m.hit_rate or 0.0
        if m.hits == 0:
            effective, evidence = "off", counted
        elif rate >= HIT_RATE_ON:
            effective, evidence = "on", f"{counted} ({rate:.0%} served from cache)"
        else:
            effective, evidence = "partial", (f"{counted}: only {rate:.0%} of HIT prompt tokens came from the cache "
                                              "(cache too small for the prefix, or evicted between rounds?)")
    elif engine is not None:
        effective = "on" if engine else "off"
        evidence = f"engine reports enable_prefix_caching={engine}; no prefix-cache counters in /metrics to confirm"
    else:
        effective = "unknown"
        evidence = f"no /metrics counters and no engine config; TTFT MISS/HIT ratio ×{ratio:.2f}"
    return PrefixCaching(effective, evidence, configured, engine,
                         tuple(_configuration_warnings(profile, effective, configured, engine, evidence)))


def _configuration_warnings(profile: Profile, effective: str, configured: bool | None, engine: bool | None,
                            evidence: str) -> list[str]:
    """Where the profile's flags or the engine's report disagree with what was measured. Worded without the
    workload's numbers, so the same finding on two workloads is one warning in the report."""
    where = f"profile '{profile.name}' ({profile.path})"
    basis = "per /metrics prefix-cache counters" if "/metrics" in evidence else "per the engine's own report"
    out = []
    if configured is None and effective in ("on", "partial"):
        out.append(f"{where} does not set server.enable-prefix-caching, and prefix caching is ON ({basis}): vLLM "
                   ">= 0.10 (V1) enables it by default, so omitting --enable-prefix-caching does not disable it. To "
                   "run without it, write 'enable-prefix-caching: false' (--no-enable-prefix-caching).")
    elif configured is False and effective in ("on", "partial"):
        out.append(f"{where} sets enable-prefix-caching: false, yet the server caches ({basis}): the flag did not "
                   "reach the server; check the command the deployment really runs (compose command, extra_args).")
    elif configured is True and effective == "off":
        out.append(f"{where} sets enable-prefix-caching: true, yet nothing is served from the cache ({basis}): "
                   "check that the flag reaches the server and that the KV cache is large enough.")
    if engine is not None and effective in ("on", "off") and engine != (effective == "on"):
        out.append(f"the engine reports enable_prefix_caching={engine} but the measurement says {effective.upper()} "
                   f"({basis}): trust the measurement, and check which server answered.")
    return out


@dataclass
class Acceleration:
    """TTFT MISS / HIT of one workload: the ratio of medians, its interval, and the prefix-caching verdict."""

    workload: str
    miss: SeriesResult
    hit: SeriesResult
    ratio: float  # ratio_of_medians(miss, hit), the headline number
    comparison: Comparison  # miss / hit, Hodges-Lehmann with interval
    caching: PrefixCaching
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        ms, hs = self.miss.summary, self.hit.summary
        c = self.comparison
        return (f"{self.workload}: TTFT MISS median {ms.median * 1000:.1f} ms (IQR {ms.q1 * 1000:.1f}-"
                f"{ms.q3 * 1000:.1f}), HIT median {hs.median * 1000:.1f} ms (IQR {hs.q1 * 1000:.1f}-"
                f"{hs.q3 * 1000:.1f}), {ms.n}+{hs.n} rounds: acceleration ×{self.ratio:.2f} "
                f"({c.confidence:.0%} interval ×{c.low:.2f}-×{c.high:.2f}); prefix caching "
                f"{self.caching.effective.upper()} ({self.caching.evidence})")

    def problems(self, minimum: float | None, source: str) -> list[str]:
        """What makes this measurement fail: below the threshold, hits not confirmed, MISS rounds cached."""
        out = []
        miss_rate = self.miss.metrics.hit_rate if self.miss.metrics else None
        if miss_rate is not None and miss_rate > MISS_HIT_RATE_MAX:
            out.append(f"MISS rounds were served from the cache ({miss_rate:.0%} of their prompt tokens hit): the salt "
                       "did not make them cold, so the acceleration is understated; is a proxy rewriting prompts?")
        if minimum is not None and self.ratio < minimum:
            out.append(f"KV-cache acceleration ×{self.ratio:.2f} is below the required ×{minimum:g} ({source}). "
                       + self._why_slow())
        elif self.caching.effective == "off" and self.ratio >= 1.5:  # a real speed-up, not noise
            out.append(f"TTFT drops ×{self.ratio:.2f} on HIT rounds but /metrics shows no prefix-cache hit "
                       f"({self.caching.evidence}): the speed-up does not come from vLLM's prefix cache "
                       "(a response cache in front of the server?)")
        return out

    def _why_slow(self) -> str:
        c = self.caching
        if c.effective == "off":
            cause = "Prefix caching is OFF on this deployment: " + c.evidence + "."
            if c.configured is False:
                cause += (" The profile sets enable-prefix-caching: false (--no-enable-prefix-caching). Fix: remove "
                          "it; vLLM V1 enables prefix caching by default.")
            elif c.configured is None:
                cause += " Fix: add 'enable-prefix-caching: true' to the profile's server flags."
            return cause
        if c.effective == "partial":
            return "Prefix caching is only partly effective: " + c.evidence + "."
        if c.effective == "on":
            return ("Prefix caching is ON (" + c.evidence + ") but the prefill is not what the MISS rounds wait "
                    "for: look at queueing, tokenization or network time (client TTFT "
                    f"{self.miss.client_ttft_mean_s * 1000:.0f} ms vs server "
                    f"{_ms(self.miss.server_ttft_mean_s)} on MISS).")
        return "Whether prefix caching is on cannot be told: " + c.evidence + "."

    def as_dict(self) -> dict[str, Any]:
        c, ms, hs = self.comparison, self.miss.summary, self.hit.summary
        return {"workload": self.workload, "acceleration": round(self.ratio, 3),
                "interval": [round(c.low, 3), round(c.high, 3)], "confidence": c.confidence,
                "miss_ms_median": round(ms.median * 1000, 2), "miss_ms_iqr": round((ms.q3 - ms.q1) * 1000, 2),
                "hit_ms_median": round(hs.median * 1000, 2), "hit_ms_iqr": round((hs.q3 - hs.q1) * 1000, 2),
                "miss": self.miss.as_dict(), "hit": self.hit.as_dict(), "prefix_caching": self.caching.as_dict(),
                "notes": self.notes}


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.0f} ms"
