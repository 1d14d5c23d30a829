"""What lint knows about a checkpoint from its id alone: size, KV-cache geometry, context limit, family.

Two sources, the better first: the checkpoint's own `config.json` when it is on this machine (a local
folder, or the Hugging Face cache), else a shipped table of the families people serve (figures from
each model's config.json). Capacity (pytest_vllm.capacity), the context-length check and the
tool-parser check read these facts; an id nobody knows gives None and those checks are skipped.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Architecture:
    """What the estimate needs from a checkpoint's config.json."""

    params_b: float
    layers: int
    kv_heads: int
    head_dim: int
    hidden: int
    vocab: int
    tied_embeddings: bool
    max_position_embeddings: int
    vision_params_b: float = 0.0  # vision tower, kept in 16 bit by the 4-bit and FP8 checkpoints
    family: str = ""  # qwen2.5, qwen3, llama, mistral, gemma, gpt-oss: which tool parsers fit
    native_quantization: str | None = None  # how the publisher ships it (gpt-oss: mxfp4)
    source: str = "table"  # "table" or the config.json path

    @property
    def unquantized_b(self) -> float:
        embeddings = self.vocab * self.hidden * (1 if self.tied_embeddings else 2) / 1e9
        return embeddings + self.vision_params_b


def _a(params: float, layers: int, kv: int, head: int, hidden: int, vocab: int, tied: bool, max_pos: int,
       family: str, vision: float = 0.0, quant: str | None = None) -> Architecture:
    return Architecture(params, layers, kv, head, hidden, vocab, tied, max_pos, vision, family, quant)


QWEN3_32B = _a(32.8, 64, 8, 128, 5120, 151936, False, 40960, "qwen3")
_Q25 = {"0.5b": _a(0.49, 24, 2, 64, 896, 151936, True, 32768, "qwen2.5"),
        "1.5b": _a(1.54, 28, 2, 128, 1536, 151936, True, 32768, "qwen2.5"),
        "3b": _a(3.09, 36, 2, 128, 2048, 151936, True, 32768, "qwen2.5"),
        "7b": _a(7.62, 28, 4, 128, 3584, 152064, False, 32768, "qwen2.5"),
        "14b": _a(14.7, 48, 8, 128, 5120, 152064, False, 32768, "qwen2.5"),
        "32b": _a(32.8, 64, 8, 128, 5120, 152064, False, 32768, "qwen2.5"),
        "72b": _a(72.7, 80, 8, 128, 8192, 152064, False, 32768, "qwen2.5")}
_LLAMA31_8B = _a(8.03, 32, 8, 128, 4096, 128256, False, 131072, "llama")
_LLAMA31_70B = _a(70.6, 80, 8, 128, 8192, 128256, False, 131072, "llama")

