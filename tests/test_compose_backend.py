"""Compose backend: its pure parts (fast), then a real Docker engine (`docker`), then real vLLM CPU in
containers under compose (`docker` + `real`, minutes). Every docker test removes what it created, by label.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pytest_vllm.backends.base import RunSettings
from pytest_vllm.backends.compose import (
    ComposeBackend,
    container_failure,
    engine,
    healthcheck_hint,
    project_name,
    remove_project,
    seconds_since,
)
from pytest_vllm.backends.compose_config import ServiceSpec, render_env_file, render_override
from pytest_vllm.backends.compose_conflicts import (
    PORT_LABEL,
    PROFILE_LABEL,
    PROJECT_LABEL,
    container_host_ports,
    find_conflicts,
    gpu_claim,
    gpus_overlap,
)
from pytest_vllm.backends.compose_image import CPU_IMAGE, ensure_image
from pytest_vllm.deployment import deployed
from pytest_vllm.diagnosis import diagnose_failure
from pytest_vllm.errors import DeploymentError, PreflightError, ServerExited
from pytest_vllm.profile import load_profile

import interrupting
from conftest import DATA, PROFILES, REPO, SUITES, outcome_counts

HEALTH = str(SUITES / "medium" / "test_health.py")
PROFILE_DIRS = [DATA / "profiles", PROFILES]
TEST_PROJECTS = "pvllm-compose_"  # every test profile here is named compose_*: its projects are ours to remove


def _profile(name: str):
    return load_profile(name, PROFILE_DIRS)


def _backend(name: str, tmp_path: Path, api_key: str | None = "k" * 40) -> ComposeBackend:
    settings = RunSettings(run_dir=tmp_path / "run", run_id="t35t01", progress=lambda line: None)
    return ComposeBackend(_profile(name), settings, api_key)


# -- unit: no engine needed ---------------------------------------------------------------------------------

def test_project_name_is_per_run_and_acceptable_to_compose():
    assert project_name("Cpu.Tiny Compose", "AB12cd") == "pvllm-cpu-tiny-compose-ab12cd"
    assert project_name("cpu_tiny_compose", "aaaaaa") != project_name("cpu_tiny_compose", "bbbbbb")


def test_override_sets_command_labels_and_env_and_keeps_dollars_literal():
    text = render_override("vllm", ["--x", '{"a":"$b"}'], {"HF_HUB_OFFLINE": 1},
                           {PROFILE_LABEL: "p", PORT_LABEL: "8020"})
    body = yaml.safe_load(text)["services"]["vllm"]
    assert body["command"] == ["--x", '{"a":"$$b"}']  # compose turns $$ back into $
    assert body["labels"] == {PROFILE_LABEL: "p", PORT_LABEL: "8020"}
    assert body["environment"] == {"HF_HUB_OFFLINE": "1"}


def test_env_file_has_the_run_key_once_taken_literally():
    inherited = "# ops file\nVLLM_API_KEY=old-key\nexport HF_TOKEN=abc\n"
    text = render_env_file(inherited=inherited, variables={"PYTEST_VLLM_PORT": "8020"},
                           secret_name="VLLM_API_KEY", secret="n$ew")
    assert "old-key" not in text
    assert text.count("VLLM_API_KEY=") == 1 and "VLLM_API_KEY='n$ew'" in text
    assert "export HF_TOKEN=abc" in text and "PYTEST_VLLM_PORT='8020'" in text
    with pytest.raises(PreflightError, match="single quote"):
        render_env_file(inherited="", variables={}, secret_name="K", secret="it's")


def test_env_file_is_private_to_the_run(tmp_path):
    backend = _backend("compose_8021", tmp_path, api_key="s3cret-" + "x" * 30)
    backend._write_env_file()
    assert backend.env_file.stat().st_mode & 0o777 == 0o600
    assert str(backend.env_file).startswith(str(tmp_path / "run"))
    text = backend.env_file.read_text()
    assert "PYTEST_VLLM_API_KEY='s3cret-" in text and "PYTEST_VLLM_PORT='8021'" in text
    assert f"PYTEST_VLLM_VENV='{sys.prefix}'" in text and "PYTEST_VLLM_MODEL_DIR=" in text


def test_server_command_follows_the_service_network(tmp_path):
    backend = _backend("compose_8021", tmp_path)
    host = backend.server_command(ServiceSpec(host_network=True, published={}, gpus=None))
    assert host[host.index("--host") + 1] == "127.0.0.1" and host[host.index("--port") + 1] == "8021"
    assert "--max-model-len" in host and "--enable-auto-tool-choice" in host
    bridged = backend.server_command(ServiceSpec(host_network=False, published={8021: 8000}, gpus=None))
    assert bridged[bridged.index("--host") + 1] == "0.0.0.0" and bridged[bridged.index("--port") + 1] == "8000"
    with pytest.raises(PreflightError, match="publishes no host port 8021"):
        backend.server_command(ServiceSpec(host_network=False, published={9000: 8000}, gpus=None))


def test_service_spec_reads_ports_and_gpus_from_compose_config():
    config = {"services": {"vllm": {
        "ports": [{"target": 8000, "published": "8021"}],
        "deploy": {"resources": {"reservations": {"devices": [
            {"driver": "nvidia", "device_ids": ["0,1"], "capabilities": ["gpu"]}]}}}}}}
    spec = ServiceSpec.from_config(config, "vllm", "f.yml")
    assert spec == ServiceSpec(host_network=False, published={8021: 8000}, gpus=frozenset({"0", "1"}))
    with pytest.raises(PreflightError, match="no service 'api'.*services: vllm"):
        ServiceSpec.from_config(config, "api", "f.yml")


RUNNING = {"State": {"Status": "running", "ExitCode": 0, "Health": {"Status": "starting"}}, "RestartCount": 0}


@pytest.mark.parametrize(("state", "expected"), [
    ({"Status": "exited", "ExitCode": 2, "OOMKilled": False}, "exited with code 2 (OOMKilled: false)"),
    ({"Status": "exited", "ExitCode": 137, "OOMKilled": True}, "exited with code 137 (OOMKilled: true)"),
    ({"Status": "dead", "ExitCode": 1}, "dead with code 1"),
    ({"Status": "restarting", "ExitCode": 1}, "restarted 0 time(s)"),
    ({"Status": "running", "ExitCode": 0, "Health": {"Status": "unhealthy", "FailingStreak": 3, "Log": [
        {"ExitCode": 1, "Output": "curl: (7) Failed to connect"}]}},
     "unhealthy: its health check failed 3 time(s) in a row; health log:\n  exit 1: curl: (7) Failed to connect"),
], ids=["exited", "oom", "dead", "restarting", "unhealthy"])
def test_container_failure_says_why(state, expected):
    assert expected in container_failure({"State": state, "RestartCount": 0})
    assert container_failure(RUNNING) is None
    assert "restarted 2 time(s)" in container_failure({**RUNNING, "RestartCount": 2})


def test_compose_hint_is_the_failing_healthcheck_while_running_and_only_then():
    unhealthy = {"Status": "running", "ExitCode": 0, "Health": {"Status": "unhealthy", "Log": [
        {"ExitCode": 1, "Output": "probe says: model not loaded"}]}}
    hint = healthcheck_hint(unhealthy)
    assert hint and hint.cause == "compose_healthcheck_failing"
    assert hint.evidence == "exit 1: probe says: model not loaded"
    assert healthcheck_hint({**unhealthy, "Status": "exited", "ExitCode": 2}) is None  # vLLM's log says why


def test_log_and_exit_state_beat_the_compose_hint_and_oom_killed_means_host_ram():
    running = {"Status": "running", "Health": {"Status": "unhealthy"}}
    quiet = ServerExited("unhealthy", log_tail=["INFO nothing known"], diagnosis=healthcheck_hint(running))
    diagnose_failure(quiet, None)
    assert quiet.diagnosis and quiet.diagnosis.cause == "compose_healthcheck_failing"  # the log proves nothing
    loud = ServerExited("unhealthy", log_tail=["torch.OutOfMemoryError: CUDA out of memory"],
                        diagnosis=healthcheck_hint(running))
    diagnose_failure(loud, None)
    assert loud.diagnosis and loud.diagnosis.cause == "cuda_oom"
    # OOMKilled is the kernel's verdict on host RAM: GPU memory settings are not the fix.
    killed = ServerExited("exited with code 137 (OOMKilled: true)", exit_code=137, oom_killed=True,
                          log_tail=["INFO Loading safetensors checkpoint shards"])
    diagnose_failure(killed, None)
    assert killed.diagnosis and killed.diagnosis.cause == "container_oom_killed"
    assert "host RAM" in str(killed) and "gpu-memory-utilization" not in str(killed)


def test_docker_timestamps_with_nanoseconds_are_read():
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 3)) + ".123456789Z"
    assert 2 < seconds_since(stamp) < 5
    assert seconds_since("0001-01-01T00:00:00Z") is None


def _container(name, project=None, *, bindings=None, network="bridge", labels=None, cmd=None, gpus=None):
    all_labels = dict(labels or {})
    if project:
        all_labels.update({PROJECT_LABEL: project, "com.docker.compose.service": "vllm"})
    return {"Name": "/" + name, "Config": {"Labels": all_labels, "Cmd": cmd or []},
            "HostConfig": {"NetworkMode": network, "PortBindings": bindings or {}, "DeviceRequests": gpus or []}}


def test_conflicts_name_the_deployment_holding_our_port():
    published = _container("a-vllm-1", "team-a", bindings={"8000/tcp": [{"HostIp": "", "HostPort": "8020"}]})
    labelled = _container("b-vllm-1", "pvllm-x-1", network="host", labels={PORT_LABEL: "8020", PROFILE_LABEL: "x"})
    by_flag = _container("c-vllm-1", "team-c", network="host", cmd=["--model", "m", "--port", "8020"])
    elsewhere = _container("d-vllm-1", "team-d", bindings={"8000/tcp": [{"HostPort": "9000"}]})
    assert container_host_ports(by_flag) == {8020}
    found = find_conflicts([published, labelled, by_flag, elsewhere], 8020, None)
    assert found == [
        "port 8020 is held by compose project team-a (service vllm, container a-vllm-1)",
        "port 8020 is held by compose project pvllm-x-1 (service vllm, profile x, container b-vllm-1)",
        "port 8020 is held by compose project team-c (service vllm, container c-vllm-1)"]


def test_conflicts_name_the_deployment_holding_our_gpus():
    all_gpus = _container("a", "team-a", gpus=[{"Driver": "", "Count": -1, "Capabilities": [["gpu"]]}])
    gpu1 = _container("b", "team-b", gpus=[{"Driver": "nvidia", "DeviceIDs": ["1"], "Capabilities": [["gpu"]]}])
    assert find_conflicts([all_gpus, gpu1], 8020, frozenset({"0"})) == [
        "all GPUs held by compose project team-a (service vllm, container a)"]
    assert find_conflicts([gpu1], 8020, gpu_claim([{"count": 2, "capabilities": ["gpu"]}])) == [
        "GPU 1 held by compose project team-b (service vllm, container b)"]
    assert gpu_claim([{"device_ids": ["0,1"], "capabilities": ["gpu"]}]) == frozenset({"0", "1"})
    assert gpu_claim([{"count": -1, "capabilities": ["gpu"]}]) == "all"
    assert not gpus_overlap(None, "all") and not gpus_overlap(frozenset({"0"}), frozenset({"1"}))


# -- a real Docker engine -----------------------------------------------------------------------------------

def _labels(item) -> dict[str, str]:
    attrs = item.attrs
    return (attrs.get("Config") or {}).get("Labels") or attrs.get("Labels") or {}


def leftovers(profile_name: str) -> list[str]:
    """Everything of this profile's compose projects still on the engine: containers, networks, volumes."""
    client = engine()
    prefix = project_name(profile_name, "")
    items = [("container", client.containers.list(all=True, filters={"label": PROJECT_LABEL})),
             ("network", client.networks.list(filters={"label": PROJECT_LABEL})),
             ("volume", client.volumes.list(filters={"label": PROJECT_LABEL}))]
    found = [f"{kind} {i.name}" for kind, group in items for i in group
             if _labels(i)[PROJECT_LABEL].startswith(prefix)]
    found += [f"container {c.name}" for c in client.containers.list(all=True, filters={
        "label": f"{PROFILE_LABEL}={profile_name}"}) if f"container {c.name}" not in found]
    return found


