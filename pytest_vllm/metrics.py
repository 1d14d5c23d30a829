"""Prometheus text from vLLM's `/metrics`: parse it and read the counters the suites rely on.

Metric names follow vLLM V1 (`vllm:prefix_cache_queries_total`, `vllm:prefix_cache_hits_total`,
`vllm:time_to_first_token_seconds_*`, `vllm:cache_config_info`); values are summed over label sets
(one per engine / model) unless a label filter is given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def parse_metrics(text: str) -> list[Sample]:
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        try:
            value = float(m.group(4))
        except ValueError:
            continue
        labels = dict(_LABEL.findall(m.group(3) or ""))
        samples.append(Sample(m.group(1), labels, value))
    return samples


def total(samples: list[Sample], name: str) -> float:
    """Sum of a metric over its label sets; 0.0 when absent."""
    return sum(s.value for s in samples if s.name == name)


def has_vllm_metrics(samples: list[Sample]) -> bool:
    return any(s.name.startswith("vllm:") for s in samples)


def info_labels(samples: list[Sample], name: str) -> dict[str, str]:
    """Labels of an info-style gauge such as `vllm:cache_config_info`."""
    for s in samples:
        if s.name == name:
            return dict(s.labels)
    return {}
