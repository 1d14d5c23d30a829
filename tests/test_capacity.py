"""Preflight capacity: the seeds' deployments on 2x RTX 4090, from the profile, the lint CLI, and NVML (faked)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from test_telemetry import FakeNvml, seed004

from pytest_vllm import lint_cli
from pytest_vllm.capacity import (
    Hardware,
    capacity_findings,
    capacity_rule,
    hardware_from_snapshot,
    request_from_profile,
    resolve,
)
from pytest_vllm.lint import RULES, Severity, lint_target
from pytest_vllm.lint.model_facts import facts
from pytest_vllm.profile import load_profile
from pytest_vllm.telemetry import snapshot

# The seeds' GPUs: RTX 4090, 24564 MiB = 23.99 GiB each.
SEED_HW = "hardware: {gpus: 2, gpu_memory_gib: 24, device_ids: ['0', '1']}"


def profile_file(tmp_path: Path, model: str, server: str, hardware: str = SEED_HW, name: str = "p") -> Path:
    path = tmp_path / f"{name}.yml"
    path.write_text(textwrap.dedent(f"""\
        deployment: {{backend: process, port: 8041}}
        model: {model}
        server: {server}
        {hardware}
        """), encoding="utf-8")
    return path


def load(path: Path):
    return load_profile(str(path), [path.parent])


# seed 004, mission 19: the FP8 checkpoint, 128k context with an fp8 KV cache ("Using fp8 data type to store kv cache")
VL_SERVER = "{tensor-parallel-size: 2, gpu-memory-utilization: 0.90, kv-cache-dtype: fp8, max-model-len: 131072}"
VL_FP8 = ("{path: Qwen/Qwen3-VL-32B-Instruct-FP8, quantization: fp8, parameters_b: 33.4, max_model_len: 131072, "
          "multimodal: true}")
# seed 004, mission 20: the community AWQ 4-bit checkpoint (compressed-tensors format)
VL_AWQ = ("{path: cpatonn/Qwen3-VL-32B-Thinking-AWQ-4bit, quantization: compressed-tensors, parameters_b: 33.4, "
          "max_model_len: 131072, multimodal: true}")
# seeds 001/003: Qwen3-32B-AWQ, TP 2, 0.85, 128k
MEDIUM = "{path: Qwen/Qwen3-32B-AWQ, quantization: awq, parameters_b: 32.8, max_model_len: 131072}"


def only(findings, rule):
    picked = [f for f in findings if f.rule == rule]
    assert len(picked) == 1, [str(f) for f in findings]
    return picked[0]


def test_seed_fp8_vl_is_refused_with_the_numbers(tmp_path):
    findings = capacity_findings(load(profile_file(tmp_path, VL_FP8, VL_SERVER)))
    refusal = only(findings, "VG002")
    assert refusal.severity is Severity.ERROR and refusal.key == "server.max-model-len"
    print("\nFP8:", refusal)
    for number in ("budget 21.6 GiB/GPU", "weights 16.6", "overhead 2.5", "= 2.5 GiB for the KV cache",
                   "one 131072-token request needs 8.0 GiB/GPU", "64 KiB/token/GPU, fp8 KV"):
        assert number in refusal.message
    assert refusal.fix.startswith("a 4-bit AWQ/GPTQ checkpoint (weights 9.6 GiB/GPU, KV room 9.5 GiB)")
    assert "max_model_len <= 40960" in refusal.fix


def test_seed_awq_vl_is_accepted(tmp_path):
    findings = capacity_findings(load(profile_file(tmp_path, VL_AWQ, VL_SERVER)))
    assert not [f for f in findings if f.blocking], [str(f) for f in findings]
    fits = only(findings, "VG003")
    print("\nAWQ:", fits)
    # seed 004 measured 9.20 GiB of KV cache per GPU for this deployment
    assert "= 9.5 GiB for the KV cache" in fits.message and "read as 4-bit from the model id" in fits.message


def test_medium_128k_needs_an_fp8_kv_cache(tmp_path):
    bf16_kv = "{tensor-parallel-size: 2, gpu-memory-utilization: 0.85, max-model-len: 131072}"
    refusal = only(capacity_findings(load(profile_file(tmp_path, MEDIUM, bf16_kv))), "VG002")
    assert "one 131072-token request needs 16.0 GiB/GPU (128 KiB/token/GPU, 16-bit KV)" in refusal.message
    assert refusal.fix.startswith("server.kv-cache-dtype: fp8")
    fp8_kv = bf16_kv.replace("}", ", kv-cache-dtype: fp8}")
    assert only(capacity_findings(load(profile_file(tmp_path, MEDIUM, fp8_kv))), "VG003").severity is Severity.INFO


def test_weights_match_the_seeds_measurement(tmp_path):
    # seed 001: Qwen2.5-32B-Instruct-AWQ, TP 2: "Loading model weights took 9.0792 GiB" (per GPU)
    model = "{path: Qwen/Qwen2.5-32B-Instruct-AWQ, quantization: awq, parameters_b: 32.8, max_model_len: 32768}"
    server = "{tensor-parallel-size: 2, gpu-memory-utilization: 0.9}"
    d = resolve(request_from_profile(load(profile_file(tmp_path, model, server))))
    assert not isinstance(d, str)
    assert d.estimate(23.99).weights == pytest.approx(9.0792, rel=0.03)


def test_bf16_32b_weights_do_not_fit(tmp_path):
    model = "{path: Qwen/Qwen3-32B, quantization: bf16, max_model_len: 32768}"
    refusal = only(capacity_findings(load(profile_file(tmp_path, model, "{tensor-parallel-size: 2}"))), "VG001")
    assert "weights 30.5 GiB/GPU" in refusal.message and "32.8B params" in refusal.message  # size from the table
    assert "a 4-bit AWQ/GPTQ checkpoint" in refusal.fix


def test_unknown_model_uses_rough_rules_and_says_so(tmp_path):
    model = "{path: acme/llm-13b, quantization: gptq, parameters_b: 13, max_model_len: 8192}"
    fits = only(capacity_findings(load(profile_file(tmp_path, model, "{}", "hardware: {gpus: 1, "
                                                                          "gpu_memory_gib: 24}"))), "VG003")
    assert "architecture unknown" in fits.message


@pytest.mark.parametrize(("model", "hardware", "says"), [
    ("{path: acme/x, quantization: compressed-tensors, parameters_b: 7, max_model_len: 4096}", SEED_HW, "bit width"),
    ("{path: acme/x, quantization: awq, max_model_len: 4096}", SEED_HW, "parameters_b"),
    ("{path: acme/x, quantization: awq, parameters_b: 7}", SEED_HW, "no max_model_len"),
    ("{path: acme/x, quantization: awq, parameters_b: 7, max_model_len: 4096}", "", "no GPU target"),
])
def test_capacity_not_checked_says_why(tmp_path, model, hardware, says):
    finding = only(capacity_findings(load(profile_file(tmp_path, model, "{}", hardware))), "VG006")
    assert says in finding.message and finding.severity is Severity.INFO


def test_max_model_len_defaults_to_the_checkpoint(tmp_path):
    model = "{path: Qwen/Qwen3-32B-AWQ, quantization: awq}"
    d = resolve(request_from_profile(load(profile_file(tmp_path, model, "{}"))))
    assert not isinstance(d, str) and d.max_model_len == 40960 and "checkpoint's 40960" in d.notes[0]


def test_architecture_table_keys():
    assert facts("Qwen/Qwen3-VL-32B-Instruct-FP8").vision_params_b > 0
    assert facts("Qwen/Qwen3-32B-AWQ").vision_params_b == 0
    assert facts("meta-llama/Llama-3.1-8B-Instruct").max_position_embeddings == 131072
    assert facts("meta-llama/Meta-Llama-3-8B").max_position_embeddings == 8192  # 3.0
    assert facts("acme/llm-13b") is None


def test_lint_cli_refuses_fp8_from_options(tmp_path, capsys):
    # From a laptop or CI: no NVML, no hardware in the profile, --gpus/--gpu-memory given.
    path = profile_file(tmp_path, VL_FP8, VL_SERVER, hardware="")
    status = lint_cli.main([str(path), "--gpus", "2", "--gpu-memory", "24GiB"], extra_rules=[capacity_rule])
    out = capsys.readouterr().out
    assert status == lint_cli.EXIT_FINDINGS
    assert "error VG002" in out and "on 2x 24.00 GiB (from profile)" in out
    awq = profile_file(tmp_path, VL_AWQ, VL_SERVER, hardware="", name="awq")
    findings = lint_target(str(awq), [tmp_path], extra_rules=[capacity_rule],
                           hardware={"gpus": 2, "gpu_memory_gib": 24.0})
    assert not [f for f in findings if f.rule.startswith("VG") and f.blocking]


def test_capacity_rule_falls_back_to_the_profile_without_nvml(tmp_path):
    assert not snapshot().available  # this machine
    findings = capacity_rule(load(profile_file(tmp_path, VL_FP8, VL_SERVER)))
    assert "(from profile)" in only(findings, "VG002").message


def test_external_backend_is_not_checked(tmp_path):
    path = tmp_path / "ext.yml"
    path.write_text("deployment: {backend: external, base_url: 'http://127.0.0.1:1'}\n", encoding="utf-8")
    assert capacity_findings(load(path)) == []


# --- on the GPU host: NVML's view (faked: no GPU here) ---------------------------------------------------------


def nvml_hardware(fake: FakeNvml) -> Hardware:
    hw = hardware_from_snapshot(snapshot(fake))
    assert hw is not None
    return hw


def test_gpus_busy_with_the_seeds_fp8_still_loaded(tmp_path):
    # seed 004's table: GPU0 19099 MiB and GPU1 18152 MiB used by the FP8 attempt; GPU2 free.
    hw = nvml_hardware(seed004())
    findings = capacity_findings(load(profile_file(tmp_path, VL_AWQ, VL_SERVER)), hw)
    busy = [f for f in findings if f.rule == "VG005"]
    assert [f.severity for f in busy] == [Severity.ERROR, Severity.ERROR]
    assert busy[0].message.startswith("GPU0 (NVIDIA GeForce RTX 4090) already holds 18.7 of 24.0 GiB: pid 1234 "
                                      "python3, 19000 MiB. vLLM needs 21.6 GiB free")
    assert "on 3x NVIDIA GeForce RTX 4090 23.99 GiB (from nvml)" in only(findings, "VG003").message


def test_free_gpus_pass_and_a_small_holder_is_a_warning(tmp_path):
    fake = FakeNvml([[300], [2000]], processes={1: [(77, 1800.0)]})
    findings = capacity_findings(load(profile_file(tmp_path, VL_AWQ, VL_SERVER)), nvml_hardware(fake))
    (warning,) = [f for f in findings if f.rule == "VG005"]
    assert warning.severity is Severity.WARNING and warning.message.startswith("GPU1")


def test_device_ids_that_match_no_gpu(tmp_path):
    hardware = "hardware: {gpus: 2, gpu_memory_gib: 24, device_ids: ['0,1']}"
    findings = capacity_findings(load(profile_file(tmp_path, VL_AWQ, VL_SERVER, hardware)),
                                 nvml_hardware(FakeNvml([[0], [0]])))
    missing = only(findings, "VG004")
    assert "device ids ['0,1'] are not GPUs of this host" in missing.message and "not ['0,1']" in missing.fix


def test_too_few_gpus_and_wrong_memory(tmp_path):
    hardware = "hardware: {gpus: 2, gpu_memory_gib: 48}"
    findings = capacity_findings(load(profile_file(tmp_path, VL_AWQ, VL_SERVER, hardware)),
                                 nvml_hardware(FakeNvml([[0]])))
    messages = [f.message for f in findings if f.rule == "VG004"]
    assert any(m.startswith("the profile needs 2 GPUs, NVML sees 1") for m in messages)
    assert any(m.startswith("the profile says 48 GiB per GPU") for m in messages)


def test_gpus_by_uuid(tmp_path):
    hardware = "hardware: {gpus: 1, gpu_memory_gib: 24, device_ids: ['GPU-00000001-aaaa-bbbb-cccc-dddddddddddd']}"
    model = "{path: Qwen/Qwen3-32B-AWQ, quantization: awq, max_model_len: 8192}"
    findings = capacity_findings(load(profile_file(tmp_path, model, "{}", hardware)),
                                 nvml_hardware(FakeNvml([[0], [23000]], processes={1: [(5, 23000.0)]})))
    assert [f.rule for f in findings if f.blocking] == ["VG005"]  # GPU1 is the one named, and it is full


def test_capacity_rules_are_in_the_one_catalogue():
    assert {"VG001", "VG002", "VG003", "VG004", "VG005", "VG006", "VG007", "VG008", "VG009"} <= set(RULES)
