"""Stability over time: `pytest suites/medium --soak 30` holds a steady load for 30 minutes and fails on
any error answer, a restart, /health leaving 200, an error line in the server log, or memory growing
beyond `thresholds.soak_memory_growth_mib_max` (pytest_vllm.soak). Without --soak it is skipped.

Requests: `load.prompt_tokens` prompt tokens (each salted: no prefix-cache hits), `load.output_tokens`
output tokens, one every 1 / `load.soak_rate_rps` seconds.
"""

from __future__ import annotations

import pytest

from pytest_vllm.prompts import sized_prompt
from pytest_vllm.session import VllmSession
from pytest_vllm.soak import run_soak

pytestmark = pytest.mark.vllm_soak  # the plugin adds --soak minutes to this test's timeout
SALT = "soak-{:08d}"


def test_steady_load_holds(vllm_client, vllm_deployment, vllm_profile, vllm_report, request):
    minutes = request.config.getoption("soak")
    if not minutes:
        pytest.skip("no --soak MINUTES given: the soak runs only when asked (nightly)")
    load = vllm_profile.load
    first = SALT.format(0)
    template = sized_prompt(vllm_client, int(load.prompt_tokens), salt=first, question="Go on.").messages[0]
    settings = VllmSession.of(request.config).settings
    settings.progress(f"[vllm] soak: {minutes:g} min at {load['soak_rate_rps']} req/s on {vllm_profile.name}")
    result = run_soak(vllm_client, vllm_deployment,
                      lambda i: [{"role": "user", "content": template["content"].replace(first, SALT.format(i + 1))}],
                      minutes=float(minutes), rate_rps=float(load.soak_rate_rps),
                      output_tokens=int(load.output_tokens), progress=settings.progress)
    settings.progress(f"[vllm] {result.line()}")
    vllm_report.add_measurement(vllm_profile.name, "soak", result.as_dict())
    problems = result.problems(vllm_profile.thresholds.soak_memory_growth_mib_max, f"in {vllm_profile.path}")
    assert not problems, "\n".join([*problems, result.line()])
