"""Stability over time (`--soak MINUTES`): steady load at the profile's rate, watched for what breaks slowly.

For MINUTES, a streamed chat request starts every 1 / `load.soak_rate_rps` seconds, whether or not the
previous one has finished (a slowing server piles up load, as in production). Every `watch_s` seconds
the watcher polls /health, asks the backend whether the server is still alive, reads the server's start
time and memory. The soak fails on any of:

- a request that errors (non-200, a broken connection, a stream without a token);
- /health answering anything but 200, even once;
- a restart: the backend says the server died, or /metrics' `process_start_time_seconds` changed;
- an error line written to the server log during the soak (vLLM's `ERROR`/`CRITICAL`, a traceback);
- memory growth beyond `thresholds.soak_memory_growth_mib_max`: the median of the last three samples
  minus that of the first three, for the server's RSS (all processes of a process backend's group, else
  /metrics' `process_resident_memory_bytes`) and for GPU memory used (NVML, where there is a GPU).
"""

from __future__ import annotations

import os
import re
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import interrupts
from .errors import VllmTestError
from .http import ServerGone, VllmClient, error_message
from .metrics import total
from .streaming import StreamResult

LOG_ERROR = re.compile(r"(?:^|[\s)\]])(?:ERROR|CRITICAL)\b|Traceback \(most recent call last\)")
EDGE_SAMPLES = 3  # memory growth compares the median of the first and of the last samples
MIB = 1024 * 1024


@dataclass
class SoakResult:
    """What a soak saw; `problems(limit)` says why it fails, if it does."""

    minutes: float
    rate_rps: float
    sent: int = 0
    ttft_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    health: list[str] = field(default_factory=list)  # every /health answer that was not 200
    restarts: list[str] = field(default_factory=list)
    log_errors: list[str] = field(default_factory=list)
    memory_mib: dict[str, list[float]] = field(default_factory=dict)  # source -> samples over time
    health_polls: int = 0

    def growth_mib(self) -> dict[str, float]:
        return {source: statistics.median(s[-EDGE_SAMPLES:]) - statistics.median(s[:EDGE_SAMPLES])
                for source, s in self.memory_mib.items() if len(s) >= 2 * EDGE_SAMPLES}

    def problems(self, growth_limit_mib: float | None, where: str) -> list[str]:
        found = []
        if self.errors:
            found.append(f"{len(self.errors)} of {self.sent} requests failed; first: {self.errors[0]}")
        if self.health:
            found.append(f"/health left 200 {len(self.health)} time(s) in {self.health_polls} polls; first: "
                         f"{self.health[0]}")
        found += [f"the server restarted: {r}" for r in self.restarts[:1]]
        if self.log_errors:
            found.append(f"{len(self.log_errors)} error line(s) in the server log during the soak; first: "
                         f"{self.log_errors[0][:300]}")
        if growth_limit_mib is not None:
            found += [f"{source} grew by {grown:.0f} MiB during the soak, more than the {growth_limit_mib} MiB "
                      f"allowed (thresholds.soak_memory_growth_mib_max {where}): a leak"
                      for source, grown in self.growth_mib().items() if grown > growth_limit_mib]
        return found

    def as_dict(self) -> dict[str, Any]:
        ttft = sorted(self.ttft_s)
        return {"minutes": self.minutes, "rate_rps": self.rate_rps, "sent": self.sent, "ok": len(self.ttft_s),
                "failed": len(self.errors), "health_polls": self.health_polls, "health_not_200": len(self.health),
                "restarts": self.restarts, "log_errors": self.log_errors[:5], "errors": self.errors[:5],
                "ttft_ms": {"median": round(statistics.median(ttft) * 1000, 1) if ttft else None,
                            "max": round(ttft[-1] * 1000, 1) if ttft else None},
                "memory_mib": {s: {"first": round(v[0], 1), "last": round(v[-1], 1), "max": round(max(v), 1)}
                               for s, v in self.memory_mib.items() if v},
                "memory_growth_mib": {s: round(g, 1) for s, g in self.growth_mib().items()}}

    def line(self) -> str:
        growth = ", ".join(f"{s} {g:+.0f} MiB" for s, g in self.growth_mib().items()) or "memory not sampled"
        median = f"{statistics.median(self.ttft_s) * 1000:.0f} ms" if self.ttft_s else "-"
        return (f"soak {self.minutes:g} min at {self.rate_rps:g} req/s: {len(self.ttft_s)}/{self.sent} ok, "
                f"TTFT median {median}, /health {self.health_polls - len(self.health)}/{self.health_polls} ok, "
                f"restarts {len(self.restarts)}, log errors {len(self.log_errors)}, {growth}")


def process_group_rss_mib(pgid: int) -> float | None:
    """Resident memory of every process in a process group (the server and its engine workers)."""
    page = os.sysconf("SC_PAGE_SIZE")
    rss, seen = 0, False
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[2]) != pgid:  # fields after "(comm)": state, ppid, pgrp
                continue
            rss += int((entry / "statm").read_text().split()[1]) * page
            seen = True
        except (OSError, ValueError, IndexError):
            continue  # a process that ended meanwhile
    return rss / MIB if seen else None


