"""Pure logic of the core: flag rendering, profile inheritance, engine config, metrics, stream assembly."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pytest_vllm import engine_config
from pytest_vllm.backends.base import RunSettings
from pytest_vllm.backends.registry import KINDS
from pytest_vllm.deployment import make_backend
from pytest_vllm.errors import ProfileError
from pytest_vllm.metrics import info_labels, parse_metrics, total
from pytest_vllm.profile import deep_merge, external_profile, load_profile, render_flags
from pytest_vllm.streaming import StreamResult, consume_chunk

from conftest import DATA, PROFILES


def test_flags_render_as_vllm_expects():
    args = render_flags({"enable-prefix-caching": False, "enable_chunked_prefill": True,
                         "rope-scaling": {"rope_type": "yarn", "factor": 4.0}, "max-num-seqs": 32,
                         "dropped": None})
    assert args == ["--no-enable-prefix-caching", "--enable-chunked-prefill",
                    "--rope-scaling", '{"rope_type":"yarn","factor":4.0}', "--max-num-seqs", "32"]


def test_child_wins_and_null_deletes():
    merged = deep_merge({"server": {"a": 1, "b": 2}}, {"server": {"b": None, "c": 3}})
    assert merged == {"server": {"a": 1, "c": 3}}


def test_extends_by_relative_path(tmp_path: Path):
    child = tmp_path / "child.yml"
    child.write_text(f"extends: {PROFILES / 'cpu_tiny.yml'}\ndeployment:\n  port: 9999\n")
    p = load_profile(str(child), [PROFILES])
    assert p.deployment.port == 9999 and p.model.path == "@tiny"
    assert p.chain == ("child", "cpu_tiny")


def test_wrong_type_names_key_and_meaning(tmp_path: Path):
    bad = tmp_path / "t.yml"
    bad.write_text("model:\n  path: x\ndeployment:\n  port: '80a'\n")
    with pytest.raises(ProfileError, match=r"deployment.port: '80a' is a str, expected int"):
        load_profile(str(bad), [])


def test_engine_config_from_a_real_vllm_start_up_log():
    config = engine_config.from_log((DATA / "engine_start.log").read_text())
    assert config["vllm_version"] == "0.32.0"
    assert config["enable_prefix_caching"] is True and config["enable_chunked_prefill"] is True
    assert config["max_seq_len"] == 8192 and config["tensor_parallel_size"] == 1
    assert config["requested_args"]["tool_call_parser"] == "hermes"
    assert "enable_prefix_caching=True" in engine_config.summary(config)


def test_engine_config_from_metrics_when_no_log():
    samples = parse_metrics('vllm:cache_config_info{block_size="16",enable_prefix_caching="False"} 1.0\n')
    config = engine_config.from_server(samples, [{"id": "m", "max_model_len": 4096}])
    assert config == {"enable_prefix_caching": False, "block_size": 16, "max_seq_len": 4096,
                      "source": "/metrics and /v1/models"}


def test_metrics_parsing_sums_label_sets():
    text = ("# HELP x\nvllm:prefix_cache_hits_total{engine=\"0\",model_name=\"m\"} 3.0\n"
            "vllm:prefix_cache_hits_total{engine=\"1\",model_name=\"m\"} 4.0\nvllm:other 1e3\n")
    samples = parse_metrics(text)
    assert total(samples, "vllm:prefix_cache_hits_total") == 7.0
    assert total(samples, "vllm:other") == 1000.0
    assert info_labels(samples, "vllm:prefix_cache_hits_total")["engine"] == "0"


def test_stream_assembly_counts_reasoning_as_first_token_and_joins_tool_calls():
    r = StreamResult(status=200)
    consume_chunk(r, {"choices": [{"delta": {"role": "assistant", "content": ""}}]}, 0.010)
    consume_chunk(r, {"choices": [{"delta": {"reasoning_content": "think"}}]}, 0.050)
    consume_chunk(r, {"choices": [{"delta": {"reasoning": " more"}}]}, 0.060)
    consume_chunk(r, {"choices": [{"delta": {"tool_calls": [
        {"index": 0, "id": "c1", "function": {"name": "get_weather", "arguments": '{"ci'}}]}}]}, 0.080)
    consume_chunk(r, {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Paris"}'}}]},
                                   "finish_reason": "tool_calls"}]}, 0.090)
    assert r.ttft_s == 0.050  # the role-only chunk does not count, the reasoning delta does
    assert r.reasoning == "think more"
    assert r.tool_calls[0]["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert r.finish_reason == "tool_calls"
    assert r.itl_s == pytest.approx([0.010, 0.020, 0.010])


def test_backend_kinds_say_what_they_are_and_only_our_servers_are_ours(tmp_path: Path):
    for name, kind in KINDS.items():
        assert kind.backend_class().kind is kind and kind.name == name
    settings = RunSettings(run_dir=tmp_path)
    external = make_backend(external_profile("http://127.0.0.1:9"), settings, None)
    assert external.name == "external" and not external.ours  # never linted, started or stopped
    process = make_backend(load_profile("cpu_tiny", [PROFILES]), settings, None)
    assert process.ours and process.base_url == "http://127.0.0.1:8000" == settings.endpoint(process.profile)
    process.attached = True  # --reuse found it running
    assert not process.ours
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.run_dir = tmp_path / "elsewhere"  # type: ignore[misc]
