"""Shared helpers for the project's own tests."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import httpcore  # noqa: F401 - loaded before any pytester snapshot (see below)
import pytest

# pytester drops the modules a test imported first; httpx imports httpcore lazily and caches its exception
# classes, so a later "connection refused" would escape as a raw httpcore.ConnectError, not httpx's.
pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parent.parent
SUITES = REPO / "suites"
PROFILES = REPO / "profiles"
DATA = Path(__file__).resolve().parent / "data"


def outcome_counts(output: str) -> dict[str, int]:
    """pytest's final counts from its output, e.g. {"passed": 6, "skipped": 1} (warnings left out): numbers
    parsed, so "16 passed" is not taken for "6 passed"."""
    counts = pytest.RunResult.parse_summary_nouns(output.splitlines())
    return {noun: n for noun, n in counts.items() if noun != "warnings"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def run_suite(pytester: pytest.Pytester, tmp_path: Path):
    """Run pytest in a subprocess, as a user would, on files of suites/ with the reports in tmp_path."""

    def run(*args: str, timeout: float = 900) -> pytest.RunResult:
        return pytester.runpytest_subprocess(
            *args, f"--reports-dir={tmp_path / 'reports'}", "-p", "no:cacheprovider", "--rootdir", str(REPO),
            "-c", str(REPO / "pyproject.toml"), timeout=timeout)

    return run


def python() -> str:
    return sys.executable
