"""`python -m pytest_vllm.emulator`: a process that serves, stops on SIGTERM, and dies on fault 'crash'."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import httpx
import pytest

from conftest import free_port


def _start(*args: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "pytest_vllm.emulator", "--port", str(port), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"the emulator did not come up: {proc.communicate()[0].decode()[-2000:]}")


def test_serves_then_stops_on_sigterm():
    proc, url = _start("--served-model-name", "m", "--text-only")
    try:
        assert httpx.get(url + "/v1/models").json()["data"][0]["id"] == "m"
    finally:
        proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert b"a test instrument, NOT vLLM" in proc.stdout.read()


def test_fault_crash_ends_the_process():
    proc, url = _start("--fault", "crash")
    with pytest.raises(httpx.TransportError):
        httpx.post(url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}, timeout=5)
    assert proc.wait(timeout=10) == 70


def test_unknown_fault_is_a_usage_error():
    result = subprocess.run([sys.executable, "-m", "pytest_vllm.emulator", "--fault", "oops"], capture_output=True)
    assert result.returncode == 2 and b"unknown emulator fault 'oops'" in result.stderr
