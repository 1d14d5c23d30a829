"""Generate lint's vLLM flag tables from each release's own argument parser.

    python scripts/vllm_flag_tables.py                     # first and last release of every minor from 0.6,
                                                           # a few patches (PATCHES), and the installed vLLM
    python scripts/vllm_flag_tables.py 0.11.0 0.9.2        # these releases only
    python scripts/vllm_flag_tables.py --installed         # the vLLM installed in this interpreter only

For each release: the wheel is downloaded with pip (`--no-deps`, ~0.4 GB, deleted right after), its
Python files are extracted into a scratch directory, and a child interpreter with that directory first
on sys.path builds the parser `vllm serve` uses (`make_arg_parser(FlexibleArgumentParser())`) on the
CPU platform, without a GPU, and dumps every option: names, on/off or valued, converter type, choices,
nargs, deprecated. The compiled extensions are not extracted (vLLM only warns without them); the other
dependencies are those of this environment. Each table is added to (or replaces its release in)
pytest_vllm/lint/flag_tables.json, stored as changes from the release before (pytest_vllm/lint/tablefile.py);
the package reads it (pytest_vllm/lint/flagspec.py).
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import types
import unittest.mock
import zipfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "pytest_vllm" / "lint" / "flag_tables.json"
OLDEST_MINOR = (0, 6)
PATCHES = ("0.6.3.post1", "0.10.1.1", "0.11.1")  # patches many compose files pin, or the seeds' neighbours


# --- child side: runs inside the release's sources ---------------------------------------------------

def _base_type(fn: object) -> str:
    """Unwrap vLLM's optional_type/parse_type/partial wrappers down to the function that converts."""
    for _ in range(5):
        inner = getattr(fn, "func", None)  # functools.partial
        if inner is None:
            cells = [c.cell_contents for c in (getattr(fn, "__closure__", None) or ())
                     if callable(c.cell_contents)]
            inner = cells[0] if cells else None
        if inner is None:
            break
        fn = inner
    return getattr(fn, "__name__", type(fn).__name__)


def _first(*paths: str) -> object:
    """The first `module:attr` of paths that imports (releases moved things around)."""
    import importlib

    errors = []
    for path in paths:
        module, _, attr = path.partition(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            errors.append(f"{path}: {exc}")
    raise ImportError("; ".join(errors))


def _registry(*paths: str) -> list[str] | None:
    """Names a parser registry knows (eager and lazy), or None when this release has none."""
    try:
        manager = _first(*paths)
    except ImportError:
        return None
    names: set[str] = set()
    for attr in ("tool_parsers", "reasoning_parsers", "lazy_parsers"):
        names |= set(getattr(manager, attr, {}) or {})
    return sorted(names) or None


def _tolerate_newer_transformers() -> None:
    """Older releases register configs that this environment's transformers already ships (aimv2...)."""
    from transformers.models.auto import auto_factory, configuration_auto

    for cls in (configuration_auto._LazyConfigMapping, auto_factory._LazyAutoMapping):
        register = cls.register

        def tolerant(self: Any, key: Any, value: Any, exist_ok: bool = False, _register: Any = register) -> Any:
            return _register(self, key, value, exist_ok=True)

        cls.register = tolerant  # type: ignore[method-assign]


def _tolerate_newer_triton() -> None:
    """0.6.x imports triton.runtime.cache.default_*_dir, which newer triton dropped."""
    try:
        from triton.runtime import cache
    except ImportError:
        return
    for name in ("default_cache_dir", "default_dump_dir", "default_override_dir"):
        if not hasattr(cache, name):
            setattr(cache, name, tempfile.gettempdir)


# Dependencies some releases import at start-up that this environment lacks; stand-ins are enough to
# build a parser (nothing they provide is called).
STUBBED = {"diskcache", "gguf", "outlines"}


class _StandIn(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if name.partition(".")[0] in STUBBED:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = types.ModuleType(spec.name)
        module.__path__ = []
        module.__getattr__ = lambda attr: unittest.mock.MagicMock(name=f"{spec.name}.{attr}")  # type: ignore[method-assign]
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        pass


def introspect() -> dict[str, object]:
    """The table of the vLLM importable here."""
    import importlib.metadata as metadata

    real_version = metadata.version

    def version(name: str) -> str:  # platform detection asks for the `vllm` distribution: say CPU build
        return "0.0.0+cpu" if name == "vllm" else real_version(name)

    metadata.version = version
    sys.meta_path.append(_StandIn())  # last: only for what is really missing
    _tolerate_newer_transformers()
    _tolerate_newer_triton()
    make_arg_parser = _first("vllm.entrypoints.common.cli_args:make_arg_parser",  # 0.33
                             "vllm.entrypoints.launchers.cli_args:make_arg_parser",
                             "vllm.entrypoints.openai.cli_args:make_arg_parser")
    parser_class = _first("vllm.utils.argparse_utils:FlexibleArgumentParser", "vllm.utils:FlexibleArgumentParser")
    parser = make_arg_parser(parser_class())  # type: ignore[operator]
    deprecated_actions = getattr(parser, "_deprecated", set())
    flags: dict[str, list[object]] = {}
    aliases: dict[str, str] = {}
    for action in parser._actions:
        longs = [s for s in action.option_strings if s.startswith("--")]
        if not longs or isinstance(action, argparse._HelpAction):
            continue
        name = longs[0][2:]
        if isinstance(action, argparse.BooleanOptionalAction):
            kind = "bool"
        elif action.nargs == 0:
            kind = "switch"
        elif action.type is None:
            kind = "str"
        else:
            kind = _base_type(action.type)
        choices = sorted({str(c) for c in action.choices if c is not None}) if action.choices else None
        nargs = action.nargs if isinstance(action.nargs, str) else None
        deprecated = bool(getattr(action, "deprecated", False)) or action in deprecated_actions or \
            bool(re.search(r"\bdeprecated\b", str(action.help or ""), re.IGNORECASE))
        flags[name] = [kind, choices, nargs, deprecated]
        for alias in action.option_strings:
            if alias.startswith("--no-") and kind == "bool" or alias == longs[0]:
                continue  # --no-x is understood from kind "bool"
            aliases[alias] = name  # as written: "-tp", "--device-memory-utilization"
    version_text = str(_first("vllm.version:__version__", "vllm:__version__"))
    try:
        quant = list(_first("vllm.model_executor.layers.quantization:QUANTIZATION_METHODS"))  # type: ignore[call-overload]
    except ImportError:
        quant = None
    try:
        deprecated_quant = list(_first(  # type: ignore[call-overload]
            "vllm.model_executor.layers.quantization:DEPRECATED_QUANTIZATION_METHODS"))
    except ImportError:
        deprecated_quant = []
    return {
        "version": version_text.split("+")[0],
        "flags": dict(sorted(flags.items())),
        "aliases": dict(sorted(aliases.items())),
        "tool_parsers": _registry("vllm.tool_parsers:ToolParserManager",
                                  "vllm.entrypoints.openai.tool_parsers:ToolParserManager"),
        "reasoning_parsers": _registry("vllm.reasoning:ReasoningParserManager",
                                       "vllm.entrypoints.openai.reasoning_parsers:ReasoningParserManager"),
        "quantization": quant,
        "deprecated_quantization": deprecated_quant,
    }


# --- parent side ----------------------------------------------------------------------------------

def released() -> list[str]:
    """Every vLLM release on the package index, newest first (`pip index versions vllm`)."""
    out = subprocess.run([sys.executable, "-m", "pip", "index", "versions", "vllm"], capture_output=True,
                         text=True, check=True).stdout
    match = re.search(r"Available versions: (.+)", out)
    if not match:
        raise SystemExit(f"pip index versions vllm said:\n{out}")
    return [v.strip() for v in match.group(1).split(",")]


def default_versions(all_versions: list[str]) -> list[str]:
    """The first and the last release of every minor from 0.6 on, and the patches in PATCHES.

    Flags also change within a minor (0.11.0 has --rope-scaling, 0.11.2 no longer), so a pinned patch is
    judged by the newest table not after it (versions.py), never by a later one.
    """
    from pytest_vllm.lint.flagspec import version_key  # here: the child never needs the package

    chosen: set[str] = set(PATCHES)
    minors: dict[tuple[int, int], list[str]] = {}
    for v in all_versions:
        m = re.fullmatch(r"(\d+)\.(\d+)\.\d+(\.\d+)?(\.post\d+)?", v)
        if m and (int(m.group(1)), int(m.group(2))) >= OLDEST_MINOR:
            minors.setdefault((int(m.group(1)), int(m.group(2))), []).append(v)
    for releases in minors.values():
        releases.sort(key=version_key)
        chosen |= {releases[0], releases[-1]}
    return sorted(chosen, key=version_key)


def sources_of(version: str, scratch: Path) -> Path:
    """The release's Python files, from its wheel, under scratch/src."""
    wheels = scratch / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "download", f"vllm=={version}", "--no-deps", "--only-binary",
                    ":all:", "-q", "-d", str(wheels)], check=True)
    (wheel,) = wheels.glob("*.whl")
    src = scratch / "src"
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.infolist():
            if member.filename.startswith("vllm/") and not member.filename.endswith(".so"):
                archive.extract(member, src)
    shutil.rmtree(wheels)
    return src


