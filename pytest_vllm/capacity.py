"""Preflight GPU capacity: will the model's weights and one full-length request's KV cache fit?

The estimate mirrors how vLLM sizes memory at start-up, per GPU:

    budget   = GPU memory x gpu-memory-utilization
    kv room  = budget - weights / (TP x PP) - overhead
    needed   = max_model_len x KV bytes per token per GPU

vLLM itself refuses to start when `needed > kv room` ("To serve at least one request with the model's
max seq len ..."), after minutes of loading; this says so before anything starts, with the numbers.
On the GPU host it also checks that the GPUs the profile names are present and not already busy.

Hardware comes from NVML (`hardware_from_snapshot`) when the lint runs on the GPU host, else from the
profile's `hardware:` section (which the lint CLI's --gpus/--gpu-memory replace).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .lint.consistency import size
from .lint.findings import RULES, Finding, Severity
from .lint.model_facts import Architecture, facts, quantization_in_id
from .profile import Profile
from .telemetry import GpuState, Snapshot, snapshot

GIB = 2**30

# --- constants, and why -------------------------------------------------------------------------------
# Bytes per parameter of the quantized (linear) layers.
#   4-bit AWQ/GPTQ: 0.5 byte, plus per group of 128 weights one fp16 scale and one packed 4-bit zero
#   (2.5 bytes / 128 = 0.0195). FP8: 1 byte; block scales (fp32 per 128x128) are negligible.
BYTES_4BIT = 0.5 + 2.5 / 128
BYTES_8BIT = 1.0
BYTES_16BIT = 2.0
QUANT_BYTES = {
    "awq": BYTES_4BIT, "awq_marlin": BYTES_4BIT, "gptq": BYTES_4BIT, "gptq_marlin": BYTES_4BIT,
    "int4": BYTES_4BIT, "w4a16": BYTES_4BIT, "bitsandbytes": BYTES_4BIT,
    "fp8": BYTES_8BIT, "w8a8": BYTES_8BIT, "int8": BYTES_8BIT, "fbgemm_fp8": BYTES_8BIT, "modelopt": BYTES_8BIT,
    "bf16": BYTES_16BIT, "bfloat16": BYTES_16BIT, "fp16": BYTES_16BIT, "float16": BYTES_16BIT,
    "half": BYTES_16BIT, "auto": BYTES_16BIT, "none": BYTES_16BIT,
    # 4-bit floats with a shared 8-bit scale per block of 32 (MXFP4) or an fp8 scale per 16 (NVFP4)
    "mxfp4": 0.5 + 1 / 32, "nvfp4": 0.5 + 1 / 16,
}
# Per-GPU memory vLLM's budget spends besides weights and KV cache: the profiling run's activations
# (default max-num-batched-tokens), CUDA context, NCCL/cuBLAS workspaces, CUDA graphs.
# Calibrated on the seeds: Qwen2.5-32B-AWQ, TP 2, util 0.90 reported 11.92 GiB KV/GPU
# (estimate here: 11.0); Qwen3-VL-32B AWQ reported 9.20 GiB (estimate at 0.90: 9.5).
OVERHEAD_GIB = 1.5
MULTIMODAL_OVERHEAD_GIB = 1.0  # the vision encoder's profiling pass (a batch of max-size images)
DEFAULT_UTILIZATION = 0.9  # vLLM's default --gpu-memory-utilization
# Unknown models: embeddings + lm_head kept in 16 bit ~ 5% of parameters (Qwen3-32B: 4.7%, 150k vocab);
# KV cache ~ 8 KiB per token per billion parameters in 16 bit (GQA models: Qwen3-32B 7.8, Qwen2.5-7B
# 7.4, Llama-3-70B 4.6, Llama-3-8B 16). Rough (x2 either way): the finding says so.
UNQUANTIZED_SHARE = 0.05
KV_BYTES_PER_TOKEN_PER_B = 8 * 1024
FP8_KV = ("fp8", "fp8_e4m3", "fp8_e5m2", "fp8_inc", "fp8_ds_mla")


@dataclass(frozen=True)
class Hardware:
    """The GPUs the deployment will run on. `gpus` holds NVML's view when the source is NVML."""

    source: str  # "nvml" or "profile"
    count: int
    memory_gib: float  # per GPU (the smallest, when they differ)
    gpus: tuple[GpuState, ...] = ()

    def describe(self) -> str:
        names = f" {self.gpus[0].name}" if self.gpus else ""
        return f"{self.count}x{names} {self.memory_gib:.2f} GiB (from {self.source})"