def _remove_projects(prefix: str) -> None:
    client = engine()
    projects = {_labels(c)[PROJECT_LABEL] for c in client.containers.list(all=True, filters={"label": PROJECT_LABEL})}
    projects |= {_labels(n)[PROJECT_LABEL] for n in client.networks.list(filters={"label": PROJECT_LABEL})}
    projects |= {_labels(v)[PROJECT_LABEL] for v in client.volumes.list(filters={"label": PROJECT_LABEL})}
    for project in sorted(p for p in projects if p.startswith(prefix)):
        remove_project(project)


@pytest.fixture
def docker_engine():
    """The engine (a failure says how to start it), the local image, and a clean slate afterwards."""
    client = engine()
    ensure_image(client)
    yield client
    _remove_projects(TEST_PROJECTS)


def _pytest_command(profile: str, reports: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pytest", HEALTH, f"--profile={profile}",
            *(f"--profiles-dir={d}" for d in PROFILE_DIRS), f"--reports-dir={reports}",
            "-p", "no:cacheprovider", "--rootdir", str(REPO), "-c", str(REPO / "pyproject.toml"), *extra]


def run_suite(profile: str, reports: Path, *extra: str, env: dict[str, str] | None = None,
              timeout: float = 900) -> tuple[int, str]:
    """The health suite on `profile` as a user runs it, in a subprocess: (exit code, output)."""
    done = subprocess.run(_pytest_command(profile, reports, *extra), capture_output=True, text=True, cwd=REPO,
                          timeout=timeout, env={**os.environ, **(env or {})})
    return done.returncode, done.stdout + done.stderr


