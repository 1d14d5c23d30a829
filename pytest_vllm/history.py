"""TTFT history through pytest-benchmark: each MISS/HIT series is a `benchmark.pedantic` run, saved with
its raw samples under `reports/benchmarks/`, compared with earlier runs of the same profile and deployment
by the regression gate, and plotted.

How TTFT gets into pytest-benchmark: a series is measured by `pytest_vllm.kv_cache.Series` (the one round
loop), which adds rounds while the sequential regression verdict is undecided, so the number of rounds is
known only at the end. A streamed request's TTFT is only known from inside the stream anyway. So tests that
use the `vllm_ttft` fixture get `@pytest.mark.benchmark(timer=TTFT_CLOCK)`, and `pedantic` then replays the
measured rounds: each advances that virtual clock by its TTFT, and each round's duration in the benchmark
JSON is exactly that round's TTFT.

Defaults this module sets for pytest-benchmark (each only when the user did not choose otherwise):
storage `file://<reports-dir>/benchmarks`, `--benchmark-save-data` (raw samples kept: the gate needs
them), and autosave when a selected test records TTFT. pytest-benchmark's own tools keep working on the
files (`--benchmark-compare`, `pytest-benchmark compare`). It files runs under a machine id
(`Linux-CPython-3.11-64bit`); our history ignores that folder and matches runs on
`extra_info.history_key` = profile @ backend:model, so a CI runner change does not break comparison.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from . import plot, regression
from .kv_cache import Series, SeriesResult
from .profile import Profile
from .session import VllmSession

PYTEST_BENCHMARK_DEFAULT_STORAGE = "file://./.benchmarks"
SCHEMA = 1


class VirtualClock:
    """pytest-benchmark's timer for TTFT rounds: reads a clock that only the measurement advances."""

    __name__ = "ttft_clock"  # how pytest-benchmark names the timer in its JSON

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return seconds


TTFT_CLOCK = VirtualClock()


@dataclass(frozen=True)
class Record:
    """One measurement of this session, kept for the plot (the saved file may not exist yet)."""

    history_key: str
    profile: str
    measurement: str
    samples: list[float]
    regressed: bool
    saved_info: dict[str, Any] | None = None  # pytest-benchmark's extra_info, saved at the session's end


@dataclass(frozen=True)
class StoredRun:
    """One saved pytest-benchmark file's samples of one measurement."""

    path: Path
    saved: str  # ISO datetime pytest-benchmark wrote
    run_id: str
    samples: list[float]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def number(self) -> str:
        """pytest-benchmark's counter in the file name (0007), how `--benchmark-compare=0007` names it."""
        return self.path.name.split("_", 1)[0]

    @property
    def regressed(self) -> bool:
        return regression.failed_gate(self.info)

    @property
    def label(self) -> str:
        return f"{self.number} ({self.saved[:16].replace('T', ' ')} UTC, run {self.run_id})"

    def as_baseline(self) -> regression.BaselineRun:
        return regression.BaselineRun(self.label, self.samples, self.info)


def history_key(profile: Profile, backend: str, model: str) -> str:
    """Profile and deployment, not the machine: `cpu_tiny@process:tiny-qwen3`."""
    return f"{profile.name}@{backend}:{model}"


def storage_dir(config: pytest.Config) -> Path | None:
    """pytest-benchmark's file storage folder; None for other storages (elasticsearch) or without the plugin."""
    uri = getattr(config.option, "benchmark_storage", None)
    if not uri:
        return None
    if "://" not in uri:
        return Path(uri)
    return Path(uri[len("file://"):]) if uri.startswith("file://") else None


def load_runs(root: Path, key: str, measurement: str) -> list[StoredRun]:
    """Every stored run of this measurement for this key, oldest first, whatever machine folder it is in."""
    runs = []
    for path in _benchmark_files(root):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # a half-written or foreign file is not history
        for bench in data.get("benchmarks", []):
            info = bench.get("extra_info") or {}
            samples = (bench.get("stats") or {}).get("data")
            if info.get("history_key") == key and info.get("measurement") == measurement and samples:
                runs.append(StoredRun(path, str(data.get("datetime", "")), str(info.get("run_id", "?")),
                                      [float(v) for v in samples], info))
    return sorted(runs, key=lambda r: (r.saved, r.path.name))


