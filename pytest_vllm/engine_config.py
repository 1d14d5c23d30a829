"""What really runs: the effective engine config, not what the compose file seems to say.

vLLM V1 turns prefix caching on by default, so a profile that merely omits
`--enable-prefix-caching` still caches. The truth comes from the engine's start-up log line
("Initializing a V1 LLM engine (vX) with config: ... enable_prefix_caching=True ...") where we can
read the log, else from `/metrics` (`vllm:cache_config_info`) and `/v1/models`.
"""

from __future__ import annotations

import ast
import re
from typing import Any

from .metrics import Sample, info_labels

# Keys of the engine line worth showing to an operator.
ENGINE_KEYS = ("enable_prefix_caching", "enable_chunked_prefill", "max_seq_len", "tensor_parallel_size",
               "pipeline_parallel_size", "quantization", "dtype", "kv_cache_dtype", "enforce_eager",
               "served_model_name", "device_config")
_ENGINE_LINE = re.compile(r"Initializing a V1 LLM engine \(v([^)]+)\) with config: (.*)")
_NON_DEFAULT = re.compile(r"non-default args: (\{.*\})")
_KV_MEMORY = re.compile(r"Available KV cache memory: ([\d.]+) GiB")


def _coerce(value: str) -> Any:
    value = value.strip().strip("'")
    if value in ("True", "False"):
        return value == "True"
    if value == "None":
        return None
    try:
        return int(value)
    except ValueError:
        try:
            return float(value)
        except ValueError:
            return value


def from_log(text: str) -> dict[str, Any]:
    """Effective config from a vLLM start-up log ({} when the line is absent)."""
    config: dict[str, Any] = {}
    matches = list(_ENGINE_LINE.finditer(text))
    if matches:
        match = matches[-1]  # the last engine line wins (a restarted server logs it again)
        config["vllm_version"] = match.group(1)
        body = match.group(2)
        for key in ENGINE_KEYS:
            m = re.search(rf"(?:^|, ){key}=('[^']*'|[^,]*)", body)
            if m:
                config[key] = _coerce(m.group(1))
        config["source"] = "engine start-up log"
    kv_memory = [float(v) for v in _KV_MEMORY.findall(text)]
    if kv_memory:  # one line per tensor-parallel worker: the smallest bounds the cache
        config["kv_cache_memory_gib"] = min(kv_memory)
    args = _NON_DEFAULT.findall(text)
    if args:
        try:
            config["requested_args"] = ast.literal_eval(args[-1])
        except (ValueError, SyntaxError):
            pass
    return config


def from_server(samples: list[Sample], models: list[dict[str, Any]]) -> dict[str, Any]:
    """Effective config as far as `/metrics` and `/v1/models` tell (external endpoints)."""
    config: dict[str, Any] = {}
    cache = info_labels(samples, "vllm:cache_config_info")
    if "enable_prefix_caching" in cache:
        config["enable_prefix_caching"] = cache["enable_prefix_caching"] == "True"
    for key in ("block_size", "gpu_memory_utilization", "cache_dtype"):
        if key in cache:
            config[key] = _coerce(cache[key])
    if models and models[0].get("max_model_len"):
        config["max_seq_len"] = models[0]["max_model_len"]
    if config:
        config["source"] = "/metrics and /v1/models"
    return config


def summary(config: dict[str, Any]) -> str:
    """One line for the report header."""
    keys = [k for k in ("enable_prefix_caching", "enable_chunked_prefill", "max_seq_len", "tensor_parallel_size",
                        "quantization", "dtype", "gpu_memory_utilization") if k in config]
    body = ", ".join(f"{k}={config[k]}" for k in keys) or "unknown"
    return f"{body} (from {config.get('source', 'nowhere')})"
