"""The run object: what one pytest run selected, decided and collected, in one place.

Like pytest-benchmark's `BenchmarkSession`: the plugin builds it in `pytest_configure` and keeps it
under one stash key; the grid recorder is handed it, the TTFT history reads it with `VllmSession.of`.
No module imports the plugin for state.

Two folders, never confused: `reports_root` is `--reports-dir` (history, grid state, latest.*, kept
between runs); `settings.run_dir` is this run's own folder under it (summary, server logs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from .backends.base import RunSettings
from .errors import ProfileError
from .profile import Profile
from .reports import RunReport

if TYPE_CHECKING:
    from .history import Record


@dataclass
class VllmSession:
    """This run: the selected profiles, the command line's settings, the report and what tests recorded."""

    profiles: dict[str, Profile]  # name -> profile, in run order
    settings: RunSettings
    reports_root: Path
    report: RunReport
    # A bad --profile default is an error only once a test needs a deployment (unit tests never do).
    profile_error: ProfileError | None = None
    item_profile: dict[str, str] = field(default_factory=dict)  # test node id -> profile name
    records: list[Record] = field(default_factory=list)  # TTFT series measured in this run
    grid_file_baseline: str | None = None  # `baseline:` of a grid file given to --profile
    failure_shown: dict[str, str] = field(default_factory=dict)  # failed profile -> test that showed it in full

    def install(self, config: pytest.Config) -> None:
        config.stash[_KEY] = self

    @staticmethod
    def of(config: pytest.Config) -> VllmSession:
        return config.stash[_KEY]


_KEY = pytest.StashKey[VllmSession]()
