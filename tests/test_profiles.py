"""The shipped profiles load and say what the seeds meant; bad profile input gets one clear message."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pytest_vllm.errors import ProfileError
from pytest_vllm.profile import known_profiles, load_profile, render_flags
from pytest_vllm.profile_schema import BEGIN, END, HardwareSection, TimeoutsSection, markdown_table, write_readme

from conftest import PROFILES, REPO

# The seeds' grid configurations: gpu-memory-utilization, prefix caching, chunked prefill, as their
# script wrote them (seeds 002 §2.1): true -> the flag, false -> the flag left out (None: V1's default, ON).
GRID = {
    "chunked_only_safe": (0.85, None, True),
    "safe_conservative": (0.85, None, None),
    "optimized_balanced": (0.90, True, True),
    "aggressive_cache": (0.95, True, True),
    "baseline": (0.95, True, None),
    "prefix_only_092": (0.92, True, None),
    "prefix_only_095": (0.95, True, None),
    "combined_balanced": (0.95, True, True),
}


@pytest.mark.parametrize("name", sorted(known_profiles([PROFILES])))
def test_every_shipped_profile_loads_and_validates(name: str):
    profile = load_profile(name, [PROFILES])
    assert profile.name == name and profile.description
    if profile.backend == "compose":
        for f in profile.deployment.compose_files:
            assert profile.relative(f).is_file(), f


def test_medium_is_the_seeds_production_deployment():
    p = load_profile("medium", [PROFILES])
    assert (p.model.path, p.served_name, p.model.quantization) == ("Qwen/Qwen3-32B-AWQ", "qwen3", "awq")
    assert p.backend == "compose" and p.deployment.service == "medium-qwen3" and p.deployment.port == 5002
    assert p.auth.api_key_env == "VLLM_API_KEY_MEDIUM"
    assert p.hardware == HardwareSection(gpus=2, gpu_memory_gib=24, device_ids=["0", "1"])
    assert p.capabilities.reasoning_parser == "qwen3" and p.capabilities.tool_parser == "hermes"
    args = render_flags(p.server)
    assert args[args.index("--tensor-parallel-size") + 1] == "2"
    assert "--max-model-len" not in args  # as the seeds ran it: 32768 x yarn 4 = model.max_model_len
    assert not any("prefix-caching" in a for a in args)  # as they ran it: V1's default, caching ON
    assert "--quantization" not in args  # vLLM picks awq_marlin from the checkpoint; `awq` forces the slow kernel
    assert args[args.index("--kv-cache-dtype") + 1] == "fp8"  # 131072 tokens of 16-bit KV do not fit 24 GiB
    assert '"rope_type":"yarn"' in args[args.index("--hf-overrides") + 1]


@pytest.mark.parametrize("name", sorted(GRID))
def test_grid_profiles_write_the_flags_as_the_seeds_script_did(name: str):
    memory, prefix, chunked = GRID[name]
    p = load_profile(name, [PROFILES])
    assert p.chain == (name, "medium")
    assert p.flag("gpu-memory-utilization") == memory
    assert p.flag("enable-prefix-caching") is prefix and p.flag("enable-chunked-prefill") is chunked


def test_the_champion_as_meant_turns_caching_really_off_and_expects_no_acceleration():
    p = load_profile("chunked_only_safe_caching_off", [PROFILES])
    assert p.chain[1] == "chunked_only_safe" and p.flag("enable-prefix-caching") is False
    assert "--no-enable-prefix-caching" in render_flags(p.server)
    assert not {"kv_cache_acceleration_min", "prefix_cache_hit_rate_min", "ttft_hit_ms_max"} & set(p.thresholds)


def test_medium_vl_is_the_awq_build_the_seeds_ended_on():
    p = load_profile("medium_vl", [PROFILES])
    assert p.model.path == "cpatonn/Qwen3-VL-32B-Thinking-AWQ-4bit"
    assert p.model.quantization == "compressed-tensors" and p.model.multimodal is True
    assert p.capabilities.vision is True and p.capabilities.max_images == 3
    assert p.capabilities.tool_parser is None  # null removed what medium claims
    args = render_flags(p.server)
    assert "--quantization" not in args and "--hf-overrides" not in args and "--tool-call-parser" not in args
    assert "--gpu-memory-utilization" not in args  # not in the seeds: vLLM's default
    assert args[args.index("--max-model-len") + 1] == "8192" == str(p.model["max_model_len"])  # their log
    assert p.thresholds["peak_vram_gib_max"] * 1024 > 24068  # the seeds measured 24,068 MiB and accepted it
    assert p.thresholds["kv_cache_free_gib_min"] == 6 and p.timeouts["health"] == 900
    assert args[args.index("--limit-mm-per-prompt") + 1] == '{"image":3,"video":0}'
    assert args[args.index("--mm-encoder-tp-mode") + 1] == "weights"
    assert p.auth.api_key_env == "VLLM_API_KEY_MEDIUM_VL" and p.deployment.port == 5003


def test_env_examples_exist_for_each_env_file_and_hold_no_key():
    for name in ("medium", "medium_vl"):
        p = load_profile(name, [PROFILES])
        example = p.relative(p.deployment.env_file + ".example")
        text = example.read_text()
        assert f"{p.auth.api_key_env}=replace-with" in text


# --- bad input: one clear message naming file, key and fix ------------------------------------------------

def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(ProfileError) as info:
        load_profile("mediun", [PROFILES])
    message = str(info.value)
    assert "unknown profile 'mediun'" in message
    assert "did you mean medium" in message and "known profiles:" in message and "chunked_only_safe" in message


def test_yaml_syntax_error_shows_file_and_line(tmp_path: Path):
    path = write(tmp_path, "broken.yml", "extends: medium\nserver:\n  max-num-seqs: [64\n")
    with pytest.raises(ProfileError, match=r"broken\.yml:4:\d+: YAML syntax error"):
        load_profile(str(path), [PROFILES])


def test_unknown_key_suggests_the_right_one(tmp_path: Path):
    path = write(tmp_path, "typo.yml", "extends: medium\ncapabilities:\n  reasoning_parsr: qwen3\n")
    with pytest.raises(ProfileError) as info:
        load_profile(str(path), [PROFILES])
    assert info.value.key == "capabilities.reasoning_parsr"
    assert "unknown key 'reasoning_parsr'" in str(info.value) and "did you mean 'reasoning_parser'" in info.value.fix


def test_unknown_top_level_key(tmp_path: Path):
    path = write(tmp_path, "top.yml", "extends: medium\nservers:\n  max-num-seqs: 64\n")
    with pytest.raises(ProfileError, match="unknown key 'servers'") as info:
        load_profile(str(path), [PROFILES])
    assert "did you mean 'server'" in info.value.fix


def test_missing_key_names_it_and_the_backend(tmp_path: Path):
    path = write(tmp_path, "nocompose.yml", "deployment:\n  backend: compose\n  service: vllm\nmodel:\n  path: m\n")
    with pytest.raises(ProfileError) as info:
        load_profile(str(path), [PROFILES])
    assert info.value.key == "deployment.compose_files"
    assert "missing key 'deployment.compose_files' (required by the compose backend)" in str(info.value)


def test_wrong_type_names_the_key(tmp_path: Path):
    path = write(tmp_path, "types.yml", "extends: medium\nhardware:\n  gpus: two\n")
    with pytest.raises(ProfileError, match="'two' is a str, expected int") as info:
        load_profile(str(path), [PROFILES])
    assert info.value.key == "hardware.gpus"


def test_kv_rounds_max_below_kv_rounds_is_refused(tmp_path: Path):
    path = write(tmp_path, "rounds.yml", "extends: medium\nthresholds:\n  kv_rounds: 50\n")
    with pytest.raises(ProfileError, match="kv_rounds_max 40 is below kv_rounds 50") as info:
        load_profile(str(path), [PROFILES])
    assert info.value.key == "thresholds.kv_rounds_max" and "at least kv_rounds" in info.value.fix


def test_extends_cycle_shows_the_chain(tmp_path: Path):
    write(tmp_path, "a.yml", "extends: b\n")
    write(tmp_path, "b.yml", "extends: a\n")
    with pytest.raises(ProfileError, match=r"'extends' cycle: a -> b -> a") as info:
        load_profile(str(tmp_path / "a.yml"), [tmp_path])
    assert info.value.key == "extends" and info.value.fix


def test_extends_unknown_parent(tmp_path: Path):
    path = write(tmp_path, "orphan.yml", "extends: no_such_parent\n")
    with pytest.raises(ProfileError, match="'extends: no_such_parent' names no profile") as info:
        load_profile(str(path), [PROFILES])
    assert "known profiles:" in info.value.fix


def test_null_deletes_an_inherited_flag(tmp_path: Path):
    path = write(tmp_path, "nulls.yml", "extends: medium\nserver:\n  hf-overrides: null\n")
    assert "hf-overrides" not in load_profile(str(path), [PROFILES]).server


def test_readme_profile_table_is_the_schema(tmp_path: Path):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert f"{BEGIN}\n{markdown_table()}{END}" in readme, \
        "README's profile table differs from pytest_vllm/profile_schema.py: run python -m pytest_vllm " \
        "profile-schema --write README.md"
    stale = tmp_path / "README.md"
    stale.write_text(readme.replace("| `timeouts.health` | `900` |", "| `timeouts.health` | `600` |"))
    assert write_readme(stale) and stale.read_text(encoding="utf-8") == readme


def test_sections_are_typed_with_their_defaults_and_read_as_mappings(tmp_path: Path):
    path = tmp_path / "p.yml"
    path.write_text("model:\n  path: m\ncapabilities:\n  tool_parser: hermes\ntimeouts:\n  health: 60\n")
    p = load_profile(str(path), [])
    assert p.timeouts == TimeoutsSection(health=60, test=300, request=120) and p.timeouts.health == 60
    assert p.deployment.port == 8000 and p.thresholds.kv_rounds == 5 and p.capabilities.semantic is True
    # the mapping view holds the keys that are set, as the former dict sections did
    assert "tool_parser" in p.capabilities and "reasoning_parser" not in p.capabilities
    assert p.capabilities.get("tool_parser") == "hermes" and p.thresholds.get("ttft_hit_ms_max") is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.timeouts.health = 1  # type: ignore[misc]
