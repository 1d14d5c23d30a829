"""How TTFT is measured: one streamed chat completion, timed chunk by chunk, and assembled.

TTFT runs from just before the request is sent to the first SSE chunk that carries content or
reasoning text (the role-only chunk does not count; a reasoning delta does, under either of vLLM's
field names `reasoning_content` (<= 0.11) and `reasoning` (newer)). Raw SSE on purpose: the clock and
each chunk's arrival are the subject. The same pass assembles content, reasoning and tool-call deltas
(for the TTFT workloads and the emulator's tests; the functional suites assemble streamed answers
with the OpenAI SDK's helper instead, see pytest_vllm.sdk).
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx

REASONING_FIELDS = ("reasoning_content", "reasoning")


@dataclass
class StreamResult:
    """Everything one streamed completion produced, with the arrival time of each chunk."""

    status: int
    chunks: list[dict[str, Any]] = field(default_factory=list)
    chunk_times: list[float] = field(default_factory=list)  # seconds since send, one per chunk
    ttft_s: float | None = None
    text_times: list[float] = field(default_factory=list)  # arrival of chunks that carried text
    content: str = ""
    reasoning: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    e2e_s: float = 0.0
    error_body: str = ""

    @property
    def itl_s(self) -> list[float]:
        """Inter-token latencies: gaps between consecutive text-carrying chunks."""
        return [b - a for a, b in zip(self.text_times, self.text_times[1:], strict=False)]

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first (vLLM's definition), from usage when present."""
        tokens = (self.usage or {}).get("completion_tokens") or len(self.text_times)
        if self.ttft_s is None or tokens < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (tokens - 1)

    @property
    def median_itl_s(self) -> float | None:
        return statistics.median(self.itl_s) if self.itl_s else None


def _merge_tool_delta(calls: list[dict[str, Any]], delta: dict[str, Any]) -> None:
    index = delta.get("index", len(calls))
    while len(calls) <= index:
        calls.append({"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
    call = calls[index]
    if delta.get("id"):
        call["id"] = delta["id"]
    fn = delta.get("function") or {}
    if fn.get("name"):
        call["function"]["name"] += fn["name"]
    if fn.get("arguments"):
        call["function"]["arguments"] += fn["arguments"]


def consume_chunk(result: StreamResult, chunk: dict[str, Any], at: float) -> None:
    """Fold one parsed SSE chunk into the result (public so the emulator's tests reuse it)."""
    result.chunks.append(chunk)
    result.chunk_times.append(at)
    if chunk.get("usage"):
        result.usage = chunk["usage"]
    carried_text = False
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta") or {}
        if choice.get("text"):  # /v1/completions streams `text`, not a delta
            result.content += choice["text"]
            carried_text = True
        if delta.get("content"):
            result.content += delta["content"]
            carried_text = True
        for name in REASONING_FIELDS:
            if delta.get(name):
                result.reasoning += delta[name]
                carried_text = True
        for tool_delta in delta.get("tool_calls") or []:
            _merge_tool_delta(result.tool_calls, tool_delta)
            carried_text = True
        if choice.get("finish_reason"):
            result.finish_reason = choice["finish_reason"]
    if carried_text:
        result.text_times.append(at)
        if result.ttft_s is None:
            result.ttft_s = at


def _streamed(payload: dict[str, Any]) -> dict[str, Any]:
    body = {**payload, "stream": True}
    body.setdefault("stream_options", {"include_usage": True})
    return body


class _SseReader:
    """Folds an SSE byte stream into a StreamResult; each `data:` line stamped when its bytes arrived."""

    def __init__(self, result: StreamResult, start: float) -> None:
        self.result, self.start, self.pending, self.done = result, start, b"", False

    def feed(self, block: bytes) -> None:
        at = time.perf_counter() - self.start
        *lines, self.pending = (self.pending + block).split(b"\n")
        for line in lines:
            line = line.strip()
            if self.done or not line.startswith(b"data:"):
                continue
            data = line[5:].strip().decode("utf-8")
            if data == "[DONE]":
                self.done = True
            else:
                consume_chunk(self.result, json.loads(data), at)


def stream_chat(client: httpx.Client, url: str, payload: dict[str, Any], headers: dict[str, str],
                timeout: float) -> StreamResult:
    """POST a streamed chat completion and time it. Non-200 answers come back with error_body set.

    The clock starts when httpcore begins writing the request to the socket (its trace event), so JSON
    encoding and connection-pool bookkeeping are not counted; a transport without that event falls back
    to the moment before `send`. Each SSE line is stamped when its bytes arrive, before it is decoded.
    """
    sent: list[float] = []

    def trace(event: str, info: dict[str, Any]) -> None:
        if event.endswith("send_request_headers.started") and not sent:
            sent.append(time.perf_counter())

    request = client.build_request("POST", url, json=_streamed(payload), headers=headers, timeout=timeout,
                                   extensions={"trace": trace})
    before_send = time.perf_counter()
    response = client.send(request, stream=True)
    start = sent[0] if sent else before_send
    try:
        result = StreamResult(status=response.status_code)
        if response.status_code != 200:
            result.error_body = response.read().decode("utf-8", errors="replace")
        else:
            reader = _SseReader(result, start)
            for block in response.iter_bytes():
                reader.feed(block)
                if reader.done:
                    break
    finally:
        response.close()
    result.e2e_s = time.perf_counter() - start
    return result


async def astream_chat(session: aiohttp.ClientSession, url: str, payload: dict[str, Any],
                       headers: dict[str, str]) -> StreamResult:
    """`stream_chat` on aiohttp's asyncio client, the one vLLM's own benchmark uses: many streams in flight
    on one thread. The clock starts before the request is sent, as vLLM's benchmark starts it."""
    start = time.perf_counter()
    async with session.post(url, json=_streamed(payload), headers=headers) as response:
        result = StreamResult(status=response.status)
        if response.status != 200:
            result.error_body = (await response.read()).decode("utf-8", errors="replace")
        else:
            reader = _SseReader(result, start)
            async for block in response.content.iter_any():
                reader.feed(block)
                if reader.done:
                    break
    result.e2e_s = time.perf_counter() - start
    return result
