"""False alarms, detections and rounds used by the regression gates, side by side with pytest-benchmark's
`--benchmark-compare-fail=median:10%` deciding on the same samples.

    .venv/bin/python scripts/bench_regression_gate.py [--source synthetic|emulator] [--comparisons 1000]
        [--histories 10] [--cv 0.10] [--run-cv 0,0.05] [--tolerance 0.10] [--rounds 5] [--rounds-max 40]

Nights follow one another as in the nightly job: each night measures a MISS and a HIT series, each gated by
the sequential TTFT gate against the last 5 passing nights (`--baseline-runs`; rounds added while undecided),
then the acceleration gate on both; a night that regressed does not become a baseline. Each history starts
with `DRIFT_RUNS` unchanged nights. For each comparison, one A/A night (nothing changed) extends the history,
and two A/B nights are judged against the same history: HIT
rounds +10 % and +20 % slower (a slower cache path; MISS unchanged). Columns:
- pytest-benchmark `median:10%`: the HIT series' median against the previous night's (what
  `--benchmark-compare-fail=median:10%` decides on the stored data);
- ours, 5 rounds fixed: the gate as it was (one look at 95 %, first 5 rounds, 3 nights pooled);
- ours, sequential TTFT: `pytest_vllm.regression.check` on the HIT series, looks every `--rounds` up to
  `--rounds-max`;
- acceleration: `pytest_vllm.regression.check_acceleration`, drift-immune;
- whole night: the run fails on any of MISS, HIT or acceleration (what the suite reports).
Sources: synthetic (log-normal samples, noise CV `--cv` within a run; `--run-cv` a whole-run drift shared by
MISS and HIT of a night, several values give several tables) or emulator (real series measured over HTTP on
emulators whose latency is x1, x1.1, x1.2; no drift; ~1 s a night).
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pytest_benchmark.utils import parse_compare_fail  # noqa: E402

from pytest_vllm.regression import (  # noqa: E402
    DRIFT_RUNS,
    UNDECIDED,
    BaselineRun,
    Drift,
    Looks,
    check,
    check_acceleration,
    drift_history,
    gate_confidence,
)

CONFIDENCE = gate_confidence(0.95)  # a third of 5 %: the workload's three gates share it
HISTORY_RUNS = 5  # --baseline-runs
FIXED_BASELINE_RUNS = 3  # the gate as it was: its --baseline-runs
PYTEST_BENCHMARK_RULE = "median:10%"
MISS_S, HIT_S = 0.500, 0.050
SCENARIOS = (("A/A  no change", 1.0), ("A/B  HIT +10%", 1.10), ("A/B  HIT +20%", 1.20))
CACHES = ("miss", "hit")

Draw = Callable[[str, int], list[float]]  # (cache, rounds) -> that many more samples of this night
NightSource = Callable[[float], Draw]  # HIT slowdown factor -> a new night


def _lognormal(rng: random.Random, cv: float) -> float:
    """A factor of mean 1 and coefficient of variation cv."""
    sigma = math.sqrt(math.log(1 + cv * cv))
    return rng.lognormvariate(-sigma * sigma / 2, sigma)


def synthetic(cv: float, run_cv: float, seed: int) -> NightSource:
    rng = random.Random(seed)

    def night(factor: float) -> Draw:
        level = _lognormal(rng, run_cv)  # the night's own level (machine load, server start): MISS and HIT alike
        base = {"miss": MISS_S * level, "hit": HIT_S * level * factor}
        return lambda cache, k: [base[cache] * _lognormal(rng, cv) for _ in range(k)]

    return night


def emulated(cv: float, seed: int) -> tuple[NightSource, Callable[[], None]]:
    """Series measured over HTTP on emulators whose latency is `factor` x the base model."""
    from pytest_vllm.emulator import EmulatorServer, LatencyModel
    from pytest_vllm.http import VllmClient
    from pytest_vllm.kv_cache import LongPrefix, Series, TextSize, series

    series.PAUSE_S = 0.0  # no previous answer's tail to wait out on the emulator
    servers: dict[float, tuple[EmulatorServer, VllmClient]] = {}

    def client(factor: float) -> VllmClient:
        if factor not in servers:
            latency = LatencyModel(base_ms=5 * factor, prefill_ms_per_token=0.02 * factor, noise_cv=cv,
                                   seed=seed + int(factor * 100))
            emulator = EmulatorServer(latency=latency, log_path=Path("/dev/null")).start()
            servers[factor] = (emulator, VllmClient(emulator.base_url, None, emulator.model.served_name, timeout=30))
        return servers[factor][1]

    def night(factor: float) -> Draw:
        workload = LongPrefix(TextSize(words_per_token=0.7))
        return lambda cache, k: Series(client(1.0 if cache == "miss" else factor), workload, cache,
                                       k).measure().rounds_s

    def close() -> None:
        for emulator, c in servers.values():
            c.close()
            emulator.stop()

    return night, close


@dataclass
class Night:
    samples: dict[str, list[float]]
    fails: dict[str, bool]  # pytest-benchmark, fixed, sequential, acceleration, night

    def baseline(self, cache: str, label: str) -> BaselineRun:
        status = "regressed" if self.fails["night"] else "ok"
        return BaselineRun(label, self.samples[cache], {"regression": {"status": status}})


def judge(draw: Draw, history: list[Night], looks: Looks, tolerance: float, acc_tolerance: float) -> Night:
    """One night through the gates, as `pytest_vllm.history` runs them."""
    passed = [n for n in history if not n.fails["night"]]
    usable = passed[-HISTORY_RUNS:]
    samples, failed = {}, {}
    for cache in CACHES:
        baseline = [n.baseline(cache, f"{i:04d}") for i, n in enumerate(usable)]
        drift = Drift.of([run.samples for run in drift_history([n.baseline(cache, "") for n in history])])
        got = draw(cache, looks.rounds)
        while True:
            verdict = check(cache, got, baseline, tolerance=tolerance, looks=looks, source="bench",
                            final=len(got) >= looks.rounds_max, drift=drift)
            if verdict.status != UNDECIDED:
                break
            got += draw(cache, looks.more(len(got)))
        samples[cache], failed[cache] = got, verdict.failed
    pairs = [(n.baseline("miss", "m"), n.baseline("hit", "h")) for n in usable]
    acceleration = check_acceleration("a", samples["miss"], samples["hit"], pairs, tolerance=acc_tolerance,
                                      confidence=CONFIDENCE, source="bench").failed
    fixed = looks.rounds
    old = check("hit", samples["hit"][:fixed], [n.baseline("hit", "o") for n in passed[-FIXED_BASELINE_RUNS:]],
                tolerance=tolerance, looks=Looks(fixed, fixed, 0.95), source="bench")
    old_failed = old.failed and old.comparison is not None and old.comparison.change > tolerance  # its old rule
    pb = bool(usable) and bool(parse_compare_fail(PYTEST_BENCHMARK_RULE).fails(
        {"median": statistics.median(samples["hit"])}, {"median": statistics.median(usable[-1].samples["hit"])}))
    return Night(samples, {"pytest-benchmark": pb, "fixed": old_failed, "sequential": failed["hit"],
                           "acceleration": acceleration,
                           "night": failed["miss"] or failed["hit"] or acceleration})


COLUMNS = (("pytest-benchmark", f"pytest-benchmark {PYTEST_BENCHMARK_RULE}"), ("fixed", "ours 5 rounds fixed"),
           ("sequential", "ours sequential TTFT"), ("acceleration", "acceleration gate"),
           ("night", "whole night"))


def history_nights(source: NightSource, n: int, looks: Looks, tolerance: float, acc_tolerance: float
                   ) -> dict[str, list[Night]]:
    """One history of `n` comparisons: the nights judged in each scenario."""
    history: list[Night] = []
    for _ in range(max(HISTORY_RUNS, DRIFT_RUNS)):  # unchanged nights first: the baselines and the drift history
        history.append(judge(source(1.0), history, looks, tolerance, acc_tolerance))
    judged: dict[str, list[Night]] = {label: [] for label, _ in SCENARIOS}
    for _ in range(n):
        nights = {label: judge(source(factor), history, looks, tolerance, acc_tolerance) for label, factor in SCENARIOS}
        for label, night in nights.items():
            judged[label].append(night)
        history.append(nights[SCENARIOS[0][0]])  # only the unchanged night joins the history
    return judged


def table(sources: Sequence[NightSource], n: int, looks: Looks, tolerance: float, acc_tolerance: float) -> None:
    """`n` comparisons split evenly over independent histories, one per source: the nights of one history are
    correlated (they share baselines and the drift estimate), so one long history measures one luck."""
    histories = [history_nights(source, n // len(sources), looks, tolerance, acc_tolerance) for source in sources]
    header = f"{'scenario':<16}" + "".join(f"{title:>28}" for _, title in COLUMNS) + f"{'HIT rounds median':>20}"
    if len(sources) > 1:
        header += f"{'whole night, per history':>28}"
    print(header)
    for label, factor in SCENARIOS:
        nights = [night for judged in histories for night in judged[label]]
        kind = "false alarms" if factor == 1.0 else "failed"
        cells = "".join(f"{_failed(nights, c):>15.1%} {kind:<12}" for c, _ in COLUMNS)
        line = f"{label:<16}{cells}{statistics.median(len(night.samples['hit']) for night in nights):>20g}"
        if len(sources) > 1:
            spread = [_failed(judged[label], "night") for judged in histories]
            line += f"{min(spread):>19.1%} to {max(spread):.1%}"
        print(line)


def _failed(nights: Sequence[Night], column: str) -> float:
    return sum(night.fails[column] for night in nights) / len(nights)


def main() -> int:
    global HISTORY_RUNS  # a script's setting, read by judge() and table()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", choices=("synthetic", "emulator"), default="synthetic")
    parser.add_argument("--comparisons", type=int, default=None,
                        help="comparisons per scenario (default: 1000 synthetic, 30 emulator; at least 20)")
    parser.add_argument("--rounds", type=int, default=5, help="first look (the profiles' kv_rounds; default 5)")
    parser.add_argument("--rounds-max", type=int, default=40, help="last look (kv_rounds_max; default 40)")
    parser.add_argument("--cv", type=float, default=0.10, help="noise CV within a run (default 0.10)")
    parser.add_argument("--run-cv", default="0,0.05",
                        help="synthetic: whole-run drift CVs, one table each (default 0,0.05)")
    parser.add_argument("--tolerance", type=float, default=0.10, help="regression_tolerance (default 0.10)")
    parser.add_argument("--acceleration-tolerance", type=float, default=0.10,
                        help="acceleration_tolerance (default 0.10)")
    parser.add_argument("--baseline-runs", type=int, default=HISTORY_RUNS,
                        help="earlier passing nights pooled as the baseline (the plugin's --baseline-runs; default 3)")
    parser.add_argument("--histories", type=int, default=10,
                        help="synthetic: independent histories the comparisons are split over (default 10)")
    parser.add_argument("--seed", type=int, default=1, help="first history's seed (the others follow)")
    args = parser.parse_args()
    HISTORY_RUNS = args.baseline_runs
    n = args.comparisons or (1000 if args.source == "synthetic" else 30)
    if n < 20:
        parser.error("--comparisons must be at least 20")
    if args.source == "synthetic" and not 1 <= args.histories <= n:
        parser.error(f"--histories must be between 1 and the comparisons ({n})")
    looks = Looks(args.rounds, args.rounds_max, CONFIDENCE)
    print(f"Regression gates, {args.source} TTFT samples: noise CV {args.cv:.0%} within a run, looks at "
          f"{args.rounds}..{args.rounds_max} rounds ({looks.count} looks, {looks.per_look_confidence:.2%} each), "
          f"tolerance {args.tolerance:.0%} (TTFT) / {args.acceleration_tolerance:.0%} (acceleration), "
          f"{n} comparisons per scenario")
    if args.source == "emulator":
        source, close = emulated(args.cv, args.seed)
        try:
            table([source], n, looks, args.tolerance, args.acceleration_tolerance)
        finally:
            close()
        return 0
    for run_cv in (float(v) for v in args.run_cv.split(",")):
        print(f"\nwhole-run drift CV {run_cv:.0%}")
        sources = [synthetic(args.cv, run_cv, args.seed + i) for i in range(args.histories)]
        table(sources, n, looks, args.tolerance, args.acceleration_tolerance)
    return 0


if __name__ == "__main__":
    sys.exit(main())
