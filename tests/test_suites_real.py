"""The functional suites against real vLLM CPU (tiny random model): protocol checks pass, the rest skip.

Slow (a vLLM start each, about a minute on 2 cores); port 8031; each run starts and stops its own server.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from conftest import PROFILES, SUITES

pytestmark = pytest.mark.real
SUITE_FILES = [str(SUITES / "medium" / "test_reasoning.py"), str(SUITES / "medium" / "test_tools.py"),
               str(SUITES / "medium_vl" / "test_vision.py")]


def _profile(tmp_path: Path, **server) -> Path:
    path = tmp_path / "tiny_8031.yml"
    path.write_text(yaml.safe_dump({"extends": str(PROFILES / "cpu_tiny.yml"), "deployment": {"port": 8031},
                                    "server": server}))
    return path


def test_protocol_checks_pass_and_the_rest_is_skipped_with_the_reason(run_suite, tmp_path):
    result = run_suite(*SUITE_FILES, f"--profile={_profile(tmp_path)}", "-rA")
    out = result.stdout.str()
    for name in ("test_reasoning_is_returned_apart_from_the_content", "test_thinking_can_be_switched_off_per_request",
                 "test_forced_tool_call_comes_back_as_a_valid_call", "test_streamed_tool_call_assembles_to_the_non",
                 "test_auto_tool_choice_answers_a_valid_call_or_plain_text", "test_a_tool_result_fed_back_is_answered",
                 "test_a_text_only_deployment_refuses_images_clearly"):
        assert re.search(rf"PASSED \S+::{name}", out), f"{name} did not pass:\n{out[-4000:]}"
    assert "does not claim meaningful answers (capabilities.semantic" in out
    assert "does not claim vision (capabilities.vision)" in out
    result.assert_outcomes(passed=10, skipped=21)


def test_tool_suite_names_the_flags_when_vllm_has_no_tool_parser(run_suite, tmp_path):
    from pytest_vllm.backends.base import RunSettings
    from pytest_vllm.deployment import deployed
    from pytest_vllm.profile import load_profile

    profile = _profile(tmp_path, **{"enable-auto-tool-choice": None, "tool-call-parser": None})
    # Preflight refuses to start a deployment that claims tools without the flags (lint rule VP002)...
    refused = run_suite(SUITE_FILES[1], f"--profile={profile}").stdout.str()
    assert "preflight refused" in refused and "VP002" in refused
    # ...but one already running that way (what --base-url points at) must fail with the flags to add.
    bare = tmp_path / "bare.yml"
    bare.write_text(yaml.safe_dump({"extends": str(profile), "capabilities": {"tool_parser": None}}))
    settings = RunSettings(reports_dir=tmp_path / "server", api_key="k" * 40, progress=lambda line: None)
    with deployed(load_profile(str(bare), [PROFILES]), settings) as server:
        result = run_suite(SUITE_FILES[1], f"--profile={profile}", f"--base-url={server.base_url}",
                           f"--api-key={server.api_key}")
    out = result.stdout.str()
    assert "add --enable-auto-tool-choice --tool-call-parser hermes" in out
    assert "tool_choice=\"required\" requires --tool-call-parser to be set" in out  # vLLM's own words, quoted
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) >= 5 and not outcomes.get("passed"), out[-3000:]
