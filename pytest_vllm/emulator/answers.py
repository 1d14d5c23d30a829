"""What the emulated model says: scripted answers for the suites' cases, read from suites/cases/*.yml.

This is the model, not the server: it thinks (reasoning text), answers (content) or calls tools.
How a vLLM server would present that (reasoning parser, tool parser, thinking switch) is decided in
`pytest_vllm.emulator.parsing`. A prompt that contains a case's prompt gets that case's answer;
images are really looked at (`vision`); anything else gets a short generic reply.
Faults that change what the model says are applied here: wrong_answer, image_ignored,
tool_args_invalid_json, tool_args_schema_violation.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import vision
from .tokens import text_of

DEFAULT_CASES_DIR = Path(__file__).resolve().parents[2] / "suites" / "cases"
FILLER = " and so on"


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str  # JSON text, as the model wrote it


@dataclass
class Answer:
    reasoning: str
    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _fact(key: Any, value: Any, wrong: bool) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{key} {value}"
    return f"{key} {_number(value + 7 if wrong else value)}"


def example_for(schema: dict[str, Any]) -> Any:
    """A small instance valid against a JSON schema (used when no case says what to call)."""
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type", "object")
    if kind == "object":
        props = schema.get("properties", {})
        return {name: example_for(sub) for name, sub in props.items()}
    if kind == "array":
        return [example_for(schema.get("items", {}))]
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "number":
        return float(schema.get("minimum", 1.0))
    if kind == "boolean":
        return True
    return "Paris"[: schema.get("maxLength", 5)] or "x"


def _schema_breaker(schema: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
    """The same arguments with the first required property given a value of the wrong type."""
    broken = dict(args)
    props = schema.get("properties", {})
    name = next(iter(schema.get("required") or props), None)
    if name is None:
        return {**broken, "unexpected": True}
    broken[name] = "wrong type" if props.get(name, {}).get("type") not in (None, "string") else 12345
    return broken


class Scripts:
    """The scripted model. Built from the suites' case files; a missing folder means generic answers."""

    def __init__(self, reasoning_cases: list[dict[str, Any]], tool_cases: list[dict[str, Any]],
                 needle: dict[str, Any] | None = None) -> None:
        self.reasoning_cases = reasoning_cases
        self.tool_cases = tool_cases
        self.needle = needle or {}

    @classmethod
    def from_dir(cls, cases_dir: Path | None = None) -> Scripts:
        folder = cases_dir or DEFAULT_CASES_DIR

        def read(name: str) -> dict[str, Any]:
            path = folder / name
            return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}) if path.is_file() else {}
        return cls(read("reasoning.yml").get("cases", []), read("tools.yml").get("cases", []),
                   read("long_context.yml"))

    def _recall(self, text: str, faults: frozenset[str]) -> Answer | None:
        """The long-context case: the needle's code when the question asks for it (lost if the context was
        cut, fault context_truncated: only the second half of a long prompt is seen)."""
        if not self.needle or self.needle["question"] not in text:
            return None
        if "context_truncated" in faults:
            text = text[len(text) // 2:]
        pattern = re.escape(self.needle["needle"]).replace(re.escape("{code}"), r"(\d+)")
        found = re.search(pattern, text)
        return Answer("The question asks for a fact stated earlier; I look it up.",
                      found.group(1) if found else "I could not find an access code in the text.")

    @staticmethod
    def _find(cases: list[dict[str, Any]], text: str) -> dict[str, Any] | None:
        flat = " ".join(text.split())
        return next((c for c in cases if " ".join(str(c.get("prompt", "")).split()) in flat), None)

    def answer(self, request: dict[str, Any], images: list[bytes], faults: frozenset[str]) -> Answer:
        messages = request.get("messages") or []
        last = messages[-1] if messages else {}
        user_text = next((text_of(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
        if last.get("role") == "tool":
            return self._after_tools(messages, faults)
        tools = request.get("tools") or []
        choice = request.get("tool_choice", "auto" if tools else "none")
        if tools and choice != "none":
            calls = self._tool_calls(tools, choice, user_text, request.get("parallel_tool_calls", True), faults)
            if calls:
                return Answer("The user needs data only a tool has, so I call it.", "", calls)
        if images:
            return self._look(images, user_text, faults)
        case = self._find(self.reasoning_cases, user_text)
        if case:
            return self._solve(case, faults)
        recalled = self._recall(user_text, faults)
        if recalled:
            return recalled
        words = " ".join(user_text.split()[:12]).rstrip(".!?")
        return Answer(f"The user wrote: {words}. A short, friendly reply will do.",
                      f"Hello from the pytest-vllm emulator. You said: {words}")

    def _solve(self, case: dict[str, Any], faults: frozenset[str]) -> Answer:
        wrong = "wrong_answer" in faults
        if case.get("kind") == "plan":
            steps = int(case["steps"]) + (1 if wrong else 0)
            lines = [f"{i}. Step {i}: do part {i} of the work and check it before moving on."
                     for i in range(1, steps + 1)]
            return Answer(f"I need a plan with {case['steps']} steps; I list them in order.", "\n".join(lines))
        value = float(case["answer"]) + (7 if wrong else 0)
        return Answer("Let me work through the numbers step by step, then check the result.",
                      f"Working through the problem gives {_number(value)}.\nANSWER: {_number(value)}")

    def _look(self, images: list[bytes], question: str, faults: frozenset[str]) -> Answer:
        if "image_ignored" in faults:
            return Answer("The user refers to an image, but I do not see any.",
                          "I cannot see any image in your message.")
        words = [vision.describe(data, question) for data in images]
        return Answer("I look at each image in turn.", ", ".join(words))

    def _tool_calls(self, tools: list[dict[str, Any]], choice: Any, text: str, parallel: bool,
                    faults: frozenset[str]) -> list[ToolCall]:
        schemas = {t["function"]["name"]: t["function"].get("parameters") or {} for t in tools if "function" in t}
        case = self._find(self.tool_cases, text)
        planned = [(c["name"], c["arguments"]) for c in (case or {}).get("calls", []) if c["name"] in schemas]
        if isinstance(choice, dict):
            name = choice["function"]["name"]
            planned = [p for p in planned if p[0] == name][:1] or [(name, example_for(schemas[name]))]
        elif choice == "required" and not planned:
            first = next(iter(schemas))
            planned = [(first, example_for(schemas[first]))]
        if parallel is False:
            planned = planned[:1]
        calls = []
        for name, args in planned:
            if "tool_args_schema_violation" in faults:
                args = _schema_breaker(schemas[name], args)
            text_args = json.dumps(args, ensure_ascii=False)
            if "tool_args_invalid_json" in faults:
                text_args = text_args[:-1].replace('"', "'", 2)
            calls.append(ToolCall(name, text_args))
        return calls

    def _after_tools(self, messages: list[dict[str, Any]], faults: frozenset[str]) -> Answer:
        results = []
        for message in reversed(messages):
            if message.get("role") != "tool":
                break
            results.insert(0, text_of(message.get("content")))
        facts = []
        for raw in results:
            try:
                data = json.loads(raw)
            except ValueError:
                facts.append(raw)
                continue
            items = data.items() if isinstance(data, dict) else enumerate(data if isinstance(data, list) else [data])
            facts += [_fact(key, value, "wrong_answer" in faults) for key, value in items]
        return Answer("The tools answered; I summarise what they returned.",
                      "According to the tools: " + "; ".join(facts) + ".")
