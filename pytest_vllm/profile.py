"""How a profile is read: find it, parse it, resolve `extends`, validate every key, render vLLM flags.

A profile is one YAML file under `profiles/` describing one deployment and what it must meet. What
it may say, with the defaults, is `pytest_vllm.profile_schema`.
"""

from __future__ import annotations

import copy
import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .backends.registry import BASE_URL_KIND, KINDS
from .errors import ProfileError
from .profile_schema import (
    DEFAULT_API_KEY_ENV,
    SCHEMA,
    SECTIONS,
    TOP_KEYS,
    AuthSection,
    CapabilitiesSection,
    DeploymentSection,
    HardwareSection,
    LoadSection,
    ModelSection,
    ThresholdsSection,
    TimeoutsSection,
)

TOP_LEVEL = {*TOP_KEYS, *SCHEMA}


@dataclass(frozen=True)
class Profile:
    """A validated profile with `extends` resolved: typed sections with their defaults, `server` as flags."""

    name: str
    path: Path
    description: str
    deployment: DeploymentSection
    model: ModelSection
    server: dict[str, Any]
    auth: AuthSection
    capabilities: CapabilitiesSection
    thresholds: ThresholdsSection
    timeouts: TimeoutsSection
    hardware: HardwareSection
    load: LoadSection
    chain: tuple[str, ...] = field(default=())  # this profile, then what it extends

    @property
    def backend(self) -> str:
        return self.deployment.backend

    @property
    def api_key_env(self) -> str:
        """The variable that holds the API key (auth.api_key_env)."""
        return self.auth.api_key_env or DEFAULT_API_KEY_ENV

    @property
    def served_name(self) -> str:
        return self.model.served_name or self.model.path or ""

    def relative(self, value: str) -> Path:
        """A path written in the profile, resolved against the profile's own folder."""
        return (self.path.parent / value).resolve()

    def flag(self, name: str, default: Any = None) -> Any:
        """A server flag, whichever spelling (dashes or underscores) the profile used."""
        for key, value in self.server.items():
            if normalize_flag(key) == normalize_flag(name):
                return value
        return default


def normalize_flag(name: str) -> str:
    return name.lstrip("-").replace("_", "-")


def render_flags(server: dict[str, Any]) -> list[str]:
    """{flag: value} -> vLLM command line. True -> --flag, False -> --no-flag, mapping -> JSON, list -> values,
    None -> omitted."""
    args: list[str] = []
    for key, value in server.items():
        flag = "--" + normalize_flag(key)
        if value is None:
            continue
        if value is True:
            args.append(flag)
        elif value is False:
            args.append("--no-" + normalize_flag(key))
        elif isinstance(value, dict):
            args += [flag, json.dumps(value, separators=(",", ":"))]
        elif isinstance(value, list):  # multi-value flags (nargs='+'): --served-model-name a b
            args += [flag, *(json.dumps(v, separators=(",", ":")) if isinstance(v, dict) else str(v) for v in value)]
        else:
            args += [flag, str(value)]
    return args


def profile_dirs(rootdir: Path) -> list[Path]:
    return [rootdir / "profiles"]