def hardware_from_snapshot(snap: Snapshot) -> Hardware | None:
    """NVML's GPUs, or None when NVML has none to offer (no driver, CPU machine)."""
    if not snap.available or not snap.gpus:
        return None
    return Hardware("nvml", len(snap.gpus), min(g.memory_total_gib for g in snap.gpus), snap.gpus)


def hardware_from_profile(profile: Profile) -> Hardware | None:
    hw = profile.hardware
    count = hw.get("gpus") or len(hw.get("device_ids") or [])
    memory = hw.get("gpu_memory_gib")
    if not count or not memory:
        return None
    return Hardware("profile", int(count), float(memory))


@dataclass(frozen=True)
class Estimate:
    """One capacity computation, per GPU, in GiB (KV bytes per token in bytes)."""

    budget: float
    weights: float
    overhead: float
    kv_bytes_per_token: float
    max_model_len: int

    @property
    def kv_room(self) -> float:
        return self.budget - self.weights - self.overhead

    @property
    def kv_needed(self) -> float:
        return self.max_model_len * self.kv_bytes_per_token / GIB

    @property
    def tokens_that_fit(self) -> int:
        return max(0, int(self.kv_room * GIB / self.kv_bytes_per_token))

    @property
    def weights_fit(self) -> bool:
        return self.weights + self.overhead < self.budget

    @property
    def fits(self) -> bool:
        return self.weights_fit and self.kv_room >= self.kv_needed


