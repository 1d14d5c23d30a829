"""Grid search over profiles: one deployment per profile, crash-tolerant, resumable, ranked report.

pytest does the loop: the plugin parametrizes the session-scoped deployment over the profiles, so each
profile is brought up, tested and torn down before the next starts. This module records each finished
profile in a state file (written atomically: a kill at any moment leaves the previous state intact),
lets `--resume` skip the finished ones, and renders the comparative report from the state, so the
report covers every profile of the grid whichever run measured it.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import pytest

from .profile import Profile

STATE_FILE = "grid-state.json"
RANK_METRICS = {
    "acceleration": ("KV-cache acceleration (MISS/HIT)", True),
    "ttft_hit_ms": ("median TTFT on a cache hit", False),
    "ttft_miss_ms": ("median TTFT on a cache miss", False),
}


def atomic_write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, default=str)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class GridState:
    """`reports/grid-state.json`: the grid's profiles and the record of each finished one."""

    def __init__(self, path: Path, profiles: list[str]) -> None:
        self.path = path
        self.data: dict[str, Any] = {"profiles": profiles, "records": {}, "started": time.time()}

    @classmethod
    def load(cls, path: Path, profiles: list[str]) -> GridState:
        state = cls(path, profiles)
        if path.is_file():
            state.data = json.loads(path.read_text(encoding="utf-8"))
            state.data["profiles"] = list(dict.fromkeys([*state.data.get("profiles", []), *profiles]))
        return state

    def completed(self) -> set[str]:
        return set(self.data["records"])

    def record(self, name: str, record: dict[str, Any]) -> None:
        self.data["records"][name] = record
        atomic_write_json(self.path, self.data)

    def save(self) -> None:
        atomic_write_json(self.path, self.data)


def kv_measurement(measurements: dict[str, Any]) -> dict[str, Any]:
    """The KV-cache measurement the suite recorded (the first that carries an acceleration)."""
    for value in measurements.values():
        if isinstance(value, dict) and "acceleration" in value:
            return value
    return {}


def requested_flags(profile: Profile) -> dict[str, Any]:
    return {key: profile.flag(key) for key in ("gpu-memory-utilization", "enable-prefix-caching",
                                               "enable-chunked-prefill", "max-num-seqs")}


def make_record(profile: Profile, report: Any, started: float) -> dict[str, Any]:
    """What the grid keeps of one finished profile (report: the run's RunReport)."""
    results = [r for r in report.results if r.profile == profile.name]
    counts: dict[str, int] = {}
    for r in results:
        counts[r.outcome] = counts.get(r.outcome, 0) + 1
    failure = report.deploy_failures.get(profile.name)
    status = "deploy_failed" if failure else ("failed" if counts.get("failed") or counts.get("error") else "passed")
    return {
        "status": status, "counts": counts, "duration_s": round(time.time() - started, 1),
        "requested": requested_flags(profile), "deployment": report.profiles.get(profile.name, {}),
        "failure": failure, "failed_tests": [r.nodeid for r in results if r.outcome in ("failed", "error")],
        "measurements": report.measurements.get(profile.name, {}),
    }


def _row(name: str, record: dict[str, Any]) -> dict[str, Any]:
    kv = kv_measurement(record.get("measurements", {}))
    effective = (record.get("deployment") or {}).get("engine_config") or {}
    return {
        "profile": name, "status": record["status"], "duration_s": record.get("duration_s"),
        "gpu_memory_utilization": record["requested"].get("gpu-memory-utilization"),
        "prefix_caching_requested": record["requested"].get("enable-prefix-caching"),
        "prefix_caching_effective": effective.get("enable_prefix_caching"),
        "chunked_prefill": effective.get("enable_chunked_prefill", record["requested"].get("enable-chunked-prefill")),
        "max_num_seqs": record["requested"].get("max-num-seqs"),
        "ttft_miss_ms": kv.get("miss_ms_median"), "ttft_miss_spread_ms": kv.get("miss_ms_iqr"),
        "ttft_hit_ms": kv.get("hit_ms_median"), "ttft_hit_spread_ms": kv.get("hit_ms_iqr"),
        "acceleration": kv.get("acceleration"),
        "cause": _cause(record),
        "host": record.get("host"), "gpu_model": record.get("gpu_model"),
    }