def known_profiles(dirs: list[Path]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in dirs:
        for p in sorted(d.glob("*.y*ml")):
            if p.suffix in (".yml", ".yaml"):
                found.setdefault(p.stem, p)
    return found


def find_profile(name_or_path: str, dirs: list[Path]) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix in (".yml", ".yaml") or "/" in name_or_path:
        if candidate.is_file():
            return candidate.resolve()
        raise ProfileError("profile file does not exist", file=name_or_path,
                           fix="check the path, or give a profile name (see the list with --profile=?)")
    known = known_profiles(dirs)
    if name_or_path in known:
        return known[name_or_path].resolve()
    close = difflib.get_close_matches(name_or_path, list(known), n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise ProfileError(
        f"unknown profile '{name_or_path}'",
        file=", ".join(str(d) for d in dirs),
        fix=f"{hint}known profiles: {', '.join(known) or '(none)'}",
    )


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ProfileError(f"YAML syntax error: {problem}", file=where,
                           fix="fix the YAML at that line (indentation, quotes, a missing ':')") from None
    except OSError as exc:
        raise ProfileError(f"cannot read: {exc.strerror}", file=str(path)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ProfileError("a profile must be a mapping of sections", file=str(path),
                           fix="start the file with keys such as 'model:' and 'server:'")
    return data


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Child values win; nested mappings merge; an explicit null removes the parent's key."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict) and key != "env":
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _validate(data: dict[str, Any], path: Path) -> None:
    for key, value in data.items():
        if key not in TOP_LEVEL:
            close = difflib.get_close_matches(str(key), TOP_LEVEL, n=1)
            raise ProfileError(f"unknown key '{key}'", file=str(path), key=str(key),
                               fix=(f"did you mean '{close[0]}'? " if close else "")
                               + f"allowed: {', '.join(sorted(TOP_LEVEL))}")
        spec = SCHEMA.get(key)
        if key in SCHEMA and value is not None and not isinstance(value, dict):
            raise ProfileError(f"'{key}' must be a mapping, got {type(value).__name__}",
                               file=str(path), key=key, fix=f"write '{key}:' followed by indented keys")
        if not spec or value is None:
            continue
        for sub, subvalue in value.items():
            if sub not in spec:
                close = difflib.get_close_matches(str(sub), list(spec), n=1)
                raise ProfileError(f"unknown key '{sub}'", file=str(path), key=f"{key}.{sub}",
                                   fix=(f"did you mean '{close[0]}'? " if close else "")
                                   + f"allowed in '{key}': {', '.join(spec)}")
            types, meaning = spec[sub]
            wrong_type = subvalue is not None and not isinstance(subvalue, types)
            if wrong_type or (isinstance(subvalue, bool) and bool not in types):
                raise ProfileError(
                    f"'{subvalue}' is a {type(subvalue).__name__}, expected {'/'.join(t.__name__ for t in types)}",
                    file=str(path), key=f"{key}.{sub}", fix=f"{sub}: {meaning}")


def _check_complete(profile: Profile) -> None:
    path, backend = str(profile.path), profile.backend
    if backend not in KINDS:
        raise ProfileError(f"unknown backend '{backend}'", file=path, key="deployment.backend",
                           fix=f"use one of: {', '.join(KINDS)}")
    for dotted in KINDS[backend].required:
        section, key = dotted.split(".")
        if not getattr(getattr(profile, section), key):
            raise ProfileError(f"missing key '{dotted}' (required by the {backend} backend)",
                               file=path, key=dotted, fix=f"add it: {SCHEMA[section][key][1]}")
    rounds, rounds_max = profile.thresholds.kv_rounds, profile.thresholds.kv_rounds_max
    if rounds < 1 or rounds_max < rounds:
        raise ProfileError(f"kv_rounds_max {rounds_max} is below kv_rounds {rounds} (or kv_rounds below 1)",
                           file=path, key="thresholds.kv_rounds_max",
                           fix="set kv_rounds_max to at least kv_rounds (it defaults to 40)")


PATH_KEYS = ("compose_files", "env_file")


def _anchor_paths(data: dict[str, Any], path: Path) -> None:
    """Paths are relative to the file that wrote them, also when a child profile inherits them."""
    deployment = data.get("deployment") or {}
    for key in PATH_KEYS:
        value = deployment.get(key)
        if isinstance(value, str):
            deployment[key] = str((path.parent / value).resolve())
        elif isinstance(value, list):
            deployment[key] = [str((path.parent / v).resolve()) for v in value]


def load_profile(name_or_path: str, dirs: list[Path]) -> Profile:
    """Find, parse, resolve `extends` and validate. Raises ProfileError with file, key and fix."""
    path = find_profile(name_or_path, dirs)
    chain: list[Path] = []
    layers: list[dict[str, Any]] = []
    current: Path | None = path
    while current is not None:
        if current in chain:
            cycle = " -> ".join(p.stem for p in [*chain, current])
            raise ProfileError(f"'extends' cycle: {cycle}", file=str(path), key="extends",
                               fix="remove one 'extends' so the chain ends")
        data = _read_yaml(current)
        _validate(data, current)
        _anchor_paths(data, current)
        chain.append(current)
        layers.append(data)
        parent = data.get("extends")
        if parent is None:
            current = None
        elif not isinstance(parent, str):
            raise ProfileError("'extends' must be a profile name", file=str(current), key="extends")
        else:
            try:
                is_path = parent.endswith((".yml", ".yaml")) or "/" in parent
                current = find_profile(str(current.parent / parent) if is_path else parent, [current.parent, *dirs])
            except ProfileError as exc:
                raise ProfileError(f"'extends: {parent}' names no profile", file=str(current),
                                   key="extends", fix=exc.fix) from None
    merged: dict[str, Any] = {section: {} for section in SCHEMA}
    for layer in reversed(layers):
        for section in SCHEMA:
            if section in layer:
                merged[section] = deep_merge(merged[section], layer[section] or {})
    profile = _build(layers[0].get("name") or path.stem, path, layers[0].get("description", ""), merged,
                     tuple(p.stem for p in chain))
    _check_complete(profile)
    return profile


def _build(name: str, path: Path, description: str, merged: dict[str, Any], chain: tuple[str, ...] = ()) -> Profile:
    compose_files = merged["deployment"].get("compose_files")
    if isinstance(compose_files, str):  # one file may be written without a list
        merged["deployment"]["compose_files"] = [compose_files]
    return Profile(name=name, path=path, description=description, server=merged["server"], chain=chain,
                   **{section: cls(**merged[section]) for section, cls in SECTIONS.items()})


def external_profile(base_url: str) -> Profile:
    """The implicit profile of `--base-url` without `--profile`: test what answers, claim nothing."""
    merged: dict[str, Any] = {section: {} for section in SCHEMA}
    merged["deployment"].update(backend=BASE_URL_KIND.name, base_url=base_url)
    return _build(BASE_URL_KIND.name, Path.cwd() / "--base-url", f"endpoint {base_url}", merged)
