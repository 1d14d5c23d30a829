"""GPU telemetry without a GPU: the real pynvml here (no driver) and a fake NVML module for the GPU paths.

The fake mimics pynvml's functions and raises pynvml's own NVMLError classes; it exists only because
this machine has no GPU (scripts/gpu_telemetry_check.py prints what the real module reads on a GPU host).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from types import SimpleNamespace

import pynvml

from pytest_vllm.telemetry import Sampler, snapshot

MIB = 1024 * 1024
RTX_4090_MIB = 24564


class FakeNvml:
    """pynvml's surface for N GPUs. `used_mib[i]` is a list read one value per read (the last one repeats)."""

    NVMLError = pynvml.NVMLError

    def __init__(self, used_mib: list[list[float]], util: list[int | None] | None = None,
                 processes: dict[int, list[tuple[int, float | None]]] | None = None,
                 init_error: int | None = None, fail_after: int | None = None, names_as_bytes: bool = False):
        self.used = used_mib
        self.util = util or [50] * len(used_mib)
        self.processes = processes or {}
        self.init_error = init_error
        self.fail_after = fail_after
        self.names_as_bytes = names_as_bytes
        self.reads = 0
        self.inits = self.shutdowns = 0
        self.lock = threading.Lock()

    def nvmlInit(self):
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)
        self.inits += 1

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlSystemGetDriverVersion(self):
        return "550.54.15"

    def nvmlDeviceGetCount(self):
        return len(self.used)

    def nvmlDeviceGetHandleByIndex(self, index):
        return index

    def nvmlDeviceGetName(self, handle):
        name = "NVIDIA GeForce RTX 4090"
        return name.encode() if self.names_as_bytes else name

    def nvmlDeviceGetUUID(self, handle):
        return f"GPU-0000000{handle}-aaaa-bbbb-cccc-dddddddddddd"

    def nvmlDeviceGetMemoryInfo(self, handle):
        with self.lock:
            if handle == 0:
                self.reads += 1
            if self.fail_after is not None and self.reads > self.fail_after:
                raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
            series = self.used[handle]
            used = series[min(self.reads - 1, len(series) - 1)]
        return SimpleNamespace(total=RTX_4090_MIB * MIB, used=used * MIB, free=(RTX_4090_MIB - used) * MIB)

    def nvmlDeviceGetUtilizationRates(self, handle):
        if self.util[handle] is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return SimpleNamespace(gpu=self.util[handle], memory=10)

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        return [SimpleNamespace(pid=pid, usedGpuMemory=None if used is None else used * MIB)
                for pid, used in self.processes.get(handle, [])]

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle):
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def nvmlSystemGetProcessName(self, pid):
        if pid == 999999:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NO_PERMISSION)
        return b"/usr/bin/python3"


def seed004(**kwargs) -> FakeNvml:
    """Seed 004's table while the FP8 model loaded: GPU0 19099, GPU1 18152, GPU2 45 MiB used."""
    return FakeNvml([[19099], [18152], [45]], processes={0: [(1234, 19000.0)], 1: [(999999, None)]}, **kwargs)


def test_this_machine_has_no_nvml_and_says_why():
    snap = snapshot()  # the real pynvml: no libnvidia-ml here
    assert not snap.available
    assert snap.reason == ("NVML Shared Library Not Found: no NVIDIA driver on this machine (libnvidia-ml.so.1), "
                           "or a container without the NVIDIA runtime")
    assert snap.header() == f"GPU: unavailable ({snap.reason})"
    assert json.loads(json.dumps(snap.to_dict()))["available"] is False


def test_pynvml_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    snap = snapshot()
    assert not snap.available and "nvidia-ml-py is not installed" in snap.reason


def test_driver_not_loaded():
    snap = snapshot(FakeNvml([[0]], init_error=pynvml.NVML_ERROR_DRIVER_NOT_LOADED))
    assert not snap.available
    assert snap.reason == "NVML: Driver Not Loaded: the NVIDIA kernel driver is not loaded"


def test_snapshot_reads_every_gpu_and_its_processes():
    fake = seed004(util=[97, None, 0])
    snap = snapshot(fake)
    assert snap.available and snap.driver == "550.54.15"
    g0, g1, g2 = snap.gpus
    assert (g0.index, g0.name, g0.memory_used_mib, g0.memory_total_mib) == (0, "NVIDIA GeForce RTX 4090", 19099,
                                                                            RTX_4090_MIB)
    assert g0.processes[0].describe() == "pid 1234 python3, 19000 MiB"
    assert g1.utilization_pct is None  # NotSupported is not an error
    assert g1.processes[0].name == "?"  # NVML may not name it (other user, other namespace), nor /proc
    assert g1.processes[0].used_mib is None
    assert g2.processes == ()
    assert snap.header() == ("GPU: 3x NVIDIA GeForce RTX 4090, driver 550.54.15; GPU0 19099/24564 MiB 97%; "
                             "GPU1 18152/24564 MiB; GPU2 45/24564 MiB 0%")
    as_json = json.loads(json.dumps(snap.to_dict()))
    assert as_json["gpus"][0]["processes"] == [{"pid": 1234, "name": "python3", "used_mib": 19000.0}]
    assert fake.inits == fake.shutdowns == 1


