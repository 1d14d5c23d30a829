"""The measurement window: `/metrics` before and after a series, and what the server counted in between.

`vllm:prefix_cache_queries_total` and `vllm:prefix_cache_hits_total` deltas (tokens) say whether HIT
rounds really were served from the cache; the `vllm:time_to_first_token_seconds` histogram cross-checks
the client-side TTFT. The server's stats trail the stream, so both ends of the window wait until the
counters settle.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ..http import VllmClient
from ..metrics import Sample, has_vllm_metrics, total

METRICS_SETTLE_S = 2.0
PREFIX_HITS = "vllm:prefix_cache_hits_total"
PREFIX_QUERIES = "vllm:prefix_cache_queries_total"
TTFT_SUM = "vllm:time_to_first_token_seconds_sum"
TTFT_COUNT = "vllm:time_to_first_token_seconds_count"


@dataclass(frozen=True)
class MetricsSnapshot:
    queries: float
    hits: float
    ttft_sum: float
    ttft_count: float
    has_prefix_counters: bool

    @classmethod
    def take(cls, client: VllmClient) -> MetricsSnapshot | None:
        """None when the server has no vLLM `/metrics` (an external endpoint behind a proxy, say)."""
        try:
            samples = client.metrics()
        except Exception:  # noqa: BLE001 - no metrics is a normal case for external endpoints
            return None
        if not has_vllm_metrics(samples):
            return None
        return cls.of(samples)

    @classmethod
    def of(cls, samples: list[Sample]) -> MetricsSnapshot:
        return cls(total(samples, PREFIX_QUERIES), total(samples, PREFIX_HITS), total(samples, TTFT_SUM),
                   total(samples, TTFT_COUNT), any(s.name == PREFIX_QUERIES for s in samples))

    def minus(self, before: MetricsSnapshot) -> MetricsDelta:
        return MetricsDelta(self.queries - before.queries, self.hits - before.hits,
                            self.ttft_sum - before.ttft_sum, self.ttft_count - before.ttft_count,
                            self.has_prefix_counters)


@dataclass(frozen=True)
class MetricsDelta:
    """What `/metrics` counted during one series (prefix cache in tokens, the server's TTFT histogram)."""

    queries: float
    hits: float
    ttft_sum: float
    ttft_count: float
    has_prefix_counters: bool

    @property
    def hit_rate(self) -> float | None:
        return self.hits / self.queries if self.queries else None

    @property
    def server_ttft_mean_s(self) -> float | None:
        return self.ttft_sum / self.ttft_count if self.ttft_count else None

    def as_dict(self) -> dict[str, Any]:
        rate = self.hit_rate
        return {"prefix_cache_queries": int(self.queries), "prefix_cache_hits": int(self.hits),
                "hit_rate": None if rate is None else round(rate, 4), "server_ttft_count": int(self.ttft_count)}


class MetricsWindow:
    """`open()` once the unmeasured requests are counted, `close(requests)` once the window's are."""

    def __init__(self, client: VllmClient) -> None:
        self.client = client
        self._before: MetricsSnapshot | None = None

    def open(self) -> None:
        deadline = time.monotonic() + METRICS_SETTLE_S
        last = MetricsSnapshot.take(self.client)
        while last is not None and time.monotonic() < deadline:
            time.sleep(0.1)
            now = MetricsSnapshot.take(self.client)
            if now == last:
                break
            last = now
        self._before = last

    def close(self, requests: int) -> MetricsDelta | None:
        """The delta once the server's TTFT histogram counts `requests` more (or the settle time ran out)."""
        if self._before is None:
            return None
        deadline = time.monotonic() + METRICS_SETTLE_S
        while True:
            after = MetricsSnapshot.take(self.client)
            if after is None:
                return None
            delta = after.minus(self._before)
            if delta.ttft_count >= requests or time.monotonic() > deadline:
                return delta
            time.sleep(0.05)
