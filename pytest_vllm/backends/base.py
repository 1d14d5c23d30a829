"""The small interface every deployment backend implements (process, compose, external, emulator).

A backend knows how to start its server, say whether it is still alive (raising at once when it
is not), show its log, and stop it. What each backend is (name, required keys, whether the server is
ours) is its `kind`, from `pytest_vllm.backends.registry`. Waiting for health, progress display and
reading the effective engine config are shared and live in `pytest_vllm.deployment`.
"""

from __future__ import annotations

import secrets
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from ..profile import Profile, render_flags
from ..tiny_model import ensure_tiny_model
from .registry import BackendKind

Progress = Callable[[str], None]


def new_run_id() -> str:
    return secrets.token_hex(3)


@dataclass(frozen=True)
class RunSettings:
    """What the command line decided for this run; shared by every backend."""

    run_dir: Path  # this run's own folder (server logs, compose work files), under --reports-dir
    api_key: str | None = None
    base_url: str | None = None
    keep_up: bool = False
    reuse: bool = False
    health_timeout: float | None = None
    client_host: str | None = None  # where the client reaches the server, when not the bind address (--hosts)
    run_id: str = field(default_factory=new_run_id)
    progress: Progress = print

    def health_timeout_for(self, profile: Profile) -> float:
        """--health-timeout, else the profile's timeouts.health."""
        return float(self.health_timeout or profile.timeouts.health)

    def endpoint(self, profile: Profile) -> str:
        """Where the profile's server answers: --base-url, else deployment.base_url, else host:port."""
        d = profile.deployment
        return self.base_url or d.base_url or f"http://{self.client_host or d.host}:{d.port}"


class Backend(ABC):
    """One way of running a deployment. Subclasses set `kind` and implement the four methods."""

    kind: ClassVar[BackendKind]
    # Where the server's own output is kept (None when we cannot see it, e.g. external).
    log_path: Path | None = None
    attached: bool = False  # --reuse found it running: not ours to start or stop

    def __init__(self, profile: Profile, settings: RunSettings, api_key: str | None) -> None:
        self.profile = profile
        self.settings = settings
        self.api_key = api_key

    @property
    def name(self) -> str:
        return self.kind.name

    @property
    def ours(self) -> bool:
        """We started it, so we lint it first and stop it after: not an external server, not --reuse."""
        return self.kind.owns_server and not self.attached

    @property
    def base_url(self) -> str:
        return self.settings.endpoint(self.profile)

    @abstractmethod
    def start(self) -> None:
        """Launch the server and return at once; waiting is not the backend's job."""

    @abstractmethod
    def check_alive(self) -> str:
        """Return a short state for progress lines; raise ServerExited the moment it has died."""

    @abstractmethod
    def log_tail(self, lines: int = 50) -> list[str]:
        """The last lines the server wrote (empty when not visible)."""

    @abstractmethod
    def stop(self) -> None:
        """Stop what start() started, and only that. Safe to call twice or before start()."""

    def find_running(self) -> bool:
        """--reuse: attach to a deployment of this profile that is already up. True when attached; the
        backend then neither starts nor stops it. The default looks for a healthy server at base_url."""
        from ..waiting import HttpHealth
        self.attached = HttpHealth(self.base_url).ready()[0]
        return self.attached

    def version_hint(self) -> str | None:
        """vLLM version when the backend can tell without asking the server."""
        return None

    def describe(self) -> str:
        return f"{self.name} backend, {self.base_url}"


def read_tail(path: Path | None, lines: int) -> list[str]:
    """Last lines of a log file, tolerant of a file still being written or not yet created."""
    if path is None or not path.is_file():
        return []
    with path.open("rb") as fh:
        fh.seek(0, 2)
        size = fh.tell()
        fh.seek(max(0, size - 256 * 1024))
        text = fh.read().decode("utf-8", errors="replace")
    return [line.rstrip("\r") for line in text.splitlines() if line.strip()][-lines:]


def model_path(value: str) -> str:
    """What --model gets: '@tiny' is the tiny model built offline, anything else as written."""
    return str(ensure_tiny_model()) if value == "@tiny" else value


def server_args(profile: Profile, host: str, port: int) -> list[str]:
    """vLLM's command-line arguments for a profile, whichever backend runs it: model, name, where to
    listen, then the profile's flags and raw extra arguments."""
    return ["--model", model_path(profile.model.path or ""), "--served-model-name", profile.served_name,
            "--host", host, "--port", str(port), *render_flags(profile.server),
            *profile.deployment.extra_args]
