"""vLLM's own server flags, as data: what lint checks names and values against.

Importing vLLM and building its parser takes ~10 s, too slow for a preflight, so the table is generated
once from vLLM's real parser (`make_arg_parser(FlexibleArgumentParser())`, the parser `vllm serve`
uses) into `vllm_flags.py`. Regenerate after upgrading vLLM:

    python -m pytest_vllm.lint.flagspec          # rewrites pytest_vllm/lint/vllm_flags.py

`tests/test_lint.py` checks that the table still matches the installed vLLM.
"""

from __future__ import annotations

import difflib
import functools
import pprint
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import vllm_flags

# kinds: bool (--x / --no-x), switch (--x only), str, int, float, size (1k, 2M), size-or-auto,
# json (must parse as JSON), json-or-str (JSON when it starts with '{'), any (value not checked).
_KIND_OF_TYPE = {"str": "str", "int": "int", "float": "float", "loads": "json", "parse_dataclass": "json",
                 "union_dict_and_str": "json-or-str", "human_readable_int": "size",
                 "human_readable_int_or_auto": "size-or-auto"}


@dataclass(frozen=True)
class FlagSpec:
    name: str  # canonical long name without dashes, e.g. "gpu-memory-utilization"
    kind: str
    choices: tuple[str, ...] | None = None
    nargs: str | None = None  # None: one value; "+", "*", "?" as argparse

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


@functools.cache
def lookup(written: str) -> Lookup:
    name = normalize(written).partition(".")[0]
    flags = vllm_flags.FLAGS
    if written.startswith("-") and not written.startswith("--"):
        name = vllm_flags.SHORT.get(name, name)
    if name in flags:
        return Lookup(_spec(name))
    if name.startswith("no-") and name[3:] in flags and flags[name[3:]][0] == "bool":
        return Lookup(_spec(name[3:]), negated=True)
    # argparse accepts any unambiguous prefix of a long option (allow_abbrev is left on by vLLM).
    longs = [*flags, *(f"no-{n}" for n, v in flags.items() if v[0] == "bool")]
    prefixed = [n for n in longs if n.startswith(name)] if len(name) > 2 else []
    if len(prefixed) == 1:
        found = lookup("--" + prefixed[0])
        return Lookup(found.spec, found.negated, abbreviation_of=prefixed[0])
    if len(prefixed) > 1:
        return Lookup(None, candidates=tuple(sorted(prefixed)[:5]))
    return Lookup(None, candidates=tuple(difflib.get_close_matches(name, list(flags), n=3, cutoff=0.7)))


def _spec(name: str) -> FlagSpec:
    kind, choices, nargs = vllm_flags.FLAGS[name]
    return FlagSpec(name, kind, tuple(choices) if choices is not None else None, nargs)


# --- generation (needs vLLM installed) -------------------------------------------------------------

def _base_type(fn: Any) -> str:
    """Unwrap vLLM's optional_type/parse_type closures down to the function that really converts."""
    for _ in range(5):
        inner = [c.cell_contents for c in (getattr(fn, "__closure__", None) or ()) if callable(c.cell_contents)]
        if not inner:
            break
        fn = inner[0]
    return getattr(fn, "__name__", "")


def generate() -> dict[str, Any]:
    """The table, from the installed vLLM's real parser and registries."""
    import argparse

    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.model_executor.layers import quantization
    from vllm.reasoning import ReasoningParserManager
    from vllm.tool_parsers import ToolParserManager
    from vllm.utils.argparse_utils import FlexibleArgumentParser
    from vllm.version import __version__

    parser = make_arg_parser(FlexibleArgumentParser())
    flags: dict[str, tuple[str, list[str] | None, str | None]] = {}
    short: dict[str, str] = {}
    for action in parser._actions:
        longs = [s for s in action.option_strings if s.startswith("--")]
        if not longs or isinstance(action, argparse._HelpAction):
            continue
        name = longs[0][2:]
        if isinstance(action, argparse.BooleanOptionalAction):
            kind = "bool"
        elif action.nargs == 0:
            kind = "switch"
        else:
            kind = _KIND_OF_TYPE.get(_base_type(action.type), "any")
        choices = [str(c) for c in action.choices if c is not None] if action.choices else None
        flags[name] = (kind, choices, action.nargs if isinstance(action.nargs, str) else None)
        for alias in action.option_strings:
            if alias.startswith("--no-") and kind == "bool":
                continue  # lookup() understands --no-x itself
            if alias.startswith("--") and alias[2:] != name:
                short[alias[2:]] = name  # e.g. --device-memory-utilization
            elif not alias.startswith("--"):
                short[alias[1:]] = name
    return {
        "VLLM_VERSION": __version__,
        "FLAGS": dict(sorted(flags.items())),
        "SHORT": dict(sorted(short.items())),
        "REASONING_PARSERS": sorted({*ReasoningParserManager.lazy_parsers,
                                     *ReasoningParserManager.reasoning_parsers}),
        "TOOL_PARSERS": sorted({*ToolParserManager.lazy_parsers, *ToolParserManager.tool_parsers}),
        "QUANTIZATION_METHODS": list(quantization.QUANTIZATION_METHODS),
        "DEPRECATED_QUANTIZATION_METHODS": list(quantization.DEPRECATED_QUANTIZATION_METHODS),
    }


def render_module(table: dict[str, Any]) -> str:
    lines = ['"""Generated by `python -m pytest_vllm.lint.flagspec` from vLLM\'s own parser. Do not edit."""',
             "# ruff: noqa: E501", "", "from typing import Any", ""]
    for key, value in table.items():
        annotation = ": dict[str, Any]" if isinstance(value, dict) else ""
        lines.append(f"{key}{annotation} = {pprint.pformat(value, width=108, compact=True, sort_dicts=False)}")
    return "\n".join(lines) + "\n"


def main() -> int:
    target = Path(__file__).with_name("vllm_flags.py")
    table = generate()
    target.write_text(render_module(table), encoding="utf-8")
    print(f"wrote {target}: {len(table['FLAGS'])} flags from vLLM {table['VLLM_VERSION']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
