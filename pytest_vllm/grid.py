"""Grid search over profiles: one deployment per profile, crash-tolerant, resumable, ranked report.

pytest does the loop: the plugin parametrizes the session-scoped deployment over the profiles, so each
profile is brought up, tested and torn down before the next starts. This module records each finished
profile in a state file (written atomically: a kill at any moment leaves the previous state intact),
lets `--resume` skip the finished ones, and renders the comparative report from the state, so the
report covers every profile of the grid whichever run measured it.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from .atomic import atomic_write_json, atomic_write_text
from .profile import Profile
from .report_markdown import duration
from .reports import RunReport
from .session import VllmSession

STATE_FILE = "grid-state.json"
RANK_METRICS = {
    "acceleration": ("KV-cache acceleration (MISS/HIT)", True),
    "ttft_hit_ms": ("median TTFT on a cache hit", False),
    "ttft_miss_ms": ("median TTFT on a cache miss", False),
}


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


def make_record(profile: Profile, report: RunReport, started: float) -> dict[str, Any]:
    """What the grid keeps of one finished profile."""
    results = [r for r in report.results if r.profile == profile.name]
    counts: dict[str, int] = {}
    for r in results:
        counts[r.outcome] = counts.get(r.outcome, 0) + 1
    failure = report.deploy_failures.get(profile.name)
    status = "deploy_failed" if failure else ("failed" if counts.get("failed") or counts.get("error") else "passed")
    return {
        "status": status, "counts": counts, "duration_s": round(time.time() - started, 1),
        "requested": requested_flags(profile), "deployment": report.profiles.get(profile.name, {}),
        "failure": asdict(failure) if failure else None,
        "failed_tests": [r.nodeid for r in results if r.outcome in ("failed", "error")],
        "failure_messages": [r.message[:500] for r in results if r.outcome in ("failed", "error")],
        "measurements": report.measurements.get(profile.name, {}),
        "acceleration_min": _lowest(profile.thresholds.kv_cache_acceleration_min),
    }


def _lowest(minimum: float | dict[str, float] | None) -> float | None:
    """A per-workload minimum ({workload: ratio}) counts by its lowest: the grid's column is one ratio."""
    return min(minimum.values()) if isinstance(minimum, dict) else minimum


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
        "acceleration": kv.get("acceleration"), "acceleration_interval": kv.get("interval"),
        "gain_pct": _gain(kv.get("miss_ms_median"), kv.get("hit_ms_median")),
        "acceleration_min": record.get("acceleration_min"),
        "cause": _cause(record), "oom": _is_oom(record),
        "host": record.get("host"), "gpu_model": record.get("gpu_model"),  # multi-host grids (--hosts)
    }


def _gain(miss: float | None, hit: float | None) -> float | None:
    """The seeds' "Gain Percentage": how much of the MISS TTFT a hit saves, (MISS - HIT) / MISS."""
    return None if not miss or hit is None else round((miss - hit) / miss * 100, 1)


OOM_WORDS = ("out of memory", "oomkilled: true", "outofmemoryerror", " oom")


OOM_CAUSES = ("cuda_oom", "container_oom_killed")  # pytest_vllm.diagnosis classes


def _is_oom(record: dict[str, Any]) -> bool:
    failure = record.get("failure") or {}  # reports.DeployFailure as a dict
    if (failure.get("diagnosis") or {}).get("cause") in OOM_CAUSES:
        return True
    text = " ".join([failure.get("headline", ""), *failure.get("log_tail", []),
                     *record.get("failure_messages", [])]).lower()
    return any(word in text for word in OOM_WORDS)


def _cause(record: dict[str, Any]) -> str:
    moved = ("moved after a lost host (" + "; ".join(record["lost_on"]) + ")") if record.get("lost_on") else ""
    failure = record.get("failure")
    if failure:  # reports.DeployFailure as a dict
        headline = (failure["headline"].strip().splitlines() or [""])[0]
        diagnosis = failure.get("diagnosis")
        return headline[:160] + (f" — diagnosis: {diagnosis['title']} [{diagnosis['cause']}]" if diagnosis else "")
    if record.get("failed_tests"):
        first = next((m.splitlines()[0] for m in record.get("failure_messages", []) if m.strip()), "")
        return "failed: " + ", ".join(t.split("::")[-1] for t in record["failed_tests"][:3]) + \
            (f" — {first[:200]}" if first else "")
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
    return f"{(value - base) / base * 100:+.0f} %"


