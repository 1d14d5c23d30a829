#!/usr/bin/env python3
"""Print what pytest-vllm's GPU telemetry reads on this machine: run it once on the GPU host.

    python scripts/gpu_telemetry_check.py [--seconds 5] [--interval 0.5]

Needs only Python 3.11 and nvidia-ml-py (`pip install nvidia-ml-py`); no network, no vLLM, no Docker.
Prints the snapshot (GPUs, memory, utilisation, processes), then samples for a few seconds and prints the
peak per GPU and the timeline, as the test session's report header and JSON report would show them.
Without a GPU or driver it prints why telemetry is unavailable and exits 0 (that is the expected case there).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository's pytest_vllm, not installed

from pytest_vllm.telemetry import Sampler, snapshot  # noqa: E402 - after the path tweak above


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="how long to sample (default 5)")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between samples (default 0.5)")
    args = parser.parse_args()

    snap = snapshot()
    print(snap.header())
    print(json.dumps(snap.to_dict(), indent=2))
    if not snap.available:
        return 0
    sampler = Sampler(interval_s=args.interval).start()
    try:
        time.sleep(args.seconds)
    finally:
        result = sampler.stop()
    print(result.header())
    print(json.dumps(result.to_dict(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
