"""Checks across flags, shared by profiles and compose commands: context length, quantization, parallelism.

A flag can be valid on its own and still contradict another one or the checkpoint; vLLM then refuses
to start (or starts doing something else) minutes into a GPU deployment.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .findings import RULES, Finding
from .flags import FlagUse
from .model_facts import local_config, quantization_in_id

_UNQUANTIZED = {"bf16", "bfloat16", "fp16", "float16", "half", "fp32", "float32", "none", "auto"}
# methods that quantize an unquantized checkpoint while loading it
_ONLINE_QUANT = {"fp8", "fp8_per_tensor", "fp8_per_block", "fp8_per_channel", "int8_per_channel_weight_only",
                 "nvfp4_per_token", "mxfp8", "online", "torchao", "experts_int8"}
# spellings vLLM treats as the same checkpoint format (its override_quantization_method)
_QUANT_FAMILY = {"auto_awq": "awq", "awq_marlin": "awq", "auto_gptq": "gptq", "gptq_marlin": "gptq"}


def last_values(uses: list[FlagUse]) -> dict[str, str | bool]:
    """Canonical flag name -> the value vLLM ends up with (True/False for on/off flags)."""
    values: dict[str, str | bool] = {}
    for use in uses:
        found = use.found
        if found.spec is None or "." in use.written:
            continue
        if not found.spec.takes_value:
            values[found.spec.name] = not found.negated
        elif use.values:
            values[found.spec.name] = use.values[-1]
    return values


def as_int(value: Any, default: int = 1) -> int:
    try:
        return int(str(value))
    except ValueError:
        return default


def parallelism(values: dict[str, str | bool]) -> int:
    return as_int(values.get("tensor-parallel-size", 1)) * as_int(values.get("pipeline-parallel-size", 1))


def size(value: Any) -> int | None:
    """vLLM's human-readable integers: 131072, 128k (x1000), 128K (x1024)."""
    text = str(value).strip()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kmgtKMGT]?)", text)
    if not match:
        return None
    scale = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "K": 2**10, "M": 2**20, "G": 2**30,
             "T": 2**40}[match.group(2)]
    return int(float(match.group(1)) * scale)


def check_context(values: dict[str, str | bool], file: str, key: str) -> Iterable[Finding]:
    """VP005: a max-model-len beyond what the rope overrides give (vLLM refuses to start)."""
    overrides = values.get("hf-overrides")
    max_len = size(values.get("max-model-len", ""))
    if not isinstance(overrides, str) or max_len is None:
        return
    try:
        rope = json.loads(overrides)
    except json.JSONDecodeError:
        return  # VF002 reports it
    rope = rope.get("rope_parameters") or rope.get("rope_scaling") if isinstance(rope, dict) else None
    if isinstance(rope, dict) and {"factor", "original_max_position_embeddings"} <= set(rope):
        try:
            reach = int(float(rope["factor"]) * int(rope["original_max_position_embeddings"]))
        except (TypeError, ValueError):
            return
        if max_len > reach:
            yield RULES["VP005"](file, key, f"max-model-len {max_len} is beyond what the rope override reaches "
                                 f"(factor {rope['factor']} x {rope['original_max_position_embeddings']} = {reach})",
                                 f"lower max-model-len to {reach}, or raise the rope factor")


def checkpoint_quantization(model: str) -> tuple[str, Path] | None:
    """quant_method from the checkpoint's config.json, when it is on this machine (local dir or HF cache)."""
    found = local_config(model)
    if found is None:
        return None
    path, config = found
    quant = config.get("quantization_config") or config.get("compression_config") or {}
    return (str(quant.get("quant_method") or "none"), path)


def check_quantization(model: str, declared: str | None, flag: str | None, file: str, key: str,
                       declared_key: str = "model.quantization") -> Iterable[Finding]:
    """VP003: `--quantization` (or the profile's model.quantization) against what the checkpoint is."""
    on_disk = checkpoint_quantization(model) if model and not model.startswith("@") else None
    if on_disk and declared and _family(declared) != _family(on_disk[0]):
        yield RULES["VP003"](file, declared_key, f"the profile says the checkpoint is '{declared}' but its "
                             f"config.json ({on_disk[1]}) says '{on_disk[0]}'",
                             f"set {declared_key}: {on_disk[0]}")
    truth = on_disk[0] if on_disk else declared or quantization_in_id(model)
    source = f"config.json at {on_disk[1]}" if on_disk else (declared_key if declared else "the model name")
    if not flag or not truth:
        return
    if not on_disk and not declared and _family(flag) == "compressed-tensors":
        return  # community "AWQ" checkpoints are often compressed-tensors: a name proves nothing here
    if truth.lower() in _UNQUANTIZED:
        if flag not in _ONLINE_QUANT:
            yield RULES["VP003"](file, key, f"--quantization {flag} on an unquantized checkpoint ({source}: "
                                 f"{truth}); {flag} needs weights quantized that way",
                                 "remove --quantization, or use a checkpoint quantized with it")
    elif _family(flag) != _family(truth):
        yield RULES["VP003"](file, key, f"--quantization {flag} contradicts the checkpoint ({source}: {truth}); "
                             "vLLM refuses: 'Quantization method specified in the model config does not match'",
                             "remove --quantization and let vLLM read the method from the checkpoint")
    elif flag.lower() == "awq":
        yield RULES["VP011"](file, key, "--quantization awq on an AWQ checkpoint forces vLLM's generic AWQ kernel "
                             "(vLLM logs 'Detected that the model can run with awq_marlin, however you specified "
                             "quantization=awq explicitly, so forcing awq'); on NVIDIA GPUs of compute capability "
                             ">= 8.0 (Ampere, Ada such as the RTX 4090, Hopper) it is several times slower than "
                             "awq_marlin", "remove --quantization (vLLM then picks awq_marlin), or write "
                             "--quantization awq_marlin")


def _family(method: str) -> str:
    method = method.lower()
    return _QUANT_FAMILY.get(method, method)