@pytest.mark.docker
def test_compose_refusing_up_is_quoted(docker_engine, tmp_path):
    with pytest.raises(DeploymentError) as failure, \
            deployed(_profile("compose_missing_image"), RunSettings(run_dir=tmp_path, progress=lambda s: None)):
        pass
    message = str(failure.value)
    assert "docker compose up failed" in message
    assert "pytest-vllm/never-built:local" in message, message  # compose's own words
    assert leftovers("compose_missing_image") == []
    assert not list(tmp_path.rglob("compose.env")), "the env file holds the key: it must not outlive `up`"


@pytest.mark.docker
def test_compose_refusing_the_file_is_quoted(docker_engine, tmp_path):
    (tmp_path / "broken.yml").write_text("services:\n  vllm:\n    image: x\n    ports: 8000\n")
    (tmp_path / "compose_broken.yml").write_text(
        "extends: " + str(PROFILES / "cpu_tiny_compose.yml") + "\n"
        "deployment: {port: 8027, compose_files: [broken.yml]}\n")
    profile = load_profile(str(tmp_path / "compose_broken.yml"), PROFILE_DIRS)
    backend = ComposeBackend(profile, RunSettings(run_dir=tmp_path, progress=lambda s: None), "k" * 40)
    try:  # the backend itself, without the preflight lint in front of it
        with pytest.raises(DeploymentError, match=r"docker compose config failed \(exit 1\)[\s\S]*ports"):
            backend.start()
    finally:
        backend.stop()
    assert not list(tmp_path.rglob("compose.env"))


