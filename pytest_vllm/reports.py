"""What a run leaves in `reports/`: a JSON and a Markdown summary (profile, endpoint, effective config,
results, measurements), the server logs, and JUnit XML when pytest is given `--junitxml`.

Layout: reports/runs/<stamp>-<run id>/ holds one run; reports/latest.json and reports/latest.md are
copies of the newest summary, for people and CI artefact upload.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TestResult:
    nodeid: str
    profile: str | None
    outcome: str  # passed | failed | skipped | error
    duration_s: float
    message: str = ""


@dataclass
class RunReport:
    """Filled by the plugin's hooks during the run, written once at the end."""

    run_dir: Path
    started: float = field(default_factory=time.time)
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> deployment description
    deploy_failures: dict[str, str] = field(default_factory=dict)
    results: list[TestResult] = field(default_factory=list)
    measurements: dict[str, dict[str, Any]] = field(default_factory=dict)  # profile -> name -> data
    warnings: list[str] = field(default_factory=list)

    def add_measurement(self, profile: str, name: str, data: dict[str, Any]) -> None:
        self.measurements.setdefault(profile, {})[name] = data

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.results:
            out[r.outcome] = out.get(r.outcome, 0) + 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started)),
            "duration_s": round(time.time() - self.started, 3),
            "counts": self.counts(),
            "profiles": self.profiles,
            "deploy_failures": self.deploy_failures,
            "measurements": self.measurements,
            "warnings": self.warnings,
            "results": [r.__dict__ for r in self.results],
        }

    def to_markdown(self) -> str:
        from .report_markdown import render_summary
        return render_summary(self.to_json())

    def write(self) -> Path:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        json_path = self.run_dir / "summary.json"
        _atomic_write(json_path, json.dumps(self.to_json(), indent=2, default=str))
        _atomic_write(self.run_dir / "summary.md", self.to_markdown())
        top = self.run_dir.parent.parent
        for suffix in ("json", "md"):
            shutil.copyfile(self.run_dir / f"summary.{suffix}", top / f"latest.{suffix}")
        return json_path


def duration(seconds: float | None) -> str:
    """Seconds for a person: "45 s", "1 min 10 s", "2 h 05 min"; "—" when unknown."""
    if seconds is None:
        return "—"
    if seconds < 10:
        return f"{seconds:.1f} s"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def new_run_dir(reports_dir: Path, run_id: str) -> Path:
    return reports_dir / "runs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{run_id}"
