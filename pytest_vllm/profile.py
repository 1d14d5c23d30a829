"""How a profile is read: find it, parse it, resolve `extends`, validate every key, render vLLM flags.

A profile is one YAML file under `profiles/` describing one deployment and what it must meet.
The schema is `SCHEMA` below; `docs` in the README is generated from the same comments.
"""

from __future__ import annotations

import copy
import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ProfileError

BACKENDS = ("process", "compose", "external", "emulator")

# section -> {key: (allowed python types, one-line meaning)}; a section mapped to None is free-form.
SCHEMA: dict[str, dict[str, tuple[tuple[type, ...], str]] | None] = {
    "deployment": {
        "backend": ((str,), "process | compose | external | emulator"),
        "host": ((str,), "address the server binds and we call (default 127.0.0.1)"),
        "port": ((int,), "HTTP port of the OpenAI-compatible server (default 8000)"),
        "env": ((dict,), "extra environment variables for the server"),
        "compose_files": ((list, str), "compose files, relative to the profile file"),
        "service": ((str,), "compose service that runs vLLM"),
        "env_file": ((str,), "env file passed to compose as --env-file (relative to the profile)"),
        "base_url": ((str,), "external backend: URL of a server that is already running"),
        "extra_args": ((list,), "raw extra command-line arguments appended after the flags"),
        "faults": ((list,), "emulator backend: faults to inject (a test instrument)"),
        "emulator": ((dict,), "emulator backend: {latency: {...}, slow_start_s: N}"),
    },
    "model": {
        "path": ((str,), "model id or local path given to --model; '@tiny' = the built tiny model"),
        "served_name": ((str,), "name clients use (--served-model-name)"),
        "quantization": ((str,), "awq | gptq | fp8 | bf16 | fp16 | compressed-tensors ..."),
        "parameters_b": ((int, float), "parameter count in billions (capacity estimate)"),
        "max_model_len": ((int,), "context length the deployment must expose"),
        "multimodal": ((bool,), "the checkpoint is a vision-language model"),
    },
    "server": None,  # vLLM flags: {flag-name: value}, rendered by render_flags()
    "auth": {
        "api_key_env": ((str,), "environment variable holding the API key"),
        "generate": ((bool,), "no key given: generate a random one for this run (test servers)"),
    },
    "capabilities": {
        "reasoning_parser": ((str,), "the deployment claims reasoning (e.g. qwen3)"),
        "tool_parser": ((str,), "the deployment claims tool calling (e.g. hermes)"),
        "vision": ((bool,), "the deployment accepts images"),
        "max_images": ((int,), "images allowed per prompt"),
        "semantic": ((bool,), "answers are meaningful (false for the random tiny model)"),
    },
    "thresholds": {
        "kv_cache_acceleration_min": ((int, float, dict), "minimum TTFT MISS/HIT ratio, or {workload: minimum}"),
        "ttft_hit_ms_max": ((int, float), "maximum median TTFT on a cache hit"),
        "ttft_miss_ms_max": ((int, float), "maximum median TTFT on a cache miss"),
        "regression_tolerance": ((int, float), "TTFT slowdown against history the gate must catch (0.10 = 10%)"),
        "acceleration_tolerance": ((int, float), "loss of MISS/HIT acceleration against history the gate must "
                                   "catch (0.10: HIT 10% slower relative to MISS)"),
        "regression_confidence": ((int, float), "confidence of the regression test (0.95)"),
        "kv_rounds": ((int,), "MISS/HIT rounds per measurement (and per added look)"),
        "kv_rounds_max": ((int,), "rounds at most, added while the regression verdict is undecided"),
        "peak_vram_gib_max": ((int, float), "maximum peak VRAM per GPU"),
        "prefix_cache_hit_rate_min": ((int, float), "minimum share of HIT prompt tokens served from cache (/metrics)"),
        "kv_cache_free_gib_min": ((int, float), "minimum KV-cache memory per GPU after loading (engine log)"),
    },
    "timeouts": {
        "health": ((int, float), "seconds to wait for the deployment to become healthy"),
        "test": ((int, float), "pytest-timeout limit per suite test, seconds"),
        "request": ((int, float), "client timeout per HTTP request, seconds"),
    },
    "hardware": {
        "gpus": ((int,), "number of GPUs the deployment uses"),
        "gpu_memory_gib": ((int, float), "memory of each GPU, GiB"),
        "device_ids": ((list,), "GPU ids reserved for the deployment"),
    },
}
TOP_LEVEL = {"name", "description", "extends", *SCHEMA}

