"""How a deployment comes up: pick the backend, resolve the API key, start, wait, read what really runs.

`deployed(profile, settings)` is the one context manager the plugin's session fixture uses; it always
stops what it started (also on Ctrl-C / SIGTERM, which the plugin turns into KeyboardInterrupt),
unless the operator asked `--keep-up`.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import engine_config
from .backends.base import Backend, RunSettings
from .diagnosis import diagnose
from .errors import DeploymentError, HealthTimeout, PreflightError
from .http import VllmClient
from .lint import lint_profile
from .lint.composefile import read_env_file
from .profile import Profile
from .sdk import OpenAIChat, client_for
from .waiting import HttpHealth, wait_until_ready

BACKENDS = {
    "process": "pytest_vllm.backends.process:ProcessBackend",
    "external": "pytest_vllm.backends.external:ExternalBackend",
    "compose": "pytest_vllm.backends.compose:ComposeBackend",
    "emulator": "pytest_vllm.backends.emulator:EmulatorBackend",
}


@dataclass
class Deployment:
    """A healthy deployment, as the suites see it."""

    profile: Profile
    backend: Backend
    api_key: str | None
    served_model: str
    engine_config: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    telemetry: Any = None  # pytest_vllm.telemetry.Sampler running for this deployment, set by the plugin
    _client: VllmClient | None = None

    @property
    def base_url(self) -> str:
        return self.backend.base_url

    @property
    def vllm_version(self) -> str | None:
        return self.engine_config.get("vllm_version") or self.backend.version_hint()

    def client(self) -> VllmClient:
        if self._client is None:
            self._client = VllmClient(self.base_url, self.api_key, self.served_model,
                                      timeout=float(self.profile.timeouts["request"]))
        return self._client

    def openai(self) -> OpenAIChat:
        """Chat completions through the official `openai` client, as the team's applications call this deployment."""
        return OpenAIChat(client_for(self.base_url, self.api_key, float(self.profile.timeouts["request"])),
                          self.served_model)

    def log_tail(self, lines: int = 50) -> list[str]:
        return self.backend.log_tail(lines)

    def describe(self) -> dict[str, Any]:
        """What the reports show about this deployment."""
        return {"profile": self.profile.name, "backend": self.backend.name, "endpoint": self.base_url,
                "model": self.served_model, "vllm_version": self.vllm_version,
                "engine_config": self.engine_config, "timings": self.timings,
                "server_flags": dict(self.profile.server),  # what the profile asked, next to what ran
                "log": str(self.backend.log_path) if self.backend.log_path else None}


def resolve_api_key(profile: Profile, settings: RunSettings) -> str | None:
    """--api-key, else the variable the profile names, else that variable in the env file, else generated."""
    if settings.api_key:
        return settings.api_key
    var = profile.auth.get("api_key_env", "VLLM_API_KEY")
    if os.environ.get(var):
        return os.environ[var]
    env_file = profile.deployment.get("env_file")
    for path in ([profile.relative(env_file)] if env_file else []) + [Path.cwd() / ".env"]:
        value = read_env_file(path).values.get(var) if path.is_file() else None
        if value:
            return value
    if profile.auth.get("generate"):
        return secrets.token_urlsafe(36)
    return None


def make_backend(profile: Profile, settings: RunSettings, api_key: str | None) -> Backend:
    name = "external" if settings.base_url else profile.backend
    if settings.reuse and name != "external":
        backend = _load_backend(name)(profile, settings, api_key)
        if backend.find_running():
            settings.progress(f"[vllm] {profile.name}: --reuse, attaching to {backend.describe()}")
            return backend
    return _load_backend(name)(profile, settings, api_key)


def _load_backend(name: str) -> type[Backend]:
    module, _, cls = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def _effective_config(backend: Backend, client: VllmClient) -> dict[str, Any]:
    log = backend.log_path.read_text(encoding="utf-8", errors="replace") if backend.log_path else ""
    config = engine_config.from_log(log)
    if "enable_prefix_caching" not in config:
        with contextlib.suppress(Exception):  # a server without /metrics still gets tested
            config = {**engine_config.from_server(client.metrics(), client.models()), **config}
    return config


def _served_model(profile: Profile, client: VllmClient) -> str:
    if profile.served_name:
        return profile.served_name
    models = client.models()
    if not models:
        raise DeploymentError(f"{client.base_url}/v1/models lists no model")
    return models[0]["id"]


def preflight(profile: Profile, api_key: str | None, settings: RunSettings) -> None:
    """Lint the profile, its compose/env files and its GPU capacity before anything starts."""
    from .capacity import capacity_rule
    findings = lint_profile(profile, api_key=api_key, extra_rules=[capacity_rule])
    for finding in findings:
        if not finding.blocking and finding.severity != "info":
            settings.progress(f"[vllm] preflight {finding}")
    blocking = [f for f in findings if f.blocking]
    if blocking:
        raise PreflightError(f"preflight refused profile '{profile.name}' before starting anything:\n"
                             + "\n".join(str(f) for f in blocking))


def _with_diagnosis(exc: DeploymentError, backend: Backend) -> DeploymentError:
    """The same failure, with the cause and the fix named from the full log when the backend did not."""
    if exc.diagnosis:
        return exc
    log = backend.log_path.read_text(encoding="utf-8", errors="replace") if backend.log_path and \
        backend.log_path.is_file() else "\n".join(exc.log_tail)
    found = diagnose(log, timed_out=isinstance(exc, HealthTimeout))
    if found is None:
        return exc
    return type(exc)(exc.headline, log_tail=exc.log_tail, log_path=exc.log_path, diagnosis=found.render())


@contextlib.contextmanager
def deployed(profile: Profile, settings: RunSettings) -> Iterator[Deployment]:
    """Bring the profile's deployment up, yield it healthy, always bring it down (unless --keep-up)."""
    api_key = resolve_api_key(profile, settings)
    backend = make_backend(profile, settings, api_key)
    timeout = float(settings.health_timeout or profile.timeouts["health"])
    label = f"{profile.name} ({backend.name})"
    t0 = time.monotonic()
    try:
        if not backend.attached and backend.name != "external":  # lint what we start, not what runs already
            preflight(profile, api_key, settings)
            settings.progress(f"[vllm] {label}: starting, {backend.describe()}")
            backend.start()
        try:
            waited = wait_until_ready(HttpHealth(backend.base_url), alive=backend.check_alive,
                                      log_tail=backend.log_tail, timeout=timeout, progress=settings.progress,
                                      label=label)
        except DeploymentError as exc:
            raise _with_diagnosis(exc, backend) from None
        healthy_at = time.monotonic()
        client = VllmClient(backend.base_url, api_key, "", timeout=float(profile.timeouts["request"]))
        deployment = Deployment(profile, backend, api_key, _served_model(profile, client),
                                _effective_config(backend, client))
        client.close()
        deployment.timings = {"start_to_healthy_s": round(waited, 3),
                              "healthy_to_ready_s": round(time.monotonic() - healthy_at, 3),
                              "total_s": round(time.monotonic() - t0, 3)}
        settings.progress(f"[vllm] {label}: healthy after {waited:.1f}s at {backend.base_url}; "
                          f"vLLM {deployment.vllm_version or '?'}; {engine_config.summary(deployment.engine_config)}")
        yield deployment
    finally:
        if backend.attached or backend.name == "external":
            pass  # not ours: never stopped
        elif settings.keep_up:
            settings.progress(f"[vllm] {label}: --keep-up, left running at {backend.base_url}")
        else:
            backend.stop()
