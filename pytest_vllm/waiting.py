"""Wait strategies: how we decide a deployment is ready, and how we notice it never will be.

In the spirit of testcontainers: a strategy is an object with `ready() -> (bool, what_was_seen)`.
The loop also asks the backend whether the server is still alive several times a second, so a crash
fails the wait within a fraction of a second instead of at the timeout, and it prints progress.

Unhealthy is not "starting": vLLM does not listen at all before its engine is up, and answers /health
with 503 only once the engine has died. A strategy raises EngineUnhealthy for that, and the wait ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import httpx

from .errors import EngineUnhealthy, HealthTimeout

ALIVE_POLL_S = 0.25
HEALTH_POLL_S = 0.5
PROGRESS_EVERY_S = 10.0
UNHEALTHY_AFTER = 3  # 503 answers in a row: one could be a blip, three over a second are the engine's state


class WaitStrategy(Protocol):
    def ready(self) -> tuple[bool, str]:
        """(is it ready, a short description of what was seen)."""
        ...


class HttpHealth:
    """Ready when GET <base_url>/health answers 200 (vLLM answers it without an API key); raises
    EngineUnhealthy after UNHEALTHY_AFTER answers of 503 in a row."""

    def __init__(self, base_url: str, request_timeout: float = 1.0) -> None:
        self.url = base_url.rstrip("/") + "/health"
        self.request_timeout = request_timeout
        self.unhealthy: list[float] = []  # when each 503 of the current streak came

    def ready(self) -> tuple[bool, str]:
        try:
            response = httpx.get(self.url, timeout=self.request_timeout)
        except httpx.ConnectError:
            return self._other(f"GET {self.url}: connection refused")
        except httpx.TimeoutException:
            return self._other(f"GET {self.url}: no answer within {self.request_timeout:.0f}s")
        except httpx.HTTPError as exc:
            return self._other(f"GET {self.url}: {type(exc).__name__}: {exc}")
        if response.status_code != 503:
            return self._other(f"GET {self.url} -> {response.status_code}", response.status_code == 200)
        self.unhealthy.append(time.monotonic())
        if len(self.unhealthy) >= UNHEALTHY_AFTER:
            raise EngineUnhealthy(
                f"the engine reports unhealthy (503): GET {self.url} answered 503 {len(self.unhealthy)} times in a "
                f"row over {self.unhealthy[-1] - self.unhealthy[0]:.1f}s. The server is up, but vLLM answers 503 "
                "on /health only once its engine has failed (EngineDeadError): waiting will not help")
        return False, f"GET {self.url} -> 503 ({len(self.unhealthy)} in a row)"

    def _other(self, seen: str, ok: bool = False) -> tuple[bool, str]:
        self.unhealthy.clear()
        return ok, seen


def wait_until_ready(strategy: WaitStrategy, *, alive: Callable[[], str], log_tail: Callable[[int], list[str]],
                     timeout: float, progress: Callable[[str], None], label: str) -> float:
    """Block until `strategy` is ready; return the seconds waited.

    `alive()` raises (ServerExited) as soon as the server has died; its return value is the state shown
    in progress lines. On timeout, HealthTimeout says what was last seen and quotes the log.
    """
    start = time.monotonic()
    next_health = next_progress = start
    seen, state = "nothing yet", alive()
    while True:
        now = time.monotonic()
        state = alive()
        if now >= next_health:
            try:
                ok, seen = strategy.ready()
            except EngineUnhealthy as exc:
                raise _unhealthy(label, exc, log_tail(20)) from None
            if ok:
                return time.monotonic() - start
            next_health = time.monotonic() + HEALTH_POLL_S
        elapsed = now - start
        if elapsed >= timeout:
            raise HealthTimeout(
                f"{label}: not healthy after {timeout:.0f}s. Last seen: {seen}; state: {state}.\n"
                "  fix: if the log shows it still loading, raise --health-timeout (or timeouts.health in "
                "the profile); if nothing answers, check the URL, port and that the server is running",
                log_tail=log_tail(20))
        if now >= next_progress:
            tail = log_tail(1)
            last = f", log: {tail[-1][:120]}" if tail else ""
            progress(f"[vllm] {label}: waiting for health {elapsed:4.0f}s/{timeout:.0f}s — {state}; {seen}{last}")
            next_progress = now + PROGRESS_EVERY_S
        time.sleep(ALIVE_POLL_S)


def _unhealthy(label: str, exc: EngineUnhealthy, tail: list[str]) -> EngineUnhealthy:
    """The 503 verdict with what to look at: the server's log, ours when we have it, else where it runs."""
    where = ("the server log (last lines below) for the engine's first error" if tail else
             "the server's own log where it runs (docker logs <container>, journalctl -u <unit>, the pod's log)")
    return EngineUnhealthy(
        f"{label}: {exc.headline}.\n  look at: {where}: a CUDA error or out of memory, a worker process that died, "
        "a request that crashed the engine; then restart the deployment (vLLM does not recover a dead engine)",
        log_tail=tail)
