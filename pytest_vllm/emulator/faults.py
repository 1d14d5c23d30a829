"""The faults the emulator can inject: each one is a deployment mistake a suite exists to catch.

A fault is switched on by name (`--fault NAME`, `EmulatorServer(faults=[...])`). The description
says what the emulator then does, so a failing suite can be traced back to the fault it met.
"""

from __future__ import annotations

from collections.abc import Iterable

FAULTS: dict[str, str] = {
    "slow_start": "/health answers 503 for slow_start_s seconds (default: longer than any test waits)",
    "crash": "the server dies on the first chat completion (connection dropped, socket closed)",
    "http_5xx": "every /v1 POST answers 500 with vLLM's dead-engine error body",
    "unauthorized_401": "every /v1 request answers 401, even with the right API key",
    "no_tool_parser": "tool_choice other than 'none' answers 400 as vLLM without --enable-auto-tool-choice",
    "tool_call_in_content": "tool calls come back as '<tool_call>...' text in content, tool_calls empty",
    "tool_args_invalid_json": "tool-call arguments are not valid JSON (cut short)",
    "tool_args_schema_violation": "tool-call arguments are JSON but break the tool's parameters schema",
    "missing_reasoning": "no reasoning text although thinking is on (reasoning field null)",
    "think_leak": "the thinking comes back inside content as '<think>...</think>', reasoning null",
    "wrong_answer": "reasoning tasks and tool-result turns get a wrong final answer",
    "no_cache_speedup": "prefix-cache hits are counted in /metrics but the prefill is not shortened",
    "image_ignored": "images are dropped before the model: answers say there is no image",
    "image_limit_not_enforced": "more images than max_images are accepted instead of a 400",
    "tool_delta_no_index": "streamed tool-call deltas carry no 'index' (the OpenAI SDK's stream helper rejects them)",
}


class UnknownFault(ValueError):
    """A fault name the emulator does not know."""

    def __init__(self, name: str) -> None:
        super().__init__(f"unknown emulator fault '{name}'; known faults: {', '.join(FAULTS)}")


def parse_faults(names: Iterable[str] | str | None) -> frozenset[str]:
    """Fault names from a list or a comma-separated string; raises UnknownFault on a typo."""
    if names is None:
        return frozenset()
    if isinstance(names, str):
        names = names.split(",")
    found = {n.strip() for n in names if n and n.strip()}
    for name in found:
        if name not in FAULTS:
            raise UnknownFault(name)
    return frozenset(found)
