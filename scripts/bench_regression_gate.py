"""False alarms and detections of the regression gate, side by side with pytest-benchmark's
`--benchmark-compare-fail=median:10%` deciding on the same samples.

    .venv/bin/python scripts/bench_regression_gate.py [--source synthetic|emulator] [--comparisons 500]

Each comparison is a baseline run and a current run of `--rounds` TTFT samples with noise CV `--cv`:
A/A (nothing changed), A/B +10 % and A/B +20 % (the current run is that much slower).
- synthetic: log-normal samples (fast, many comparisons); `--run-cv` adds a level shift per run, the
  noise within-run samples cannot show (server restarts, machine state);
- emulator: real TTFT series (`pytest_vllm.kv_cache.Series`, long prefix, MISS rounds) measured on the
  emulator, whose latency model injects the noise and the slowdown (slower: ~1 s a comparison).
Our gate: `pytest_vllm.regression` (tolerance 10 %, confidence 95 %), against the last run, and against
the last 3 runs pooled. pytest-benchmark: its own PercentageRegressionCheck on the two medians.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pytest_benchmark.utils import parse_compare_fail  # noqa: E402

from pytest_vllm import kv_cache  # noqa: E402
from pytest_vllm.regression import BaselineRun, check  # noqa: E402

TOLERANCE, CONFIDENCE = 0.10, 0.95
SCENARIOS = (("A/A  no change", 1.0), ("A/B  +10% slower", 1.10), ("A/B  +20% slower", 1.20))
PYTEST_BENCHMARK_RULE = "median:10%"

Sampler = Callable[[float], list[float]]  # slowdown factor -> one run's samples


def _lognormal(rng: random.Random, cv: float) -> float:
    """A factor of mean 1 and coefficient of variation cv."""
    sigma = math.sqrt(math.log(1 + cv * cv))
    return rng.lognormvariate(-sigma * sigma / 2, sigma)


def synthetic(rounds: int, cv: float, seed: int, run_cv: float) -> Sampler:
    rng = random.Random(seed)

    def run(factor: float) -> list[float]:
        level = 0.200 * factor * _lognormal(rng, run_cv)  # a run's own level: server restart, machine state
        return [level * _lognormal(rng, cv) for _ in range(rounds)]

    return run


def emulated(rounds: int, cv: float, seed: int) -> tuple[Sampler, Callable[[], None]]:
    """Series measured over HTTP on emulators whose latency is `factor` x the base model."""
    from pytest_vllm.emulator import EmulatorServer, LatencyModel
    from pytest_vllm.http import VllmClient

    kv_cache.PAUSE_S = 0.0  # no previous answer's tail to wait out on the emulator
    servers: dict[float, tuple[EmulatorServer, VllmClient]] = {}

    def server(factor: float) -> VllmClient:
        if factor not in servers:
            latency = LatencyModel(base_ms=5 * factor, prefill_ms_per_token=0.02 * factor, noise_cv=cv,
                                   seed=seed + int(factor * 100))
            emulator = EmulatorServer(latency=latency, log_path=Path("/dev/null")).start()
            servers[factor] = (emulator, VllmClient(emulator.base_url, None, emulator.model.served_name, timeout=30))
        return servers[factor][1]

    workloads: dict[float, kv_cache.LongPrefix] = {}

    def run(factor: float) -> list[float]:
        client = server(factor)
        if factor not in workloads:
            workloads[factor] = kv_cache.LongPrefix(kv_cache.TextSize(words_per_token=0.7))
        return kv_cache.Series(client, workloads[factor], "miss", rounds).measure().rounds_s

    def close() -> None:
        for emulator, client in servers.values():
            client.close()
            emulator.stop()

    return run, close


def decide(current: list[float], history: list[list[float]]) -> tuple[bool, bool, bool]:
    """(ours vs last run, ours vs last 3 pooled, pytest-benchmark median:10%) — True = fails."""
    runs = [BaselineRun(f"{i:04d}", samples) for i, samples in enumerate(history, 1)]
    ours_last = check("m", current, runs[-1:], tolerance=TOLERANCE, confidence=CONFIDENCE, source="bench").failed
    ours_pooled = check("m", current, runs[-3:], tolerance=TOLERANCE, confidence=CONFIDENCE, source="bench").failed
    pb = parse_compare_fail(PYTEST_BENCHMARK_RULE).fails({"median": statistics.median(current)},
                                                          {"median": statistics.median(history[-1])})
    return ours_last, ours_pooled, bool(pb)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", choices=("synthetic", "emulator"), default="synthetic")
    parser.add_argument("--comparisons", type=int, default=None,
                        help="comparisons per scenario (default: 500 synthetic, 30 emulator; at least 20)")
    parser.add_argument("--rounds", type=int, default=5, help="samples per run (the profiles' kv_rounds; default 5)")
    parser.add_argument("--cv", type=float, default=0.10, help="noise coefficient of variation (default 0.10)")
    parser.add_argument("--run-cv", type=float, default=0.0,
                        help="synthetic only: noise between runs (each run's level varies by this CV; default 0)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    n = args.comparisons or (500 if args.source == "synthetic" else 30)
    if n < 20:
        parser.error("--comparisons must be at least 20")
    close: Callable[[], None] = lambda: None  # noqa: E731
    if args.source == "synthetic":
        sample = synthetic(args.rounds, args.cv, args.seed, args.run_cv)
    else:
        sample, close = emulated(args.rounds, args.cv, args.seed)
    try:
        between = f", between runs CV {args.run_cv:.0%}" if args.run_cv else ""
        print(f"Regression gate, {args.source} TTFT samples: {args.rounds} rounds a run, noise CV {args.cv:.0%}"
              f"{between}, {n} comparisons per scenario; tolerance {TOLERANCE:.0%}, confidence {CONFIDENCE:.0%}")
        print(f"{'scenario':<20}{'ours vs last run':>18}{'ours vs 3 runs pooled':>24}"
              f"{'pytest-benchmark ' + PYTEST_BENCHMARK_RULE:>34}")
        for label, factor in SCENARIOS:
            fails = [0, 0, 0]
            for _ in range(n):
                history = [sample(1.0) for _ in range(3)]
                current = sample(factor)
                for i, failed in enumerate(decide(current, history)):
                    fails[i] += failed
            kind = "false alarms" if factor == 1.0 else "detected"
            cells = [f"{f / n:6.1%} {kind}" for f in fails]
            print(f"{label:<20}{cells[0]:>18}{cells[1]:>24}{cells[2]:>34}")
    finally:
        close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
