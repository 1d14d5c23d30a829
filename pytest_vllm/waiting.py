"""Wait strategies: how we decide a deployment is ready, and how we notice it never will be.

In the spirit of testcontainers: a strategy is an object with `ready() -> (bool, what_was_seen)`.
The loop also asks the backend whether the server is still alive several times a second, so a crash
fails the wait within a fraction of a second instead of at the timeout, and it prints progress.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import httpx

from .errors import HealthTimeout

ALIVE_POLL_S = 0.25
HEALTH_POLL_S = 0.5
PROGRESS_EVERY_S = 10.0


class WaitStrategy(Protocol):
    def ready(self) -> tuple[bool, str]:
        """(is it ready, a short description of what was seen)."""
        ...


class HttpHealth:
    """Ready when GET <base_url>/health answers 200 (vLLM answers it without an API key)."""

    def __init__(self, base_url: str, request_timeout: float = 1.0) -> None:
        self.url = base_url.rstrip("/") + "/health"
        self.request_timeout = request_timeout

    def ready(self) -> tuple[bool, str]:
        try:
            response = httpx.get(self.url, timeout=self.request_timeout)
        except httpx.ConnectError:
            return False, f"GET {self.url}: connection refused"
        except httpx.TimeoutException:
            return False, f"GET {self.url}: no answer within {self.request_timeout:.0f}s"
        except httpx.HTTPError as exc:
            return False, f"GET {self.url}: {type(exc).__name__}: {exc}"
        return response.status_code == 200, f"GET {self.url} -> {response.status_code}"


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
            ok, seen = strategy.ready()
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
