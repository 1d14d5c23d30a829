"""Error types. Each message is meant to be acted on by a tired operator: what, where, and the fix."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .diagnosis import Diagnosis


class VllmTestError(Exception):
    """Base class of every error pytest-vllm raises on purpose."""


class ProfileError(VllmTestError):
    """A profile cannot be found, parsed or validated."""

    def __init__(self, problem: str, *, file: str | None = None, key: str | None = None,
                 fix: str | None = None) -> None:
        self.problem, self.file, self.key, self.fix = problem, file, key, fix
        where = file or "<profile>"
        if key:
            where += f": {key}"
        message = f"{where}: {problem}"
        if fix:
            message += f"\n  fix: {fix}"
        super().__init__(message)


class DeploymentError(VllmTestError):
    """The deployment did not come up, or died. Carries what was last seen and, once known, why.

    `diagnosis` may start as a backend's own hint; `pytest_vllm.diagnosis.diagnose_failure` (called by
    the deployment for every start and wait failure) replaces it when the log and exit state prove more.
    """

    def __init__(self, headline: str, *, log_tail: list[str] | None = None, log_path: str | None = None,
                 diagnosis: Diagnosis | None = None) -> None:
        super().__init__(headline)
        self.headline = headline
        self.log_tail = log_tail or []
        self.log_path = log_path
        self.diagnosis = diagnosis

    def __str__(self) -> str:
        parts = [self.headline]
        if self.diagnosis:
            parts.append(f"diagnosis: {self.diagnosis.render()}")
        if self.log_tail:
            parts.append("last log lines:\n" + "\n".join(f"  | {line}" for line in self.log_tail))
        if self.log_path:
            parts.append(f"full log: {self.log_path}")
        return "\n".join(parts)


class ServerExited(DeploymentError):
    """The server process or container exited (or turned unhealthy) while we waited for it: its exit state."""

    def __init__(self, headline: str, *, exit_code: int | None = None, oom_killed: bool = False,
                 health_log: list[str] | None = None, log_tail: list[str] | None = None,
                 log_path: str | None = None, diagnosis: Diagnosis | None = None) -> None:
        super().__init__(headline, log_tail=log_tail, log_path=log_path, diagnosis=diagnosis)
        self.exit_code = exit_code
        self.oom_killed = oom_killed
        self.health_log = health_log or []  # the container healthcheck's last outputs, when it has one


class HealthTimeout(DeploymentError):
    """The server did not become healthy in time."""


class EngineUnhealthy(DeploymentError):
    """The server is up and answers /health with 503: its engine has failed; waiting will not help."""


class PreflightError(VllmTestError):
    """Preflight found a problem that would make the deployment fail; nothing was started."""