def _benchmark_files(root: Path) -> Iterator[Path]:
    if root.is_dir():
        yield from root.glob("*.json")
        yield from root.glob("*/*.json")


@functools.cache  # asked once per process: the GPUs do not change during a run
def gpu_names() -> list[str]:
    """Names of the GPUs NVML sees; [] without NVML or without the telemetry module."""
    try:
        from . import telemetry
        snap = telemetry.snapshot(with_processes=False)
    except Exception:  # noqa: BLE001 - GPU data is context, never a reason to fail a measurement
        return []
    return [g.name for g in snap.gpus] if snap.available else []


class History:
    """This deployment's stored TTFT runs and the regression gates against them (see `pytest_vllm.regression`)."""

    def __init__(self, config: pytest.Config, deployment: Any) -> None:
        self.config = config
        self.session = VllmSession.of(config)
        self.deployment = deployment
        self.profile: Profile = deployment.profile
        self.key = history_key(self.profile, deployment.backend.name, deployment.served_model)
        self.run_id = self.session.settings.run_id
        self.looks = regression.Looks(int(self.profile.thresholds.kv_rounds),
                                      int(self.profile.thresholds.kv_rounds_max),
                                      regression.gate_confidence(self._threshold("regression_confidence")[0]))

    @property
    def enabled(self) -> bool:
        return not self.config.getoption("no_history") and storage_dir(self.config) is not None

    def reference(self, measurement: str) -> tuple[list[StoredRun], regression.Drift]:
        """The stored runs this run is compared with (the latest `--baseline-runs` that did not regress), and
        the whole-run drift (measured on `regression.drift_history`)."""
        runs = self._stored(measurement)
        return self._baseline(runs), regression.Drift.of([r.samples for r in regression.drift_history(runs)])

    def baseline(self, measurement: str) -> list[StoredRun]:
        return self._baseline(self._stored(measurement))

    def _stored(self, measurement: str) -> list[StoredRun]:
        """The earlier runs of this measurement, oldest first (none when history is off)."""
        root = storage_dir(self.config)
        if not self.enabled or root is None:
            return []
        return [r for r in load_runs(root, self.key, measurement) if r.run_id != self.run_id]

    def _baseline(self, runs: list[StoredRun]) -> list[StoredRun]:
        return regression.pick_baseline(runs, self.config.getoption("baseline_runs"))

    def gate(self, measurement: str, samples: list[float], baseline: list[StoredRun], info: dict[str, Any] | None,
             final: bool = True, drift: regression.Drift | None = None) -> regression.Verdict:
        if not self.enabled:
            return regression.Verdict("no-history", measurement, "history disabled (--no-history or no file storage)")
        tolerance, t_source = self._threshold("regression_tolerance")
        return regression.check(measurement, samples, [r.as_baseline() for r in baseline], tolerance=tolerance,
                                looks=self.looks, source=t_source, current_info=info,
                                accept=self.config.getoption("accept_regression"), final=final, drift=drift)

    def gate_acceleration(self, workload: str, miss: SeriesResult, hit: SeriesResult) -> regression.Verdict:
        """The drift-immune gate: this run's MISS/HIT acceleration against the same baseline runs'."""
        measurement = f"{workload}/acceleration"
        if not self.enabled:
            return regression.Verdict("no-history", measurement, "history disabled (--no-history or no file storage)")
        hits = {r.run_id: r for r in self.baseline(f"{workload}/ttft_hit")}
        pairs = [(m.as_baseline(), hits[m.run_id].as_baseline())
                 for m in self.baseline(f"{workload}/ttft_miss") if m.run_id in hits]
        tolerance, source = self._threshold("acceleration_tolerance")
        confidence, _ = self._threshold("regression_confidence")
        verdict = regression.check_acceleration(measurement, miss.rounds_s, hit.rounds_s, pairs, tolerance=tolerance,
                                                confidence=regression.gate_confidence(confidence), source=source,
                                                accept=self.config.getoption("accept_regression"))
        if verdict.failed:  # this run's MISS and HIT series are saved all the same: never as a baseline
            for record in self.session.records:
                if record.history_key == self.key and record.saved_info is not None and \
                        record.measurement in (f"{workload}/ttft_miss", f"{workload}/ttft_hit"):
                    record.saved_info.setdefault("failed_gates", []).append(measurement)
        return verdict

    def _threshold(self, name: str) -> tuple[float, str]:
        option = self.config.getoption(name)
        flag = "--" + name.replace("_", "-")
        if option is not None:
            return float(option), flag
        return float(getattr(self.profile.thresholds, name)), \
            f"thresholds.{name} of profile {self.profile.path}, or {flag}"