def _accel(row: dict[str, Any]) -> str:
    if row["acceleration"] is None:
        return "—"
    interval = row.get("acceleration_interval")
    return f"×{row['acceleration']:.2f}" + (f" ({interval[0]:.2f}–{interval[1]:.2f})" if interval else "")


RECOMMENDATION_RULE = ("the fastest median TTFT on a cache hit among the profiles that deployed, passed every test "
                       "(so met their own thresholds), did not run out of memory and reached their acceleration "
                       "threshold (thresholds.kv_cache_acceleration_min, else ×{floor:g})")


def recommend(rows: list[dict[str, Any]], floor: float) -> tuple[dict[str, Any] | None, list[str]]:
    """The champion by RECOMMENDATION_RULE, and why each other measured profile was not eligible."""
    eligible, excluded = [], []
    for r in rows:
        needed = r["acceleration_min"] if r["acceleration_min"] is not None else floor
        if r["ttft_hit_ms"] is None or r["acceleration"] is None:
            continue
        if r["status"] != "passed" or r["oom"]:
            excluded.append(f"`{r['profile']}`: {'out of memory' if r['oom'] else r['status']}")
        elif r["acceleration"] < needed:
            excluded.append(f"`{r['profile']}`: acceleration ×{r['acceleration']:.2f} below ×{needed:g}")
        else:
            eligible.append(r)
    best = min(eligible, key=lambda r: (r["ttft_hit_ms"], -r["acceleration"]), default=None)
    return best, excluded


def _tradeoffs(rows: list[dict[str, Any]], base: dict[str, Any]) -> list[str]:
    """What each measured profile buys and costs against the baseline."""
    lines = ["| profile | better than the baseline | worse than the baseline |", "|---|---|---|"]
    for r in rows:
        if r is base or r["acceleration"] is None:
            continue
        better, worse = [], []
        for key, label, lower_is_better in (("ttft_hit_ms", "TTFT HIT", True), ("ttft_miss_ms", "TTFT MISS", True),
                                            ("acceleration", "acceleration", False)):
            value, ref = r[key], base[key]
            if value is None or ref is None or value == ref:
                continue
            (better if (value < ref) == lower_is_better else worse).append(f"{label} {_delta(value, ref)}")
        mem, ref_mem = r["gpu_memory_utilization"], base["gpu_memory_utilization"]
        if isinstance(mem, float) and isinstance(ref_mem, float) and mem != ref_mem:
            (worse if mem > ref_mem else better).append(
                f"gpu-memory-utilization {mem:g} vs {ref_mem:g} ({'less' if mem > ref_mem else 'more'} headroom "
                "for peaks: the seeds' OOM risk)")
        lines.append(f"| `{r['profile']}` | {', '.join(better) or '—'} | {', '.join(worse) or '—'} |")
    return lines


