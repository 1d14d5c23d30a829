"""summary.md is read by people: tables, durations in words, the effective config next to what the profile
asked, each measurement a row, failures with their diagnosis, and never a JSON or dict dump."""

from __future__ import annotations

from pathlib import Path

from pytest_vllm.reports import RunReport, duration
from pytest_vllm.reports import TestResult as Result  # not a test class


def test_durations_read_as_words():
    assert [duration(s) for s in (None, 0.25, 45, 70, 571, 3725)] == \
        ["—", "0.2 s", "45 s", "1 min 10 s", "9 min 31 s", "1 h 02 min"]


def _report(tmp_path: Path) -> RunReport:
    report = RunReport(run_dir=tmp_path / "runs" / "r1")
    report.profiles["chunked_only_safe"] = {
        "backend": "compose", "endpoint": "http://127.0.0.1:5002", "model": "qwen3", "vllm_version": "0.32.0",
        "engine_config": {"enable_prefix_caching": True, "enable_chunked_prefill": True, "max_seq_len": 131072,
                          "kv_cache_memory_gib": 9.2, "source": "engine start-up log"},
        "server_flags": {"gpu-memory-utilization": 0.85, "enable-chunked-prefill": True},
        "timings": {"start_to_healthy_s": 571.0, "healthy_to_ready_s": 0.4}, "log": "/r/server.log",
        "gpu": {"available": True, "peaks": [{"index": 0, "name": "RTX 4090", "memory_used_mib": 20950,
                                              "memory_total_mib": 24564}]}}
    report.add_measurement("chunked_only_safe", "kv_cache/agent_conversation", {
        "workload": "agent_conversation", "acceleration": 3.22, "interval": [2.9, 3.6], "confidence": 0.95,
        "miss_ms_median": 2928.82, "miss_ms_iqr": 40.0, "hit_ms_median": 908.67, "hit_ms_iqr": 12.0,
        "hit": {"prompt_tokens_median": 2789, "metrics": {"hit_rate": 0.87, "prefix_cache_hits": 138720,
                                                          "prefix_cache_queries": 159530}},
        "prefix_caching": {"effective": "on", "evidence": "/metrics: hits rose"}})
    report.add_measurement("chunked_only_safe", "throughput", {"tokens_per_s": {"median": 34.0}})
    report.results += [
        Result("suites/medium/test_kv_cache.py::test_kv_cache_acceleration[chunked_only_safe-agent]",
                   "chunked_only_safe", "passed", 70.2),
        Result("suites/medium/test_health.py::test_peak_vram_within_the_profile_limit[chunked_only_safe]",
                   "chunked_only_safe", "failed", 0.1,
                   "GPU0 peaked at 23.9 GiB, above 21.59 GiB (thresholds.peak_vram_gib_max)\nfix: lower it")]
    report.deploy_failures["aggressive_cache"] = ("container exited with code 1\n"
                                                  "diagnosis: CUDA out of memory: lower --gpu-memory-utilization")
    return report


def test_summary_md_is_tables_not_dumps(tmp_path: Path):
    md = _report(tmp_path).to_markdown()
    assert "{" not in md and "}" not in md and "[" not in md.replace("[chunked_only_safe", "")
    assert "| start → healthy | 9 min 31 s |" in md
    assert "| prefix caching | **ON** — leaving the flag out does not turn it off | no flag: ON (vLLM V1 default) |" \
        in md
    assert "| GPU memory utilization |" not in md  # not reported by the engine here: no row invented
    assert "| chunked prefill | ON | `enable-chunked-prefill: ON` |" in md
    row = next(line for line in md.splitlines() if line.startswith("| agent_conversation |"))
    assert "2928.8 (IQR 40.0)" in row and "908.7 (IQR 12.0)" in row and "×3.22 (2.90–3.60, 95%)" in row
    assert "87% (138,720 of 159,530)" in row and "| 2789 |" in row and "ON — /metrics" in row
    assert "| throughput | tokens_per_s.median | 34 |" in md
    assert "### Deployment of `aggressive_cache` failed" in md and "diagnosis: CUDA out of memory" in md
    assert "above 21.59 GiB" in md.split("## Failures")[1] and "| failed | 0.1 s |" in md
    assert "| `suites/medium/test_kv_cache.py::test_kv_cache_acceleration[chunked_only_safe-agent]` | " \
           "chunked_only_safe | passed | 1 min 10 s |" in md


def test_summary_is_written_with_latest_copies(tmp_path: Path):
    report = _report(tmp_path)
    report.write()
    assert (tmp_path / "latest.md").read_text() == (report.run_dir / "summary.md").read_text()