def test_bytes_names_from_old_pynvml():
    assert snapshot(FakeNvml([[1]], names_as_bytes=True)).gpus[0].name == "NVIDIA GeForce RTX 4090"


def test_gpu_lost_during_read_is_unavailable_not_an_exception():
    fake = FakeNvml([[1]], fail_after=0)
    snap = snapshot(fake)
    assert not snap.available and "GPU is lost" in snap.reason
    assert fake.inits == fake.shutdowns == 1


def _wait_reads(fake: FakeNvml, n: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while fake.reads < n and time.monotonic() < deadline:
        time.sleep(0.005)


def test_sampler_keeps_peak_and_timeline():
    fake = FakeNvml([[1000, 9000, 23100, 12000], [900, 8000, 22000, 21000]], util=[99, 40])
    with Sampler(interval_s=0.01, nvml=fake) as sampler:
        _wait_reads(fake, 6)
    result = sampler.result()
    assert result.available and result.samples >= 4
    assert [round(p.memory_used_mib) for p in result.peaks] == [23100, 22000]
    assert [p.utilization_pct for p in result.peaks] == [99, 40]
    assert result.timeline[0][1] == (1000, 900)
    assert [t for t, _, _ in result.timeline] == sorted(t for t, _, _ in result.timeline)
    assert result.start is not None and result.start.gpus[0].memory_used_mib == 1000
    assert result.header().startswith("GPU telemetry: peak GPU0 23100/24564 MiB 99%, GPU1 22000/24564 MiB 40% (")
    assert json.loads(json.dumps(result.to_dict()))["peaks"][1]["memory_used_mib"] == 22000
    assert fake.inits == fake.shutdowns == 1
    sampler.stop()  # idempotent
    assert fake.shutdowns == 1


def test_peak_vram_threshold():
    fake = FakeNvml([[1000, 23100], [900, 20000]])
    sampler = Sampler(interval_s=0.01, nvml=fake).start()
    _wait_reads(fake, 3)
    result = sampler.stop()
    assert result.peak_vram_violations(23.5) == []
    (message,) = result.peak_vram_violations(22.0)
    assert message.startswith("GPU0 (NVIDIA GeForce RTX 4090) peaked at 22.56 GiB, over the profile's "
                              "thresholds.peak_vram_gib_max of 22 GiB")


def test_sampler_without_nvml_reports_unavailable():
    sampler = Sampler(interval_s=0.01, nvml=FakeNvml([[0]], init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND))
    sampler.start()
    result = sampler.stop()
    assert not result.available and result.samples == 0
    assert result.header().startswith("GPU telemetry: unavailable (NVML Shared Library Not Found: no NVIDIA")


def test_sampler_default_module_on_this_machine():
    result = Sampler(interval_s=0.01).start().stop()
    assert not result.available and "NVML" in result.reason


def test_sampler_survives_a_gpu_lost_mid_run():
    fake = FakeNvml([[5000, 7000, 6000]], fail_after=3)
    sampler = Sampler(interval_s=0.01, nvml=fake).start()
    deadline = time.monotonic() + 5
    while sampler.result().reason is None and time.monotonic() < deadline:
        time.sleep(0.005)
    result = sampler.stop()
    assert result.available and result.peaks[0].memory_used_mib == 7000
    assert result.reason == "sampling stopped: NVML: GPU is lost"
    assert "stopped early: sampling stopped" in result.header()


def test_timeline_stays_bounded():
    fake = FakeNvml([list(range(100))])
    sampler = Sampler(interval_s=0.001, nvml=fake, max_points=8).start()
    _wait_reads(fake, 60)
    result = sampler.stop()
    assert result.samples >= 60 and len(result.timeline) <= 8
    assert result.peaks[0].memory_used_mib >= 59  # the peak counts every sample, kept in the timeline or not


def test_stop_returns_quickly():
    sampler = Sampler(interval_s=10, nvml=FakeNvml([[1]])).start()
    start = time.monotonic()
    sampler.stop()
    # The thread waits on an Event, not a sleep: a sleeping one would hold stop() for up to 10 s. 2 s leaves
    # room for a loaded machine's scheduling delays.
    assert time.monotonic() - start < 2
