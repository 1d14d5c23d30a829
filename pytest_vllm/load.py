"""Throughput under concurrency, with the definitions of vLLM's own benchmark (`vllm bench serve`).

A level sends its requests as streamed chat completions, at most `concurrency` in flight and the next
sent as soon as one finishes (vLLM's `--max-concurrency C --request-rate inf`); each asks for exactly
`output_tokens` (`max_tokens` with `ignore_eos`, vLLM's `--ignore-eos`). Figures, as vLLM's
`benchmarks/serve.py:calculate_metrics` computes them:

- duration: from the first request sent to the last one finished;
- request throughput = completed requests / duration; output throughput = output tokens (from each
  stream's usage) / duration; total token throughput adds the prompt tokens;
- TTFT: send to first token; E2EL: send to last token; TPOT = (E2EL - TTFT) / (output tokens - 1),
  for requests with more than one token; ITL: every gap between consecutive token chunks, pooled;
- percentiles: numpy's default (linear interpolation between closest ranks).

One difference, kept on purpose: vLLM's chat client stops its TTFT clock at the first chunk that has
`choices`, which is the role-only chunk; ours (pytest_vllm.streaming) at the first chunk with text.
vLLM sends both in the same engine step, so they agree to the clock's noise (see the tests).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from .http import VllmClient, error_message, gone
from .streaming import StreamResult, astream_chat

PERCENTILES = (50, 90, 99)


def percentile(values: Sequence[float], p: float) -> float:
    """numpy.percentile(values, p) with its default linear method; 0.0 for no values (as vLLM's `or 0`)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def distribution_ms(values: Sequence[float]) -> dict[str, float]:
    """mean, median and percentiles in milliseconds, rounded for reports."""
    out = {"mean": statistics.fmean(values) * 1000 if values else 0.0, "median": percentile(values, 50) * 1000}
    out.update({f"p{p}": percentile(values, p) * 1000 for p in PERCENTILES})
    return {k: round(v, 3) for k, v in out.items()}


@dataclass
class LevelResult:
    """One concurrency level: per-request timings and what they add up to."""

    concurrency: int
    requests: int
    duration_s: float = 0.0
    ttft_s: list[float] = field(default_factory=list)
    e2el_s: list[float] = field(default_factory=list)
    tpot_s: list[float] = field(default_factory=list)
    itl_s: list[float] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def completed(self) -> int:
        return len(self.ttft_s)

    @property
    def request_throughput(self) -> float:
        return self.completed / self.duration_s if self.duration_s else 0.0

    @property
    def output_throughput(self) -> float:
        return self.output_tokens / self.duration_s if self.duration_s else 0.0

    def add(self, result: StreamResult) -> None:
        if result.status != 200:
            self.errors.append(f"HTTP {result.status}: {error_message(result.error_body)}")
            return
        if result.ttft_s is None:
            self.errors.append("the stream carried no token (TTFT undefined)")
            return
        tokens = int((result.usage or {}).get("completion_tokens") or len(result.text_times))
        latency = result.text_times[-1]  # vLLM: the last token chunk ends the request, not the usage chunk
        self.ttft_s.append(result.ttft_s)
        self.e2el_s.append(latency)
        if tokens > 1:
            self.tpot_s.append((latency - result.ttft_s) / (tokens - 1))
        self.itl_s += result.itl_s
        self.output_tokens += tokens
        self.input_tokens += int((result.usage or {}).get("prompt_tokens") or 0)

    def as_dict(self) -> dict[str, Any]:
        return {"concurrency": self.concurrency, "requests": self.requests, "completed": self.completed,
                "failed": len(self.errors), "duration_s": round(self.duration_s, 3),
                "request_throughput": round(self.request_throughput, 3),
                "output_throughput": round(self.output_throughput, 3),
                "total_token_throughput": round((self.input_tokens + self.output_tokens) / self.duration_s, 3)
                if self.duration_s else 0.0,
                "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "ttft_ms": distribution_ms(self.ttft_s), "tpot_ms": distribution_ms(self.tpot_s),
                "itl_ms": distribution_ms(self.itl_s), "e2el_ms": distribution_ms(self.e2el_s),
                "errors": self.errors[:5]}

    def line(self) -> str:
        """One row of the printed table."""
        t, i = distribution_ms(self.ttft_s), distribution_ms(self.itl_s)
        return (f"c={self.concurrency:<3} {self.completed}/{self.requests} ok  {self.request_throughput:7.2f} req/s  "
                f"{self.output_throughput:8.1f} out tok/s  TTFT median {t['median']:8.1f} p99 {t['p99']:8.1f} ms  "
                f"ITL median {i['median']:6.1f} p99 {i['p99']:6.1f} ms")


def run_level(client: VllmClient, prompts: Sequence[list[dict[str, Any]]], concurrency: int, output_tokens: int,
              **params: Any) -> LevelResult:
    """Send every prompt, `concurrency` at a time; each asks for exactly `output_tokens`. One asyncio loop
    on aiohttp carries every stream, as vLLM's benchmark client does: on a fast server the client's own cost
    per chunk lands in the figures, and threads (GIL) or httpx's async stack were measured to add more."""
    result = LevelResult(concurrency, len(prompts))
    sampling = {"max_tokens": output_tokens, "ignore_eos": True, "temperature": 0, **params}
    url = client.base_url + "/v1/chat/completions"

    async def level() -> tuple[float, list[StreamResult | str]]:
        """The level's start (once its connections are open) and each request's outcome."""
        gate = asyncio.Semaphore(concurrency)
        connector = aiohttp.TCPConnector(limit=concurrency, keepalive_timeout=60)
        timeout = aiohttp.ClientTimeout(total=client.timeout)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            async def one(messages: list[dict[str, Any]]) -> StreamResult | str:
                async with gate:
                    try:
                        return await astream_chat(session, url, client.chat_payload(messages, sampling),
                                                  client.headers())
                    except (TimeoutError, aiohttp.ClientError) as exc:
                        return str(gone(client.base_url, exc))
            await asyncio.gather(*(_connect(session, client.base_url) for _ in range(concurrency)))
            start = time.perf_counter()
            return start, await asyncio.gather(*(one(m) for m in prompts))

    start, outcomes = asyncio.run(level())
    result.duration_s = time.perf_counter() - start
    for outcome in outcomes:
        if isinstance(outcome, str):
            result.errors.append(outcome)
        else:
            result.add(outcome)
    return result


async def _connect(session: aiohttp.ClientSession, base_url: str) -> None:
    """Open one of the level's connections before its clock starts (vLLM's benchmark opens its own with an
    unmeasured "initial test run"): a cold first connect stalled whole levels by 100 ms and more."""
    try:
        async with session.get(base_url + "/health") as response:
            await response.read()
    except aiohttp.ClientError:
        pass  # the level's own requests will say what is wrong
