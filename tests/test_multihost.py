"""Grids over several Docker hosts (--hosts): host resolution, dispatch, lost hosts, one report.

The real tests use two Docker engines on this machine — the usual one and a second dockerd started here
with its own socket, data root and exec root — as two hosts. Both answer at 127.0.0.1, so they also show
that two profiles on the same port never run at once on hosts that share an address.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_vllm.grid import GridState, render_report
from pytest_vllm.hosts import DockerHost, HostError, resolve_host
from pytest_vllm.multihost import report_from_summary

from conftest import PROFILES, REPO, SUITES

DEFAULT_ENGINE = "unix:///var/run/docker.sock"


# --- units ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("url", "address", "local"), [
    ("unix:///var/run/docker.sock", "127.0.0.1", True),
    ("ssh://ops@gpu1.example:2222", "gpu1.example", False),
    ("tcp://10.0.0.7:2376", "10.0.0.7", False),
])
def test_a_host_knows_where_its_deployments_answer(url, address, local):
    host = DockerHost(url, url)
    assert (host.address, host.local) == (address, local)
    assert host.env()["DOCKER_HOST"] == url
    assert "/" not in host.name and host.name


def test_an_unknown_context_is_refused_with_the_way_to_create_one():
    if not shutil.which("docker"):
        pytest.skip("no docker CLI")
    with pytest.raises(HostError, match="docker context create no-such-ctx --docker host=ssh://"):
        resolve_host("no-such-ctx")


def test_the_default_context_resolves_to_its_engine_url():
    if not shutil.which("docker"):
        pytest.skip("no docker CLI")
    assert resolve_host("default").url.startswith(("unix://", "tcp://", "ssh://"))


def _record(host: str, gpu: str, accel: float, hit: float) -> dict:
    return {"status": "passed", "counts": {"passed": 3}, "duration_s": 80.0, "requested": {},
            "deployment": {"engine_config": {"enable_prefix_caching": True}}, "failure": None,
            "failed_tests": [], "host": host, "gpu_model": gpu,
            "measurements": {"kv": {"acceleration": accel, "hit_ms_median": hit, "miss_ms_median": hit * accel}}}


def test_the_report_says_which_host_ran_what_and_compares_only_like_gpus(tmp_path):
    state = GridState(tmp_path / "grid-state.json", ["base", "same", "other"])
    state.record("base", _record("gpu1", "NVIDIA GeForce RTX 4090", 3.0, 100.0))
    state.record("same", _record("gpu1", "NVIDIA GeForce RTX 4090", 4.5, 80.0))
    state.record("other", _record("gpu2", "NVIDIA H100", 6.0, 40.0))
    md = render_report(state, "acceleration", "base", tmp_path).read_text()
    table = md.split("\n## ")[0]  # the ranking, not the trade-offs
    rows = {line.split("`")[1]: line for line in table.splitlines() if line.startswith("| ") and "`" in line}
    assert "gpu2 (NVIDIA H100)" in rows["other"] and "gpu1 (NVIDIA GeForce RTX 4090)" in rows["same"]
    assert "+50 %" in rows["same"]                        # same GPU model: compared
    assert "+100 %" not in rows["other"] and "—" in rows["other"]  # another GPU model: not compared
    md = render_report(state, "acceleration", "base", tmp_path, across_gpus=True).read_text()
    assert "+100 %" in md.split("\n## ")[0]


def test_a_child_summary_reads_back_as_the_run_report(tmp_path):
    summary = {"profiles": {"p": {"backend": "compose"}}, "deploy_failures": {}, "measurements": {"p": {}},
               "warnings": [], "results": [{"nodeid": "t::a[p]", "profile": "p", "outcome": "passed",
                                            "duration_s": 0.1, "message": ""}]}
    report = report_from_summary(summary, tmp_path)
    assert report.counts() == {"passed": 1} and report.profiles["p"]["backend"] == "compose"


def test_hosts_refuse_profiles_that_compose_does_not_run(pytester):
    result = pytester.runpytest_subprocess(
        str(SUITES / "medium" / "test_health.py"), "--profile=cpu_tiny", f"--hosts={DEFAULT_ENGINE}",
        "-p", "no:cacheprovider", "--rootdir", str(REPO), "-c", str(REPO / "pyproject.toml"))
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*--hosts runs compose deployments*cpu_tiny (process)*"])


# --- two real engines ----------------------------------------------------------------------------------

class SecondEngine:
    """A dockerd of our own (socket, data root and exec root in a temp dir), stopped by its PID."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = f"unix://{root / 'docker.sock'}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.root / "dockerd.log").open("ab")
        self.proc = subprocess.Popen(
            ["dockerd", f"--host={self.url}", f"--data-root={self.root / 'data'}",
             f"--exec-root={self.root / 'exec'}", f"--pidfile={self.root / 'docker.pid'}",
             "--bridge=none", "--iptables=false", "--ip-masq=false"],  # no networks of its own: host network only
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while DockerHost(self.url, self.url).server_version() is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"second dockerd did not start: {(self.root / 'dockerd.log').read_text()[-2000:]}")
            time.sleep(0.5)

    def stop(self) -> None:
        """SIGTERM: dockerd stops its containers and exits, as when a host's engine goes down."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def unmount(self) -> None:
        """dockerd leaves its namespace file bind-mounted under the exec root (exec/netns/default)."""
        mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
        for point in sorted((m for m in mounts if m.startswith(str(self.root))), reverse=True):
            subprocess.run(["umount", point], capture_output=True)


@pytest.fixture(scope="module")
def two_engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, SecondEngine]]:
    if not (shutil.which("dockerd") and DockerHost(DEFAULT_ENGINE, DEFAULT_ENGINE).server_version()):
        pytest.skip("needs the Docker engine (scripts/docker-setup.sh)")
    root = tmp_path_factory.mktemp("engine2")
    tempfile_dir = str(root)
    second = SecondEngine(root)
    second.start()
    try:
        subprocess.run([str(REPO / ".venv/bin/python") if (REPO / ".venv/bin/python").exists() else "python",
                        "-m", "pytest_vllm.backends.compose_image"], check=True, capture_output=True,
                       env={**os.environ, "DOCKER_HOST": second.url})
        yield DEFAULT_ENGINE, second
    finally:
        second.stop()
        second.unmount()
        shutil.rmtree(tempfile_dir, ignore_errors=True)


def _grid_profiles(folder: Path, ports: dict[str, int]) -> None:
    for name, port in ports.items():
        (folder / f"{name}.yml").write_text(
            f"extends: cpu_tiny_compose\ndescription: multi-host grid test\ndeployment:\n  port: {port}\n"
            "timeouts:\n  health: 900\n")  # two CPU servers start at once on a shared 2-core machine


def _run_grid(tmp_path: Path, hosts: list[str], glob: str) -> tuple[Path, list[str]]:
    reports = tmp_path / "reports"
    args = [str(SUITES / "medium" / "test_health.py"), "-k", "health_endpoint or models",
            f"--profile={glob}", f"--hosts={','.join(hosts)}", f"--reports-dir={reports}", "--no-history",
            f"--profiles-dir={tmp_path}", f"--profiles-dir={PROFILES}", "-p", "no:cacheprovider",
            "--rootdir", str(REPO), "-c", str(REPO / "pyproject.toml")]
    return reports, args


def _leftovers(url: str, names: list[str]) -> list[str]:
    host = DockerHost(url, url)
    return [line for name in names for line in host.docker(
        "ps", "-a", "--filter", f"label=pytest-vllm.profile={name}", "--format", "{{.Names}}").stdout.split()]


@pytest.mark.real
@pytest.mark.docker
def test_a_grid_runs_on_two_engines_at_once_and_reports_each_host(pytester, tmp_path, two_engines):
    first, second = two_engines
    names = {"mh_a": 8061, "mh_b": 8062, "mh_c": 8061, "mh_d": 8062}  # shared ports: never at once on one address
    _grid_profiles(tmp_path, names)
    reports, args = _run_grid(tmp_path, [first, second.url], "mh_*")
    start = time.monotonic()
    result = pytester.runpytest_subprocess(*args, timeout=1500)
    wall = time.monotonic() - start
    state = json.loads((reports / "grid-state.json").read_text())
    records = state["records"]
    print(f"\nTWO-ENGINE CPU grid: {wall:.0f} s wall; " + ", ".join(
        f"{n} on {r['host']} {r['duration_s']} s" for n, r in sorted(records.items())))
    print((reports / "grid-report.md").read_text())
    assert result.ret == 0, result.stdout.str()[-3000:]
    assert set(records) == set(names) and {r["status"] for r in records.values()} == {"passed"}
    assert {r["host"] for r in records.values()} == {DockerHost(first, first).name, DockerHost(second.url,
                                                                                                second.url).name}
    spans = sorted((r["started_at"], r["finished_at"], names[n]) for n, r in records.items())
    overlapping = [(a, b) for a in spans for b in spans if a < b and b[0] < a[1]]
    assert overlapping, f"the two hosts never ran at the same time: {spans}"
    assert all(a[2] != b[2] for a, b in overlapping), f"two deployments on one port at once: {overlapping}"
    assert "host (GPU)" in (reports / "grid-report.md").read_text()
    assert _leftovers(first, list(names)) == [] and _leftovers(second.url, list(names)) == []


@pytest.mark.real
@pytest.mark.docker
def test_an_engine_lost_mid_grid_loses_no_profile_and_leaves_no_container(pytester, tmp_path, two_engines):
    first, second = two_engines
    names = {"mh_lost_a": 8063, "mh_lost_b": 8064}
    _grid_profiles(tmp_path, names)
    reports, args = _run_grid(tmp_path, [first, second.url], "mh_lost_*")
    second_name = DockerHost(second.url, second.url).name
    proc = subprocess.Popen([str(REPO / ".venv/bin/python"), "-m", "pytest", *args], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        # Kill the second engine once its deployment is starting (its container exists).
        while not _leftovers(second.url, list(names)):
            assert proc.poll() is None and time.monotonic() < deadline, "the second host never started a profile"
            time.sleep(1)
        time.sleep(3)
        second.stop()
        time.sleep(5)
        second.start()  # it comes back before the grid ends: the grid sweeps what the loss left there
        out, _ = proc.communicate(timeout=1200)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = out.decode(errors="replace")
    print(text[-3000:])
    records = json.loads((reports / "grid-state.json").read_text())["records"]
    assert set(records) == set(names), text[-3000:]
    moved = [r for r in records.values() if r.get("lost_on")]
    assert len(moved) == 1 and moved[0]["host"] == DockerHost(first, first).name, records
    assert second_name in moved[0]["lost_on"][0] and "stopped answering" in moved[0]["lost_on"][0]
    assert {r["status"] for r in records.values()} == {"passed"}, records
    assert f"host {second_name} marked lost" in text
    assert _leftovers(first, list(names)) == [] and _leftovers(second.url, list(names)) == []