@dataclass(frozen=True)
class Deployment:
    """What the profile asks for, resolved to numbers; `notes` say which numbers are guesses."""

    model: str
    quantization: str
    weight_bytes: float  # per quantized parameter
    params_b: float
    arch: Architecture | None
    tp: int
    pp: int
    utilization: float
    kv_bytes: int  # per KV element: 2 (16 bit) or 1 (fp8)
    max_model_len: int
    multimodal: bool
    notes: tuple[str, ...]

    def estimate(self, memory_gib: float, *, weight_bytes: float | None = None, kv_bytes: int | None = None,
                 utilization: float | None = None, tp: int | None = None) -> Estimate:
        """The estimate for this deployment, or for a variant of it (the fixes we suggest)."""
        wb = self.weight_bytes if weight_bytes is None else weight_bytes
        kvb = self.kv_bytes if kv_bytes is None else kv_bytes
        tp = tp or self.tp
        world = tp * self.pp
        if self.arch:
            unquantized = min(self.arch.unquantized_b, self.params_b)
            # KV heads are split over TP ranks (replicated when there are fewer heads than ranks).
            heads = max(1, self.arch.kv_heads // tp)
            per_token = self.arch.layers / self.pp * 2 * heads * self.arch.head_dim * kvb
        else:
            unquantized = self.params_b * UNQUANTIZED_SHARE
            per_token = self.params_b * KV_BYTES_PER_TOKEN_PER_B * kvb / 2 / world
        weights = ((self.params_b - unquantized) * wb + unquantized * BYTES_16BIT) * 1e9 / GIB / world
        overhead = OVERHEAD_GIB + (MULTIMODAL_OVERHEAD_GIB if self.multimodal else 0.0)
        util = self.utilization if utilization is None else utilization
        return Estimate(budget=memory_gib * util, weights=weights, overhead=overhead,
                        kv_bytes_per_token=per_token, max_model_len=self.max_model_len)


@dataclass(frozen=True)
class Request:
    """What a deployment asks of the GPUs, whether a profile or a compose command says it."""

    model: str
    quantization: str | None  # declared: model.quantization or --quantization
    flags: Mapping[str, Any]  # vLLM flags by canonical name (tensor-parallel-size, kv-cache-dtype, ...)
    parameters_b: float | None = None
    max_model_len: int | None = None  # when the profile says it outside the flags
    multimodal: bool = False

    def flag(self, name: str, default: Any) -> Any:
        value = self.flags.get(name)
        return default if value is None or isinstance(value, bool) else value


def request_from_profile(profile: Profile) -> Request:
    names = ("max-model-len", "kv-cache-dtype", "tensor-parallel-size", "pipeline-parallel-size",
             "gpu-memory-utilization")
    return Request(model=str(profile.model.get("path", "")),
                   quantization=profile.model.get("quantization") or profile.flag("quantization"),
                   flags={n: profile.flag(n) for n in names}, parameters_b=profile.model.get("parameters_b"),
                   max_model_len=profile.model.get("max_model_len"),
                   multimodal=bool(profile.model.get("multimodal") or profile.capabilities.get("vision")))


def resolve(request: Request) -> Deployment | str:
    """The request's numbers, or why capacity cannot be estimated."""
    model = request.model
    arch = facts(model)
    params = request.parameters_b or (arch.params_b if arch else None)
    if not params:
        return "model.parameters_b is not set and the model id is not one whose size is known here"
    implied = quantization_in_id(model) or (arch.native_quantization if arch else None)
    quant = str(request.quantization or implied or "bf16").lower()
    notes: list[str] = []
    weight_bytes = QUANT_BYTES.get(quant)
    if weight_bytes is None:
        # compressed-tensors is a container format: the bit width is only in the checkpoint; ids say it
        weight_bytes = QUANT_BYTES.get(quantization_in_id(model) or "")
        if weight_bytes is None:
            return (f"quantization '{quant}' does not say its bit width; set model.quantization to awq, gptq, "
                    "fp8 or bf16")
        notes.append(f"'{quant}' read as {'4' if weight_bytes < 1 else '8'}-bit from the model id")
    elif not request.quantization and implied:
        notes.append(f"{quant} weights, as the model id says")
    if not arch:
        notes.append("architecture unknown: embeddings share and KV bytes/token from rough rules (x2)")
    elif arch.source != "table":
        notes.append(f"architecture from {arch.source}")
    max_len = size(request.flag("max-model-len", "")) or request.max_model_len
    if not max_len:
        if not arch:
            return "no max_model_len (model.max_model_len or --max-model-len) and the model is unknown"
        max_len = arch.max_position_embeddings
        notes.append(f"max_model_len not set: the checkpoint's {max_len}")
    kv_dtype = str(request.flag("kv-cache-dtype", "auto")).lower()
    return Deployment(
        model=model, quantization=quant, weight_bytes=weight_bytes, params_b=float(params), arch=arch,
        tp=int(request.flag("tensor-parallel-size", 1)), pp=int(request.flag("pipeline-parallel-size", 1)),
        utilization=float(request.flag("gpu-memory-utilization", DEFAULT_UTILIZATION)),
        kv_bytes=1 if kv_dtype in FP8_KV else 2, max_model_len=int(max_len), multimodal=request.multimodal,
        notes=tuple(notes))


def _numbers(d: Deployment, hw: Hardware, e: Estimate) -> str:
    kv = "fp8" if d.kv_bytes == 1 else "16-bit"
    return (f"{d.model} ({d.quantization}, {d.params_b:g}B params) on {hw.describe()}, TP {d.tp}"
            + (f" x PP {d.pp}" if d.pp > 1 else "") + f", gpu-memory-utilization {d.utilization:g}: "
            f"budget {e.budget:.1f} GiB/GPU - weights {e.weights:.1f} - overhead {e.overhead:.1f} "
            f"= {e.kv_room:.1f} GiB for the KV cache; one {e.max_model_len}-token request needs "
            f"{e.kv_needed:.1f} GiB/GPU ({e.kv_bytes_per_token / 1024:.0f} KiB/token/GPU, {kv} KV), "
            f"room for {e.tokens_that_fit:,} tokens" + (f" [{'; '.join(d.notes)}]" if d.notes else ""))


def _fixes(d: Deployment, hw: Hardware, e: Estimate) -> str:
    """Changes that would make it fit, each computed with the same estimate."""
    options = []
    if d.weight_bytes > BYTES_4BIT:
        alt = d.estimate(hw.memory_gib, weight_bytes=BYTES_4BIT)
        if alt.fits:
            options.append(f"a 4-bit AWQ/GPTQ checkpoint (weights {alt.weights:.1f} GiB/GPU, KV room "
                           f"{alt.kv_room:.1f} GiB)")
    if d.kv_bytes == 2 and d.estimate(hw.memory_gib, kv_bytes=1).fits:
        options.append(f"server.kv-cache-dtype: fp8 (one request then needs {e.kv_needed / 2:.1f} GiB/GPU)")
    if d.utilization < 0.95 and d.estimate(hw.memory_gib, utilization=0.95).fits:
        options.append("gpu-memory-utilization 0.95 (little headroom left; the seeds crashed above 0.90)")
    fitting = e.tokens_that_fit // 1024 * 1024
    if e.weights_fit and fitting >= 1024:
        options.append(f"max_model_len <= {fitting}")
    if d.estimate(hw.memory_gib, tp=d.tp * 2).fits:
        options.append(f"twice the GPUs (tensor-parallel-size {d.tp * 2})")
    return "; or ".join(options) or "larger GPUs, or a smaller model"


def capacity_findings(profile: Profile, hardware: Hardware | None = None) -> list[Finding]:
    """VG* findings for the profile on `hardware` (default: the profile's own `hardware:` section)."""
    file = str(profile.path)
    hw = hardware or hardware_from_profile(profile)
    if profile.backend == "external":
        return []
    if hw is None:
        return [RULES["VG006"](file, "hardware", "no GPU target (a CPU profile?): NVML sees no GPU here "
                               "and the profile has no hardware.gpus/gpu_memory_gib", "for a GPU "
                               "deployment checked from a laptop or CI, give --gpus N --gpu-memory 24GiB "
                               "or set hardware: in the profile")]
    findings = list(_presence(profile, hw, file)) if hw.source == "nvml" else []
    len_key = "server.max-model-len" if profile.flag("max-model-len") else "model.max_model_len"
    d = resolve(request_from_profile(profile))
    findings += estimate_findings(d, hw, file, ("model", "model.path", len_key),
                                  "set model.parameters_b, model.quantization and model.max_model_len")
    if hw.source == "nvml" and not isinstance(d, str):
        findings += _busy(profile, hw, d.utilization, file)
    return findings


def estimate_findings(d: Deployment | str, hw: Hardware, file: str, keys: tuple[str, str, str],
                      unknown_fix: str) -> list[Finding]:
    """VG001/VG002/VG003 (or VG006 with why not) for one deployment; keys: (model, weights, context)."""
    model_key, weights_key, len_key = keys
    if isinstance(d, str):
        return [RULES["VG006"](file, model_key, d, unknown_fix)]
    e = d.estimate(hw.memory_gib)
    numbers = _numbers(d, hw, e)
    if not e.weights_fit:
        return [RULES["VG001"](file, weights_key, f"weights {e.weights:.1f} GiB/GPU + overhead {e.overhead:.1f} "
                               f"exceed the budget: {numbers}", _fixes(d, hw, e))]
    if e.kv_room < e.kv_needed:
        return [RULES["VG002"](file, len_key, f"{numbers}. vLLM would load the weights, then refuse to start "
                               "('To serve at least one request with the model's max seq len ...')",
                               _fixes(d, hw, e))]
    concurrency = e.kv_room / e.kv_needed
    return [RULES["VG003"](file, model_key, f"fits: {numbers}; {concurrency:.1f} requests of max_model_len at "
                           "once", "nothing to do")]


def _used_gpus(profile: Profile, hw: Hardware) -> tuple[list[GpuState], list[str]]:
    """The NVML GPUs the deployment will use (device_ids, else the first TP x PP), and ids not found."""
    ids = [str(i).strip() for i in profile.hardware.get("device_ids") or []]
    if not ids:
        world = int(profile.flag("tensor-parallel-size", 1)) * int(profile.flag("pipeline-parallel-size", 1))
        return list(hw.gpus[:world]), []
    by_id = {str(g.index): g for g in hw.gpus} | {g.uuid: g for g in hw.gpus}
    return [by_id[i] for i in ids if i in by_id], [i for i in ids if i not in by_id]


def _presence(profile: Profile, hw: Hardware, file: str) -> list[Finding]:
    rule = RULES["VG004"]
    seen = ", ".join(f"{g.index} ({g.name}, {g.memory_total_gib:.1f} GiB)" for g in hw.gpus)
    used, missing = _used_gpus(profile, hw)
    findings = []
    if missing:
        findings.append(rule(file, "hardware.device_ids", f"device ids {missing} are not GPUs of this host; NVML "
                             f"sees {seen}", "use NVML indices (nvidia-smi -L) or GPU UUIDs, one id per "
                             "string: ['0', '1'], not ['0,1']"))
    want = profile.hardware.get("gpus")
    world = int(profile.flag("tensor-parallel-size", 1)) * int(profile.flag("pipeline-parallel-size", 1))
    need = max(int(want or 0), world)
    if len(hw.gpus) < need:
        findings.append(rule(file, "hardware.gpus", f"the profile needs {need} GPUs, NVML sees {len(hw.gpus)}: "
                             f"{seen}", "run on the GPU host the profile describes, or lower "
                             "tensor-parallel-size and hardware.gpus"))
    declared = profile.hardware.get("gpu_memory_gib")
    if declared and used and abs(min(g.memory_total_gib for g in used) - declared) > 0.05 * declared:
        findings.append(rule(file, "hardware.gpu_memory_gib", f"the profile says {declared} GiB per GPU, NVML "
                             f"sees {seen}; the capacity estimate uses NVML's", "correct "
                             "hardware.gpu_memory_gib", severity=Severity.WARNING))
    return findings


def _busy(profile: Profile, hw: Hardware, utilization: float, file: str) -> list[Finding]:
    """Other processes on the GPUs the deployment will use: vLLM wants util x total free at start-up."""
    findings = []
    for g in _used_gpus(profile, hw)[0]:
        if not g.processes and g.memory_used_gib < 1.0:
            continue
        holders = ", ".join(p.describe() for p in g.processes) or "processes NVML cannot list"
        free = g.memory_total_gib - g.memory_used_gib
        wanted = g.memory_total_gib * utilization
        refuses = free < wanted
        message = (f"GPU{g.index} ({g.name}) already holds {g.memory_used_gib:.1f} of "
                   f"{g.memory_total_gib:.1f} GiB: {holders}")
        if refuses:
            message += (f". vLLM needs {wanted:.1f} GiB free (gpu-memory-utilization {utilization:g}) and would "
                        f"refuse: 'Free memory on device ... is less than desired GPU memory utilization'")
        findings.append(RULES["VG005"](
            file, "hardware.device_ids", message, "stop the other deployment first (docker ps; nvidia-smi), or "
            "pick free GPUs in hardware.device_ids", severity=Severity.ERROR if refuses else None))
    return findings


def capacity_rule(profile: Profile) -> list[Finding]:
    """The lint hook (`extra_rules`): NVML's GPUs when this is the GPU host, else the profile's hardware."""
    return capacity_findings(profile, hardware_from_snapshot(snapshot()))