def render_report(state: GridState, rank_by: str, baseline: str | None, out_dir: Path,
                  acceleration_floor: float = 1.5, chart: bool = True, across_gpus: bool = False) -> Path:
    """Write grid-report.md, grid-report.json and (`chart`) grid-report.png; return the Markdown path.

    A multi-host grid gets a host (GPU) column, and its Δ columns compare a profile with the baseline only
    when both ran on the same GPU model, unless `across_gpus`."""
    rows = rank([_row(n, r) for n, r in state.data["records"].items()], rank_by)
    multihost = any(r["host"] for r in rows)
    missing = [p for p in state.data["profiles"] if p not in state.data["records"]]
    base = next((r for r in rows if r["profile"] == baseline), None) if baseline else None
    label = RANK_METRICS[rank_by][0]
    aborted = state.data.get("aborted")
    lines = [f"# Grid report — ranked by {label}", ""]
    if aborted:
        lines += [f"**Grid aborted:** {aborted}", ""]
    lines += [f"{len(rows)} profile(s) recorded, {len(missing)} not run"
              + (f" ({', '.join(missing)}; run again with --resume)" if missing else "") + ".",
              f"Baseline for the Δ columns: `{baseline}`." if base else "No baseline measured (--grid-baseline NAME, "
              "or `baseline:` in the grid file).", "",
              "| # | profile | status | gpu mem | prefix caching effective / requested | chunked prefill | max seqs | "
              "TTFT MISS ms | TTFT HIT ms | acceleration (interval) | gain % | Δ MISS | Δ HIT | Δ accel | time |"
              + (" host (GPU) |" if multihost else ""),
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if multihost else "")]
    for i, r in enumerate(rows, 1):
        requested = "default" if r["prefix_caching_requested"] is None else _fmt(r["prefix_caching_requested"])
        ref = base if base is not None and (across_gpus or r["gpu_model"] == base["gpu_model"]) else None
        where = f" {r['host'] or '—'} ({r['gpu_model'] or '?'}) |" if multihost else ""
        lines.append(
            f"| {i} | `{r['profile']}` | {r['status']} | {_fmt(r['gpu_memory_utilization'], digits=2)} | "
            f"{_fmt(r['prefix_caching_effective'])} / {requested} | {_fmt(r['chunked_prefill'])} | "
            f"{_fmt(r['max_num_seqs'])} | {_fmt(r['ttft_miss_ms'], r['ttft_miss_spread_ms'])} | "
            f"{_fmt(r['ttft_hit_ms'], r['ttft_hit_spread_ms'])} | {_accel(r)} | {_fmt(r['gain_pct'])} | "
            f"{_delta(r['ttft_miss_ms'], ref and ref['ttft_miss_ms'])} | "
            f"{_delta(r['ttft_hit_ms'], ref and ref['ttft_hit_ms'])} | "
            f"{_delta(r['acceleration'], ref and ref['acceleration'])} | {duration(r['duration_s'])} |{where}")
    lines += ["", "TTFT: median ± interquartile range over the measured rounds; acceleration: MISS/HIT ratio of "
              "medians with its confidence interval; gain: (MISS - HIT) / MISS. Prefix caching 'effective' is what "
              "the engine ran (start-up log or /metrics), 'requested' what the profile's flags say ('default': no "
              "flag, vLLM V1 turns it on)."
              + (" Δ columns only between profiles measured on the baseline's GPU model (--compare-across-gpus to "
                 "compare anyway)." if multihost and not across_gpus else "")]
    if base:
        lines += ["", "## Trade-offs against the baseline", "", *_tradeoffs(rows, base)]
    failed = [r for r in rows if r["cause"]]
    if failed:
        lines += ["", "## Failures", "", "| profile | status | cause |", "|---|---|---|"]
        lines += [f"| `{r['profile']}` | {'OOM — ' if r['oom'] else ''}{r['status']} | {r['cause'].replace('|', '/')} |"
                  for r in failed]
    champion, excluded = recommend(rows, acceleration_floor)
    lines += ["", "## Recommendation", "", "Rule: " + RECOMMENDATION_RULE.format(floor=acceleration_floor) + ".", ""]
    if champion:
        lines.append(f"**Champion: `{champion['profile']}`** — TTFT HIT {_fmt(champion['ttft_hit_ms'])} ms, "
                     f"MISS {_fmt(champion['ttft_miss_ms'])} ms, acceleration {_accel(champion)}.")
    else:
        lines.append("**No champion:** no measured profile meets the rule.")
    if excluded:
        lines += ["", "Not eligible: " + "; ".join(excluded) + "."]
    durations = [r["duration_s"] for r in rows if r["duration_s"] is not None]
    if durations:
        lines += ["", f"Time per profile: median {duration(statistics.median(durations))}, "
                      f"total {duration(sum(durations))}."]
    lines += ["", "![grid](grid-report.png)", ""]
    md = out_dir / "grid-report.md"
    atomic_write_text(md, "\n".join(lines))
    atomic_write_json(out_dir / "grid-report.json", {
        "ranked_by": rank_by, "baseline": baseline, "rows": rows, "not_run": missing, "aborted": aborted,
        "recommendation": {"champion": champion and champion["profile"],
                           "rule": RECOMMENDATION_RULE.format(floor=acceleration_floor), "not_eligible": excluded}})
    if chart:
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

    def __init__(self, session: VllmSession, state: GridState, rank_by: str, baseline: str | None,
                 keep_going: bool = False, acceleration_floor: float = 1.5, across_gpus: bool = False) -> None:
        self.session, self.state, self.across_gpus = session, state, across_gpus
        self.rank_by, self.baseline = rank_by, baseline
        self.keep_going, self.acceleration_floor = keep_going, acceleration_floor
        self.pytest_session: pytest.Session | None = None  # to stop the run when the baseline fails
        self.expected: dict[str, int] = {}
        self.finished: dict[str, int] = {}
        self.started: dict[str, float] = {}

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.pytest_session = session
        for item in session.items:
            name = self.session.item_profile.get(item.nodeid)
            if name:
                self.expected[name] = self.expected.get(name, 0) + 1

    def pytest_runtest_logstart(self, nodeid: str, location: tuple[str, int | None, str]) -> None:
        name = self.session.item_profile.get(nodeid)
        if name:
            self.started.setdefault(name, time.time())

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "teardown":
            return
        name = self.session.item_profile.get(report.nodeid)
        if not name:
            return
        self.finished[name] = self.finished.get(name, 0) + 1
        if self.finished[name] == self.expected.get(name):
            record = make_record(self.session.profiles[name], self.session.report, self.started[name])
            self.state.record(name, record)
            if name == self.baseline and record["status"] == "deploy_failed" and not self.keep_going:
                self._abort(name, record)

    def _abort(self, name: str, record: dict[str, Any]) -> None:
        """The baseline did not deploy: stop, as the seeds' script did; every delta would compare with nothing."""
        reason = (f"the baseline profile '{name}' failed to deploy ({_cause(record)}); the profiles after it were "
                  "not run. Fix the baseline, or run them anyway with --grid-keep-going.")
        self.state.data["aborted"] = reason
        self.state.save()
        if self.pytest_session is not None:
            self.pytest_session.shouldstop = f"grid aborted: {reason}"

    def pytest_terminal_summary(self, terminalreporter: Any, exitstatus: int) -> None:
        if not self.state.data["records"]:
            return
        # Interrupted: the tables at once; the chart (seconds of matplotlib) waits for the --resume run.
        md = render_report(self.state, self.rank_by, self.baseline, self.state.path.parent, self.acceleration_floor,
                           chart=exitstatus != pytest.ExitCode.INTERRUPTED, across_gpus=self.across_gpus)
        terminalreporter.section("vllm grid")
        terminalreporter.write_line(md.read_text(encoding="utf-8").split("\n\n![grid]")[0])
        chart = ", .png" if exitstatus != pytest.ExitCode.INTERRUPTED else ""
        terminalreporter.write_line(f"grid report: {md} (+ .json{chart}); state: {self.state.path}")