def child(src: Path | None) -> dict[str, object]:
    env = {**os.environ, "VLLM_PLUGINS": "", "VLLM_LOGGING_LEVEL": "ERROR", "CUDA_VISIBLE_DEVICES": ""}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    done = subprocess.run([sys.executable, __file__, "--introspect"], capture_output=True, text=True, env=env,
                          cwd=tempfile.gettempdir())
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.splitlines()[-1])


def write(table: dict[str, object], label: str) -> None:
    """Add the release's table to the file (replacing an older table of the same release)."""
    from pytest_vllm.lint import tablefile
    from pytest_vllm.lint.flagspec import version_key

    tables = {t["version"]: t for t in tablefile.decode(json.loads(OUT.read_text()))} if OUT.exists() else {}
    tables[str(table["version"])] = table
    ordered = [tables[v] for v in sorted(tables, key=version_key)]
    OUT.write_text(tablefile.render(tablefile.encode(ordered)), encoding="utf-8")
    print(f"{label}: {len(table['flags'])} flags -> {OUT.name} ({len(tables)} releases)", flush=True)  # type: ignore[arg-type]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("versions", nargs="*", help="releases to table (default: first and last of each minor, "
                    "PATCHES)")
    ap.add_argument("--installed", action="store_true", help="only the vLLM installed here")
    ap.add_argument("--introspect", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.introspect:
        print(json.dumps(introspect()))
        return 0
    sys.path.insert(0, str(REPO))  # this checkout's pytest_vllm (tablefile, version_key), not an installed one
    failed = []
    if not args.installed:
        for version in args.versions or default_versions(released()):
            with tempfile.TemporaryDirectory(prefix=f"vllm-{version}-") as scratch:
                try:
                    write(child(sources_of(version, Path(scratch))), version)
                except (RuntimeError, subprocess.CalledProcessError, ValueError) as exc:
                    failed.append(version)
                    print(f"{version}: FAILED\n{exc}", file=sys.stderr, flush=True)
    if args.installed or not args.versions:
        write(child(None), "installed")
    if failed:
        print(f"failed: {' '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