class TtftRecorder(History):
    """What the `vllm_ttft` fixture gives a test: `record(series)` measures it, adding rounds while the
    regression verdict is undecided, stores it through pytest-benchmark and fails the test on a regression."""

    def __init__(self, request: pytest.FixtureRequest, deployment: Any, benchmark: Any | None) -> None:
        super().__init__(request.config, deployment)
        self.benchmark = benchmark

    def record(self, series: Series) -> SeriesResult:
        measurement = f"{series.workload.name}/ttft_{series.cache}"
        baseline, drift = self.reference(measurement)

        def more(rounds_s: Sequence[float]) -> int:
            final = len(rounds_s) >= self.looks.rounds_max
            verdict = self.gate(measurement, list(rounds_s), baseline, None, final, drift)
            undecided = verdict.status == regression.UNDECIDED
            return self.looks.more(len(rounds_s)) if undecided else 0

        result = series.measure(more)
        bench = self.benchmark
        if bench is not None and bench.enabled:
            # The rounds are already measured (their number was only known at the end); pytest-benchmark
            # stores them: each replayed round advances its virtual clock by that round's TTFT.
            rounds = iter(result.rounds_s)
            bench.group = f"TTFT {series.workload.name}"
            bench.pedantic(TTFT_CLOCK.advance, setup=lambda: ((next(rounds),), {}), rounds=len(result.rounds_s))
            _check_recorded(bench, result.rounds_s)
        self._keep(measurement, result.rounds_s, result.as_dict(), baseline, drift)
        return result

    def record_samples(self, measurement: str, samples_s: list[float], data: dict[str, Any]) -> None:
        """TTFT samples measured elsewhere (a load level, an image count), one benchmark round each: stored,
        gated against the history in one look and reported like a series. One call per test (pytest-benchmark's
        rule)."""
        bench = self.benchmark
        if bench is not None and bench.enabled:
            values = iter(samples_s)
            bench.group = f"TTFT {measurement.rsplit('/', 1)[0]}"
            bench.pedantic(TTFT_CLOCK.advance, setup=lambda: ((next(values),), {}), rounds=len(samples_s))
            _check_recorded(bench, samples_s)
        self._keep(measurement, samples_s, data, *self.reference(measurement))

    def _keep(self, measurement: str, rounds_s: list[float], data: dict[str, Any], baseline: list[StoredRun],
              drift: regression.Drift) -> None:
        """Gate, store (extra_info), remember for the plot and the report; fail the test on a regression."""
        info = self.context(measurement, data)
        verdict = self.gate(measurement, rounds_s, baseline, info, drift=drift)
        info["regression"] = verdict.as_dict()
        if self.benchmark is not None:
            self.benchmark.extra_info.update(info)
        self.session.records.append(Record(self.key, self.profile.name, measurement, list(rounds_s), verdict.failed,
                                           None if self.benchmark is None else self.benchmark.extra_info))
        self.session.report.add_measurement(self.profile.name, measurement, {**data, "regression": verdict.as_dict()})
        if verdict.failed:
            pytest.fail(verdict.message, pytrace=False)

    def context(self, measurement: str, data: dict[str, Any]) -> dict[str, Any]:
        """extra_info of the saved benchmark: what ran, so history can be matched and differences named."""
        d = self.deployment
        return {"schema": SCHEMA, "history_key": self.key, "measurement": measurement, "unit": "s",
                "run_id": self.run_id, "profile": self.profile.name,
                "deployment": f"{d.backend.name}:{d.served_model}", "model": d.served_model,
                "vllm_version": d.vllm_version, "effective_flags": d.engine_config,
                "profile_flags": self.profile.server, "gpus": gpu_names(), "series": data}


