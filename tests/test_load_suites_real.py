"""The issue-14 suites against real vLLM CPU (tiny model, cpu_tiny's own settings): long context at 8k,
the throughput sweep with its printed figures, completions and tokenize, and a short soak.

One vLLM start on port 8035 for all of them (slow: about two minutes on 2 cores). The nightly soak is
long (`--soak 30`); here half a minute, to keep CI modest.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from conftest import PROFILES, SUITES

pytestmark = pytest.mark.real
PORT = 8035
FILES = [str(SUITES / "medium" / f"test_{name}.py") for name in ("endpoints", "long_context", "throughput", "soak")]


def test_long_context_throughput_endpoints_and_a_short_soak_pass(run_suite, tmp_path: Path):
    profile = tmp_path / "tiny_8035.yml"
    profile.write_text(yaml.safe_dump({"extends": str(PROFILES / "cpu_tiny.yml"), "deployment": {"port": PORT}}))
    result = run_suite(*FILES, f"--profile={profile}", "--soak=0.5", "--no-history", "-rA")
    out = result.stdout.str()
    for name in ("test_long_prompt_is_answered[50%", "test_long_prompt_is_answered[90%",
                 "test_prompt_over_the_context_is_refused_with_400", "test_throughput_at_concurrency[c4",
                 "test_completion_returns_text_usage_and_finish_reason", "test_streamed_completion_assembles_and_ends",
                 "test_tokenize_detokenize_round_trip", "test_steady_load_holds"):
        assert re.search(rf"PASSED \S+::{re.escape(name)}", out), f"{name} did not pass:\n{out[-4000:]}"
    assert re.search(r"throughput \S+ c=4 +16/16 ok .* out tok/s", out), out[-4000:]
    assert re.search(r"soak 0.5 min at 1 req/s: (\d+)/\1 ok", out), out[-4000:]
    result.assert_outcomes(passed=10, skipped=1)  # embeddings: cpu_tiny is not a pooling model


def test_embeddings_pass_on_the_tiny_model_served_as_an_embedding_model(run_suite, tmp_path: Path):
    """The pass path of the embeddings check on real vLLM: the same tiny checkpoint, served by vLLM as a pooling
    model (`--runner pooling --convert embed`), with the profile claiming embeddings."""
    profile = tmp_path / "tiny_embed.yml"
    profile.write_text(yaml.safe_dump({"extends": str(PROFILES / "cpu_tiny.yml"), "deployment": {"port": PORT},
                                       "server": {"runner": "pooling", "convert": "embed"},
                                       "capabilities": {"embeddings": True}}))
    result = run_suite(str(SUITES / "medium" / "test_endpoints.py"), "-k", "embeddings", f"--profile={profile}",
                       "--no-history", "-rA")
    out = result.stdout.str()
    assert re.search(r"PASSED \S+::test_embeddings_are_finite_vectors_of_one_size", out), out[-4000:]
    result.assert_outcomes(passed=1)
