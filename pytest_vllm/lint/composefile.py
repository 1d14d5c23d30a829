"""Reading what lint checks the way docker compose reads it: YAML, env files, `${VAR}` interpolation.

Also runs `docker compose config` (binary found by the compose backend), so that lint reports what
compose itself would reject.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import VllmTestError

COMPOSE_TIMEOUT_S = 30


class LintInputError(VllmTestError):
    """A lint target cannot be read at all (missing file, broken YAML): nothing to lint."""


# --- YAML -------------------------------------------------------------------------------------------

_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass(frozen=True)
class DuplicateKey:
    key: str
    line: int  # 1-based, of the second occurrence
    first_line: int


def load_yaml(path: Path) -> tuple[Any, list[DuplicateKey]]:
    """Parse like yaml.safe_load, but report keys a mapping defines twice (PyYAML keeps the last silently)."""
    duplicates: list[DuplicateKey] = []

    class Loader(yaml.SafeLoader):
        pass

    def construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue  # `<<: *anchor`: merged by SafeLoader below; later keys override, as in compose
            key = loader.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str | int | float | bool):
                continue  # complex keys: rare, and yaml reports real conflicts itself
            if key in seen:
                duplicates.append(DuplicateKey(str(key), line, seen[key]))
            else:
                seen[key] = line
        return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise LintInputError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        return yaml.load(text, Loader=Loader), duplicates  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise LintInputError(f"{where}: YAML syntax error: {getattr(exc, 'problem', None) or exc}") from None


def key_lines(path: Path) -> dict[tuple[str, ...], int]:
    """1-based line of every mapping key, by key path (('services', 'vllm', 'command') -> 12).

    Keys a service takes from `<<: *anchor` point to the anchor's line: where the value is written.
    """
    lines: dict[tuple[str, ...], int] = {}
    try:
        root = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except (OSError, yaml.YAMLError):
        return lines

    def walk(node: yaml.Node, prefix: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value in node.value:
                if key_node.tag == _MERGE_TAG:
                    for merged in value.value if isinstance(value, yaml.SequenceNode) else [value]:
                        walk(merged, prefix)
                    continue
                key = (*prefix, str(key_node.value))
                lines.setdefault(key, key_node.start_mark.line + 1)
                walk(value, key)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines.setdefault((*prefix, str(i)), item.start_mark.line + 1)
                walk(item, (*prefix, str(i)))

    if root is not None:
        walk(root, ())
    return lines


# --- env files --------------------------------------------------------------------------------------

_ENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.-]*)\s*=\s*(.*?)\s*$")


@dataclass
class EnvFile:
    path: Path
    values: dict[str, str] = field(default_factory=dict)
    bad_lines: list[tuple[int, str]] = field(default_factory=list)  # (1-based line, text)


def read_env_file(path: Path) -> EnvFile:
    """KEY=VALUE lines as compose reads them: comments, `export`, quotes, inline ` # comments`."""
    env = EnvFile(path)
    for number, raw in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        line = raw.rstrip("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _ENV_LINE.match(line)
        if not match:
            env.bad_lines.append((number, line))
            continue
        key, value = match.groups()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif value[:1] and value[0] in "'\"":
            env.bad_lines.append((number, line))  # opening quote never closed
            continue
        else:
            value = re.split(r"\s+#", value, maxsplit=1)[0]
        env.values[key] = value
    return env


# --- interpolation ----------------------------------------------------------------------------------

@dataclass
class Interpolation:
    """The result of substituting variables through a whole document, and what was missing."""

    data: Any
    unset: list[tuple[str, str]] = field(default_factory=list)  # (variable, key path): compose uses ""
    required: list[tuple[str, str, str]] = field(default_factory=list)  # (variable, key path, message)
    used: dict[str, list[str]] = field(default_factory=dict)  # variable -> key paths


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BRACED = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])(.*))?", re.S)


def interpolate(doc: Any, env: dict[str, str]) -> Interpolation:
    """Substitute `${VAR}`, `$VAR`, `${VAR:-d}`, `${VAR-d}`, `${VAR:?msg}`, `${VAR?msg}`, `${VAR:+x}`, `$$`."""
    result = Interpolation(None)

    def walk(node: Any, path: str) -> Any:
        if isinstance(node, dict):
            return {k: walk(v, f"{path}.{k}" if path else str(k)) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, f"{path}[{i}]") for i, v in enumerate(node)]
        if isinstance(node, str):
            return substitute(node, env, lambda var, kind, msg: _record(result, var, kind, msg, path))
        return node

    result.data = walk(doc, "")
    return result


def _record(result: Interpolation, var: str, kind: str, message: str, path: str) -> None:
    if kind == "used":
        result.used.setdefault(var, []).append(path)
    elif kind == "unset":
        result.unset.append((var, path))
    else:
        result.required.append((var, path, message))


def substitute(text: str, env: dict[str, str], note: Callable[[str, str, str], None]) -> str:
    """One string; `note(var, 'used'|'unset'|'required', message)` hears about every variable."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] != "$":
            out.append(text[i])
            i += 1
            continue
        if text.startswith("$$", i):
            out.append("$")
            i += 2
            continue
        if text.startswith("${", i):
            end = _closing_brace(text, i + 2)
            match = _BRACED.fullmatch(text[i + 2:end]) if end > 0 else None
            if not match:
                out.append(text[i:])  # compose rejects this; `docker compose config` reports it
                break
            out.append(_expand(match.group(1), match.group(2), match.group(3) or "", env, note))
            i = end + 1
            continue
        name = _NAME.match(text, i + 1)
        if name:
            out.append(_expand(name.group(0), None, "", env, note))
            i = name.end()
        else:
            out.append("$")
            i += 1
    return "".join(out)


