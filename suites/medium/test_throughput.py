"""Throughput under concurrency: a sweep over the profile's concurrency levels (`load.concurrency`,
default 1, 4, 16), with the figures and definitions of vLLM's own benchmark (pytest_vllm.load).

Each level sends `load.requests_per_level` chat completions (default 4 x the level, at least 8) of
`load.prompt_tokens` prompt tokens and exactly `load.output_tokens` output tokens, every prompt salted
so none is served from the prefix cache. Output tokens/s, requests/s, TTFT, TPOT and ITL percentiles go
to the report and the terminal; each level's TTFTs go to the history and its regression gate.
Limits from the profile: `thresholds.load_ttft_p99_ms_max` and `load_itl_p99_ms_max` at every level,
`output_tokens_per_s_min` at the highest one. Any failed request fails the level.
"""

from __future__ import annotations

import secrets

import pytest

from pytest_vllm.load import run_level
from pytest_vllm.plugin import selected_profiles
from pytest_vllm.prompts import sized_prompt
from pytest_vllm.session import VllmSession

QUESTION = "Continue the list of words above."
SALT = "sweep-{:08x}"  # fixed width: every salted copy has the sized prompt's token count, or within one


def pytest_generate_tests(metafunc):
    if "concurrency" in metafunc.fixturenames:
        levels = sorted({int(c) for p in selected_profiles(metafunc.config) for c in p.load.concurrency or []})
        metafunc.parametrize("concurrency", levels, ids=[f"c{c}" for c in levels])


@pytest.fixture(scope="module")
def sweep_prompt(vllm_client, vllm_profile) -> str:
    """One prompt of load.prompt_tokens, sized once; each request gets it with its own salt. A warm-up
    request first, as vLLM's benchmark sends one (its "initial test run")."""
    first = SALT.format(0)
    sized = sized_prompt(vllm_client, int(vllm_profile.load.prompt_tokens), salt=first, question=QUESTION)
    vllm_client.stream_chat(sized.messages, max_tokens=4, temperature=0)  # its failure, if any, shows in the levels
    return sized.messages[0]["content"].replace(first, "{salt}", 1)


def _requests(profile, concurrency: int) -> int:
    return int(profile.load.requests_per_level or max(8, 4 * concurrency))


def test_throughput_at_concurrency(vllm_client, vllm_profile, vllm_report, vllm_ttft, sweep_prompt, concurrency,
                                   request):
    if concurrency not in (vllm_profile.load.concurrency or []):
        pytest.skip(f"profile '{vllm_profile.name}' does not sweep concurrency {concurrency} (load.concurrency)")
    salt = secrets.randbits(32)
    prompts = [[{"role": "user", "content": sweep_prompt.replace("{salt}", SALT.format((salt + i) % 2 ** 32))}]
               for i in range(_requests(vllm_profile, concurrency))]
    result = run_level(vllm_client, prompts, concurrency, int(vllm_profile.load.output_tokens))
    VllmSession.of(request.config).settings.progress(f"[vllm] throughput {vllm_profile.name} {result.line()}")
    assert not result.errors, (
        f"{len(result.errors)} of {result.requests} requests failed at concurrency {concurrency}; first: "
        f"{result.errors[0]}")
    vllm_ttft.record_samples(f"throughput/c{concurrency}/ttft", result.ttft_s, result.as_dict())
    figures, problems = result.as_dict(), []
    thresholds, where = vllm_profile.thresholds, f"in {vllm_profile.path}"
    for key, measured in (("load_ttft_p99_ms_max", figures["ttft_ms"]["p99"]),
                          ("load_itl_p99_ms_max", figures["itl_ms"]["p99"])):
        if thresholds.get(key) is not None and measured > thresholds[key]:
            problems.append(f"p99 {key.split('_')[1].upper()} {measured:.1f} ms > {thresholds[key]} ms "
                            f"(thresholds.{key} {where})")
    minimum = thresholds.get("output_tokens_per_s_min")
    if minimum is not None and concurrency == max(vllm_profile.load.concurrency) \
            and result.output_throughput < minimum:
        problems.append(f"{result.output_throughput:.1f} output tokens/s < {minimum} "
                        f"(thresholds.output_tokens_per_s_min {where})")
    assert not problems, f"concurrency {concurrency}: " + "; ".join(problems) + f"\n{result.line()}"
