"""Rules on a profile itself: its server flags as they will be rendered, capabilities, GPUs, YAML.

The compose files and env file a profile names are checked by compose_rules.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from ..profile import Profile, find_profile, normalize_flag, render_flags
from .composefile import load_yaml
from .consistency import check_context, check_quantization, last_values, parallelism, size
from .findings import RULES, Finding, Severity
from .flags import FlagUse, check_flags, split_argv
from .model_rules import check_model
from .versions import VersionChoice, choose, for_service

# server flags the profile owns through other keys (the backends render them from there)
MANAGED_FLAGS = {"model": "model.path", "served-model-name": "model.served_name", "host": "deployment.host",
                 "port": "deployment.port", "api-key": "auth.api_key_env (the key never goes in a profile)"}
IMPLICIT_DEFAULTS = ("enable-prefix-caching", "enable-chunked-prefill")  # on by default in the V1 engine
PREFIX_CACHING_NOTE = ("prefix caching is effectively ON (vLLM V1 default >=0.10); omitting the flag does not "
                       "disable it (the seeds' champion ran with prefix caching it believed off)")


def profile_flag_uses(profile: Profile, version: VersionChoice | None = None) -> list[FlagUse]:
    """The server flags as they will be rendered, each traced back to its YAML key."""
    uses: list[FlagUse] = []
    for key, value in profile.server.items():
        _, parsed = split_argv(render_flags({key: value}), lambda _i, k=key: f"server.{k}", version)
        uses += parsed
    extra = [str(a) for a in profile.deployment.get("extra_args", [])]
    if extra:
        uses += split_argv(extra, lambda i: f"deployment.extra_args[{i}]", version)[1]
    return uses


def profile_version(profile: Profile, override: str | None = None) -> VersionChoice:
    """The vLLM release the profile deploys: its compose service's image or build, else the installed one."""
    if profile.backend != "compose":
        return choose(override, installed=True)
    d = profile.deployment
    merged: dict[str, object] = {}  # the service across the compose files, a later file's keys winning
    base = profile.path.parent
    for name in d["compose_files"] if isinstance(d["compose_files"], list) else [d["compose_files"]]:
        path = profile.relative(name)
        try:
            data, _ = load_yaml(path)
        except Exception:  # noqa: BLE001 - compose_rules reports unreadable compose files
            continue
        service = ((data or {}).get("services") or {}).get(d.get("service")) or {}
        merged.update(service)
        base = path.parent if "build" in service else base
    return for_service(merged, base, override)


def check_profile(profile: Profile, vllm_version: str | None = None) -> list[Finding]:
    """Rules on the profile itself (flags, capabilities, quantization, GPUs, context, duplicates).

    `vllm_version` overrides the release the flags are judged against (the CLI's --vllm-version).
    """
    file = str(profile.path)
    findings = list(_duplicate_keys(profile))
    if profile.backend == "external":
        return findings  # nothing is started: server flags are not ours to check
    version = profile_version(profile, vllm_version)
    uses = profile_flag_uses(profile, version)
    findings += check_flags(uses, file, in_profile=True, version=version)
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
    findings += check_model(str(profile.model.get("path", "")), values, profile.deployment.get("env") or {}, file,
                            "server")
    for name in IMPLICIT_DEFAULTS:
        if name not in values:
            findings.append(RULES["VP006"](
                file, f"server.{name}", PREFIX_CACHING_NOTE if name == "enable-prefix-caching" else
                f"{name} is not set, so vLLM's V1 default applies: ON (leaving the flag out does not turn it off)",
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
    flag = size(values.get("max-model-len", ""))
    if wanted and flag and flag != wanted:
        yield RULES["VP005"](file, "model.max_model_len", f"model.max_model_len is {wanted} but the server "
                             f"flag max-model-len is {flag}; the health suite expects the former",
                             "make them equal")
    yield from check_context(values, file, "server.max-model-len")