def _check_recorded(bench: Any, rounds_s: Sequence[float]) -> None:
    """pytest-benchmark must have stored exactly our TTFTs (it would not if another timer were in force)."""
    stored = list(getattr(getattr(bench, "stats", None), "stats", None).data)
    if len(stored) != len(rounds_s) or any(abs(a - b) > 1e-6 for a, b in zip(stored, rounds_s, strict=True)):
        raise RuntimeError("pytest-benchmark recorded other durations than the TTFTs measured: a "
                           "@pytest.mark.benchmark(timer=...) on this test overrides pytest_vllm.history.TTFT_CLOCK; "
                           "remove that timer")


def _has_benchmark(config: pytest.Config) -> bool:
    return config.pluginmanager.hasplugin("benchmark")


def pytest_configure(config: pytest.Config) -> None:
    # Runs before pytest-benchmark's own (trylast) configure reads these options.
    if not _has_benchmark(config) or config.getoption("no_history"):
        return
    if config.option.benchmark_storage == PYTEST_BENCHMARK_DEFAULT_STORAGE:
        config.option.benchmark_storage = "file://" + str(Path(config.getoption("reports_dir")) / "benchmarks")
    config.option.benchmark_save_data = True


@pytest.hookimpl(trylast=True)  # after -k/-m deselection
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    users = [item for item in items if "vllm_ttft" in getattr(item, "fixturenames", ())]
    if not users or not _has_benchmark(config):
        return
    for item in users:
        if item.get_closest_marker("benchmark") is None:
            item.add_marker(pytest.mark.benchmark(timer=TTFT_CLOCK))
    session = getattr(config, "_benchmarksession", None)
    if session is not None and not (session.save or session.autosave or config.getoption("no_history")):
        from pytest_benchmark.utils import get_tag
        session.autosave = get_tag()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Plot each profile's TTFT history (stored runs plus this one) into the reports folder; not when the
    run was interrupted (Ctrl-C must end it within seconds, matplotlib takes that much)."""
    config = session.config
    run = VllmSession.of(config)
    if not run.records or exitstatus == pytest.ExitCode.INTERRUPTED:
        return
    root = storage_dir(config)
    run_id = run.settings.run_id
    plotted = [r for r in run.records if r.measurement.rsplit("/", 1)[-1] in plot.COLORS]  # MISS/HIT series only
    for key in dict.fromkeys(r.history_key for r in plotted):
        mine = [r for r in plotted if r.history_key == key]
        measurements = {r.measurement: r.samples for r in mine}
        stored = {m: [] if root is None else [s for s in load_runs(root, key, m) if s.run_id != run_id]
                  for m in measurements}
        path = run.reports_root / f"ttft_history_{mine[0].profile}.png"
        plot.ttft_history(key, stored, measurements, run_id, any(r.regressed for r in mine), path)
        run.report.add_measurement(mine[0].profile, "ttft_history_plot", {"path": str(path)})


@pytest.fixture
def vllm_ttft(request: pytest.FixtureRequest, vllm_deployment: Any) -> TtftRecorder:
    """Records TTFT series through pytest-benchmark and gates them against the history (see this module)."""
    benchmark = request.getfixturevalue("benchmark") if _has_benchmark(request.config) else None
    return TtftRecorder(request, vllm_deployment, benchmark)


@pytest.fixture
def vllm_history(request: pytest.FixtureRequest, vllm_deployment: Any) -> History:
    """The stored history of this deployment and its gates, for tests that measure outside `vllm_ttft`."""
    return History(request.config, vllm_deployment)