def _cause(record: dict[str, Any]) -> str:
    moved = ("moved after a lost host (" + "; ".join(record["lost_on"]) + ")") if record.get("lost_on") else ""
    if record.get("failure"):
        lines = [ln for ln in record["failure"].splitlines() if ln.strip()]
        diagnosis = next((ln for ln in lines if ln.startswith("diagnosis:")), None)
        headline = next((ln for ln in lines if not ln.startswith("deployment of profile")), lines[0])
        return headline[:160] + (f" — {diagnosis}" if diagnosis else "")
    if record.get("failed_tests"):
        return "failed: " + ", ".join(t.split("::")[-1] for t in record["failed_tests"][:3])
    return moved


def rank(rows: list[dict[str, Any]], by: str) -> list[dict[str, Any]]:
    """Measured profiles first, best first by `by`, ties broken by TTFT on a hit; failures last."""
    higher_is_better = RANK_METRICS[by][1]

    def key(row: dict[str, Any]) -> tuple[int, float, float]:
        value = row.get(by)
        if value is None:
            return (1, 0.0, 0.0)
        return (0, -value if higher_is_better else value, row.get("ttft_hit_ms") or float("inf"))
    return sorted(rows, key=key)


def _fmt(value: Any, spread: Any = None, digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "on" if value else "off"
    text = f"{value:.{digits}f}" if isinstance(value, float) else str(value)
    return f"{text} ± {spread:.{digits}f}" if isinstance(spread, float) else text


def _delta(value: Any, base: Any) -> str:
    if not isinstance(value, int | float) or not isinstance(base, int | float) or not base:
        return "—"
    return f"{(value - base) / base * 100:+.0f}%"


def render_report(state: GridState, rank_by: str, baseline: str | None, out_dir: Path,
                  across_gpus: bool = False) -> Path:
    """Write grid-report.md, grid-report.json and grid-report.png; return the Markdown path.

    Deltas compare a profile with the baseline only when both ran on the same GPU model (multi-host grids),
    unless `across_gpus`."""
    rows = rank([_row(n, r) for n, r in state.data["records"].items()], rank_by)
    multihost = any(r["host"] for r in rows)
    missing = [p for p in state.data["profiles"] if p not in state.data["records"]]
    base = next((r for r in rows if r["profile"] == baseline), None) if baseline else None
    label = RANK_METRICS[rank_by][0]
    lines = [f"# Grid report — ranked by {label}", "",
             f"{len(rows)} profile(s) recorded, {len(missing)} not run yet"
             + (f" ({', '.join(missing)}; run again with --resume)" if missing else "") + ".",
             f"Baseline for deltas: `{baseline}`." if base else "No baseline (use --grid-baseline NAME).", "",
             "| # | profile | status | gpu mem | prefix caching (effective / requested) | chunked prefill | "
             "max seqs | TTFT MISS ms | TTFT HIT ms | acceleration | Δ accel | Δ TTFT HIT | s | cause |"
             + (" host (GPU) |" if multihost else ""),
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if multihost else "")]
    for i, r in enumerate(rows, 1):
        requested = "default" if r["prefix_caching_requested"] is None else _fmt(r["prefix_caching_requested"])
        comparable = base is not None and (across_gpus or r["gpu_model"] == base["gpu_model"])
        where = f" {r['host'] or '—'} ({r['gpu_model'] or '?'}) |" if multihost else ""
        lines.append(
            f"| {i} | `{r['profile']}` | {r['status']} | {_fmt(r['gpu_memory_utilization'])} | "
            f"{_fmt(r['prefix_caching_effective'])} / {requested} | {_fmt(r['chunked_prefill'])} | "
            f"{_fmt(r['max_num_seqs'])} | {_fmt(r['ttft_miss_ms'], r['ttft_miss_spread_ms'])} | "
            f"{_fmt(r['ttft_hit_ms'], r['ttft_hit_spread_ms'])} | {_fmt(r['acceleration'], digits=2)} | "
            f"{_delta(r['acceleration'], comparable and base['acceleration'])} | "
            f"{_delta(r['ttft_hit_ms'], comparable and base['ttft_hit_ms'])} | {_fmt(r['duration_s'])} | "
            f"{r['cause'].replace('|', '/')} |{where}")
    durations = [r["duration_s"] for r in rows if r["duration_s"] is not None]
    if durations:
        lines += ["", f"Time per profile: median {statistics.median(durations):.0f}s, total {sum(durations):.0f}s."]
    lines += ["", "Spread is the interquartile range over the measured rounds. Prefix caching 'effective' is what "
              "the engine ran (start-up log or /metrics), 'requested' what the profile's flags say."
              + (" Deltas only between profiles measured on the baseline's GPU model (--compare-across-gpus "
                 "to compare anyway)." if multihost else ""),
              "", "![grid](grid-report.png)", ""]
    md = out_dir / "grid-report.md"
    out_dir.mkdir(parents=True, exist_ok=True)
    md.write_text("\n".join(lines), encoding="utf-8")
    atomic_write_json(out_dir / "grid-report.json", {"ranked_by": rank_by, "baseline": baseline, "rows": rows,
                                                     "not_run": missing})
    _chart(rows, out_dir / "grid-report.png")
    return md


