"""What the emulated deployment is: its model and the vLLM flags it behaves as if started with.

`EmulatedModel.from_vllm_flags` reads the same `server:` flags a profile gives real vLLM, so one
profile describes both the real deployment and its dry run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

REASONING_FIELDS = ("reasoning", "reasoning_content")


@dataclass(frozen=True)
class EmulatedModel:
    served_name: str = "emulated-qwen3"
    max_model_len: int = 32768
    reasoning_parser: str | None = "qwen3"   # --reasoning-parser
    tool_parser: str | None = "hermes"       # --enable-auto-tool-choice --tool-call-parser
    vision: bool = True                      # a vision-language checkpoint
    max_images: int = 3                      # --limit-mm-per-prompt '{"image": N}'
    prefix_caching: bool = True              # --enable-prefix-caching (vLLM V1 default)
    reasoning_field: str = "reasoning"       # vLLM >= 0.12: reasoning; 0.11: reasoning_content
    image_tokens: int = 64                   # prompt tokens one image costs

    def __post_init__(self) -> None:
        if self.reasoning_field not in REASONING_FIELDS:
            raise ValueError(f"reasoning_field must be one of {', '.join(REASONING_FIELDS)}")

    @classmethod
    def from_vllm_flags(cls, flags: dict[str, Any], served_name: str | None = None,
                        vision: bool | None = None, **overrides: Any) -> EmulatedModel:
        """From a profile's `server:` mapping ({flag: value}, dashes or underscores)."""
        norm = {str(k).lstrip("-").replace("_", "-"): v for k, v in flags.items()}
        limit = norm.get("limit-mm-per-prompt")
        if isinstance(limit, str):
            limit = json.loads(limit)
        values: dict[str, Any] = {
            "reasoning_parser": norm.get("reasoning-parser"),
            "tool_parser": norm.get("tool-call-parser") if norm.get("enable-auto-tool-choice") else None,
            "prefix_caching": norm.get("enable-prefix-caching", True) is not False,
        }
        if served_name:
            values["served_name"] = served_name
        if norm.get("max-model-len"):
            values["max_model_len"] = int(norm["max-model-len"])
        if isinstance(limit, dict) and "image" in limit:
            values["max_images"] = int(limit["image"])
        if vision is not None:
            values["vision"] = vision
        return cls(**{**values, **overrides})
