"""vLLM's server flags for one release, as data: what lint checks names and values against.

Each release's table in `flag_tables.json` (layout: tablefile.py) was generated from that release's own
parser (the one `vllm serve` builds) by `scripts/vllm_flag_tables.py`; importing vLLM to ask it would
take ~10 s per preflight and could only ever answer for the installed release. Which table judges a
deployment is decided by `versions.py`.

A flag's `type` is "bool" (--x / --no-x), "switch" (--x only), or the name of the function argparse
converts the value with ("int", "loads", "nullable_kvs", ...); registries are null when that release
had none.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from . import tablefile

# kinds lint checks values by: bool, switch, str, int, float, size (1k, 2M), size-or-auto, json (must
# parse as JSON), json-or-str (JSON when it starts with '{'), kvs (key=value,key=value), any (not checked).
_KIND_OF_TYPE = {"str": "str", "nullable_str": "str", "int": "int", "float": "float", "loads": "json",
                 "parse_dataclass": "json", "from_json": "json", "union_dict_and_str": "json-or-str",
                 "human_readable_int": "size", "human_readable_int_or_auto": "size-or-auto",
                 "nullable_kvs": "kvs", "bool": "bool", "switch": "switch"}
TABLE_FILE = resources.files("pytest_vllm.lint") / "flag_tables.json"


@dataclass(frozen=True)
class FlagSpec:
    name: str  # canonical long name without dashes, e.g. "gpu-memory-utilization"
    kind: str
    choices: tuple[str, ...] | None = None
    nargs: str | None = None  # None: one value; "+", "*", "?" as argparse
    deprecated: bool = False  # the release says so in its parser (help text or deprecated=True)

    @property
    def takes_value(self) -> bool:
        return self.kind not in ("bool", "switch")


@dataclass(frozen=True)
class Lookup:
    """How a name written by a user resolves: the flag, whether it was `--no-x`, or why not."""

    spec: FlagSpec | None
    negated: bool = False
    abbreviation_of: str | None = None
    candidates: tuple[str, ...] = ()  # ambiguous prefix or close matches


def normalize(name: str) -> str:
    """`--rope_scaling` -> `rope-scaling`, as FlexibleArgumentParser does (before any '.')."""
    bare = name.lstrip("-")
    head, dot, tail = bare.partition(".")
    return head.replace("_", "-") + dot + tail


@dataclass(frozen=True)
class FlagTable:
    """The flags and registries of one vLLM release."""

    version: str
    flags: dict[str, FlagSpec]
    aliases: dict[str, str]  # other option strings -> canonical name ("-tp" -> "tensor-parallel-size")
    tool_parsers: tuple[str, ...] | None
    reasoning_parsers: tuple[str, ...] | None
    quantization: tuple[str, ...] | None
    deprecated_quantization: tuple[str, ...] = ()
    _cache: dict[str, Lookup] = field(default_factory=dict, compare=False, repr=False)

    def __contains__(self, name: str) -> bool:
        """A long name this release accepts, as its own flag or as another's alias."""
        return name in self.flags or f"--{name}" in self.aliases

    def lookup(self, written: str) -> Lookup:
        """`--gpu_memory_utilization`, `-tp`, `--no-x`, `--enable-prefix` (abbreviation) -> the flag."""
        if written not in self._cache:
            self._cache[written] = self._lookup(written)
        return self._cache[written]

    def _lookup(self, written: str) -> Lookup:
        name = normalize(written).partition(".")[0]
        dashes = "--" if written.startswith("--") else "-"
        name = self.aliases.get(dashes + name, name)
        if name in self.flags:
            return Lookup(self.flags[name])
        base = name.removeprefix("no-")
        if base != name and base in self.flags and self.flags[base].kind == "bool":
            return Lookup(self.flags[base], negated=True)
        # argparse accepts any unambiguous prefix of a long option (allow_abbrev is left on by vLLM).
        longs = [*self.flags, *(f"no-{n}" for n, s in self.flags.items() if s.kind == "bool")]
        prefixed = [n for n in longs if n.startswith(name)] if len(name) > 2 and written.startswith("--") else []
        if len(prefixed) == 1:
            found = self._lookup("--" + prefixed[0])
            return Lookup(found.spec, found.negated, abbreviation_of=prefixed[0])
        if len(prefixed) > 1:
            return Lookup(None, candidates=tuple(sorted(prefixed)[:5]))
        return Lookup(None, candidates=tuple(difflib.get_close_matches(name, list(self.flags), n=3, cutoff=0.7)))


def version_key(version: str) -> tuple[int, ...]:
    """'0.6.6.post1' -> (0, 6, 6, 1) for ordering releases."""
    return tuple(int(n) for n in re.findall(r"\d+", version))


@functools.cache
def _tables() -> dict[str, dict[str, Any]]:
    document = json.loads(TABLE_FILE.read_text(encoding="utf-8"))
    return {t["version"]: t for t in tablefile.decode(document)}


def tabled_versions() -> tuple[str, ...]:
    """Every release with a table, oldest first."""
    return tuple(sorted(_tables(), key=version_key))


@functools.cache
def table(version: str) -> FlagTable:
    """The table of one tabled release (a name from `tabled_versions()`)."""
    data = _tables()[version]
    flags = {name: FlagSpec(name, _KIND_OF_TYPE.get(kind, "any"), tuple(choices) if choices else None, nargs,
                            deprecated)
             for name, (kind, choices, nargs, deprecated) in data["flags"].items()}

    def names(key: str) -> tuple[str, ...] | None:
        return tuple(data[key]) if data.get(key) is not None else None

    return FlagTable(data["version"], flags, data["aliases"], names("tool_parsers"), names("reasoning_parsers"),
                     names("quantization"), names("deprecated_quantization") or ())


def history(name: str) -> list[tuple[str, bool]]:
    """(release, has the flag) for every tabled release, oldest first."""
    return [(v, name in table(v)) for v in tabled_versions()]


def removed_after(name: str, version: str) -> str | None:
    """The first tabled release newer than `version` without the flag, when there is one."""
    newer = [(v, present) for v, present in history(name) if version_key(v) > version_key(version)]
    return next((v for v, present in newer if not present), None)


def added_in(name: str) -> str | None:
    """The first tabled release that has the flag (None: no table has it)."""
    return next((v for v, present in history(name) if present), None)
