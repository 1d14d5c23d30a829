"""KV-cache acceleration: TTFT on prompts the server has never seen (MISS) against prompts whose prefix it
already holds (HIT), on the users' workloads, confirmed by vLLM's own prefix-cache counters.

- `workloads`: what MISS and HIT rounds send (long shared prefix, agent conversation), sized in tokens;
- `measurement`: the `/metrics` window around a series (prefix-cache counters, server TTFT histogram);
- `series`: the one round loop (prime, warm up, timed rounds, more on request);
- `verdict`: the acceleration, whether prefix caching is effectively on, and the advice when it is not;
- `bench`: one deployment's series, measured once and shared by the suite's tests and the TTFT history.
"""

from .bench import KvBench, acceleration_minimum
from .measurement import MetricsDelta, MetricsSnapshot
from .series import Series, SeriesResult
from .verdict import Acceleration, PrefixCaching, prefix_caching_verdict, ratio_of_medians
from .workloads import (
    CACHE_STATES,
    CONVERSATION_TURNS,
    WORKLOADS,
    AgentConversation,
    LongPrefix,
    MeasurementError,
    TextSize,
    Workload,
    filler,
    salt,
)

__all__ = ["CACHE_STATES", "CONVERSATION_TURNS", "WORKLOADS", "Acceleration", "AgentConversation", "KvBench",
           "LongPrefix", "MeasurementError", "MetricsDelta", "MetricsSnapshot", "PrefixCaching", "Series",
           "SeriesResult", "TextSize", "Workload", "acceleration_minimum", "filler", "prefix_caching_verdict",
           "ratio_of_medians", "salt"]
