"""TTFT history through pytest-benchmark: each MISS/HIT series is a `benchmark.pedantic` run, saved with
its raw samples under `reports/benchmarks/`, compared with earlier runs of the same profile and deployment
by the regression gate, and plotted.

How TTFT gets into pytest-benchmark: `pedantic` times its target with the benchmark's timer, and a
streamed request's TTFT is only known from inside the stream. So tests that use the `vllm_ttft`
fixture get `@pytest.mark.benchmark(timer=TTFT_CLOCK)`: the target advances that virtual clock by the
TTFT it measured, and each round's duration in the benchmark JSON is exactly that round's TTFT.
Salting and priming happen in pedantic's `setup`, outside the timing.

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
from collections.abc import Iterator
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


@functools.cache  # the GPUs do not change during a run; NVML is asked once
def gpu_names() -> list[str]:
    """Names of the GPUs NVML sees; [] without NVML or without the telemetry module."""
    try:
        from . import telemetry
        snap = telemetry.snapshot(with_processes=False)
    except Exception:  # noqa: BLE001 - GPU data is context, never a reason to fail a measurement
        return []
    return [g.name for g in snap.gpus] if snap.available else []


class TtftRecorder:
    """What the `vllm_ttft` fixture gives a test: `record(series)` measures it through pytest-benchmark,
    compares it with the history and fails the test on a regression."""

    def __init__(self, request: pytest.FixtureRequest, deployment: Any, benchmark: Any | None) -> None:
        self.config = request.config
        self.session = VllmSession.of(request.config)
        self.deployment = deployment
        self.profile: Profile = deployment.profile
        self.benchmark = benchmark
        self.key = history_key(self.profile, deployment.backend.name, deployment.served_model)

    def record(self, series: Series) -> SeriesResult:
        measurement = f"{series.workload.name}/ttft_{series.cache}"
        series.prepare()
        bench = self.benchmark
        if bench is not None and bench.enabled:
            bench.group = f"TTFT {series.workload.name}"
            bench.pedantic(lambda requests: TTFT_CLOCK.advance(series.run_round(requests)),
                           setup=series.setup, rounds=series.rounds)
        else:
            for _ in range(series.rounds):
                (requests,), _ = series.setup()
                series.run_round(requests)
        result = series.finish()
        self._keep(measurement, result.rounds_s, result.as_dict())
        return result

    def record_samples(self, measurement: str, samples_s: list[float], data: dict[str, Any]) -> None:
        """TTFT samples measured elsewhere (a load level, an image count), one benchmark round each: stored,
        gated against the history and reported like a series. One call per test (pytest-benchmark's rule)."""
        bench = self.benchmark
        if bench is not None and bench.enabled:
            bench.group = f"TTFT {measurement.rsplit('/', 1)[0]}"
            values = iter(samples_s)
            bench.pedantic(lambda: TTFT_CLOCK.advance(next(values)), rounds=len(samples_s))
        self._keep(measurement, samples_s, data)

    def _keep(self, measurement: str, rounds_s: list[float], data: dict[str, Any]) -> None:
        bench = self.benchmark
        if bench is not None and bench.enabled:
            _check_recorded(bench, rounds_s)
        info = self.context(measurement, data)
        verdict = self.gate(measurement, rounds_s, info)
        info["regression"] = verdict.as_dict()
        if bench is not None:
            bench.extra_info.update(info)
        self.session.records.append(
            Record(self.key, self.profile.name, measurement, list(rounds_s), verdict.failed))
        self.session.report.add_measurement(self.profile.name, measurement, {**data, "regression": verdict.as_dict()})
        if verdict.failed:
            pytest.fail(verdict.message, pytrace=False)

    def context(self, measurement: str, data: dict[str, Any]) -> dict[str, Any]:
        """extra_info of the saved benchmark: what ran, so history can be matched and differences named."""
        d = self.deployment
        return {"schema": SCHEMA, "history_key": self.key, "measurement": measurement, "unit": "s",
                "run_id": self.session.settings.run_id, "profile": self.profile.name,
                "deployment": f"{d.backend.name}:{d.served_model}", "model": d.served_model,
                "vllm_version": d.vllm_version, "effective_flags": d.engine_config,
                "profile_flags": self.profile.server, "gpus": gpu_names(),
                "series": data}

    def gate(self, measurement: str, samples: list[float], info: dict[str, Any]) -> regression.Verdict:
        root = storage_dir(self.config)
        if self.config.getoption("no_history") or root is None:
            return regression.Verdict("no-history", measurement, "history disabled (--no-history or no file storage)")
        tolerance, t_source = self._threshold("regression_tolerance")
        confidence, _ = self._threshold("regression_confidence")
        runs = [r for r in load_runs(root, self.key, measurement) if r.run_id != info["run_id"]]
        baseline = regression.pick_baseline([r.as_baseline() for r in runs], self.config.getoption("baseline_runs"))
        return regression.check(measurement, samples, baseline, tolerance=tolerance, confidence=confidence,
                                source=t_source, current_info=info,
                                accept=self.config.getoption("accept_regression"))

    def _threshold(self, name: str) -> tuple[float, str]:
        option, flag = self.config.getoption(name), "--" + name.replace("_", "-")
        if option is not None:
            return float(option), flag
        source = f"thresholds.{name} of profile {self.profile.path}, or {flag}"
        return float(getattr(self.profile.thresholds, name)), source


def _check_recorded(bench: Any, rounds_s: list[float]) -> None:
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
    records = run.records
    if not records or exitstatus == pytest.ExitCode.INTERRUPTED:
        return
    root = storage_dir(config)
    run_id = run.settings.run_id
    plotted = [r for r in records if r.measurement.rsplit("/", 1)[-1] in plot.COLORS]  # MISS/HIT series only
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
