"""Tests that tests/interrupting.py interrupts: each says which phase it is in (a marker file), then stays there.

Not a suite: run only by the interrupt harness, one phase at a time.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

STREAM_TOKENS = 4000  # long enough to be cut mid-stream on any backend


def _announce(phase: str) -> None:
    Path(os.environ["PVLLM_PHASE_MARKER"]).write_text(phase)


def test_quick(vllm_client):
    assert vllm_client.models()


def test_idle(vllm_client):
    _announce("idle")  # healthy, between requests: the run waits on nothing but time
    time.sleep(600)


def test_stream(vllm_client):
    _announce("stream")
    result = vllm_client.stream_chat([{"role": "user", "content": "Count from one to a million."}],
                                     max_tokens=STREAM_TOKENS, ignore_eos=True)
    raise AssertionError(f"the stream was meant to be interrupted, it ended: {result.status}")
