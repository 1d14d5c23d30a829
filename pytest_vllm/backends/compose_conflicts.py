"""Who already holds our port or GPUs: read from the containers the engine runs, before `up`.

A second deployment on the same GPUs does not fail at `up`: it fails minutes later with a CUDA
out-of-memory error that points nowhere. Asking the engine first lets the run name the culprit.
Pure functions over `docker inspect` data, so they are tested without an engine.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
PROFILE_LABEL = "pytest-vllm.profile"
RUN_LABEL = "pytest-vllm.run"
PORT_LABEL = "pytest-vllm.port"  # a host-network container publishes nothing: we say which port it serves

# GPUs a container claims: None (none), "all", or the set of device ids.
GpuClaim = frozenset[str] | Literal["all"] | None


def gpu_claim(requests: Iterable[dict[str, Any]]) -> GpuClaim:
    """Normalize GPU requests, either compose's (`count`, `device_ids`) or the engine's (`Count`, `DeviceIDs`).

    `count: N` takes GPUs 0..N-1; `device_ids: ['0,1']` (one id with a comma, a common mistake) is read
    as the two GPUs it was meant to be, so the conflict is still seen.
    """
    ids: set[str] = set()
    for request in requests:
        capabilities = request.get("capabilities") or request.get("Capabilities") or [["gpu"]]
        flat = {c for group in capabilities for c in (group if isinstance(group, list) else [group])}
        driver = request.get("driver") or request.get("Driver") or ""
        if "gpu" not in flat and driver != "nvidia":
            continue
        device_ids = request.get("device_ids") or request.get("DeviceIDs") or []
        count = request.get("count", request.get("Count", 0)) or 0
        if device_ids:
            ids |= {part.strip() for device in device_ids for part in str(device).split(",") if part.strip()}
        elif count in (-1, "all"):
            return "all"
        else:
            ids |= {str(i) for i in range(int(count))}
    return frozenset(ids) if ids else None


def gpus_overlap(a: GpuClaim, b: GpuClaim) -> bool:
    if not a or not b:
        return False
    return a == "all" or b == "all" or bool(a & b)


def container_gpus(attrs: dict[str, Any]) -> GpuClaim:
    return gpu_claim((attrs.get("HostConfig") or {}).get("DeviceRequests") or [])


def container_host_ports(attrs: dict[str, Any]) -> set[int]:
    """Host ports a running container holds: its published ports, and for host networking our label or
    the `--port` of its command (a vLLM server's port is on its command line)."""
    host_config = attrs.get("HostConfig") or {}
    ports = {int(b["HostPort"]) for bindings in (host_config.get("PortBindings") or {}).values()
             for b in bindings or [] if str(b.get("HostPort", "")).isdigit()}
    if host_config.get("NetworkMode") == "host":
        config = attrs.get("Config") or {}
        label = (config.get("Labels") or {}).get(PORT_LABEL, "")
        if label.isdigit():
            ports.add(int(label))
        args = [*(config.get("Entrypoint") or []), *(config.get("Cmd") or [])]
        for flag, value in zip(args, args[1:], strict=False):
            if flag == "--port" and value.isdigit():
                ports.add(int(value))
    return ports


def owner(attrs: dict[str, Any]) -> str:
    """`compose project X (service Y, profile Z, container N)`, or `container N` for a lone one."""
    labels = (attrs.get("Config") or {}).get("Labels") or {}
    name = attrs.get("Name", "").lstrip("/") or attrs.get("Id", "")[:12]
    if PROJECT_LABEL not in labels:
        return f"container {name}"
    details = [f"service {labels.get(SERVICE_LABEL, '?')}"]
    if PROFILE_LABEL in labels:
        details.append(f"profile {labels[PROFILE_LABEL]}")
    return f"compose project {labels[PROJECT_LABEL]} ({', '.join(details)}, container {name})"


def find_conflicts(running: Iterable[dict[str, Any]], port: int, gpus: GpuClaim) -> list[str]:
    """One line per running container that holds `port` or any of `gpus`."""
    found = []
    for attrs in running:
        if port in container_host_ports(attrs):
            found.append(f"port {port} is held by {owner(attrs)}")
        theirs = container_gpus(attrs)
        if gpus_overlap(gpus, theirs):
            what = "all GPUs" if theirs == "all" else "GPU " + ",".join(sorted(theirs or ()))
            found.append(f"{what} held by {owner(attrs)}")
    return found
