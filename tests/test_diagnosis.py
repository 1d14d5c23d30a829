"""Failure diagnosis: every cause against real log excerpts (tests/data/logs), and two real vLLM CPU failures."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from pytest_vllm.backends.base import RunSettings, read_tail
from pytest_vllm.backends.process import ProcessBackend
from pytest_vllm.diagnosis import CAUSES, Diagnosis, diagnose
from pytest_vllm.errors import ServerExited
from pytest_vllm.profile import load_profile

from conftest import DATA, PROFILES

LOGS = DATA / "logs"
CASES = yaml.safe_load((LOGS / "cases.yaml").read_text(encoding="utf-8"))["cases"]
# Causes that come from the exit state or the health wait rather than from one log line.
STATE_CAUSES = {"container_oom_killed", "health_timeout_loading", "server_unreachable"}
REAL_PORT = 8041  # this module's real vLLM servers, one at a time


def _diagnose(case: dict) -> Diagnosis | None:
    return diagnose((LOGS / case["file"]).read_text(encoding="utf-8"), exit_code=case.get("exit_code"),
                    oom_killed=case.get("oom_killed", False), timed_out=case.get("timed_out", False))


@pytest.mark.parametrize("case", CASES, ids=[f"{c['cause']}:{c['file']}" for c in CASES])
def test_corpus_case_is_diagnosed(case):
    found = _diagnose(case)
    if case["cause"] is None:
        assert found is None, found and found.render()
        return
    assert found is not None, f"{case['file']}: no diagnosis"
    assert found.cause == case["cause"], found.render()
    assert case["evidence"] in found.evidence, found.render()
    assert case.get("title", "") in found.title
    assert case.get("fix", "") in found.fix
    assert found.fix and found.title


def test_every_cause_has_a_corpus_case_and_every_file_a_case():
    covered = {c["cause"] for c in CASES}
    assert {c.id for c in CAUSES} | STATE_CAUSES <= covered
    used = {c["file"] for c in CASES}
    on_disk = {p.name for p in LOGS.glob("*.log")}
    assert used == on_disk


def test_evidence_is_a_line_of_the_log_quoted_as_it_is():
    for case in CASES:
        found = _diagnose(case)
        if found is None or found.cause == "container_oom_killed":  # its evidence is the exit state
            continue
        lines = [line.strip() for line in (LOGS / case["file"]).read_text(encoding="utf-8").splitlines()]
        quoted = found.evidence.removesuffix(" ...")
        assert any(line.startswith(quoted) for line in lines), (case["file"], found.evidence)


def test_root_cause_wins_over_the_engine_wrapper_error():
    # vLLM logs the real error, then "Engine core initialization failed. See root cause above" last.
    found = _diagnose(next(c for c in CASES if c["cause"] == "kv_cache_insufficient"))
    assert found and "To serve at least one request" in found.evidence
    assert "768" in found.fix  # vLLM's own estimate of the length that fits


def test_log_error_beats_the_timeout_and_timeout_names_the_phase():
    text = (LOGS / "port_in_use__vllm_bind.log").read_text()
    found = diagnose(text, timed_out=True)
    assert found and found.cause == "port_in_use"
    seed = (LOGS / "health_timeout_loading__seed001_cuda_graphs.log").read_text()
    later = seed + "INFO 10-16 05:12:30 model_runner.py:1460] still capturing\n"
    found = diagnose(later, timed_out=True)
    assert found and found.title == "health timeout while still in CUDA graph capture for 386 s"
    assert "--enforce-eager" in found.fix and "535 s" in found.fix


def test_timeout_with_an_empty_log_and_unknown_failure():
    assert diagnose("", timed_out=True).title == "health timeout before vLLM logged its start-up"
    assert diagnose("INFO something harmless\n", exit_code=1) is None


def test_oom_killed_without_log():
    found = diagnose("", exit_code=137, oom_killed=True)
    assert found and found.cause == "container_oom_killed" and "(no log)" in found.evidence
    assert diagnose("", exit_code=137) is None  # SIGKILL alone is not an OOM: docker stop does the same


def test_bad_json_fix_removes_the_escaping():
    found = diagnose("api_server.py: error: argument --hf-overrides: Value {\\\"a\\\":1} cannot be converted "
                     "to <function loads at 0x1>.")
    assert found and found.cause == "bad_json_flag"
    assert "--hf-overrides '{\"a\":1}'" in found.fix


def test_render_has_title_evidence_fix():
    found = _diagnose(next(c for c in CASES if c["cause"] == "invalid_choice"))
    assert found
    lines = found.render().splitlines()
    assert lines[0].endswith("[invalid_choice]") and lines[1].startswith("  evidence: ")
    assert lines[2].startswith("  fix: use one of: 'data', 'weights'")


def test_ansi_colours_are_ignored():
    found = diagnose("\x1b[1;31mERROR\x1b[0m torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2 GiB")
    assert found and found.cause == "cuda_oom" and "\x1b" not in found.evidence


# --- real vLLM CPU failures, end to end -------------------------------------------------------------------


def _profile(tmp_path: Path, server: str) -> Path:
    path = tmp_path / "diag.yml"
    path.write_text(f"extends: {PROFILES / 'cpu_tiny.yml'}\ndeployment:\n  port: {REAL_PORT}\n"
                    f"server:\n{server}", encoding="utf-8")
    return path


@pytest.mark.real
def test_real_invalid_choice_through_the_process_backend(tmp_path):
    profile = load_profile(str(_profile(tmp_path, "  mm-encoder-tp-mode: replicate\n")), [PROFILES])
    backend = ProcessBackend(profile, RunSettings(run_dir=tmp_path), api_key=None)
    backend.start()
    try:
        deadline = time.monotonic() + 120
        with pytest.raises(ServerExited):
            while time.monotonic() < deadline:
                backend.check_alive()
                time.sleep(0.5)
        code = backend.proc.returncode if backend.proc else None
        found = diagnose(backend.log_path.read_text(encoding="utf-8"), exit_code=code)
    finally:
        backend.stop()
    assert code == 2
    assert found and found.cause == "invalid_choice", found and found.render()
    assert found.title == "--mm-encoder-tp-mode replicate is not one of vLLM's choices"
    assert "'data', 'weights'" in found.fix


@pytest.mark.real
def test_real_port_taken(tmp_path):
    # The process backend refuses a taken port itself; here vLLM meets it, as under compose or by hand.
    profile = load_profile(str(_profile(tmp_path, "  max-model-len: 8192\n")), [PROFILES])
    backend = ProcessBackend(profile, RunSettings(run_dir=tmp_path), api_key=None)
    log_path = tmp_path / "server.log"
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", REAL_PORT))
        holder.listen()
        with log_path.open("wb") as log:
            proc = subprocess.Popen(backend.command(), stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=backend.environment(), start_new_session=True)
        try:
            code = proc.wait(180)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
    found = diagnose(log_path.read_text(encoding="utf-8"), exit_code=code)
    assert code != 0, read_tail(log_path, 20)
    assert found and found.cause == "port_in_use", read_tail(log_path, 20)
    assert "Address already in use" in found.evidence
