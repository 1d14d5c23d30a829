"""GPU telemetry through NVML (package nvidia-ml-py, module `pynvml`): what the GPUs hold, now and over a run.

`snapshot()` reads every GPU once (name, memory, utilisation, processes); `Sampler` reads them in a
background thread during the session and keeps the peak per GPU and a timeline. No NVML (library
missing, no driver, a CPU-only machine, any NVMLError) is not an error: the result says
`available=False` with the reason, and nothing here ever raises because of the GPU.

The NVML module is injectable (`nvml=`) so tests can hand in a fake one; by default `pynvml` is imported.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from . import interrupts

MIB = 1024 * 1024
GIB_PER_MIB = 1 / 1024
DEFAULT_INTERVAL_S = 1.0
# One hour at 1 s; beyond that the timeline keeps every other point so memory stays bounded.
MAX_TIMELINE_POINTS = 3600


@dataclass(frozen=True)
class GpuProcess:
    """A process holding memory on a GPU (compute or graphics context)."""

    pid: int
    name: str
    used_mib: float | None  # None: NVML cannot tell (e.g. inside a container's PID namespace)

    def describe(self) -> str:
        used = f", {self.used_mib:.0f} MiB" if self.used_mib is not None else ""
        return f"pid {self.pid} {self.name}{used}"


@dataclass(frozen=True)
class GpuState:
    """One GPU at one moment. `index` is NVML's (= nvidia-smi's and Docker's `device_ids`)."""

    index: int
    name: str
    uuid: str
    memory_total_mib: float
    memory_used_mib: float
    utilization_pct: int | None  # None where the board does not report it
    processes: tuple[GpuProcess, ...] = ()

    @property
    def memory_total_gib(self) -> float:
        return self.memory_total_mib * GIB_PER_MIB

    @property
    def memory_used_gib(self) -> float:
        return self.memory_used_mib * GIB_PER_MIB

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index, "name": self.name, "uuid": self.uuid,
            "memory_total_mib": round(self.memory_total_mib), "memory_used_mib": round(self.memory_used_mib),
            "utilization_pct": self.utilization_pct,
            "processes": [{"pid": p.pid, "name": p.name, "used_mib": p.used_mib} for p in self.processes],
        }


@dataclass(frozen=True)
class Snapshot:
    """All GPUs at one moment, or why there is no GPU data."""

    available: bool
    reason: str | None = None
    gpus: tuple[GpuState, ...] = ()
    driver: str | None = None
    taken_at: float = field(default_factory=time.time)

    def header(self) -> str:
        """One line for the report header."""
        if not self.available:
            return f"GPU: unavailable ({self.reason})"
        if not self.gpus:
            return f"GPU: none found by NVML (driver {self.driver})"
        names = sorted({g.name for g in self.gpus})
        parts = [f"GPU: {len(self.gpus)}x {' + '.join(names)}, driver {self.driver}"]
        parts += [f"GPU{g.index} {g.memory_used_mib:.0f}/{g.memory_total_mib:.0f} MiB"
                  + (f" {g.utilization_pct}%" if g.utilization_pct is not None else "") for g in self.gpus]
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"available": self.available, "reason": self.reason, "driver": self.driver,
                "taken_at": self.taken_at, "gpus": [g.to_dict() for g in self.gpus]}


def load_nvml() -> ModuleType | str:
    """The pynvml module, or the reason it cannot be imported."""
    try:
        import pynvml
    except ImportError as exc:
        return f"nvidia-ml-py is not installed ({exc}); pip install nvidia-ml-py"
    return pynvml