# (pattern on the lower-cased id, facts); the first match wins, so specific patterns come first.
TABLE: tuple[tuple[str, Architecture], ...] = (
    # Qwen3-VL: the 32B text decoder is Qwen3-32B's; the vision tower (~0.6B) is an estimate from its config
    (r"qwen3-vl-32b", _a(33.4, 64, 8, 128, 5120, 151936, False, 262144, "qwen3", vision=0.6)),
    (r"qwen3-vl-30b-a3b", _a(31.1, 48, 4, 128, 2048, 151936, False, 262144, "qwen3", vision=0.6)),
    (r"qwen3-vl-235b-a22b", _a(236.0, 94, 4, 128, 4096, 151936, False, 262144, "qwen3", vision=0.6)),
    (r"qwen3-vl-8b", _a(8.8, 36, 8, 128, 4096, 151936, False, 262144, "qwen3", vision=0.6)),
    (r"qwen3-vl-4b", _a(4.4, 36, 8, 128, 2560, 151936, True, 262144, "qwen3", vision=0.4)),
    # Qwen3: the 2507 releases and Qwen3-Coder read 262144 tokens, the first releases 40960
    (r"qwen3-coder-30b-a3b|qwen3-30b-a3b-(instruct|thinking)-2507",
     _a(30.5, 48, 4, 128, 2048, 151936, False, 262144, "qwen3")),
    (r"qwen3-30b-a3b", _a(30.5, 48, 4, 128, 2048, 151936, False, 40960, "qwen3")),
    (r"qwen3-235b-a22b-(instruct|thinking)-2507", _a(235.0, 94, 4, 128, 4096, 151936, False, 262144, "qwen3")),
    (r"qwen3-235b-a22b", _a(235.0, 94, 4, 128, 4096, 151936, False, 40960, "qwen3")),
    (r"qwen3-32b", QWEN3_32B),
    (r"qwen3-14b", _a(14.8, 40, 8, 128, 5120, 151936, False, 40960, "qwen3")),
    (r"qwen3-8b", _a(8.2, 36, 8, 128, 4096, 151936, False, 40960, "qwen3")),
    (r"qwen3-4b-(instruct|thinking)-2507", _a(4.0, 36, 8, 128, 2560, 151936, True, 262144, "qwen3")),
    (r"qwen3-4b", _a(4.0, 36, 8, 128, 2560, 151936, True, 40960, "qwen3")),
    (r"qwen3-1\.7b", _a(1.7, 28, 8, 128, 2048, 151936, True, 40960, "qwen3")),
    (r"qwen3-0\.6b", _a(0.6, 28, 8, 128, 1024, 151936, True, 40960, "qwen3")),
    # DeepSeek-R1 distills: the Qwen2.5 / Llama 3.1 architectures, 131072 positions
    *((rf"deepseek-r1-distill-qwen-{size}", replace(_Q25[size], max_position_embeddings=131072))
      for size in ("1.5b", "7b", "14b", "32b")),
    (r"deepseek-r1-distill-llama-8b", _LLAMA31_8B),
    (r"deepseek-r1-distill-llama-70b", _LLAMA31_70B),
    # Qwen2.5 and Qwen2.5-Coder
    *((rf"qwen2\.5-(coder-)?{re.escape(size)}", arch) for size, arch in _Q25.items()),
    # Llama 3.x (3.0 read 8192 positions)
    (r"llama-3\.2-1b", _a(1.24, 16, 8, 64, 2048, 128256, True, 131072, "llama")),
    (r"llama-3\.2-3b", _a(3.21, 28, 8, 128, 3072, 128256, True, 131072, "llama")),
    (r"llama-3\.[13]-70b", _LLAMA31_70B),
    (r"llama-3\.1-405b", _a(405.0, 126, 8, 128, 16384, 128256, False, 131072, "llama")),
    (r"llama-3\.1-8b", _LLAMA31_8B),
    (r"llama-3-70b", replace(_LLAMA31_70B, max_position_embeddings=8192)),
    (r"llama-3-8b", replace(_LLAMA31_8B, max_position_embeddings=8192)),
    # Mistral family
    (r"mixtral-8x22b", _a(141.0, 56, 8, 128, 6144, 32768, False, 65536, "mistral")),
    (r"mixtral-8x7b", _a(46.7, 32, 8, 128, 4096, 32000, False, 32768, "mistral")),
    (r"mistral-small|devstral-small", _a(23.6, 40, 8, 128, 5120, 131072, False, 131072, "mistral")),
    (r"mistral-nemo", _a(12.2, 40, 8, 128, 5120, 131072, False, 1024000, "mistral")),
    (r"mistral-7b", _a(7.25, 32, 8, 128, 4096, 32768, False, 32768, "mistral")),
    # Gemma 2 and 3 (sliding-window layers make the real KV cache smaller: the estimate is an upper bound)
    (r"gemma-3-27b", _a(27.4, 62, 16, 128, 5376, 262208, True, 131072, "gemma", vision=0.4)),
    (r"gemma-3-12b", _a(12.2, 48, 8, 256, 3840, 262208, True, 131072, "gemma", vision=0.4)),
    (r"gemma-3-4b", _a(4.3, 34, 4, 256, 2560, 262208, True, 131072, "gemma", vision=0.4)),
    (r"gemma-3-1b", _a(1.0, 26, 1, 256, 1152, 262144, True, 32768, "gemma")),
    (r"gemma-2-27b", _a(27.2, 46, 16, 128, 4608, 256000, True, 8192, "gemma")),
    (r"gemma-2-9b", _a(9.24, 42, 8, 256, 3584, 256000, True, 8192, "gemma")),
    (r"gemma-2-2b", _a(2.6, 26, 4, 256, 2304, 256000, True, 8192, "gemma")),
    # gpt-oss ships its experts in MXFP4
    (r"gpt-oss-120b", _a(116.8, 36, 8, 64, 2880, 201088, False, 131072, "gpt-oss", quant="mxfp4")),
    (r"gpt-oss-20b", _a(20.9, 24, 8, 64, 2880, 201088, False, 131072, "gpt-oss", quant="mxfp4")),
)


