"""How a vLLM server presents what the model generated: reasoning parser, tool parser, limits.

The model's raw output is `<think>reasoning</think>` (when thinking is on) then either text or
`<tool_call>{...}</tool_call>` blocks. vLLM then, as the emulator does here:
- with `--reasoning-parser`, moves the thinking into the `reasoning` field; without one, the tags
  stay in `content` (fault think_leak); a model that does not think gives none (missing_reasoning);
- thinking is switched off per request by `chat_template_kwargs: {"enable_thinking": false}`;
- with a tool parser, turns the blocks into `tool_calls` (finish_reason "tool_calls" for auto and
  required, "stop" for a named function); without (fault tool_call_in_content) they stay text;
- stops at `max_tokens` (finish_reason "length"); a call cut short is returned as text.
The result is a list of output tokens, so the streamed and non-streamed answers agree by construction.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from .answers import FILLER, Answer
from .config import EmulatedModel
from .tokens import json_pieces, output_pieces


@dataclass(frozen=True)
class Piece:
    """One output token. kind: reasoning | content | call (a tool call's name) | arguments."""

    kind: str
    text: str
    call: int = -1


@dataclass
class Call:
    id: str
    name: str
    arguments: str = ""


@dataclass
class Output:
    pieces: list[Piece]
    finish_reason: str
    calls: list[Call] = field(default_factory=list)
    content_is_empty_string: bool = False  # named/required choice: vLLM sends "" rather than null

    @property
    def reasoning(self) -> str | None:
        text = "".join(p.text for p in self.pieces if p.kind == "reasoning")
        return text or None

    @property
    def content(self) -> str | None:
        text = "".join(p.text for p in self.pieces if p.kind == "content")
        return text or ("" if self.content_is_empty_string else None)

    @property
    def completion_tokens(self) -> int:
        return len(self.pieces)

    @property
    def reasoning_tokens(self) -> int:
        return sum(1 for p in self.pieces if p.kind == "reasoning")


def _tool_head(name: str) -> str:
    return f'<tool_call>\n{{"name": "{name}", "arguments": '


def _tool_text(name: str, arguments: str) -> str:
    return f"{_tool_head(name)}{arguments}}}\n</tool_call>"


def _thinking(request: dict[str, Any]) -> bool:
    kwargs = request.get("chat_template_kwargs") or {}
    return kwargs.get("enable_thinking", True) is not False


def present(answer: Answer, request: dict[str, Any], model: EmulatedModel, faults: frozenset[str]) -> Output:
    thinks = _thinking(request) and "missing_reasoning" not in faults and bool(answer.reasoning)
    parsed_reasoning = model.reasoning_parser is not None and "think_leak" not in faults
    pieces: list[Piece] = []
    if thinks and parsed_reasoning:
        if request.get("include_reasoning", True) is not False:
            pieces += [Piece("reasoning", t) for t in output_pieces(answer.reasoning)]
    elif thinks:
        pieces += [Piece("content", t) for t in output_pieces(f"<think>\n{answer.reasoning}\n</think>\n\n")]
    pieces += [Piece("content", t) for t in output_pieces(answer.content)]

    choice = request.get("tool_choice")
    calls: list[Call] = []
    parse_tools = model.tool_parser is not None and "tool_call_in_content" not in faults
    for call in answer.tool_calls:
        if parse_tools:
            index = len(calls)
            calls.append(Call(f"chatcmpl-tool-{secrets.token_hex(8)}", call.name))
            pieces.append(Piece("call", call.name, index))
            pieces += [Piece("arguments", t, index) for t in json_pieces(call.arguments)]
        else:
            pieces += [Piece("content", t) for t in output_pieces(_tool_text(call.name, call.arguments))]

    finish = "stop"
    if calls and not isinstance(choice, dict):
        finish = "tool_calls"
    max_tokens = request.get("max_completion_tokens") or request.get("max_tokens")
    if max_tokens and request.get("ignore_eos") and len(pieces) < max_tokens:
        pieces += [Piece("content", FILLER)] * (max_tokens - len(pieces))
        finish = "length"
    if max_tokens and len(pieces) > max_tokens:
        pieces, finish = _cut(pieces[:max_tokens], calls, answer), "length"
        kept = {p.call for p in pieces if p.call >= 0}  # only the last call can be cut: indices stay valid
        calls = [c for i, c in enumerate(calls) if i in kept]
    for i, call in enumerate(calls):
        call.arguments = "".join(p.text for p in pieces if p.kind == "arguments" and p.call == i)
    named_or_required = isinstance(choice, dict) or choice == "required"
    return Output(pieces, finish, calls, content_is_empty_string=bool(calls) and named_or_required)


def _cut(pieces: list[Piece], calls: list[Call], answer: Answer) -> list[Piece]:
    """A call cut by max_tokens cannot be parsed: vLLM returns what the model wrote as text, token for token."""
    last = next((p.call for p in reversed(pieces) if p.call >= 0), None)
    if last is None:
        return pieces
    written = "".join(p.text for p in pieces if p.kind == "arguments" and p.call == last)
    if written == answer.tool_calls[last].arguments:
        return pieces
    head = _tool_head(calls[last].name)
    return [Piece("content", head if p.kind == "call" else p.text) if p.call == last else p for p in pieces]