DEFAULTS: dict[str, Any] = {
    "deployment": {"backend": "process", "host": "127.0.0.1", "port": 8000, "env": {}},
    "model": {},
    "server": {},
    "auth": {},
    "capabilities": {"semantic": True},
    "thresholds": {"regression_tolerance": 0.10, "acceleration_tolerance": 0.10, "regression_confidence": 0.95,
                   "kv_rounds": 5, "kv_rounds_max": 40},
    "timeouts": {"health": 900, "test": 300, "request": 120},
    "hardware": {},
}


@dataclass(frozen=True)
class Profile:
    """A validated profile with `extends` resolved. Sections are plain dicts, defaults applied."""

    name: str
    path: Path
    description: str
    deployment: dict[str, Any]
    model: dict[str, Any]
    server: dict[str, Any]
    auth: dict[str, Any]
    capabilities: dict[str, Any]
    thresholds: dict[str, Any]
    timeouts: dict[str, Any]
    hardware: dict[str, Any]
    chain: tuple[str, ...] = field(default=())  # this profile, then what it extends

    @property
    def backend(self) -> str:
        return self.deployment["backend"]

    @property
    def served_name(self) -> str:
        return self.model.get("served_name") or self.model.get("path", "")

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


def _check_complete(p: dict[str, Any], path: Path) -> None:
    backend = p["deployment"].get("backend")
    if backend not in BACKENDS:
        raise ProfileError(f"unknown backend '{backend}'", file=str(path), key="deployment.backend",
                           fix=f"use one of: {', '.join(BACKENDS)}")
    required = {"process": ["model.path"], "compose": ["deployment.compose_files", "deployment.service",
                                                       "model.path"], "external": [], "emulator": []}[backend]
    for dotted in required:
        section, key = dotted.split(".")
        if not p[section].get(key):
            raise ProfileError(f"missing key '{dotted}' (required by the {backend} backend)",
                               file=str(path), key=dotted, fix=f"add it: {SCHEMA[section][key][1]}")
    rounds, rounds_max = p["thresholds"].get("kv_rounds", 1), p["thresholds"].get("kv_rounds_max", 1)
    if rounds < 1 or rounds_max < rounds:
        raise ProfileError(f"kv_rounds_max {rounds_max} is below kv_rounds {rounds} (or kv_rounds below 1)",
                           file=str(path), key="thresholds.kv_rounds_max",
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
    merged: dict[str, Any] = copy.deepcopy(DEFAULTS)
    for layer in reversed(layers):
        for section in SCHEMA:
            if section in layer:
                merged[section] = deep_merge(merged[section], layer[section] or {})
    merged["name"] = layers[0].get("name") or path.stem
    _check_complete(merged, path)
    return Profile(
        name=merged["name"], path=path, description=layers[0].get("description", ""),
        **{section: merged[section] for section in SCHEMA},
        chain=tuple(p.stem for p in chain),
    )


def external_profile(base_url: str) -> Profile:
    """The implicit profile of `--base-url` without `--profile`: test what answers, claim nothing."""
    merged = copy.deepcopy(DEFAULTS)
    merged["deployment"].update(backend="external", base_url=base_url)
    return Profile(name="external", path=Path.cwd() / "--base-url", description=f"endpoint {base_url}",
                   **{section: merged[section] for section in SCHEMA})
