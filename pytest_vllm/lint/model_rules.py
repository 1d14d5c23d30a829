"""Rules from what the checkpoint is (model_facts.py): its context limit and the tool parser it needs.

Both profiles and compose commands get them. A model nobody knows is skipped, never guessed at.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

from .consistency import size
from .findings import RULES, Finding
from .model_facts import facts

# Tool-call parsers written for one model family's tool-call format (the others: not judged).
PARSER_FAMILIES: dict[str, set[str]] = {
    "hermes": {"qwen2.5", "qwen3"}, "qwen3_coder": {"qwen3"}, "qwen3_xml": {"qwen3"},
    "llama3_json": {"llama"}, "llama4_json": {"llama"}, "llama4_pythonic": {"llama"}, "pythonic": {"llama"},
    "mistral": {"mistral"}, "openai": {"gpt-oss"},
}
FAMILY_PARSERS = {"qwen2.5": "hermes", "qwen3": "hermes (qwen3_coder for Qwen3-Coder)", "llama": "llama3_json",
                  "mistral": "mistral", "gpt-oss": "openai"}
LONG_CONTEXT_ENV = "VLLM_ALLOW_LONG_MAX_MODEL_LEN"


def check_model(model: str, values: Mapping[str, str | bool], env: Mapping[str, str], file: str,
                key: str) -> list[Finding]:
    """VG007 and VG009 for one engine: `values` are its flags (canonical name -> last value)."""
    arch = facts(model)
    if arch is None:
        return []
    return [*_context(model, arch.max_position_embeddings, arch.source, values, env, file, key),
            *_tool_parser(model, arch.family, values, file, key)]


def _context(model: str, limit: int, source: str, values: Mapping[str, str | bool], env: Mapping[str, str],
             file: str, key: str) -> Iterable[Finding]:
    wanted = size(values.get("max-model-len", ""))
    if wanted is None or wanted <= limit or _rope_override(values) or env.get(LONG_CONTEXT_ENV) in ("1", "true"):
        return
    where = "its config.json" if source != "table" else "its config.json (max_position_embeddings)"
    yield RULES["VG007"](file, key, f"--max-model-len {wanted} is beyond the {limit} tokens {model} reads "
                         f"({where}) and no rope scaling is given: vLLM refuses ('User-specified max_model_len "
                         "... is greater than the derived max_model_len')",
                         f"lower --max-model-len to {limit}, or add YaRN rope scaling: --hf-overrides "
                         f"'{{\"rope_scaling\": {{\"rope_type\": \"yarn\", \"factor\": {-(-wanted // limit)}.0, "
                         f"\"original_max_position_embeddings\": {limit}}}}}' (--rope-scaling before vLLM 0.11)")


def _rope_override(values: Mapping[str, str | bool]) -> bool:
    if values.get("rope-scaling"):
        return True
    overrides = values.get("hf-overrides")
    if not isinstance(overrides, str):
        return False
    try:
        parsed = json.loads(overrides)
    except ValueError:
        return "rope" in overrides  # VF002 reports the JSON; do not pile a second error on it
    return isinstance(parsed, dict) and any("rope" in k for k in parsed)


def _tool_parser(model: str, family: str, values: Mapping[str, str | bool], file: str,
                 key: str) -> Iterable[Finding]:
    parser = values.get("tool-call-parser")
    if not isinstance(parser, str) or parser not in PARSER_FAMILIES or not family:
        return
    if family in PARSER_FAMILIES[parser] or parser.split("_")[0] in model.lower():
        return  # also: a fine-tune named after the format it was trained on (Hermes-3-Llama + hermes)
    yield RULES["VG009"](file, key, f"--tool-call-parser {parser} reads the tool-call format of "
                         f"{'/'.join(sorted(PARSER_FAMILIES[parser]))} models, but {model} is a {family} model: its "
                         "tool calls come back as plain text", f"use --tool-call-parser "
                         f"{FAMILY_PARSERS.get(family, 'the parser of its family')}")