@pytest.mark.docker
def test_port_held_by_another_compose_deployment_is_named(docker_engine, tmp_path):
    holder = docker_engine.containers.run(
        CPU_IMAGE, ["/bin/sleep", "120"], detach=True, network_mode="host", name=None,
        volumes={p: {"bind": p, "mode": "ro"} for p in ("/usr", "/bin", "/lib", "/lib64")},
        labels={PROJECT_LABEL: "pvllm-compose_holder-1", "com.docker.compose.service": "vllm",
                PORT_LABEL: "8028", PROFILE_LABEL: "compose_holder"})
    try:
        with pytest.raises(PreflightError) as failure:
            with deployed(_profile("compose_port_taken"), RunSettings(run_dir=tmp_path, progress=lambda s: None)):
                pass
    finally:
        holder.remove(force=True)
    assert "port 8028 is held by compose project pvllm-compose_holder-1 (service vllm, profile compose_holder" \
        in str(failure.value)
    assert leftovers("compose_port_taken") == []


# -- real vLLM CPU in containers ----------------------------------------------------------------------------

@pytest.mark.docker
@pytest.mark.real
def test_health_suite_passes_through_compose_and_leaves_nothing(docker_engine, tmp_path):
    start = time.monotonic()
    code, out = run_suite("cpu_tiny_compose", tmp_path / "reports")
    project = re.search(r"project (pvllm-cpu_tiny_compose-\w+)", out)
    if project:
        remove_project(project.group(1))  # a failed teardown must not leave it for the next test
    assert code == 0, out[-4000:]
    assert outcome_counts(out) == {"passed": 6, "skipped": 2}, out[-4000:]
    assert project and leftovers("cpu_tiny_compose") == []
    assert not list(tmp_path.rglob("compose.env")), "the env file holds the key: it must not outlive `up`"
    summary = json.loads((tmp_path / "reports" / "latest.json").read_text())["profiles"]["cpu_tiny_compose"]
    assert summary["backend"] == "compose" and Path(summary["log"]).read_text().count("Application startup")
    assert summary["engine_config"]["enable_prefix_caching"] is True
    timings = summary["timings"]
    print(f"\nCOMPOSE cpu_tiny: start->healthy {timings['start_to_healthy_s']:.1f}s, healthy->fixture "
          f"{timings['healthy_to_ready_s'] * 1000:.0f}ms, whole run {time.monotonic() - start:.1f}s")