class Watcher:
    """Reads the deployment's health, liveness, start time and memory; one `sample()` per interval."""

    def __init__(self, client: VllmClient, deployment: Any, result: SoakResult) -> None:
        self.client, self.deployment, self.result = client, deployment, result
        self.backend = deployment.backend
        self.started_at: float | None = None
        log = self.backend.log_path
        self.log_path: Path | None = Path(log) if log else None
        self.log_offset = self.log_path.stat().st_size if self.log_path and self.log_path.is_file() else 0

    def sample(self) -> None:
        result = self.result
        result.health_polls += 1
        try:
            health = self.client.get("/health", auth=False)
            if health.status_code != 200:
                result.health.append(f"{time.strftime('%H:%M:%S')} {health.status_code} {health.text[:200]}")
        except ServerGone as exc:
            result.health.append(f"{time.strftime('%H:%M:%S')} no answer ({exc})")
        try:
            self.backend.check_alive()
        except VllmTestError as exc:
            result.restarts.append(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
        self._metrics()
        pgid = getattr(getattr(self.backend, "proc", None), "pid", None)
        rss = process_group_rss_mib(pgid) if pgid else None
        if rss is not None:
            result.memory_mib.setdefault("server RSS", []).append(rss)
        vram = gpu_used_mib()
        if vram is not None:
            result.memory_mib.setdefault("GPU memory", []).append(vram)

    def _metrics(self) -> None:
        try:
            samples = self.client.metrics()
        except VllmTestError:
            return  # a server without /metrics: /health and the backend still watch it
        started = total(samples, "process_start_time_seconds")
        if started:
            if self.started_at is not None and abs(started - self.started_at) > 1:
                self.result.restarts.append(f"process_start_time_seconds went from {self.started_at:.0f} to "
                                            f"{started:.0f} (/metrics)")
            self.started_at = started
        rss = total(samples, "process_resident_memory_bytes")
        if rss and getattr(self.backend, "proc", None) is None:
            self.result.memory_mib.setdefault("API server RSS (/metrics)", []).append(rss / MIB)

    def log_errors(self) -> list[str]:
        if self.log_path is None or not self.log_path.is_file():
            return []
        with self.log_path.open("rb") as fh:
            fh.seek(self.log_offset)
            text = fh.read().decode("utf-8", errors="replace")
        return [line.strip() for line in text.splitlines() if LOG_ERROR.search(line)]


def _problem(stream: StreamResult) -> str:
    if stream.status == 0:
        return stream.error_body  # the connection broke
    if stream.status != 200:
        return f"HTTP {stream.status}: {error_message(stream.error_body)}"
    return "" if stream.ttft_s is not None else "the stream carried no token"


def gpu_used_mib() -> float | None:
    from .telemetry import snapshot
    snap = snapshot(with_processes=False)
    return sum(g.memory_used_mib for g in snap.gpus) if snap.available and snap.gpus else None


def run_soak(client: VllmClient, deployment: Any, messages: Callable[[int], list[dict[str, Any]]], *,
             minutes: float, rate_rps: float, output_tokens: int, watch_s: float = 5.0,
             progress: Callable[[str], None] = print) -> SoakResult:
    """Steady load for `minutes`; `messages(i)` builds the i-th request's chat."""
    result = SoakResult(minutes, rate_rps)
    watcher = Watcher(client, deployment, result)
    watcher.sample()
    sampling = {"max_tokens": output_tokens, "ignore_eos": True, "temperature": 0}
    lock = threading.Lock()

    def one(i: int) -> None:
        try:
            stream = client.stream_chat(messages(i), **sampling)
        except ServerGone as exc:
            stream = StreamResult(status=0, error_body=str(exc))
        problem = _problem(stream)
        with lock:
            if problem or stream.ttft_s is None:
                result.errors.append(f"request {i} at {time.strftime('%H:%M:%S')}: {problem}")
            else:
                result.ttft_s.append(stream.ttft_s)

    start = time.monotonic()
    end = start + minutes * 60
    next_watch = start + watch_s
    next_progress = start + 60
    futures: list[Future[None]] = []
    with ThreadPoolExecutor(max_workers=max(4, int(rate_rps * 30)), thread_name_prefix="soak") as pool:
        i = 0
        while (due := start + i / rate_rps) < end:
            now = time.monotonic()
            if now >= next_watch:
                watcher.sample()
                next_watch += watch_s
            if now >= next_progress:
                progress(f"[vllm] {result.line()} (running, {(end - now) / 60:.1f} min left)")
                next_progress += 60
            if now < due:
                time.sleep(min(due - now, max(0.0, next_watch - now), 0.5))
                continue
            with interrupts.to_the_main_thread():  # the pool starts its threads on submit
                futures.append(pool.submit(one, i))
            result.sent = i = i + 1
    for future in futures:
        future.result()
    watcher.sample()
    result.log_errors = watcher.log_errors()
    return result