def _expand(var: str, op: str | None, arg: str, env: dict[str, str], note: Callable[[str, str, str], None]) -> str:
    note(var, "used", "")
    value = env.get(var)
    present = value is not None and (value != "" or not (op or "").startswith(":"))
    if op is None:
        if value is None:
            note(var, "unset", "")
        return value or ""
    if op in (":-", "-"):
        return value if present else substitute(arg, env, note)  # type: ignore[return-value]
    if op in (":?", "?"):
        if not present:
            note(var, "required", substitute(arg, env, note) or f"required variable {var} is missing a value")
        return value or ""
    return substitute(arg, env, note) if present else ""  # :+ and +


def _closing_brace(text: str, start: int) -> int:
    depth = 1
    for j in range(start, len(text)):
        if text.startswith("${", j):
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    return -1


def as_argv(value: Any) -> list[str]:
    """A compose `command:`/`entrypoint:` as argv: lists as they are, strings split like a shell."""
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v) for v in value]
    try:
        return shlex.split(str(value))
    except ValueError:
        return str(value).split()


# --- docker compose config ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Rendering:
    """What `docker compose config` made of the files: its model of every service, or why it refused."""

    status: int
    stderr: str
    services: dict[str, dict[str, Any]] | None = None  # None when compose refused (status != 0)


def compose_config(command: list[str], files: list[Path], env_file: Path | None,
                   extra_env: dict[str, str]) -> Rendering:
    """`docker compose config --format json` with every profile on: the files as compose will run them.

    Every profile is enabled so that no service escapes the lint; which profiles run together is the
    caller's business (`profiles:` stays in each service).
    """
    args = [*command, *(["--env-file", str(env_file.resolve())] if env_file else [])]
    for f in files:
        args += ["-f", str(f.resolve())]
    env = {**os.environ, **extra_env, "COMPOSE_PROFILES": "*"}
    try:
        proc = subprocess.run([*args, "config", "--format", "json"], capture_output=True, text=True,
                              timeout=COMPOSE_TIMEOUT_S, cwd=files[0].parent, env=env)
    except subprocess.TimeoutExpired:
        return Rendering(124, f"docker compose config did not answer within {COMPOSE_TIMEOUT_S}s")
    if proc.returncode != 0:
        return Rendering(proc.returncode, proc.stderr.strip())
    try:
        services = json.loads(proc.stdout).get("services") or {}
    except ValueError:
        return Rendering(1, "docker compose config printed something that is not JSON")
    # compose prints `$` as `$$` so that its output can be read again; the container sees one `$`
    return Rendering(0, proc.stderr.strip(), _unescape(services))


def _unescape(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _unescape(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_unescape(v) for v in node]
    return node.replace("$$", "$") if isinstance(node, str) else node
