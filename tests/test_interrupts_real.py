"""Ctrl-C on real vLLM CPU, both backends: the run ends within seconds and leaves nothing (issue 16).

One server start per backend (interrupted mid-stream, vLLM busy; compose: test_compose_backend.py), plus the
start-up phase with a double Ctrl-C (compose: a single signal, test_compose_backend.py). Every phase on both
backends, with figures: scripts/measure_interrupts.py.
"""

from __future__ import annotations

import signal

import pytest

import interrupting
from conftest import DATA, PROFILES

pytestmark = pytest.mark.real
PROFILE_DIRS = [DATA / "profiles", PROFILES]


def test_process_interrupted_mid_stream_ends_fast_leaving_nothing(tmp_path):
    interrupting.check_real(interrupting.interrupt("cpu_tiny_intr", "stream", tmp_path, PROFILE_DIRS), 8064)


def test_process_interrupted_while_starting_a_second_ctrl_c_skips_the_grace(tmp_path):
    run = interrupting.interrupt("cpu_tiny_intr", "starting", tmp_path, PROFILE_DIRS,
                                 signals=(signal.SIGINT, signal.SIGINT))
    interrupting.check_real(run, 8064)
    assert run.exit_s < 2.0 + 0.3, "the second Ctrl-C, 0.3 s after the first, must not wait for the 2 s grace"