def _chart(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [r for r in rows if r["acceleration"] is not None]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4 + 0.2 * len(rows)))
    names = [r["profile"] for r in measured]
    ax1.barh(names, [r["acceleration"] for r in measured], color="tab:green")
    ax1.set_xlabel("KV-cache acceleration (TTFT MISS / HIT)")
    ax1.invert_yaxis()
    y = range(len(measured))
    ax2.barh([i - 0.2 for i in y], [r["ttft_miss_ms"] for r in measured], height=0.4, label="MISS",
             xerr=[r["ttft_miss_spread_ms"] or 0 for r in measured], color="tab:red")
    ax2.barh([i + 0.2 for i in y], [r["ttft_hit_ms"] for r in measured], height=0.4, label="HIT",
             xerr=[r["ttft_hit_spread_ms"] or 0 for r in measured], color="tab:blue")
    ax2.set_yticks(list(y), names)
    ax2.invert_yaxis()
    ax2.set_xlabel("median TTFT, ms (bars: interquartile range)")
    ax2.legend()
    failed = [r["profile"] for r in rows if r["acceleration"] is None]
    title = "Grid: ranked by KV-cache acceleration"
    if failed:
        title += f" — not measured: {', '.join(failed)}"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


class GridRecorder:
    """Plugin object active when several profiles run: records each profile once all its tests are done."""

    def __init__(self, config: pytest.Config, state: GridState, profiles: dict[str, Profile],
                 rank_by: str, baseline: str | None, across_gpus: bool = False) -> None:
        self.config, self.state, self.profiles = config, state, profiles
        self.rank_by, self.baseline, self.across_gpus = rank_by, baseline, across_gpus
        self.expected: dict[str, int] = {}
        self.finished: dict[str, int] = {}
        self.started: dict[str, float] = {}

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        for item in session.items:
            name = self._profile_of(item.nodeid)
            if name:
                self.expected[name] = self.expected.get(name, 0) + 1

    def pytest_runtest_logstart(self, nodeid: str, location: tuple[str, int | None, str]) -> None:
        name = self._profile_of(nodeid)
        if name:
            self.started.setdefault(name, time.time())

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "teardown":
            return
        name = self._profile_of(report.nodeid)
        if not name:
            return
        self.finished[name] = self.finished.get(name, 0) + 1
        if self.finished[name] == self.expected.get(name):
            from .plugin import REPORT
            self.state.record(name, make_record(self.profiles[name], self.config.stash[REPORT], self.started[name]))

    def _profile_of(self, nodeid: str) -> str | None:
        from .plugin import ITEM_PROFILE
        return self.config.stash[ITEM_PROFILE].get(nodeid)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.state.data["records"]:
            return
        md = render_report(self.state, self.rank_by, self.baseline, self.state.path.parent, self.across_gpus)
        terminalreporter.section("vllm grid")
        terminalreporter.write_line(md.read_text(encoding="utf-8").split("\n\n![grid]")[0])
        terminalreporter.write_line(f"grid report: {md} (+ .json, .png); state: {self.state.path}")