@pytest.mark.docker
@pytest.mark.real
def test_server_dying_in_its_container_fails_within_seconds_quoting_vllm(docker_engine, tmp_path):
    start = time.monotonic()
    code, out = run_suite("compose_too_long", tmp_path / "reports")
    wall = time.monotonic() - start
    assert code == 1, out[-3000:]
    assert "User-specified max_model_len (65536) is greater than the derived max_model_len" in out, out[-3000:]
    exited = re.search(r"exited with code (\d+) \(OOMKilled: false\), ([\d.]+)s ago", out)
    assert exited, out[-3000:]
    assert exited.group(1) != "0"
    assert float(exited.group(2)) < 2.0
    assert list((tmp_path / "reports").rglob("compose_too_long-*-container.log"))
    assert leftovers("compose_too_long") == []
    print(f"\nCOMPOSE container exit -> failure raised: {exited.group(2)}s; whole run {wall:.1f}s")


@pytest.mark.docker
@pytest.mark.real
def test_unhealthy_container_fails_with_its_health_log(docker_engine, tmp_path):
    code, out = run_suite("compose_unhealthy", tmp_path / "reports")
    assert code == 1, out[-3000:]
    assert "unhealthy: its health check failed" in out, out[-3000:]
    assert "probe says: model not loaded" in out
    assert leftovers("compose_unhealthy") == []


@pytest.mark.docker
@pytest.mark.real
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_interrupt_while_waiting_leaves_nothing(docker_engine, tmp_path, sig):
    proc = subprocess.Popen(_pytest_command("compose_signal", tmp_path / "reports"), cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not docker_engine.containers.list(filters={"label": f"{PROFILE_LABEL}=compose_signal"}):
            assert proc.poll() is None and time.monotonic() < deadline, "the container never came up"
            time.sleep(0.5)
        time.sleep(3)  # well inside the wait for health
        signalled = time.monotonic()
        if sig == signal.SIGINT:
            os.killpg(proc.pid, sig)  # Ctrl-C reaches the terminal's whole process group
        else:
            os.kill(proc.pid, sig)  # CI cancelling the job signals the runner's process
        out, _ = proc.communicate(timeout=120)
        took = time.monotonic() - signalled
        print(f"\nCOMPOSE {sig.name}: run ended {took:.1f}s after the signal")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0, out[-3000:]
    assert leftovers("compose_signal") == [], out[-3000:]
    assert took < interrupting.REAL_EXIT_LIMIT_S, out[-3000:]


@pytest.mark.docker
@pytest.mark.real
def test_interrupt_mid_stream_ends_fast_and_leaves_nothing(docker_engine, tmp_path):
    run = interrupting.interrupt("compose_intr", "stream", tmp_path, PROFILE_DIRS)
    assert leftovers("compose_intr") == [], run.output[-3000:]
    assert not list(run.reports.rglob("compose.env")), "the env file holds the key: it must not outlive the run"
    interrupting.check_real(run, 8029)


@pytest.mark.docker
@pytest.mark.real
def test_two_runs_side_by_side_both_pass(docker_engine, tmp_path):
    procs = [subprocess.Popen(_pytest_command(name, tmp_path / name), cwd=REPO, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for name in ("compose_8021", "compose_8022")]
    outs = []
    try:
        outs = [p.communicate(timeout=900)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, out in zip(procs, outs, strict=True):
        assert p.returncode == 0 and outcome_counts(out) == {"passed": 6, "skipped": 2}, out[-4000:]
    assert leftovers("compose_8021") == [] and leftovers("compose_8022") == []


@pytest.mark.docker
@pytest.mark.real
def test_keep_up_leaves_it_running_and_reuse_attaches(docker_engine, tmp_path):
    key = {"PYTEST_VLLM_API_KEY": "reuse-" + "k" * 40}  # both runs must use the key the server started with
    code, out = run_suite("compose_reuse", tmp_path / "one", "--keep-up", env=key)
    assert code == 0, out[-4000:]
    kept = docker_engine.containers.list(filters={"label": f"{PROFILE_LABEL}=compose_reuse"})
    assert len(kept) == 1, "--keep-up must leave the deployment running"
    code, out = run_suite("compose_reuse", tmp_path / "two", "--reuse", env=key)
    assert code == 0, out[-4000:]
    assert "--reuse, attaching to compose backend, project " + kept[0].labels[PROJECT_LABEL] in out
    still = docker_engine.containers.list(filters={"label": f"{PROFILE_LABEL}=compose_reuse"})
    assert [c.id for c in still] == [kept[0].id], "--reuse must neither restart nor stop it"
