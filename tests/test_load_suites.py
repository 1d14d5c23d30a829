"""The suites of issue 14 (endpoints, long context, throughput, vision TTFT, soak) pass on a good server
and fail, saying why, on the fault or the broken profile each check exists for.

They run as a user runs them (pytest in a subprocess, `--base-url` on an emulator started here), like
test_suites_vs_emulator.py does for the functional suites.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from pytest_vllm.emulator import EmulatedModel, EmulatorServer, LatencyModel

from conftest import PROFILES, SUITES

API_KEY = "emulator-test-key-0123456789abcdefghij"
MEDIUM = SUITES / "medium"
ENDPOINTS, LONG, THROUGHPUT, SOAK = (str(MEDIUM / f"test_{n}.py") for n in ("endpoints", "long_context",
                                                                            "throughput", "soak"))
VISION_TTFT = str(SUITES / "medium_vl" / "test_vision_ttft.py")
FAST = LatencyModel(base_ms=1.0, prefill_ms_per_token=0.01, decode_ms_per_token=0.2)
# Small enough to keep each run to seconds: 4k context, two levels, short requests.
LOAD = {"long_context_fractions": [0.5, 0.9], "concurrency": [1, 4], "requests_per_level": 8, "prompt_tokens": 64,
        "output_tokens": 16, "soak_rate_rps": 4, "vision_rounds": 2}


def _profile(tmp_path: Path, context: int, **sections) -> Path:
    data = {"extends": str(PROFILES / "emulator.yml"), "deployment": {"backend": "external"},
            "model": {"max_model_len": context}, "server": {"max-model-len": context}, "load": LOAD}
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    path = tmp_path / "load_suites.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def _run(run_suite, tmp_path: Path, files: list[str], *options: str, faults: tuple[str, ...] = (),
         degrade_after_s: float = 120.0, context: int = 4096, **sections) -> tuple[dict[str, int], str]:
    with EmulatorServer(faults=list(faults), api_key=API_KEY, latency=FAST, model=EmulatedModel(max_model_len=context),
                        degrade_after_s=degrade_after_s, log_path=tmp_path / "emulator.log") as emulator:
        result = run_suite(*files, f"--profile={_profile(tmp_path, context, **sections)}",
                           f"--base-url={emulator.base_url}",
                           f"--api-key={API_KEY}", "--no-history", "-rfs", *options, timeout=300)
    return result.parseoutcomes(), result.stdout.str()


def test_good_server_passes_every_new_suite(run_suite, tmp_path):
    outcomes, out = _run(run_suite, tmp_path, [ENDPOINTS, LONG, THROUGHPUT, VISION_TTFT, SOAK], "--soak=0.1")
    assert not outcomes.get("failed") and not outcomes.get("error"), out[-3000:]
    # 5 endpoint checks (embeddings skipped: not claimed), 2 + 1 long context, 2 levels, 3 image counts, soak
    assert outcomes.get("passed") == 4 + 3 + 2 + 3 + 1, out[-3000:]
    assert re.search(r"throughput \S+ c=4 +8/8 ok .* out tok/s +TTFT median", out), out[-3000:]
    assert re.search(r"soak 0.1 min at 4 req/s: (\d+)/\1 ok", out), out[-3000:]


@pytest.mark.parametrize(("files", "fault", "sections", "says"), [
    ([LONG], "context_truncated", {"thresholds": {}}, r"did not retrieve the fact hidden 25% into a \d+-token prompt"),
    ([LONG], "context_limit_not_enforced", {}, r"was accepted \(billed \d+\) although the profile claims a context "
                                               r"of 4096"),
    ([LONG], None, {"thresholds": {"long_context_ttft_ms_max": 0.01}}, r"thresholds.long_context_ttft_ms_max"),
    ([ENDPOINTS], "http_5xx", {}, r"/v1/completions refused a plain request: .*answered 500"),
    ([ENDPOINTS], None, {"capabilities": {"embeddings": True}}, r"the profile claims embeddings .* /v1/embeddings "
                                                                r"answered 404"),
    ([THROUGHPUT], "http_5xx", {}, r"8 of 8 requests failed at concurrency 1; first: HTTP 500"),
    ([THROUGHPUT], None, {"thresholds": {"output_tokens_per_s_min": 1e9}}, r"output tokens/s < 1000000000"),
    ([THROUGHPUT], None, {"thresholds": {"load_ttft_p99_ms_max": 0.01}}, r"p99 TTFT .* > 0.01 ms"),
    ([VISION_TTFT], None, {"thresholds": {"vision_ttft_ms_max": 0.01}}, r"median TTFT with 3 images is"),
], ids=["needle_lost", "over_limit_accepted", "long_ttft_limit", "completions_500", "embeddings_missing",
        "throughput_500", "throughput_min", "throughput_ttft_p99", "vision_ttft_limit"])
def test_each_check_fails_on_its_fault(run_suite, tmp_path, files, fault, sections, says):
    outcomes, out = _run(run_suite, tmp_path, files, faults=(fault,) if fault else (), **sections)
    assert outcomes.get("failed"), f"no failure on {fault or sections}:\n{out[-3000:]}"
    assert re.search(says, out), f"the failure does not say /{says}/:\n{out[-3000:]}"


def test_soak_fails_when_the_server_degrades(run_suite, tmp_path):
    outcomes, out = _run(run_suite, tmp_path, [SOAK], "--soak=0.15", faults=("degrading",), degrade_after_s=3)
    assert outcomes.get("failed") == 1, out[-3000:]
    assert re.search(r"\d+ of \d+ requests failed; first: request \d+ at [\d:]+: HTTP 503", out), out[-3000:]
    assert "/health left 200" in out, out[-3000:]


def test_soak_is_skipped_without_the_option(run_suite, tmp_path):
    outcomes, out = _run(run_suite, tmp_path, [SOAK])
    assert outcomes.get("skipped") == 1 and "no --soak MINUTES given" in out, out[-2000:]


def test_french_cases_run_only_where_the_profile_selects_french(run_suite, tmp_path):
    files = [str(MEDIUM / "test_reasoning.py"), str(MEDIUM / "test_tools.py")]
    french = " or ".join(f"{name}_fr" for name in ("croissants", "train", "veste", "migration_plan", "incident_plan",
                                                   "weather_paris", "currency", "two_cities"))
    # 32k context: the reasoning cases ask for 4096 output tokens
    both, out = _run(run_suite, tmp_path, files, "-k", french, faults=("wrong_answer",), context=32768)
    assert both.get("failed") == 5 + 3 and "wrong answer to 'croissants_fr'" in out, out[-3000:]
    english, out = _run(run_suite, tmp_path, files, "-k", french, context=32768,
                        capabilities={"languages": ["en"]})
    assert english.get("skipped") == 5 + 3 + 3 + 1 and "does not select language 'fr'" in out, out[-3000:]
