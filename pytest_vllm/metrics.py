"""Prometheus text from vLLM's `/metrics`, read with `prometheus_client`'s own parser (the reference
implementation of the format: escapes, `+Inf`, histograms), and the counters the suites rely on.

A scrape is a flat list of `Sample`s as the parser yields them: `name` is the sample's own name
(`vllm:prefix_cache_queries_total`, `vllm:time_to_first_token_seconds_bucket`, `..._sum`), `family`
and `kind` those of its metric family (`counter`, `gauge`, `histogram`, ...). Metric names follow
vLLM V1; values are summed over label sets (one per engine / model).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from .errors import VllmTestError


class MetricsFormatError(VllmTestError):
    """`/metrics` answered text that is not the Prometheus exposition format."""


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float
    family: str = ""
    kind: str = ""


def parse_metrics(text: str) -> list[Sample]:
    """Every sample of a Prometheus text scrape; raises MetricsFormatError quoting the parser."""
    try:
        return [Sample(s.name, dict(s.labels), float(s.value), family.name, family.type)
                for family in text_string_to_metric_families(text) for s in family.samples]
    except ValueError as exc:
        raise MetricsFormatError(f"/metrics is not Prometheus text format (prometheus_client: {exc}); a proxy "
                                 "or a non-vLLM server answers there") from None


def total(samples: list[Sample], name: str) -> float:
    """Sum of a sample name over its label sets; 0.0 when absent."""
    return sum(s.value for s in samples if s.name == name)


def kind(samples: list[Sample], name: str) -> str | None:
    """The family type (counter, gauge, histogram...) the server declared for a sample name, None when absent."""
    return next((s.kind for s in samples if s.name == name), None)


def has_vllm_metrics(samples: list[Sample]) -> bool:
    return any(s.name.startswith("vllm:") for s in samples)


def info_labels(samples: list[Sample], name: str) -> dict[str, str]:
    """Labels of an info-style gauge such as `vllm:cache_config_info`."""
    for s in samples:
        if s.name == name:
            return dict(s.labels)
    return {}


@dataclass(frozen=True)
class Histogram:
    """One histogram family summed over its label sets: cumulative buckets (upper bound, count), sum, count."""

    name: str
    buckets: tuple[tuple[float, float], ...]
    sum: float
    count: float

    def problems(self) -> list[str]:
        """What breaks the histogram invariants (cumulative buckets ending in +Inf = count); [] when sound."""
        found = []
        counts = [c for _, c in self.buckets]
        if any(b < a for a, b in zip(counts, counts[1:], strict=False)):
            found.append(f"{self.name}: bucket counts decrease ({counts}); buckets must be cumulative")
        if not self.buckets or not math.isinf(self.buckets[-1][0]):
            found.append(f"{self.name}: no le=\"+Inf\" bucket")
        elif self.buckets[-1][1] != self.count:
            found.append(f"{self.name}: +Inf bucket {self.buckets[-1][1]} != _count {self.count}")
        return found


def histogram(samples: list[Sample], name: str) -> Histogram | None:
    """The histogram `name` (without suffix), None when the scrape has no `<name>_count`."""
    if not any(s.name == f"{name}_count" for s in samples):
        return None
    buckets: dict[float, float] = {}
    for s in samples:
        if s.name == f"{name}_bucket":
            bound = float(s.labels["le"])
            buckets[bound] = buckets.get(bound, 0.0) + s.value
    return Histogram(name, tuple(sorted(buckets.items())), total(samples, f"{name}_sum"),
                     total(samples, f"{name}_count"))
