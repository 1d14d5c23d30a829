"""vLLM's other routes in the emulator: /v1/completions (plain and streamed), /tokenize, /detokenize.

Shapes from vLLM 0.32 (`entrypoints/openai/completion/protocol.py`, `serve/tokenize/protocol.py`).
A completion is the model's generic reply to the prompt text, presented without reasoning or tools,
timed by the same latency model and prefix cache as chat. Token ids come from an intern table: the
emulator's tokens numbered in order of first sight. Plain-text tokens keep their leading whitespace,
so a /tokenize -> /detokenize round trip gives the text back, as a byte-level BPE does.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any

from .parsing import Output
from .protocol import dumps, usage
from .tokens import render_prompt

_TEXT_TOKEN = re.compile(r"\s*(?:\w+|[^\w\s])|\s+$")


def text_tokens(text: str) -> list[str]:
    """Tokens of a plain prompt, whitespace kept: ''.join(text_tokens(t)) == t."""
    return _TEXT_TOKEN.findall(text)


class Vocabulary:
    """Token <-> id, ids handed out in order of first sight (thread-safe)."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._tokens: list[str] = []
        self._lock = threading.Lock()

    def ids(self, tokens: list[str]) -> list[int]:
        with self._lock:
            for token in tokens:
                if token not in self._ids:
                    self._ids[token] = len(self._tokens)
                    self._tokens.append(token)
            return [self._ids[t] for t in tokens]

    def text(self, ids: list[int]) -> str:
        with self._lock:
            if any(not isinstance(i, int) or not 0 <= i < len(self._tokens) for i in ids):
                raise ValueError(f"token id out of range: the vocabulary has {len(self._tokens)} tokens")
            return "".join(self._tokens[i] for i in ids)


def prompt_of(req: dict[str, Any], image_tokens: int) -> list[str]:
    """The tokens /tokenize counts: a chat (`messages`, template applied) or a plain `prompt`."""
    if "messages" in req:
        return render_prompt(req["messages"], req.get("tools"), [], image_tokens)
    prompt = req.get("prompt")
    if not isinstance(prompt, str):
        raise ValueError("either 'prompt' (a string) or 'messages' is required")
    return text_tokens(prompt)


def tokenize_body(ids: list[int], max_model_len: int) -> dict[str, Any]:
    return {"count": len(ids), "max_model_len": max_model_len, "tokens": ids, "token_strs": None}


def completion_body(output: Output, *, request_id: str, model: str, prompt_tokens: int) -> dict[str, Any]:
    return {"id": request_id, "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "text": output.content or "", "logprobs": None,
                         "finish_reason": output.finish_reason, "stop_reason": None, "token_ids": None,
                         "prompt_logprobs": None, "prompt_token_ids": None, "routed_experts": None}],
            "service_tier": None, "system_fingerprint": None,
            "usage": {**usage(prompt_tokens, output), "prompt_tokens_details": None}, "kv_transfer_params": None,
            "ec_transfer_params": None, "metrics": None}


class CompletionChunks:
    """The `data: ...` lines of a streamed completion: one per token, finish reason on the last."""

    def __init__(self, request_id: str, model: str, output: Output) -> None:
        self.head = {"id": request_id, "object": "text_completion", "created": int(time.time()), "model": model}
        self.output = output

    def _line(self, body: dict[str, Any]) -> bytes:
        return f"data: {dumps({**self.head, **body})}\n\n".encode()

    def token(self, index: int) -> bytes:
        last = index == len(self.output.pieces) - 1
        return self._line({"choices": [{"index": 0, "text": self.output.pieces[index].text, "logprobs": None,
                                        "finish_reason": self.output.finish_reason if last else None,
                                        "stop_reason": None, "token_ids": None}]})

    def usage(self, prompt_tokens: int) -> bytes:
        return self._line({"choices": [], "usage": usage(prompt_tokens, self.output)})
