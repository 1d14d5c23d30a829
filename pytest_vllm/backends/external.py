"""External backend: a server that is already running (`--base-url`). Never starts or stops anything."""

from __future__ import annotations

from .base import Backend
from .registry import KINDS


class ExternalBackend(Backend):
    kind = KINDS["external"]

    def start(self) -> None:
        """Nothing to start: the operator runs the server."""

    def check_alive(self) -> str:
        return "external endpoint"

    def log_tail(self, lines: int = 50) -> list[str]:
        return []

    def stop(self) -> None:
        """Nothing to stop: not ours."""