def start_grid(config: pytest.Config, session: VllmSession, spread: bool = False) -> GridState | None:
    """Several profiles (or --resume): record each finished profile and rank them at the end.

    The baseline (--grid-baseline, else the grid file's `baseline:`) runs first: the deltas need it, and its
    failure stops the grid before the rest. --resume drops the profiles an interrupted grid already finished
    from the session, and retries a baseline that failed. `spread`: a multi-host grid, even of one profile."""
    if len(session.profiles) < 2 and not config.getoption("resume") and not spread:
        return None
    path = session.reports_root / STATE_FILE
    baseline = config.getoption("grid_baseline") or session.grid_file_baseline
    if baseline in session.profiles:
        session.profiles = {baseline: session.profiles[baseline], **session.profiles}
    names = list(session.profiles)
    if config.getoption("resume"):
        state = GridState.load(path, names)
        if (state.data["records"].get(baseline) or {}).get("status") == "deploy_failed":
            del state.data["records"][baseline]  # an aborted grid resumes by retrying its baseline
        state.data.pop("aborted", None)
        done = state.completed() & set(names)
        if done:
            session.settings.progress(f"[vllm] --resume: skipping finished profiles {', '.join(sorted(done))}")
        session.profiles = {n: p for n, p in session.profiles.items() if n not in done}
    else:
        state = GridState(path, names)
        state.save()
    recorder = GridRecorder(session, state, config.getoption("grid_rank_by"), baseline,
                            keep_going=config.getoption("grid_keep_going"),
                            acceleration_floor=config.getoption("grid_min_acceleration"),
                            across_gpus=config.getoption("compare_across_gpus"))
    config.pluginmanager.register(recorder, "vllm-grid")
    return state

