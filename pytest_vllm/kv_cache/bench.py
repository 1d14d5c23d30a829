"""The KV-cache measurements of one deployment: series built on demand, measured once, reused by the tests."""

from __future__ import annotations

from typing import Any

from ..errors import ProfileError
from ..http import VllmClient
from ..profile import Profile
from ..samples import compare
from .series import Series, SeriesResult
from .verdict import Acceleration, prefix_caching_verdict, ratio_of_medians
from .workloads import WORKLOAD_TYPES, TextSize, Workload, calibrate


def acceleration_minimum(profile: Profile, workload: str) -> tuple[float | None, str]:
    """`thresholds.kv_cache_acceleration_min`: one number for every workload, or a mapping per workload."""
    value = profile.thresholds.get("kv_cache_acceleration_min")
    where = f"thresholds.kv_cache_acceleration_min in {profile.path}"
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(WORKLOAD_TYPES))
        if unknown:
            raise ProfileError(f"unknown workload {', '.join(unknown)}", file=str(profile.path),
                               key="thresholds.kv_cache_acceleration_min",
                               fix=f"name workloads among: {', '.join(WORKLOAD_TYPES)}")
        value, where = value.get(workload), f"thresholds.kv_cache_acceleration_min.{workload} in {profile.path}"
    return (None if value is None else float(value)), where


class KvBench:
    """Series of one deployment, keyed by (workload, cache); each is measured once, by whoever asks first."""

    def __init__(self, client: VllmClient, profile: Profile, engine_config: dict[str, Any],
                 rounds: int | None = None, confidence: float | None = None) -> None:
        self.client, self.profile, self.engine_config = client, profile, engine_config
        self.rounds = int(rounds or profile.thresholds.get("kv_rounds", 5))
        self.confidence = float(confidence or profile.thresholds.get("regression_confidence", 0.95))
        self.size: TextSize | None = None
        self._workloads: dict[str, Workload] = {}
        self._series: dict[tuple[str, str], Series] = {}

    def calibrate(self) -> TextSize:
        if self.size is None:
            self.size = calibrate(self.client)
        return self.size

    def workload(self, name: str) -> Workload:
        if name not in WORKLOAD_TYPES:
            raise ValueError(f"unknown workload {name!r}; known: {', '.join(WORKLOAD_TYPES)}")
        if name not in self._workloads:
            self._workloads[name] = WORKLOAD_TYPES[name](self.calibrate())
        return self._workloads[name]

    def series(self, workload: str, cache: str) -> Series:
        key = (workload, cache)
        if key not in self._series:
            self._series[key] = Series(self.client, self.workload(workload), cache, self.rounds)
        return self._series[key]

    def result(self, workload: str, cache: str) -> SeriesResult:
        """The series' result, measured now if no test measured it yet."""
        series = self.series(workload, cache)
        return series.result or series.measure()

    def acceleration(self, workload: str) -> Acceleration:
        miss, hit = self.result(workload, "miss"), self.result(workload, "hit")
        ratio = ratio_of_medians(miss, hit)
        comparison = compare(miss.rounds_s, hit.rounds_s, self.confidence)
        caching = prefix_caching_verdict(self.profile, self.engine_config, hit, ratio)
        result = Acceleration(workload, miss, hit, ratio, comparison, caching)
        for series in (miss, hit):
            server = series.server_ttft_mean_s
            if server is not None:
                result.notes.append(f"{series.cache}: client TTFT mean {series.client_ttft_mean_s * 1000:.1f} ms, "
                                    f"server histogram mean {server * 1000:.1f} ms over the same "
                                    f"{int(series.metrics.ttft_count) if series.metrics else 0} requests")
        return result