class _Session:
    """NVML initialised once; reads GPUs. Raises whatever NVML raises: callers turn it into a reason."""

    def __init__(self, nvml: ModuleType) -> None:
        self.nvml = nvml
        nvml.nvmlInit()
        try:
            self.driver = _text(nvml.nvmlSystemGetDriverVersion())
            self.handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
            self.static = [(_text(nvml.nvmlDeviceGetName(h)), _text(nvml.nvmlDeviceGetUUID(h)))
                           for h in self.handles]
        except Exception:
            nvml.nvmlShutdown()
            raise

    def read(self, with_processes: bool = True) -> tuple[GpuState, ...]:
        states = []
        for index, (handle, (name, uuid)) in enumerate(zip(self.handles, self.static, strict=True)):
            memory = self.nvml.nvmlDeviceGetMemoryInfo(handle)
            states.append(GpuState(
                index=index, name=name, uuid=uuid,
                memory_total_mib=memory.total / MIB, memory_used_mib=memory.used / MIB,
                utilization_pct=self._utilization(handle),
                processes=self._processes(handle) if with_processes else (),
            ))
        return tuple(states)

    def _utilization(self, handle: object) -> int | None:
        try:
            return int(self.nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        except self.nvml.NVMLError:  # NotSupported on some boards and vGPUs
            return None

    def _processes(self, handle: object) -> tuple[GpuProcess, ...]:
        found: dict[int, GpuProcess] = {}
        for getter in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
            try:
                running = getattr(self.nvml, getter)(handle)
            except (self.nvml.NVMLError, AttributeError):
                continue
            for proc in running:
                used = getattr(proc, "usedGpuMemory", None)
                found.setdefault(proc.pid, GpuProcess(proc.pid, self._process_name(proc.pid),
                                                      used / MIB if used is not None else None))
        return tuple(found.values())

    def _process_name(self, pid: int) -> str:
        try:
            return os.path.basename(_text(self.nvml.nvmlSystemGetProcessName(pid))) or "?"
        except self.nvml.NVMLError:
            pass
        try:  # NVML cannot name processes of other users or namespaces; /proc sometimes can
            with open(f"/proc/{pid}/comm", encoding="utf-8") as fh:
                return fh.read().strip() or "?"
        except OSError:
            return "?"

    def close(self) -> None:
        try:
            self.nvml.nvmlShutdown()
        except Exception:  # noqa: BLE001 - shutting down must not fail the run
            pass


def _open(nvml: ModuleType | None) -> _Session | str:
    """A started NVML session, or the reason there is none. Never raises."""
    module = nvml if nvml is not None else load_nvml()
    if isinstance(module, str):
        return module
    try:
        return _Session(module)
    except Exception as exc:  # noqa: BLE001 - NVMLError subclasses, OSError from a broken driver: all "no GPU data"
        return _reason(exc)


# NVML error codes (nvml.h) whose message alone does not say what to do.
HINTS = {12: "no NVIDIA driver on this machine (libnvidia-ml.so.1), or a container without the NVIDIA runtime",
         9: "the NVIDIA kernel driver is not loaded"}


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    text = text if "nvml" in text.lower() else f"NVML: {text}"
    hint = HINTS.get(getattr(exc, "value", None))  # type: ignore[arg-type]
    return f"{text}: {hint}" if hint else text


def _text(value: str | bytes) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def snapshot(nvml: ModuleType | None = None, with_processes: bool = True) -> Snapshot:
    """Every GPU now (name, memory, utilisation, processes), or available=False with the reason."""
    session = _open(nvml)
    if isinstance(session, str):
        return Snapshot(available=False, reason=session)
    try:
        return Snapshot(available=True, gpus=session.read(with_processes), driver=session.driver)
    except Exception as exc:  # noqa: BLE001 - a GPU that falls off the bus mid-read is still "no data"
        return Snapshot(available=False, reason=_reason(exc))
    finally:
        session.close()


@dataclass(frozen=True)
class Peak:
    """Highest values seen on one GPU during the sampling."""

    index: int
    name: str
    memory_total_mib: float
    memory_used_mib: float
    utilization_pct: int | None

    @property
    def memory_used_gib(self) -> float:
        return self.memory_used_mib * GIB_PER_MIB


@dataclass(frozen=True)
class Telemetry:
    """What the sampler saw over the session: peaks, timeline, and why it stopped if it did."""

    available: bool
    reason: str | None
    interval_s: float
    samples: int
    peaks: tuple[Peak, ...]
    # (seconds since start, memory used MiB per GPU, utilisation % per GPU)
    timeline: tuple[tuple[float, tuple[float, ...], tuple[int | None, ...]], ...]
    start: Snapshot | None = None

    def header(self) -> str:
        """One line for the report header and the terminal summary."""
        if not self.available:
            return f"GPU telemetry: unavailable ({self.reason})"
        peaks = ", ".join(
            f"GPU{p.index} {p.memory_used_mib:.0f}/{p.memory_total_mib:.0f} MiB"
            + (f" {p.utilization_pct}%" if p.utilization_pct is not None else "") for p in self.peaks)
        tail = f"; stopped early: {self.reason}" if self.reason else ""
        return f"GPU telemetry: peak {peaks or '-'} ({self.samples} samples every {self.interval_s:g} s){tail}"

    def peak_vram_violations(self, limit_gib: float) -> list[str]:
        """One message per GPU whose peak memory went over `limit_gib` (profile thresholds.peak_vram_gib_max)."""
        return [f"GPU{p.index} ({p.name}) peaked at {p.memory_used_gib:.2f} GiB, over the profile's "
                f"thresholds.peak_vram_gib_max of {limit_gib:g} GiB" for p in self.peaks
                if p.memory_used_gib > limit_gib]

    def to_dict(self) -> dict[str, Any]:
        return {
            "available": self.available, "reason": self.reason, "interval_s": self.interval_s,
            "samples": self.samples,
            "peaks": [{"index": p.index, "name": p.name, "memory_total_mib": round(p.memory_total_mib),
                       "memory_used_mib": round(p.memory_used_mib), "utilization_pct": p.utilization_pct}
                      for p in self.peaks],
            "timeline": [{"t": t, "memory_used_mib": [round(m) for m in mem], "utilization_pct": list(util)}
                         for t, mem, util in self.timeline],
            "start": self.start.to_dict() if self.start else None,
        }


class Sampler:
    """Samples every GPU in a daemon thread from start() to stop(); also a context manager.

    Processes are read once at start (who already holds the GPUs); the loop reads only memory and
    utilisation, which is cheap. A failing read ends the sampling with the reason; it never raises.
    """

    def __init__(self, interval_s: float = DEFAULT_INTERVAL_S, nvml: ModuleType | None = None,
                 max_points: int = MAX_TIMELINE_POINTS) -> None:
        self.interval_s = interval_s
        self.max_points = max_points
        self._nvml = nvml
        self._session: _Session | None = None
        self._reason: str | None = None
        self._start: Snapshot | None = None
        self._t0 = 0.0
        self._samples = 0
        self._stride = 1
        self._peaks: dict[int, Peak] = {}
        self._timeline: list[tuple[float, tuple[float, ...], tuple[int | None, ...]]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Sampler:
        session = _open(self._nvml)
        if isinstance(session, str):
            self._reason = session
            return self
        self._session = session
        self._t0 = time.monotonic()
        try:
            first = session.read(with_processes=True)
        except Exception as exc:  # noqa: BLE001 - see snapshot()
            self._fail(exc)
            return self
        self._start = Snapshot(available=True, gpus=first, driver=session.driver)
        self._record(first)
        self._thread = threading.Thread(target=self._run, name="pytest-vllm-gpu-sampler", daemon=True)
        with interrupts.to_the_main_thread():
            self._thread.start()
        return self

    def _run(self) -> None:
        assert self._session is not None
        while not self._stop.wait(self.interval_s):
            try:
                states = self._session.read(with_processes=False)
            except Exception as exc:  # noqa: BLE001 - see snapshot()
                self._fail(exc)
                return
            self._record(states)

    def _fail(self, exc: BaseException) -> None:
        with self._lock:
            self._reason = f"sampling stopped: {_reason(exc)}"

    def _record(self, states: tuple[GpuState, ...]) -> None:
        with self._lock:
            self._samples += 1
            for g in states:
                old = self._peaks.get(g.index)
                util = g.utilization_pct
                if old is not None:
                    util = max((u for u in (old.utilization_pct, util) if u is not None), default=None)
                used = max(g.memory_used_mib, old.memory_used_mib if old else 0.0)
                self._peaks[g.index] = Peak(g.index, g.name, g.memory_total_mib, used, util)
            if (self._samples - 1) % self._stride:
                return
            self._timeline.append((round(time.monotonic() - self._t0, 3),
                                   tuple(g.memory_used_mib for g in states),
                                   tuple(g.utilization_pct for g in states)))
            if len(self._timeline) >= self.max_points:
                # Keep the whole session's shape at half the resolution rather than only its start.
                self._timeline = self._timeline[::2]
                self._stride *= 2

    def stop(self) -> Telemetry:
        """Stop sampling (idempotent) and return what was seen."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, 2 * self.interval_s))
            self._thread = None
        if self._session is not None:
            self._session.close()
            self._session = None
        return self.result()

    def result(self) -> Telemetry:
        """What was seen so far; callable while sampling."""
        with self._lock:
            return Telemetry(
                available=self._start is not None, reason=self._reason, interval_s=self.interval_s,
                samples=self._samples, peaks=tuple(self._peaks[i] for i in sorted(self._peaks)),
                timeline=tuple(self._timeline), start=self._start)

    def __enter__(self) -> Sampler:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
