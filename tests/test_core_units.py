"""Pure logic of the core: flag rendering, profile inheritance, engine config, metrics, stream assembly."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from pytest_vllm import engine_config
from pytest_vllm.errors import ProfileError
from pytest_vllm.metrics import Histogram, MetricsFormatError, histogram, info_labels, kind, parse_metrics, total
from pytest_vllm.profile import deep_merge, load_profile, render_flags
from pytest_vllm.streaming import StreamResult, consume_chunk

from conftest import DATA, PROFILES, REPO


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
    assert p.deployment["port"] == 9999 and p.model["path"] == "@tiny"
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


def test_metrics_parser_reads_escapes_types_and_histograms():
    text = ('# TYPE vllm:prompt_tokens_total counter\n'
            'vllm:prompt_tokens_total{model_name="a \\"quoted\\" name, with\\\\ comma"} 5.0\n'
            '# TYPE vllm:ttft_seconds histogram\n'
            'vllm:ttft_seconds_bucket{engine="0",le="0.1"} 1.0\nvllm:ttft_seconds_bucket{engine="0",le="+Inf"} 3.0\n'
            'vllm:ttft_seconds_bucket{engine="1",le="0.1"} 2.0\nvllm:ttft_seconds_bucket{engine="1",le="+Inf"} 2.0\n'
            'vllm:ttft_seconds_sum{engine="0"} 0.5\nvllm:ttft_seconds_sum{engine="1"} 0.1\n'
            'vllm:ttft_seconds_count{engine="0"} 3.0\nvllm:ttft_seconds_count{engine="1"} 2.0\n')
    samples = parse_metrics(text)
    assert samples[0].labels["model_name"] == 'a "quoted" name, with\\ comma'  # the regex parser lost this
    assert kind(samples, "vllm:prompt_tokens_total") == "counter"
    ttft = histogram(samples, "vllm:ttft_seconds")
    assert ttft.buckets == ((0.1, 3.0), (math.inf, 5.0)) and ttft.sum == 0.6 and ttft.count == 5.0
    assert ttft.problems() == []
    assert histogram(samples, "vllm:absent") is None


def test_histogram_problems_name_the_broken_invariant():
    broken = Histogram("h", ((0.1, 3.0), (1.0, 2.0), (math.inf, 4.0)), 1.0, 5.0)
    assert [p.split(":")[1].split("(")[0].strip() for p in broken.problems()] == [
        "bucket counts decrease", '+Inf bucket 4.0 != _count 5.0']


def test_metrics_that_are_not_prometheus_text_say_so():
    with pytest.raises(MetricsFormatError, match="not Prometheus text format"):
        parse_metrics("vllm:prompt_tokens_total{model_name=\"unterminated} 1\n")


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


def test_kv_cache_memory_is_read_per_worker_and_checked_against_the_profile(tmp_path):
    """The seeds' VL criterion "Marge KV cache >= 6 GB/GPU": the smallest worker's figure counts, and the
    health suite's check fails below thresholds.kv_cache_free_gib_min."""
    import importlib.util
    from types import SimpleNamespace

    log = ("(Worker_TP0 pid=1) INFO [gpu_worker.py:760] Available KV cache memory: 9.20 GiB\n"
           "(Worker_TP1 pid=2) INFO [gpu_worker.py:760] Available KV cache memory: 5.75 GiB\n")
    free = engine_config.from_log(log)["kv_cache_memory_gib"]
    assert free == 5.75
    spec = importlib.util.spec_from_file_location("health_suite", REPO / "suites" / "medium" / "test_health.py")
    suite = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(suite)
    deployment = SimpleNamespace(engine_config={"kv_cache_memory_gib": free})
    profile = SimpleNamespace(thresholds={"kv_cache_free_gib_min": 6}, path=tmp_path / "vl.yml")
    with pytest.raises(AssertionError, match=r"5.75 GiB per GPU .* below the 6 GiB required"):
        suite.test_kv_cache_memory_left_after_loading(deployment, profile, lambda *_: None)
    profile.thresholds["kv_cache_free_gib_min"] = 5
    suite.test_kv_cache_memory_left_after_loading(deployment, profile, lambda *_: None)
