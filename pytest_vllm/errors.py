"""Error types. Each message is meant to be acted on by a tired operator: what, where, and the fix."""

from __future__ import annotations


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
    """The deployment did not come up, or died. Carries what was last seen."""

    def __init__(self, message: str, *, log_tail: list[str] | None = None,
                 log_path: str | None = None, diagnosis: str | None = None) -> None:
        self.headline = message
        self.log_tail = log_tail or []
        self.log_path = log_path
        self.diagnosis = diagnosis
        parts = [message]
        if diagnosis:
            parts.append(f"diagnosis: {diagnosis}")
        if self.log_tail:
            parts.append("last log lines:\n" + "\n".join(f"  | {line}" for line in self.log_tail))
        if log_path:
            parts.append(f"full log: {log_path}")
        super().__init__("\n".join(parts))


class ServerExited(DeploymentError):
    """The server process or container exited while we waited for it."""


class HealthTimeout(DeploymentError):
    """The server did not become healthy in time."""


class EngineUnhealthy(DeploymentError):
    """The server is up and answers /health with 503: its engine has failed; waiting will not help."""


class PreflightError(VllmTestError):
    """Preflight found a problem that would make the deployment fail; nothing was started."""
