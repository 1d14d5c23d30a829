"""The emulator's `/metrics`: vLLM V1's names, labels and TTFT buckets, in Prometheus text format.

Counters as vLLM counts them: `prefix_cache_queries` += prompt tokens and `prefix_cache_hits` +=
cached prompt tokens per request (both stay 0 when prefix caching is off), TTFT observed per request.
`vllm:cache_config_info` carries the labels the suites read (block_size, enable_prefix_caching, ...).
`pytest_vllm_emulator_info` says plainly that this is the emulator.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

# vLLM 0.32 default buckets of vllm:time_to_first_token_seconds (as /metrics shows them)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)


@dataclass
class Counters:
    prefix_cache_queries: int = 0
    prefix_cache_hits: int = 0
    prompt_tokens: int = 0
    generation_tokens: int = 0
    requests: dict[str, int] = field(default_factory=dict)  # finish reason -> count
    ttft_buckets: list[int] = field(default_factory=lambda: [0] * len(TTFT_BUCKETS))
    ttft_count: int = 0
    ttft_sum: float = 0.0
    running: int = 0


class Metrics:
    """Thread-safe counters plus the Prometheus rendering."""

    def __init__(self, model_name: str, block_size: int, prefix_caching: bool, version: str) -> None:
        self.model_name = model_name
        self.labels = f'engine="0",model_name="{model_name}"'
        self.block_size = block_size
        self.prefix_caching = prefix_caching
        self.version = version
        self.created = time.time()
        self._c = Counters()
        self._lock = threading.Lock()

    def started(self) -> None:
        with self._lock:
            self._c.running += 1

    def finished(self, *, prompt_tokens: int, cached_tokens: int, completion_tokens: int, ttft_s: float,
                 finish_reason: str) -> None:
        with self._lock:
            c = self._c
            c.running -= 1
            if self.prefix_caching:
                c.prefix_cache_queries += prompt_tokens
                c.prefix_cache_hits += cached_tokens
            c.prompt_tokens += prompt_tokens
            c.generation_tokens += completion_tokens
            c.requests[finish_reason] = c.requests.get(finish_reason, 0) + 1
            for i, bound in enumerate(TTFT_BUCKETS):
                if ttft_s <= bound:
                    c.ttft_buckets[i] += 1
            c.ttft_count += 1
            c.ttft_sum += ttft_s

    def reset(self) -> None:
        with self._lock:
            running = self._c.running
            self._c = Counters(running=running)

    def render(self) -> str:
        with self._lock:
            c = self._c
            lab = self.labels
            lines = [
                "# HELP pytest_vllm_emulator_info This server is the pytest-vllm emulator, a test instrument.",
                "# TYPE pytest_vllm_emulator_info gauge",
                f'pytest_vllm_emulator_info{{version="{self.version}"}} 1.0',
                "# TYPE vllm:num_requests_running gauge",
                f"vllm:num_requests_running{{{lab}}} {float(c.running)}",
            ]
            for name, value, doc in (
                ("prefix_cache_queries", c.prefix_cache_queries, "Prefix cache queries, in terms of number of "
                                                                 "queried tokens."),
                ("prefix_cache_hits", c.prefix_cache_hits, "Prefix cache hits, in terms of number of cached tokens."),
                ("prompt_tokens", c.prompt_tokens, "Number of prefill tokens processed."),
                ("generation_tokens", c.generation_tokens, "Number of generation tokens processed."),
            ):
                lines += [f"# HELP vllm:{name}_total {doc}", f"# TYPE vllm:{name}_total counter",
                          f"vllm:{name}_total{{{lab}}} {float(value)}",
                          f"vllm:{name}_created{{{lab}}} {self.created}"]
            lines += ["# TYPE vllm:request_success_total counter"]
            lines += [f'vllm:request_success_total{{{lab},finished_reason="{r}"}} {float(n)}'
                      for r, n in sorted(c.requests.items())]
            lines += ["# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.",
                      "# TYPE vllm:time_to_first_token_seconds histogram"]
            lines += [f'vllm:time_to_first_token_seconds_bucket{{engine="0",le="{b}",'
                      f'model_name="{self.model_name}"}} {float(n)}'
                      for b, n in zip(TTFT_BUCKETS, c.ttft_buckets, strict=True)]
            lines += [f'vllm:time_to_first_token_seconds_bucket{{engine="0",le="+Inf",'
                      f'model_name="{self.model_name}"}} {float(c.ttft_count)}',
                      f"vllm:time_to_first_token_seconds_count{{{lab}}} {float(c.ttft_count)}",
                      f"vllm:time_to_first_token_seconds_sum{{{lab}}} {c.ttft_sum}"]
            lines += ["# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig",
                      "# TYPE vllm:cache_config_info gauge",
                      f'vllm:cache_config_info{{block_size="{self.block_size}",cache_dtype="auto",'
                      f'enable_prefix_caching="{self.prefix_caching}",engine="0",gpu_memory_utilization="0.9",'
                      f'prefix_caching_hash_algo="sha256"}} 1.0']
            return "\n".join(lines) + "\n"
