"""The emulator's tokenizer: a deterministic split, not a real BPE.

Prompt side: the chat is rendered ChatML-style (role markers, tool definitions as JSON) and split
into words and single punctuation marks (`\\w+|[^\\w\\s]`); whitespace is not a token. Each image
counts `image_tokens` tokens derived from a hash of its bytes, so two different images never share
a cache block. Output side: text is cut into word pieces that keep their leading whitespace
(`\\s*\\S+`), one streamed chunk per piece, so joining the pieces gives the text back.
Token counts are therefore close to, not equal to, what a real tokenizer gives.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

_PROMPT_TOKEN = re.compile(r"\w+|[^\w\s]")
_OUTPUT_PIECE = re.compile(r"\s*\S+|\s+")
_JSON_PIECE = re.compile(r"\s*(?:\w+|[^\w\s])")


def prompt_tokens(text: str) -> list[str]:
    return _PROMPT_TOKEN.findall(text)


def output_pieces(text: str) -> list[str]:
    """Stream pieces of generated text; ''.join(pieces) == text."""
    return _OUTPUT_PIECE.findall(text)


def json_pieces(text: str) -> list[str]:
    """Stream pieces of tool-call arguments (a few characters each, as vLLM's deltas are)."""
    pieces = _JSON_PIECE.findall(text)
    rest = text[len("".join(pieces)):]
    return pieces + ([rest] if rest else [])


def image_tokens(data: bytes, count: int) -> list[str]:
    digest = hashlib.sha256(data).hexdigest()[:16]
    return [f"<img:{digest}:{i}>" for i in range(count)]


def text_of(content: Any) -> str:
    """The text parts of an OpenAI message content (a string or a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def render_prompt(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None,
                  images: list[bytes], tokens_per_image: int) -> list[str]:
    """The prompt's tokens in the order the model would see them (tools first, as Qwen's template)."""
    out: list[str] = []
    if tools:
        out += prompt_tokens("<|im_start|>system # Tools " + json.dumps(tools, sort_keys=True) + "<|im_end|>")
    image_iter = iter(images)
    for message in messages:
        out += prompt_tokens(f"<|im_start|>{message.get('role', 'user')}")
        content = message.get("content")
        parts = content if isinstance(content, list) else [{"type": "text", "text": content or ""}]
        for part in parts:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "text":
                out += prompt_tokens(str(part.get("text", "")))
            elif part.get("type") == "image_url":
                data = next(image_iter, b"")
                out += image_tokens(data, tokens_per_image)
        for call in message.get("tool_calls") or []:
            out += prompt_tokens(json.dumps(call.get("function", {}), sort_keys=True))
        out += prompt_tokens("<|im_end|>")
    out += prompt_tokens("<|im_start|>assistant")
    return out
