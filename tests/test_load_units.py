"""Units of issue 14: vLLM-benchmark figures, prompt sizing, the soak's verdicts, the emulator's new routes."""

from __future__ import annotations

import os
import random
import time

import httpx
import numpy
import pytest

from pytest_vllm.emulator import EmulatorServer
from pytest_vllm.emulator.endpoints import Vocabulary, text_tokens
from pytest_vllm.http import VllmClient
from pytest_vllm.load import LevelResult, percentile, run_level
from pytest_vllm.prompts import sized_prompt
from pytest_vllm.soak import LOG_ERROR, SoakResult, process_group_rss_mib
from pytest_vllm.streaming import StreamResult


@pytest.mark.parametrize("n", [1, 2, 7, 100])
def test_percentile_is_numpys_default(n):
    rng = random.Random(n)
    values = [rng.expovariate(1.0) for _ in range(n)]
    for p in (0, 1, 50, 90, 99, 100):
        assert percentile(values, p) == pytest.approx(float(numpy.percentile(values, p)), rel=1e-12)
    assert percentile([], 99) == 0.0  # vLLM: np.percentile(x or 0, p)


def test_level_figures_follow_vllm_definitions():
    level = LevelResult(concurrency=2, requests=2, duration_s=2.0)
    for offset in (0.0, 0.1):
        stream = StreamResult(status=200, ttft_s=0.1 + offset, text_times=[0.1 + offset, 0.2 + offset, 0.4 + offset],
                              usage={"completion_tokens": 3, "prompt_tokens": 10})
        level.add(stream)
    level.add(StreamResult(status=500, error_body='{"error": {"message": "boom"}}'))
    assert level.ttft_s == [0.1, pytest.approx(0.2)]
    assert level.tpot_s == [pytest.approx(0.15)] * 2  # (E2EL - TTFT) / (tokens - 1)
    assert level.itl_s == [pytest.approx(0.1), pytest.approx(0.2)] * 2
    assert level.e2el_s == [0.4, pytest.approx(0.5)]
    assert level.output_throughput == 3.0 and level.request_throughput == 1.0  # tokens and requests / duration
    assert level.errors == ["HTTP 500: boom"]
    assert level.as_dict()["total_token_throughput"] == 13.0


def test_sized_prompt_hits_the_target_and_a_level_runs(tmp_path):
    with EmulatorServer(log_path=tmp_path / "emulator.log") as emulator:
        client = VllmClient(emulator.base_url, None, "emulated-qwen3")
        prompt = sized_prompt(client, 1000, salt="unit", question="Go on.", needle="The code is 123456.")
        assert abs(prompt.tokens - 1000) <= 10 and "The code is 123456." in prompt.messages[0]["content"]
        level = run_level(client, [prompt.messages] * 6, concurrency=3, output_tokens=5)
        client.close()
    assert level.completed == 6 and not level.errors and level.output_tokens == 30


@pytest.mark.parametrize(("samples", "limit", "leaks"), [
    ([100, 101, 99, 100, 102, 100, 101], 50, False),
    ([100, 101, 99, 180, 190, 200, 210], 50, True),   # first three ~100, last three ~200
    ([100, 101, 99, 180, 190, 200, 210], None, False),  # no limit: reported, not judged
])
def test_soak_memory_growth_is_judged_on_medians_of_the_ends(samples, limit, leaks):
    result = SoakResult(minutes=1, rate_rps=1, sent=10, ttft_s=[0.1] * 10, memory_mib={"server RSS": samples})
    problems = result.problems(limit, "in p.yml")
    assert bool(problems) is leaks
    if leaks:
        assert "server RSS grew by 100 MiB" in problems[0] and "soak_memory_growth_mib_max in p.yml" in problems[0]


def test_soak_names_every_kind_of_failure():
    result = SoakResult(minutes=1, rate_rps=1, sent=3, ttft_s=[0.1], errors=["request 1: HTTP 503", "x"],
                        health=["01:00:00 503"], restarts=["ServerExited: died"], log_errors=["ERROR boom"],
                        health_polls=4)
    text = "\n".join(result.problems(None, ""))
    for said in ("2 of 3 requests failed", "/health left 200 1 time(s) in 4 polls", "the server restarted",
                 "1 error line(s) in the server log"):
        assert said in text


@pytest.mark.parametrize(("line", "error"), [
    ("(EngineCore_DP0 pid=12) ERROR 12-02 01:02:03 [core.py:710] EngineCore encountered a fatal error.", True),
    ("ERROR 12-02 01:02:03 [serving_chat.py:1] Error in chat completion stream generator.", True),
    ("Traceback (most recent call last):", True),
    ("(APIServer pid=11) INFO:     127.0.0.1:4000 - \"POST /v1/chat/completions HTTP/1.1\" 200 OK", False),
    ("(APIServer pid=11) WARNING 12-02 01:02:03 [x.py:1] ERRORS_ARE_FINE is not a level", False),
])
def test_log_error_lines(line, error):
    assert bool(LOG_ERROR.search(line)) is error


def test_process_group_rss_counts_this_group():
    assert process_group_rss_mib(os.getpgid(0)) > 1
    assert process_group_rss_mib(2 ** 22 + 12345) is None


def test_vocabulary_round_trips_text():
    text = "Déploiement validé : « ok »,  twice  spaced\n"
    vocabulary = Vocabulary()
    assert "".join(text_tokens(text)) == text
    assert vocabulary.text(vocabulary.ids(text_tokens(text))) == text
    with pytest.raises(ValueError, match="out of range"):
        vocabulary.text([10 ** 6])


def test_emulator_degrades_after_its_first_generation_request(tmp_path):
    with EmulatorServer(faults=["degrading"], degrade_after_s=0.2, log_path=tmp_path / "e.log") as emulator:
        http = httpx.Client(base_url=emulator.base_url)
        assert http.get("/health").status_code == 200
        chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        assert http.post("/v1/chat/completions", json=chat).status_code == 200
        time.sleep(0.3)
        assert http.get("/health").status_code == 503
        assert http.post("/v1/completions", json={"prompt": "hi"}).status_code == 503
        http.close()
