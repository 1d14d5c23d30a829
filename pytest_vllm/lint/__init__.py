"""Preflight lint: find the deployment mistakes the users made by hand, before anything starts.

    lint_profile(profile)            -> findings for a loaded profile (and its compose/env files)
    lint_compose(path, env_file)     -> findings for a plain compose file, as `docker compose` would run it
                                        (with `gpus=`, also whether each engine fits those GPUs)
    lint_target("medium" | path)     -> either of the above, chosen from the target (what the CLI uses)

Rules about GPU capacity live in `pytest_vllm.capacity`; for profiles they plug in as `extra_rules`,
callables `(Profile) -> Iterable[Finding]` (ids VG*). Every rule id and severity: `findings.RULES`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..profile import Profile, load_profile
from .compose_rules import ComposeTarget, check_compose
from .composefile import LintInputError, load_yaml
from .findings import RULES, Finding, Rule, Severity, count
from .profile_rules import check_profile

if TYPE_CHECKING:
    from ..capacity import Hardware

ProfileRule = Callable[[Profile], Iterable[Finding]]
_COMPOSE_NAME = re.compile(r"(docker-)?compose([.-][\w.-]+)?\.ya?ml", re.I)

__all__ = ["RULES", "Finding", "LintInputError", "ProfileRule", "Rule", "Severity", "count", "lint_compose",
           "lint_profile", "lint_target"]


def lint_profile(profile: Profile, env_file: Path | None = None, extra_rules: Sequence[ProfileRule] = (),
                 api_key: str | None = None, vllm_version: str | None = None) -> list[Finding]:
    """Every rule that applies to the profile and the compose/env files it names.

    `env_file` replaces the profile's deployment.env_file; `api_key` is the key the run will use when
    the caller already resolved it (then that key is checked, not the env file's); `vllm_version` is
    the release flags are judged against instead of the deployed one (lint.versions).
    """
    findings = check_profile(profile, vllm_version)
    d = profile.deployment
    if profile.backend == "compose":
        files = d["compose_files"] if isinstance(d["compose_files"], list) else [d["compose_files"]]
        named = env_file or (profile.relative(d["env_file"]) if d.get("env_file") else None)
        paths = [profile.relative(f) for f in files]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise LintInputError(f"{profile.path}: deployment.compose_files: {', '.join(map(str, missing))} "
                                 "not found")
        findings += check_compose(ComposeTarget(paths, named, env_file_required=named is not None,
                                                service=d.get("service"), profile=profile, api_key=api_key,
                                                vllm_version=vllm_version))
    for rule in extra_rules:
        findings += rule(profile)
    return _ordered(findings)


def lint_compose(path: Path | Sequence[Path], env_file: Path | None = None,
                 gpus: Hardware | None = None, vllm_version: str | None = None) -> list[Finding]:
    """A compose file (or several, merged in order) as `docker compose [--env-file F] -f ... up` reads them.

    Without `env_file`, like compose, the `.env` next to the first file is used when there is one.
    `gpus`: the GPUs each engine must fit (the CLI's --gpus/--gpu-memory, or NVML on the GPU host).
    """
    files = [Path(path)] if isinstance(path, str | Path) else [Path(p) for p in path]
    for f in files:
        if not f.is_file():
            raise LintInputError(f"{f}: compose file not found")
    default_env = files[0].parent / ".env"
    chosen = env_file or (default_env if default_env.is_file() else None)
    return _ordered(check_compose(ComposeTarget(files, chosen, env_file_required=env_file is not None,
                                                hardware=gpus, vllm_version=vllm_version)))


def lint_target(target: str, dirs: list[Path], env_file: Path | None = None,
                extra_rules: Sequence[ProfileRule] = (), hardware: dict[str, Any] | None = None,
                compose_gpus: Hardware | None = None, vllm_version: str | None = None) -> list[Finding]:
    """A profile name, a profile file or a compose file. Raises ProfileError/LintInputError when unusable.

    `hardware` replaces keys of the profile's `hardware:` (the CLI's --gpus/--gpu-memory) for every rule;
    `compose_gpus` are the GPUs a plain compose file's engines are checked against; `vllm_version` the
    release vLLM flags are judged against (default: the one deployed, lint.versions).
    """
    path = Path(target)
    if path.is_file() and is_compose_file(path):
        return lint_compose(path, env_file, compose_gpus, vllm_version)
    profile = load_profile(target, dirs)
    if hardware:
        profile = dataclasses.replace(profile, hardware={**profile.hardware, **hardware})
    return lint_profile(profile, env_file, extra_rules, vllm_version=vllm_version)


def is_compose_file(path: Path) -> bool:
    """A compose file has top-level `services:` (a profile never does), or a compose file's name.

    By name too, so that a compose file compose would refuse (no `services:`) is linted as one.
    """
    if _COMPOSE_NAME.fullmatch(path.name):
        return True
    data, _ = load_yaml(path)
    return isinstance(data, dict) and "services" in data


def _ordered(findings: list[Finding]) -> list[Finding]:
    rank = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}
    return sorted(findings, key=lambda f: (rank[f.severity], f.file, f.rule))
