"""The one MISS/HIT round loop: prime, warm up, open the metrics window, time rounds, close the window.

Both the KV-cache suite (through `KvBench`) and the TTFT history (`pytest_vllm.history`, which also asks
for more rounds while its regression verdict is undecided) measure through `Series.measure`. A round's
value is the TTFT of its request, or the mean TTFT over the measured turns of one conversation.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..http import VllmClient
from ..samples import Summary
from .measurement import MetricsDelta, MetricsWindow
from .workloads import CACHE_STATES, MeasurementError, Request, Workload

MAX_TOKENS = 4  # the answer only has to start; a few tokens in case the first is a silent special token
PAUSE_S = 0.05  # untimed gap before each request: the previous answer's tail must not weigh on this TTFT

# Given the round values so far, how many more rounds to run (0: stop).
MoreRounds = Callable[[Sequence[float]], int]


@dataclass
class SeriesResult:
    """One MISS or HIT series: a TTFT value per round, and what the server counted meanwhile."""

    workload: str
    cache: str
    rounds_s: list[float]
    prompt_tokens: list[int]  # of the measured requests
    client_ttft_s: list[float]  # every request inside the metrics window, measured or not
    metrics: MetricsDelta | None

    @property
    def summary(self) -> Summary:
        return Summary.of(self.rounds_s)

    @property
    def server_ttft_mean_s(self) -> float | None:
        return self.metrics.server_ttft_mean_s if self.metrics else None

    @property
    def client_ttft_mean_s(self) -> float:
        return statistics.fmean(self.client_ttft_s)

    def as_dict(self) -> dict[str, Any]:
        server = self.server_ttft_mean_s
        return {"workload": self.workload, "cache": self.cache, "ttft_ms": self.summary.as_dict(1000, 2),
                "rounds_ms": [round(v * 1000, 2) for v in self.rounds_s],
                "prompt_tokens_median": int(statistics.median(self.prompt_tokens)),
                "client_ttft_mean_ms": round(self.client_ttft_mean_s * 1000, 2),
                "server_ttft_mean_ms": None if server is None else round(server * 1000, 2),
                "metrics": self.metrics.as_dict() if self.metrics else None}


def no_more(rounds_s: Sequence[float]) -> int:
    return 0


class Series:
    """MISS or HIT rounds of one workload; measured once, by `measure()`."""

    def __init__(self, client: VllmClient, workload: Workload, cache: str, rounds: int) -> None:
        if cache not in CACHE_STATES:
            raise ValueError(f"cache must be one of {CACHE_STATES}, got {cache!r}")
        self.client, self.workload, self.cache, self.rounds = client, workload, cache, rounds
        self.result: SeriesResult | None = None
        self._index = 0

    @property
    def name(self) -> str:
        return f"{self.workload.name}/{self.cache}"

    def measure(self, more: MoreRounds = no_more) -> SeriesResult:
        """Prime (HIT), one unmeasured warm-up round, then `rounds` timed rounds and as many more as `more` asks."""
        for request in self.workload.priming(self.cache):
            self._send(request)
        self._round(self._plan(), window_ttft=None, prompt_tokens=None)
        window = MetricsWindow(self.client)
        window.open()
        rounds_s: list[float] = []
        prompt_tokens: list[int] = []
        window_ttft: list[float] = []
        todo = self.rounds
        while todo > 0:
            for _ in range(todo):
                rounds_s.append(self._round(self._plan(), window_ttft, prompt_tokens))
            todo = more(rounds_s)
        self.result = SeriesResult(self.workload.name, self.cache, rounds_s, prompt_tokens, window_ttft,
                                   window.close(len(window_ttft)))
        return self.result

    def _plan(self) -> list[Request]:
        self._index += 1  # salting happens here, before the round's clock starts
        return self.workload.plan(self.cache, self._index)

    def _round(self, requests: list[Request], window_ttft: list[float] | None,
               prompt_tokens: list[int] | None) -> float:
        """Send one round; returns its TTFT value in seconds (mean over its measured requests)."""
        ttfts = []
        for request in requests:
            ttft, tokens = self._send(request)
            if window_ttft is not None:
                window_ttft.append(ttft)
            if request.measured:
                ttfts.append(ttft)
                if prompt_tokens is not None:
                    prompt_tokens.append(tokens)
        return statistics.fmean(ttfts)

    def _send(self, request: Request) -> tuple[float, int]:
        time.sleep(PAUSE_S)
        result = self.client.stream_chat(request.messages, max_tokens=MAX_TOKENS, temperature=0)
        if result.status != 200:
            raise MeasurementError(f"{self.name}: the server answered {result.status}: {result.error_body[:300]}")
        if result.ttft_s is None:
            raise MeasurementError(
                f"{self.name}: the stream carried no content or reasoning text in {MAX_TOKENS} tokens "
                f"(finish_reason {result.finish_reason!r}), so there is no first token to time")
        return result.ttft_s, int((result.usage or {}).get("prompt_tokens") or 0)
