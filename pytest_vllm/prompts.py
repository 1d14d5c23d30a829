"""Prompts of a given size in tokens, as the server counts them, optionally with a needle in them.

Long-context and throughput checks need a prompt of N tokens for whatever model is deployed. The
server's own /tokenize (chat template applied) is the ruler: filler text is sized from one
measurement of its token rate, then corrected until the count is within `tolerance` of the target
(a few /tokenize calls; text in, count out, nothing is generated). Filler is words drawn from a fixed
list with a seeded generator, prefixed by a salt so no two prompts share a cached prefix.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass
from typing import Any

from .http import VllmClient

WORDS = ("river", "lantern", "granite", "orchard", "harbor", "meadow", "copper", "violet", "summit", "falcon",
         "maple", "canyon", "ember", "glacier", "willow", "thunder", "saffron", "quartz", "prairie", "anchor",
         "cobalt", "juniper", "mosaic", "nectar", "pebble", "raven", "tundra", "velvet", "zephyr", "beacon")
MAX_CORRECTIONS = 6


class PromptSizeError(RuntimeError):
    """The server's token count could not be brought near the target (a tokenizer that is not monotonic?)."""


@dataclass(frozen=True)
class SizedPrompt:
    messages: list[dict[str, Any]]
    tokens: int  # as the server's /tokenize counted them
    needle: str | None = None  # the fact hidden in the filler, when one was asked for


def filler(words: int, seed: int) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(words))


def _messages(salt: str, body: str, question: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": f"[{salt}] {body}\n\n{question}"}]


def _with_needle(text: str, needle: str, depth: float) -> str:
    words = text.split(" ")
    at = int(len(words) * depth)
    return " ".join([*words[:at], needle, *words[at:]])


def sized_prompt(client: VllmClient, target_tokens: int, *, salt: str, question: str, needle: str | None = None,
                 depth: float = 0.25, tolerance: float = 0.01) -> SizedPrompt:
    """A one-message chat of `target_tokens` (within `tolerance`, counted by the server's /tokenize):
    salt, filler (with `needle` at `depth` of it), then the `question`."""
    seed = zlib.crc32(salt.encode())

    def build(words: int) -> list[dict[str, Any]]:
        body = filler(words, seed)
        return _messages(salt, _with_needle(body, needle, depth) if needle else body, question)

    empty = client.count_tokens(build(0))
    probe_words = 200
    rate = max((client.count_tokens(build(probe_words)) - empty) / probe_words, 0.1)  # tokens per filler word
    words = max(0, round((target_tokens - empty) / rate))
    slack = max(1, int(target_tokens * tolerance))
    for _ in range(MAX_CORRECTIONS):
        messages = build(words)
        count = client.count_tokens(messages)
        if abs(count - target_tokens) <= slack:
            return SizedPrompt(messages, count, needle)
        words = max(0, words + round((target_tokens - count) / rate))
    raise PromptSizeError(f"could not size a prompt to {target_tokens} tokens (last: {count} with {words} words); "
                          "the server's /tokenize counts do not follow the text length")
