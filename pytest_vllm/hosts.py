"""Docker hosts a grid spreads over: a Docker context name or an engine URL, resolved to what the compose
backend and the test client need (the engine URL, the address the deployment answers at, the GPUs).

No agent of our own: Docker already runs deployments on remote hosts (`docker context create gpu1 --docker
host=ssh://ops@gpu1`); a child pytest given DOCKER_HOST talks to that host's engine through compose and
the SDK alike.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from urllib.parse import urlparse

from .errors import VllmTestError

ENGINE_TIMEOUT_S = 15


class HostError(VllmTestError):
    """A host given to --hosts cannot be used (unknown context, engine not answering)."""


@dataclass(frozen=True)
class DockerHost:
    """One Docker engine: `spec` as the operator wrote it, `url` the engine endpoint it resolves to."""

    spec: str
    url: str

    @property
    def name(self) -> str:
        """A short name for reports and folders."""
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", self.spec.split("://")[-1]).strip("-") or "host"

    @property
    def address(self) -> str:
        """Where a deployment on this host answers: the host of an ssh/tcp URL; loopback for a local socket."""
        parsed = urlparse(self.url)
        if parsed.scheme in ("unix", "npipe", "fd", ""):
            return "127.0.0.1"
        return parsed.hostname or "127.0.0.1"

    @property
    def local(self) -> bool:
        return self.address == "127.0.0.1"

    def env(self) -> dict[str, str]:
        """What a child process needs so that `docker compose` and the docker SDK talk to this engine."""
        return {"DOCKER_HOST": self.url, "DOCKER_CONTEXT": ""}

    def docker(self, *args: str, timeout: float = ENGINE_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["docker", "-H", self.url, *args], capture_output=True, text=True, timeout=timeout)

    def server_version(self) -> str | None:
        """The engine's version, or None when it does not answer (host down, daemon stopped, ssh refused)."""
        try:
            result = self.docker("version", "--format", "{{.Server.Version}}")
        except (OSError, subprocess.TimeoutExpired):
            return None
        return result.stdout.strip() or None if result.returncode == 0 else None

    def gpu_model(self) -> str:
        """The GPU model of this host, as the grid report groups comparisons by it.

        Local engine: NVML. Remote: the engine's runtimes say whether the NVIDIA runtime is there; the model
        itself would need a container with the GPU runtime, which is the deployment's own job.
        """
        if self.local:
            from .telemetry import snapshot
            snap = snapshot(with_processes=False)
            names = sorted({gpu.name for gpu in snap.gpus}) if snap.available else []
            return " + ".join(names) if names else "no GPU (CPU)"
        try:
            result = self.docker("info", "--format", "{{json .Runtimes}}")
            runtimes = json.loads(result.stdout or "{}") if result.returncode == 0 else {}
        except (OSError, subprocess.TimeoutExpired, ValueError):
            runtimes = {}
        return "NVIDIA runtime (model not probed)" if "nvidia" in runtimes else "no NVIDIA runtime"


def resolve_host(spec: str) -> DockerHost:
    """`unix:///…`, `tcp://…`, `ssh://user@host` as written; anything else is a Docker context name."""
    spec = spec.strip()
    if "://" in spec:
        return DockerHost(spec, spec)
    try:
        result = subprocess.run(["docker", "context", "inspect", spec, "--format", "{{.Endpoints.docker.Host}}"],
                                capture_output=True, text=True, timeout=ENGINE_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise HostError(f"--hosts {spec}: cannot ask docker about this context: {exc}") from None
    url = result.stdout.strip()
    if result.returncode != 0 or not url:
        raise HostError(f"--hosts {spec}: no Docker context of that name ({result.stderr.strip()[:200]}).\n"
                        f"  fix: `docker context ls` lists them; create one with "
                        f"`docker context create {spec} --docker host=ssh://USER@HOST`, or give the URL itself")
    return DockerHost(spec, url)


def parse_hosts(value: str) -> list[DockerHost]:
    hosts = [resolve_host(part) for part in value.split(",") if part.strip()]
    names = [h.name for h in hosts]
    if len(set(names)) != len(names):
        raise HostError(f"--hosts {value}: the same host is named twice")
    return hosts
