"""What a run leaves in `reports/`: a JSON and a Markdown summary (profile, endpoint, effective config,
results, measurements), the server logs, and JUnit XML when pytest is given `--junitxml`.

Layout: reports/runs/<stamp>-<run id>/ holds one run; reports/latest.json and reports/latest.md are
copies of the newest summary, for people and CI artefact upload.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .atomic import atomic_write_text
from .errors import DeploymentError, PreflightError


@dataclass
class TestResult:
    nodeid: str
    profile: str | None
    outcome: str  # passed | failed | skipped | error
    duration_s: float
    message: str = ""


@dataclass(frozen=True)
class DeployFailure:
    """Why a profile's deployment failed, kept as data: the report and the grid read fields, not text."""

    headline: str
    diagnosis: dict[str, str] | None = None  # pytest_vllm.diagnosis.Diagnosis as a dict
    log: str | None = None  # path of the full server log
    log_tail: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, exc: DeploymentError | PreflightError) -> DeployFailure:
        if isinstance(exc, PreflightError):  # nothing started: its message is the whole story
            return cls(str(exc))
        return cls(exc.headline, asdict(exc.diagnosis) if exc.diagnosis else None, exc.log_path, exc.log_tail)

@dataclass
class RunReport:
    """Filled by the plugin's hooks during the run, written once at the end."""

    run_dir: Path  # this run's folder, under reports_root
    reports_root: Path  # --reports-dir: latest.json / latest.md are copied there
    started: float = field(default_factory=time.time)
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> deployment description
    deploy_failures: dict[str, DeployFailure] = field(default_factory=dict)
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
            "deploy_failures": {name: asdict(f) for name, f in self.deploy_failures.items()},
            "measurements": self.measurements,
            "warnings": self.warnings,
            "results": [r.__dict__ for r in self.results],
        }

    def to_markdown(self) -> str:
        from .report_markdown import render_summary
        return render_summary(self.to_json())

    def write(self) -> Path:
        summaries = {"json": json.dumps(self.to_json(), indent=2, default=str), "md": self.to_markdown()}
        for suffix, text in summaries.items():
            atomic_write_text(self.run_dir / f"summary.{suffix}", text)
            atomic_write_text(self.reports_root / f"latest.{suffix}", text)
        return self.run_dir / "summary.json"


def new_run_dir(reports_root: Path, run_id: str) -> Path:
    """reports/runs/<date>-<time>-<run id>: one run's folder."""
    return reports_root / "runs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{run_id}"
