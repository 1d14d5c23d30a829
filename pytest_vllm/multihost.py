"""A grid spread over several Docker hosts: one deployment per host at a time, one report.

    pytest suites/medium --profile='cpu_grid_*' --hosts=gpu1,gpu2

The pytest run that was given `--hosts` collects as usual, then dispatches instead of running the tests
itself: each profile becomes a child pytest (the same suites, `--profile=NAME`) whose DOCKER_HOST is the
host it was handed, so compose, the docker SDK and the test client all work on that host. A host takes
the next profile as soon as its previous one is finished; two hosts that share an address (two engines
on one machine) never run two profiles on the same port at once.

Crash tolerance: a host that stops answering is marked lost; the profile it was running is recorded with
that cause and offered once to another host. The grid state is written atomically after each profile, so
`--resume` works whichever host ran what. Children tear their deployments down themselves; containers of
a lost host are swept by label when it answers again before the grid ends, else named in the report.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from . import interrupts
from .grid import GridState, make_record
from .hosts import DockerHost, HostError, parse_hosts
from .profile import Profile
from .reports import DeployFailure, RunReport, TestResult
from .session import VllmSession

# Options of the parent run that each child gets unchanged (dest name -> option string).
FORWARDED = {"profiles_dir": "--profiles-dir", "health_timeout": "--health-timeout", "api_key": "--api-key",
             "keyword": "-k", "markexpr": "-m", "regression_tolerance": "--regression-tolerance",
             "regression_confidence": "--regression-confidence", "baseline_runs": "--baseline-runs"}
FLAGS = {"no_history": "--no-history", "accept_regression": "--accept-regression"}
CHILD_STOP_GRACE_S = 10
HOST_CHECK_S = 2.0  # how often a host's engine is asked whether it still answers while a profile runs


@dataclass
class Job:
    profile: Profile
    tried_on: list[str] = field(default_factory=list)
    lost_causes: list[str] = field(default_factory=list)


class MultiHostGrid:
    """Plugin object of a `--hosts` run: replaces the test loop by the dispatch over hosts."""

    def __init__(self, config: pytest.Config, hosts: list[DockerHost], profiles: dict[str, Profile],
                 state: GridState, progress: Any) -> None:
        self.config, self.hosts, self.state, self.progress = config, hosts, state, progress
        self.queue = [Job(p) for p in profiles.values()]
        self.running: dict[str, tuple[str, int]] = {}  # host name -> (address, port) in use
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.lost: dict[str, str] = {}
        self.gpu_models: dict[str, str] = {}
        self.failed = 0
        self.started = time.time()
        self.lock = threading.Condition()
        self.stopping = threading.Event()
        self.out_dir = state.path.parent / "hosts"

    # --- pytest hooks ---
    def pytest_runtestloop(self, session: pytest.Session) -> bool | None:
        if session.config.option.collectonly:
            return None
        workers = [threading.Thread(target=self._serve, args=(host,), name=f"host-{host.name}", daemon=True)
                   for host in self.hosts]
        with interrupts.to_the_main_thread():
            for worker in workers:
                worker.start()
        try:
            for worker in workers:
                while worker.is_alive():
                    worker.join(timeout=0.5)
        except KeyboardInterrupt:
            self._interrupt_children()
            raise
        self._sweep_lost_hosts()
        for job in self.queue:  # no host was left to run them
            self._record_unrun(job, "no host left to run it: " + "; ".join(
                f"{h} lost ({why})" for h, why in self.lost.items()))
        session.testsfailed = self.failed
        return True

    # --- one thread per host ---
    def _serve(self, host: DockerHost) -> None:
        version = host.server_version()
        if version is None:
            self._mark_lost(host, "its Docker engine does not answer")
            return
        self.gpu_models[host.name] = host.gpu_model()
        self.progress(f"[vllm] host {host.name}: Docker {version} at {host.url}, {self.gpu_models[host.name]}")
        while True:
            job = self._next_job(host)
            if job is None:
                return
            if host.server_version() is None:  # checked again: a host can go down between two profiles
                self._give_back(job, host, "its Docker engine stopped answering")
                return
            self._run(host, job)
            if host.name in self.lost:
                return

    def _next_job(self, host: DockerHost) -> Job | None:
        """The next profile this host may run (its port free at the host's address). Waits while other hosts
        run, since a lost host may hand its profile back; None once nothing is left for this host."""
        with self.lock:
            while True:
                busy = set(self.running.values())
                for job in self.queue:
                    port = int(job.profile.deployment["port"])
                    if host.name not in job.tried_on and (host.address, port) not in busy:
                        self.queue.remove(job)
                        self.running[host.name] = (host.address, port)
                        return job
                if not self.running:
                    return None  # nothing left that this host may take, and nobody can hand one back
                self.lock.wait(timeout=1.0)

    def _run(self, host: DockerHost, job: Job) -> None:
        name = job.profile.name
        child_dir = self.out_dir / host.name / name
        child_dir.mkdir(parents=True, exist_ok=True)
        log = child_dir / "pytest.log"
        job.tried_on.append(host.name)
        t0 = time.time()
        self.progress(f"[vllm] host {host.name}: {name} starting (log {log})")
        with log.open("wb") as out:
            child = subprocess.Popen(self._child_args(job.profile, host, child_dir), stdout=out,
                                     stderr=subprocess.STDOUT, env={**os.environ, **host.env()},
                                     start_new_session=True)
            with self.lock:
                self.children[host.name] = child
            code, lost = self._watch(child, host)
        finished = time.time()
        with self.lock:
            self.children.pop(host.name, None)
            self.running.pop(host.name, None)
            self.lock.notify_all()
        if self.stopping.is_set():
            return  # interrupted: this profile is not finished and must not be recorded as such
        if lost or host.server_version() is None:
            self._give_back(job, host, f"its Docker engine stopped answering while {name} ran")
            return
        self._record(job, host, child_dir, (t0, finished), code)

    def _watch(self, child: subprocess.Popen[bytes], host: DockerHost) -> tuple[int, bool]:
        """Wait for the child while checking the host's engine; a host that stops answering is lost at once
        (even if it comes back later, what ran there is gone): the child is stopped rather than left to time
        out."""
        lost = False
        while True:
            try:
                return child.wait(timeout=HOST_CHECK_S), lost
            except subprocess.TimeoutExpired:
                pass
            if not lost and host.server_version() is None:
                lost = True
                _stop_child(child)

    def _child_args(self, profile: Profile, host: DockerHost, child_dir: Path) -> list[str]:
        option = self.config.option
        args = [sys.executable, "-m", "pytest", *self.config.args, f"--profile={profile.path}",
                f"--reports-dir={child_dir}", f"--client-host={host.address}", "-p", "no:cacheprovider",
                "--rootdir", str(self.config.rootpath)]
        if self.config.inipath:
            args += ["-c", str(self.config.inipath)]
        for dest, flag in FORWARDED.items():
            value = getattr(option, dest, None)
            for item in value if isinstance(value, list) else [value]:
                if item not in (None, ""):
                    args.append(f"{flag}={item}")
        args += [flag for dest, flag in FLAGS.items() if getattr(option, dest, False)]
        # One TTFT history per GPU model, shared by the hosts that have it: tonight's profile may run on
        # another host than last night's and still be compared.
        gpu = re.sub(r"[^A-Za-z0-9_.-]+", "-", self.gpu_models.get(host.name, "unknown")).strip("-")
        args.append(f"--benchmark-storage=file://{self.state.path.parent / 'benchmarks' / gpu}")
        return args

    # --- outcomes ---
    def _record(self, job: Job, host: DockerHost, child_dir: Path, span: tuple[float, float], code: int) -> None:
        summary_path = child_dir / "latest.json"
        if summary_path.is_file():
            report = report_from_summary(json.loads(summary_path.read_text(encoding="utf-8")), child_dir)
        else:  # the child died before writing a summary (usage error, crash): its log says why
            tail = (child_dir / "pytest.log").read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
            report = RunReport(run_dir=child_dir, reports_root=child_dir)
            report.deploy_failures[job.profile.name] = DeployFailure(
                f"the pytest run for this profile exited {code} without a summary", log_tail=tail,
                log=str(child_dir / "pytest.log"))
        record = make_record(job.profile, report, span[0])
        record.update(host=host.name, gpu_model=self.gpu_models.get(host.name), exit_code=code,
                      started_at=span[0], finished_at=span[1], duration_s=round(span[1] - span[0], 1),
                      lost_on=[f"{h}: {c}" for h, c in zip(job.tried_on, job.lost_causes, strict=False)])
        self._save(job.profile.name, record, host)

    def _give_back(self, job: Job, host: DockerHost, cause: str) -> None:
        """The host is lost with this profile on it: offer the profile once to another host."""
        self._mark_lost(host, cause)
        job.lost_causes.append(cause)
        alive = [h for h in self.hosts if h.name not in self.lost and h.name not in job.tried_on]
        if len(job.tried_on) < 2 and alive:
            self.progress(f"[vllm] host {host.name} lost ({cause}): {job.profile.name} is offered to another host")
            with self.lock:
                self.queue.append(job)
                self.lock.notify_all()
            return
        self._record_unrun(job, f"host {host.name} lost: {cause}")

    def _record_unrun(self, job: Job, cause: str) -> None:
        report = RunReport(run_dir=self.out_dir, reports_root=self.out_dir)
        report.deploy_failures[job.profile.name] = DeployFailure(cause)
        record = make_record(job.profile, report, time.time())
        record.update(host=job.tried_on[-1] if job.tried_on else None, status="host_lost",
                      lost_on=[f"{h}: {c}" for h, c in zip(job.tried_on, job.lost_causes, strict=False)])
        self._save(job.profile.name, record, None)

    def _save(self, name: str, record: dict[str, Any], host: DockerHost | None) -> None:
        with self.lock:
            self.state.record(name, record)
            if record["status"] != "passed":
                self.failed += 1
        where = f"host {host.name}: " if host else ""
        self.progress(f"[vllm] {where}{name} {record['status']} in {record['duration_s']:.0f} s "
                      f"({', '.join(f'{n} {k}' for k, n in sorted(record['counts'].items())) or 'no tests'})")

    def _mark_lost(self, host: DockerHost, cause: str) -> None:
        with self.lock:
            self.lost[host.name] = cause
            self.lock.notify_all()
        self.progress(f"[vllm] host {host.name} marked lost: {cause}")

    # --- cleanup ---
    def _interrupt_children(self) -> None:
        """Ctrl-C: each child gets SIGINT (it tears its deployment down), SIGKILL after a grace."""
        self.stopping.set()
        with self.lock:
            children = list(self.children.values())
        for child in children:  # all at once: they tear down in parallel
            _signal_group(child, signal.SIGINT)
        deadline = time.monotonic() + CHILD_STOP_GRACE_S
        for child in children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(child, signal.SIGKILL)

    def _sweep_lost_hosts(self) -> None:
        """Containers of this grid left on a lost host: removed if it answers again, else named."""
        from .backends.compose_conflicts import PROFILE_LABEL
        names = list(self.state.data["profiles"])
        for host_name in list(self.lost):
            host = next(h for h in self.hosts if h.name == host_name)
            if host.server_version() is None:
                self.state.data.setdefault("unswept_hosts", {})[host_name] = (
                    f"did not answer at the end of the grid: check it for containers labelled {PROFILE_LABEL}")
                continue
            for name in names:
                ids = host.docker("ps", "-aq", "--filter", f"label={PROFILE_LABEL}={name}",
                                  "--filter", "label=pytest-vllm.run").stdout.split()
                for cid in ids:
                    if _created_after(host, cid, self.started):
                        host.docker("rm", "-f", "-v", cid)
        self.state.save()


def start(config: pytest.Config, session: VllmSession) -> None:
    """--hosts: resolve the hosts, start the grid state, and take over the test loop."""
    from .grid import start_grid
    if not config.getoption("hosts"):
        return
    try:
        hosts = parse_hosts(config.getoption("hosts"))
    except HostError as exc:
        raise pytest.UsageError(f"pytest-vllm: {exc}") from None
    others = [f"{n} ({p.backend})" for n, p in session.profiles.items() if p.backend != "compose"]
    if others:
        raise pytest.UsageError(f"pytest-vllm: --hosts runs compose deployments on Docker hosts; these profiles "
                                f"use another backend: {', '.join(others)}")
    state = start_grid(config, session, spread=True)
    assert state is not None
    config.pluginmanager.register(MultiHostGrid(config, hosts, session.profiles, state, session.settings.progress),
                                  "vllm-multihost")


def _created_after(host: DockerHost, cid: str, t0: float) -> bool:
    from .backends.compose import seconds_since
    created = host.docker("inspect", "--format", "{{.Created}}", cid).stdout.strip()
    age = seconds_since(created)
    return age is not None and time.time() - age >= t0 - 1


def _stop_child(child: subprocess.Popen[bytes]) -> None:
    """SIGINT to the child's process group (it tears its deployment down), SIGKILL after a grace."""
    _signal_group(child, signal.SIGINT)
    try:
        child.wait(timeout=CHILD_STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        _signal_group(child, signal.SIGKILL)
        child.wait()


def _signal_group(child: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(child.pid, sig)
    except ProcessLookupError:
        pass


def report_from_summary(data: dict[str, Any], run_dir: Path) -> RunReport:
    """A child's summary.json read back as the RunReport the grid records are made from."""
    report = RunReport(run_dir=run_dir, reports_root=run_dir, profiles=data.get("profiles", {}),
                       deploy_failures={n: DeployFailure(**f) for n, f in data.get("deploy_failures", {}).items()},
                       measurements=data.get("measurements", {}), warnings=data.get("warnings", []))
    report.results = [TestResult(**r) for r in data.get("results", [])]
    return report

