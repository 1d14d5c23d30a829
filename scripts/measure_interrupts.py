"""Ctrl-C / SIGTERM in every phase, per backend: seconds from the signal to the end of the run, what is left.

    flock /tmp/pvllm-real.lock .venv/bin/python scripts/measure_interrupts.py process compose emulator
    ... --phases starting,stream --signals SIGINT,SIGINT   # a second Ctrl-C 0.3 s after the first

Beside the runs, a process that only sleeps 10 ms at a time records when it woke late: the longest such stall
between a run's signal and its exit is printed with the run. A run that ends late while a process doing nothing
was not scheduled either waited for the machine, not for pytest-vllm (on the 2-core VM, vLLM CPU's worker keeps
13 gloo_tcp_loop threads runnable while it serves, and the sleeper has missed its wake-up by up to 5.8 s).

Each (backend, phase) is one run of pytest-vllm on real vLLM CPU (process: cpu_tiny, compose: cpu_tiny_compose,
on ports of their own) or on the emulator, interrupted by tests/interrupting.py. Left behind = server processes
on the profile's port, containers / networks / volumes of its compose projects, files in the run's TMPDIR, a
compose env file (it holds the API key). The grid phase also checks the grid state: the interrupted profile is
not recorded as finished.
"""

from __future__ import annotations

import argparse
import re
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import interrupting  # noqa: E402 - tests/ holds the harness the tests use too

BACKENDS = {"process": ("cpu_tiny_intr", 8064), "compose": ("compose_intr", 8029), "emulator": ("emu_intr", None)}
STARTING_PROFILE = {"emulator": "emu_intr_b"}  # the emulator starts in 0.2 s: take the one that never gets there
PROFILE_DIRS = [interrupting.DATA / "profiles", interrupting.REPO / "profiles"]
STOPPED = re.compile(r"(server stopped in [\d.]+s \([^)]*\)|compose project \S+ down in [\d.]+s)")


def leftovers(backend: str, profile: str, port: int | None, run: interrupting.Interrupted) -> list[str]:
    left = [f"tmp {name}" for name in run.leftover_tmp]
    left += [f"file {p}" for p in run.reports.rglob("compose.env")]
    if port is not None:
        left += [f"process {p}" for p in interrupting.server_processes(port)]
    if backend == "compose":
        from pytest_vllm.backends.compose import engine, project_name
        from pytest_vllm.backends.compose_conflicts import PROJECT_LABEL
        client, prefix = engine(), project_name(profile, "")
        for kind, items in (("container", client.containers.list(all=True, filters={"label": PROJECT_LABEL})),
                            ("network", client.networks.list(filters={"label": PROJECT_LABEL})),
                            ("volume", client.volumes.list(filters={"label": PROJECT_LABEL}))):
            left += [f"{kind} {i.name}" for i in items
                     if (i.attrs.get("Labels") or i.attrs.get("Config", {}).get("Labels") or {}).get(
                         PROJECT_LABEL, "").startswith(prefix)]
    if run.phase == "grid":
        records = run.grid_state().get("records", {})
        if f"{profile}_b" in records or f"{profile}_a" not in records:
            left.append(f"grid state wrong: records {sorted(records)} (want only {profile}_a)")
    return left


SLEEPER = """
import sys, time
out = open(sys.argv[1], "a", buffering=1)
last = time.time()
while True:
    time.sleep(0.01)
    now = time.time()
    if now - last > 0.2:
        out.write(f"{last} {now}\\n")
    last = now
"""


class Sleeper:
    """A process that sleeps 10 ms at a time and records each wake-up that came over 0.2 s late."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.proc = subprocess.Popen([sys.executable, "-c", SLEEPER, str(log)])

    def longest_stall(self, start: float, end: float) -> float:
        """The longest late wake-up overlapping [start, end] (wall-clock seconds)."""
        stalls = [tuple(map(float, line.split())) for line in self.log.read_text().splitlines() if line]
        return max((min(b, end) - max(a, start) for a, b in stalls if b > start and a < end), default=0.0)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("backends", nargs="+", choices=sorted(BACKENDS))
    parser.add_argument("--phases", default=",".join(interrupting.PHASES))
    parser.add_argument("--signals", default="SIGINT", help="comma list sent 0.3 s apart, e.g. SIGINT,SIGINT")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--show", default=None, metavar="REGEX", help="print the run's output lines that match")
    args = parser.parse_args(argv)
    sigs = tuple(signal.Signals[s.strip()] for s in args.signals.split(","))
    with tempfile.TemporaryDirectory(prefix="pvllm-sleeper-") as probe_dir:
        sleeper = Sleeper(Path(probe_dir) / "stalls")
        try:
            return _measure(args, sigs, sleeper)
        finally:
            sleeper.stop()


def _measure(args: argparse.Namespace, sigs: tuple[signal.Signals, ...], sleeper: Sleeper) -> int:
    rows, failed = [], False
    for backend in args.backends:
        base, port = BACKENDS[backend]
        for phase in args.phases.split(","):
            profile = STARTING_PROFILE.get(backend, base) if phase == "starting" else base
            times = []
            for _ in range(args.repeat):
                with tempfile.TemporaryDirectory(prefix="pvllm-intr-") as work:
                    run = interrupting.interrupt(profile, phase, Path(work), PROFILE_DIRS, signals=sigs)
                    left = leftovers(backend, base, port, run)
                stall = sleeper.longest_stall(run.signalled_at, run.signalled_at + run.exit_s)
                stopped = STOPPED.search(run.output)
                times.append(run.exit_s)
                failed |= bool(left) or run.returncode in (0, 1)
                print(f"{backend:8} {phase:10} {'+'.join(run.signals):14} exit {run.exit_s:5.2f}s rc {run.returncode} "
                      f"left: {', '.join(left) or 'nothing'}; {stopped.group(1) if stopped else 'no stop line'}; "
                      f"machine stalled {stall:.2f}s meanwhile",
                      flush=True)
                if args.show:
                    print("\n".join(f"    {line}" for line in run.output.splitlines() if re.search(args.show, line)))
            rows.append((backend, phase, times))
    print("\nbackend  phase      signals        exit after the signal (s)")
    for backend, phase, times in rows:
        figure = f"{statistics.median(times):.2f}" + (f" (max {max(times):.2f}, n={len(times)})" if len(times) > 1
                                                      else "")
        print(f"{backend:8} {phase:10} {args.signals:14} {figure}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
