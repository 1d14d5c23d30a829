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


def test_process_interrupted_twice_while_starting_ends_fast_leaving_nothing(tmp_path):
    # The second Ctrl-C lands in the stop (shielded): it must neither abandon the server nor wait. That it skips
    # the grace is shown on a server that ignores SIGTERM: tests/test_interrupts.py.
    # 0.1 s apart, as a person presses twice: a starting server stops in well under 0.3 s, so a later second
    # signal would land after the run has ended (a race the harness, not the product, would then measure).
    run = interrupting.interrupt("cpu_tiny_intr", "starting", tmp_path, PROFILE_DIRS,
                                 signals=(signal.SIGINT, signal.SIGINT), between_s=0.1)
    interrupting.check_real(run, 8064)
