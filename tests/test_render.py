"""The dry run: `render chunked_only_safe` is the seeds' champion command plus only the documented deltas;
a grid file renders every profile in it; nothing is started."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_vllm import render as render_module
from pytest_vllm.profile import load_profile, normalize_flag

from conftest import PROFILES, REPO

# Seeds 003 §4 "Configuration Champion : chunked_only_safe", the compose `command:` as the team ran it.
SEEDS_CHAMPION = [
    "--model", "Qwen/Qwen3-32B-AWQ",
    "--api-key", "${VLLM_API_KEY_MEDIUM}",
    "--served-model-name", "qwen3",
    "--port", "8000",
    "--trust-remote-code",
    "--gpu-memory-utilization", "0.85",
    "--enable-chunked-prefill",
    "--tensor-parallel-size", "2",
    "--rope_scaling", '{"rope_type":"yarn","factor":4.0,"original_max_position_embeddings":32768}',
]
# Every difference, with the reason documented in profiles/medium.yml.
DOCUMENTED_REMOVED = {
    "api-key": "the key goes through VLLM_API_KEY in the compose environment, off the command line",
    "rope-scaling": "vLLM 0.32 (the pinned image) removed it: YaRN goes through --hf-overrides rope_parameters",
}
DOCUMENTED_ADDED = {
    "host": "rendered from deployment.host/port; vLLM's default host is every interface too",
    "hf-overrides": "the rope scaling above, in vLLM 0.32's spelling",
    "kv-cache-dtype": "16-bit KV for 131072 tokens does not fit 24 GiB at 0.85 (vLLM refuses to start)",
    "reasoning-parser": "the reasoning suite (vLLM docs, Reasoning Outputs)",
    "enable-auto-tool-choice": "the tool-calling suite (vLLM docs, Tool Calling)",
    "tool-call-parser": "the tool-calling suite (vLLM docs, Tool Calling)",
}


def flag_map(argv: list[str]) -> dict[str, str | bool]:
    """argv -> {normalized flag: value, or True for a switch}; underscores as vLLM reads them."""
    out: dict[str, str | bool] = {}
    for i, arg in enumerate(argv):
        if arg.startswith("--"):
            value = argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("--") else True
            out[normalize_flag(arg)] = value
    return out


def undocumented_deltas(seed: list[str], rendered: list[str]) -> list[str]:
    s, r = flag_map(seed), flag_map(rendered)
    problems = [f"--{f} dropped without a documented reason" for f in set(s) - set(r) - set(DOCUMENTED_REMOVED)]
    problems += [f"--{f} added without a documented reason" for f in set(r) - set(s) - set(DOCUMENTED_ADDED)]
    problems += [f"--{f} is {r[f]!r}, the seeds ran {s[f]!r}" for f in set(s) & set(r) if s[f] != r[f]]
    return sorted(problems)


def test_render_of_the_champion_is_the_seeds_command_plus_documented_deltas():
    rendering = render_module.render(load_profile("chunked_only_safe", [PROFILES]))
    assert undocumented_deltas(SEEDS_CHAMPION, rendering.argv) == []
    rendered = flag_map(rendering.argv)
    assert set(DOCUMENTED_ADDED) <= set(rendered)  # every documented delta is real, none is stale
    # The rope scaling is the seeds' own, respelled (plus Qwen3's rope_theta the override must repeat).
    seeds_rope = json.loads(flag_map(SEEDS_CHAMPION)["rope-scaling"])
    assert json.loads(rendered["hf-overrides"])["rope_parameters"] == {**seeds_rope, "rope_theta": 1000000}
    assert rendering.defaults["enable-prefix-caching"].startswith("ON")  # what they believed off


@pytest.mark.parametrize("server, expected", [
    ({"enable-prefix-caching": False}, "--no-enable-prefix-caching added"),  # the intent, silently "corrected"
    ({"quantization": "awq"}, "--quantization added"),  # forces the slow non-Marlin kernel
    ({"gpu-memory-utilization": 0.9}, "--gpu-memory-utilization is '0.9', the seeds ran '0.85'"),
])
def test_an_undocumented_change_to_the_champion_is_caught(tmp_path: Path, server: dict, expected: str):
    import yaml
    path = tmp_path / "drifted.yml"
    path.write_text(yaml.safe_dump({"extends": str(PROFILES / "chunked_only_safe.yml"), "server": server}))
    rendering = render_module.render(load_profile(str(path), [PROFILES]))
    assert any(expected in p for p in undocumented_deltas(SEEDS_CHAMPION, rendering.argv))


def test_render_shows_override_env_names_defaults_and_verdict_never_a_value(monkeypatch, capsys):
    monkeypatch.setenv("VLLM_API_KEY_MEDIUM", "a-secret-key-that-must-never-be-printed-0123")
    assert render_module.main(["chunked_only_safe", "--rootdir", str(REPO)]) in (0, 1)
    out = capsys.readouterr().out
    argv = out.split("vLLM argv:")[1].split("compose override")[0]
    assert "--enable-chunked-prefill" in argv and "prefix-caching" not in argv
    assert "medium-qwen3:\n      command:" in out and "pytest-vllm.profile: chunked_only_safe" in out
    assert "VLLM_API_KEY_MEDIUM: the API key" in out
    assert "a-secret-key-that-must-never-be-printed" not in out
    assert "enable-prefix-caching: ON (vLLM V1 default" in out
    assert "\nlint: " in out and "VP006" in out


def test_a_grid_file_renders_every_profile_in_it_baseline_first(capsys):
    assert render_module.main([str(PROFILES / "grids" / "seeds.yml"), "--rootdir", str(REPO)]) in (0, 1)
    headers = [line.split()[1] for line in capsys.readouterr().out.splitlines() if line.startswith("# ")]
    assert headers == ["safe_conservative", "chunked_only_safe", "optimized_balanced", "aggressive_cache",
                       "baseline", "prefix_only_095", "prefix_only_092", "combined_balanced"]


def test_process_profile_renders_without_building_the_tiny_model(monkeypatch, capsys):
    def no_build(*_a, **_k):
        raise AssertionError("render must not build the tiny model")
    monkeypatch.setattr("pytest_vllm.backends.base.ensure_tiny_model", no_build)
    assert render_module.main(["cpu_tiny", "--rootdir", str(REPO)]) == 0
    out = capsys.readouterr().out
    assert "python -m vllm.entrypoints.openai.api_server" in out and "tiny-qwen3-" in out