def facts(model: str) -> Architecture | None:
    """The checkpoint's config.json when it is on this machine, else the table, else None."""
    if not model:
        return None
    table = next((arch for pattern, arch in TABLE if re.search(pattern, model.lower())), None)
    found = local_config(model)
    if found is None:
        return table
    path, config = found
    return from_config(config, str(path), table)


def local_config(model: str) -> tuple[Path, dict[str, Any]] | None:
    """(path, parsed config.json) of a local checkpoint folder or a Hugging Face cache snapshot."""
    candidates = [Path(model).expanduser() / "config.json"]
    if re.fullmatch(r"[\w.-]+/[\w.-]+", model):
        hub = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", "~/.cache/huggingface"))
                   / "hub").expanduser()
        candidates += sorted(hub.glob(f"models--{model.replace('/', '--')}/snapshots/*/config.json"))
    for path in candidates:
        try:
            return path, json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
    return None


def from_config(config: dict[str, Any], source: str, known: Architecture | None = None) -> Architecture | None:
    """Facts from a config.json (text_config of a vision-language model); the table fills what it lacks."""
    text = config.get("text_config") or config
    try:
        hidden = int(text["hidden_size"])
        layers = int(text["num_hidden_layers"])
        heads = int(text["num_attention_heads"])
    except (KeyError, TypeError, ValueError):
        return known
    kv = int(text.get("num_key_value_heads") or heads)
    head_dim = int(text.get("head_dim") or hidden // heads)
    vocab = int(text.get("vocab_size") or config.get("vocab_size") or 0)
    tied = bool(config.get("tie_word_embeddings", text.get("tie_word_embeddings", False)))
    max_pos = int(text.get("max_position_embeddings") or (known.max_position_embeddings if known else 0))
    rope = text.get("rope_scaling") or {}
    if isinstance(rope, dict) and rope.get("factor") and rope.get("original_max_position_embeddings"):
        max_pos = max(max_pos, int(float(rope["factor"]) * int(rope["original_max_position_embeddings"])))
    params = known.params_b if known else _estimate_params(text, hidden, layers, heads, kv, head_dim, vocab, tied)
    return Architecture(params, layers, kv, head_dim, hidden, vocab, tied, max_pos,
                        known.vision_params_b if known else 0.0, known.family if known else "",
                        known.native_quantization if known else None, source)


def _estimate_params(text: dict[str, Any], hidden: int, layers: int, heads: int, kv: int, head_dim: int,
                     vocab: int, tied: bool) -> float:
    """Parameters from the shapes: attention + (expert) MLPs + embeddings; norms and biases ignored."""
    attention = hidden * head_dim * (2 * heads + 2 * kv)
    inter = int(text.get("moe_intermediate_size") or text.get("intermediate_size") or 4 * hidden)
    experts = int(text.get("num_experts") or text.get("num_local_experts") or text.get("n_routed_experts") or 1)
    return (layers * (attention + 3 * hidden * inter * experts) + vocab * hidden * (1 if tied else 2)) / 1e9


def quantization_in_id(model: str) -> str | None:
    """The quantization a model id announces (…-AWQ, …-FP8, …-GPTQ-Int4, …-NVFP4), if any."""
    for token, method in (("awq", "awq"), ("gptq", "gptq"), ("fp8", "fp8"), ("nvfp4", "nvfp4"),
                          ("w4a16", "w4a16"), ("int4", "int4"), ("4bit", "int4"), ("mxfp4", "mxfp4"),
                          ("w8a8", "w8a8"), ("int8", "int8"), ("8bit", "int8")):
        if re.search(rf"(^|[-_/.]){token}($|[-_.])", model, re.I):
            return method
    return None
