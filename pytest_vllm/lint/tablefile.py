"""The flag tables of every tabled vLLM release, in one file: the oldest in full, each next as its changes.

Releases share most of their flags, so storing each release as what changed since the one before keeps
`flag_tables.json` small (~0.1 MB for 46 releases instead of ~0.7 MB) and makes a new release's diff
exactly its flag changes. A table (what `scripts/vllm_flag_tables.py` introspects, and what `decode`
gives back per release):

    {"version": "0.11.0", "flags": {name: [type, choices, nargs, deprecated]}, "aliases": {option: name},
     "tool_parsers": [...] | null, "reasoning_parsers": [...] | null, "quantization": [...] | null,
     "deprecated_quantization": [...]}

A later release's entry holds "version", the flags and aliases that are new or changed, "flags_gone" and
"aliases_gone" (names), and a list key only when that list changed.
"""

from __future__ import annotations

import json
from typing import Any

MAPS = ("flags", "aliases")
LISTS = ("tool_parsers", "reasoning_parsers", "quantization", "deprecated_quantization")
Table = dict[str, Any]


def encode(tables: list[Table]) -> dict[str, list[Table]]:
    """Tables, oldest first -> the file's document."""
    releases: list[Table] = []
    previous: Table | None = None
    for table in tables:
        if previous is None:
            releases.append(table)
        else:
            entry: Table = {"version": table["version"]}
            for key in MAPS:
                changed = {k: v for k, v in table[key].items() if previous[key].get(k) != v}
                gone = sorted(set(previous[key]) - set(table[key]))
                entry.update({key: changed} if changed else {})
                entry.update({f"{key}_gone": gone} if gone else {})
            entry.update({key: table[key] for key in LISTS if table[key] != previous[key]})
            releases.append(entry)
        previous = table
    return {"releases": releases}


def decode(document: dict[str, list[Table]]) -> list[Table]:
    """The file's document -> every release's full table, oldest first."""
    tables: list[Table] = []
    for entry in document["releases"]:
        if not tables:
            tables.append(entry)
            continue
        previous = tables[-1]
        table: Table = {"version": entry["version"]}
        for key in MAPS:
            merged = {**previous[key], **entry.get(key, {})}
            for name in entry.get(f"{key}_gone", []):
                del merged[name]
            table[key] = dict(sorted(merged.items()))
        table.update({key: entry[key] if key in entry else previous[key] for key in LISTS})
        tables.append(table)
    return tables


def render(document: dict[str, list[Table]]) -> str:
    """JSON with one flag per line, so that adding a release reads as its flag changes."""
    return '{"releases": [\n' + ",\n".join(_entry(e) for e in document["releases"]) + "\n]}\n"


def _entry(entry: Table) -> str:
    lines = []
    for key, value in entry.items():
        if isinstance(value, dict) and value:
            inner = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v, separators=(',', ':'))}" for k, v in value.items())
            lines.append(f"{json.dumps(key)}: {{\n{inner}}}")
        else:
            lines.append(f"{json.dumps(key)}: {json.dumps(value, separators=(',', ':'))}")
    return "{" + ",\n".join(lines) + "}"
