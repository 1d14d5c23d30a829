"""Lint on public compose files that run vLLM (tests/data/lint/real/): no crash, no false error, no miss.

Each NAME.yml (first line: source repository, path, commit) has NAME.expect.yml: `env` (the `.env` its
users keep next to it), optional `gpus`/`gpu_memory_gib`, `expect` (rules that must be reported as an
error or a warning), `errors` (the only rules allowed to be errors: the true ones), `held_out` (the
expectations were written from reading the file before any rule was tuned on it). The figures:
`python scripts/lint_corpus.py`.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from pytest_vllm.backends.compose import compose_command
from pytest_vllm.errors import PreflightError
from pytest_vllm.lint import Severity

from conftest import REPO

_spec = importlib.util.spec_from_file_location("lint_corpus", REPO / "scripts" / "lint_corpus.py")
assert _spec and _spec.loader
lint_corpus = sys.modules["lint_corpus"] = importlib.util.module_from_spec(_spec)  # its dataclasses need it
_spec.loader.exec_module(lint_corpus)

CASES = lint_corpus.cases()


def test_the_corpus_is_what_the_issue_asks_for():
    assert len(CASES) >= 25
    assert sum(bool(lint_corpus.spec_of(c).get("held_out")) for c in CASES) >= 8
    for case in CASES:
        assert case.read_text().startswith("# source: "), case.name
        assert case.with_suffix(".expect.yml").is_file(), case.name


@pytest.fixture(scope="module")
def compose_installed() -> None:
    """The expectations are what compose itself renders: without it, the lint reads the files alone."""
    try:
        compose_command()
    except PreflightError as exc:
        pytest.skip(f"the corpus is measured with docker compose config: {exc}")


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.stem)
@pytest.mark.usefixtures("compose_installed")
def test_real_compose_file(case: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for var in lint_corpus.variables_of(case):
        monkeypatch.delenv(var, raising=False)
    spec = lint_corpus.spec_of(case)
    findings = lint_corpus.lint_as_users_run_it(case, tmp_path)
    report = "\n".join(map(str, findings))
    false_errors = [f.rule for f in findings if f.severity is Severity.ERROR and f.rule not in spec["errors"]]
    assert false_errors == [], report
    reported = {f.rule for f in findings if f.severity is not Severity.INFO}
    assert set(spec["expect"]) <= reported, report
