"""Lint every public compose file of tests/data/lint/real/ as its users run it, and print the figures.

    python scripts/lint_corpus.py            # table: file, set, time, errors, warnings, false errors, misses
    python scripts/lint_corpus.py -v         # also every finding

Each NAME.yml comes with NAME.expect.yml (see tests/test_lint_corpus.py): the variables its users keep in
`.env`, the GPUs it targets, the rules that must be reported (`expect`) and the only rules allowed to be
errors (`errors`). A file is copied with its `.env` into a scratch folder as docker-compose.yml, then
linted with `lint_compose`, the way `python -m pytest_vllm lint docker-compose.yml` would.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pytest_vllm.capacity import Hardware  # noqa: E402
from pytest_vllm.lint import Finding, Severity, lint_compose  # noqa: E402
from pytest_vllm.lint.composefile import interpolate, load_yaml  # noqa: E402

CORPUS = Path(__file__).resolve().parents[1] / "tests" / "data" / "lint" / "real"


@dataclass
class Outcome:
    name: str
    spec: dict[str, Any]
    seconds: float = 0.0
    findings: list[Finding] = field(default_factory=list)
    crash: str | None = None

    @property
    def false_errors(self) -> list[Finding]:
        allowed = set(self.spec.get("errors") or [])
        return [f for f in self.findings if f.severity is Severity.ERROR and f.rule not in allowed]

    @property
    def missed(self) -> list[str]:
        reported = {f.rule for f in self.findings if f.severity is not Severity.INFO}
        return sorted(set(self.spec.get("expect") or []) - reported)


def cases() -> list[Path]:
    return sorted(p for p in CORPUS.glob("*.yml") if not p.name.endswith(".expect.yml"))


def spec_of(case: Path) -> dict[str, Any]:
    return yaml.safe_load(case.with_suffix(".expect.yml").read_text(encoding="utf-8")) or {}


def lint_as_users_run_it(case: Path, folder: Path) -> list[Finding]:
    """The file as docker-compose.yml next to the `.env` its users keep, the shell's variables cleared."""
    spec = spec_of(case)
    target = folder / "docker-compose.yml"
    shutil.copyfile(case, target)
    (folder / ".env").write_text("".join(f"{k}={v}\n" for k, v in (spec.get("env") or {}).items()))
    gpus = Hardware("corpus", spec["gpus"], spec["gpu_memory_gib"]) if spec.get("gpus") else None
    return lint_compose(target, gpus=gpus)


KEPT = {"HOME", "USER", "PATH", "PWD"}  # every user's shell has them


def variables_of(case: Path) -> set[str]:
    """Variables the file reads that this shell may happen to set (HF_TOKEN, MODEL, ...)."""
    raw, _ = load_yaml(case)
    return set(interpolate(raw, {}).used) - KEPT


def run(case: Path) -> Outcome:
    outcome = Outcome(case.stem, spec_of(case))
    saved = {var: os.environ.pop(var) for var in variables_of(case) if var in os.environ}
    try:
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            try:
                outcome.findings = lint_as_users_run_it(case, Path(folder))
            except Exception as exc:  # noqa: BLE001 - a crash is what this measures
                outcome.crash = f"{type(exc).__name__}: {exc}"
            outcome.seconds = time.perf_counter() - start
    finally:
        os.environ.update(saved)
    return outcome


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="print every finding")
    verbose = parser.parse_args().verbose
    outcomes = [run(case) for case in cases()]
    print(f"{'file':34} {'set':8} {'time':>6} {'err':>4} {'warn':>4}  false errors / misses")
    for o in outcomes:
        errors = sum(f.severity is Severity.ERROR for f in o.findings)
        warnings = sum(f.severity is Severity.WARNING for f in o.findings)
        problems = o.crash or ", ".join([*(f"FALSE {f.rule}" for f in o.false_errors),
                                         *(f"MISSED {r}" for r in o.missed)])
        print(f"{o.name:34} {'held-out' if o.spec.get('held_out') else 'dev':8} {o.seconds:5.2f}s {errors:4} "
              f"{warnings:4}  {problems}")
        if verbose:
            for f in o.findings:
                print(f"    {f.severity:7} {f.rule} {f.key}: {f.message[:150]}")
    for label, group in (("dev", [o for o in outcomes if not o.spec.get("held_out")]),
                         ("held-out", [o for o in outcomes if o.spec.get("held_out")]), ("all", outcomes)):
        expected = sum(len(o.spec.get("expect") or []) for o in group)
        missed = sum(len(o.missed) for o in group if not o.crash)
        print(f"{label}: {len(group)} files, {sum(bool(o.crash) for o in group)} crashes, "
              f"{sum(bool(o.false_errors) for o in group)} files with a false error "
              f"({sum(len(o.false_errors) for o in group)} false errors), {missed} of {expected} expected findings "
              f"missed, lint {sum(o.seconds for o in group) / max(1, len(group)):.2f}s per file")
    return 0 if all(not o.crash and not o.false_errors and not o.missed for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
