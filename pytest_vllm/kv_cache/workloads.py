"""The prompts of a KV-cache measurement: what a MISS round and a HIT round send, sized in the server's tokens.

- `long_prefix`: one long shared system prompt (~3k tokens) and a short question that changes each round.
- `agent_conversation`: an agent conversation of `CONVERSATION_TURNS` turns whose history grows every
  turn (tool output in, scripted reply out); turn 1 opens it, turns 2..N are measured.

MISS rounds put a fresh random salt at the very start of the prompt, so no cache block can match
anything sent before. HIT rounds repeat a prefix the server has just computed: the long prefix primed
once, or the conversation's previous turn. Prompt sizes are stated in tokens and calibrated on the
server's own tokenizer (`usage.prompt_tokens` of two probe prompts), so "3k tokens" holds on any model.
"""

from __future__ import annotations

import random
import secrets
from dataclasses import dataclass
from typing import Any

from ..errors import VllmTestError
from ..http import VllmClient

CACHE_STATES = ("miss", "hit")
LONG_PREFIX_TOKENS = 3000
CONVERSATION_TURNS = 12  # turn 1 opens the conversation; 11 turns measured
CONVERSATION_SYSTEM_TOKENS = 1000  # agent instructions and tool descriptions
CONVERSATION_TOOL_TOKENS = 180  # tool output the agent reads each turn
CONVERSATION_REPLY_TOKENS = 50  # the agent's (scripted) reply each turn

_WORDS = (
    "the deployment server request token cache prefix model latency queue worker node memory batch prompt "
    "answer agent tool result file line error status check retry timeout config flag value port health "
    "metric log engine block layer weight shard replica window context history turn step plan task report "
    "summary output input stream chunk buffer thread process signal limit budget operator runbook backup "
    "restore volume network route proxy certificate secret key rotate image container service compose "
    "release rollback canary traffic alert threshold dashboard nightly build test suite profile driver gpu "
    "kernel scheduler tensor parallel pipeline quantized checkpoint tokenizer template reasoning vision"
).split()


class MeasurementError(VllmTestError):
    """A TTFT measurement could not be taken (the server answered an error or streamed no text)."""


def filler(words: int, seed: int) -> str:
    """Deterministic sentence-shaped text of `words` words (same seed, same text)."""
    rng = random.Random(seed)
    sentences, left = [], words
    while left > 0:
        n = min(left, rng.randint(8, 16))
        body = " ".join(rng.choice(_WORDS) for _ in range(n))
        sentences.append(body[0].upper() + body[1:] + ".")
        left -= n
    return " ".join(sentences)


def salt() -> str:
    return secrets.token_hex(6)


@dataclass(frozen=True)
class Request:
    messages: list[dict[str, Any]]
    measured: bool = True


@dataclass
class TextSize:
    """Words per token of the server's tokenizer, so prompt sizes can be given in tokens."""

    words_per_token: float = 0.75

    def words(self, tokens: int) -> int:
        return max(1, round(tokens * self.words_per_token))


def calibrate(client: VllmClient) -> TextSize:
    """Words per token of the server's tokenizer, from two probe prompts (also warms the server up)."""
    counts = []
    for words in (300, 900):
        probe = [{"role": "system", "content": f"Session {salt()}. " + filler(words, seed=3)},
                 {"role": "user", "content": "Hi."}]
        result = client.stream_chat(probe, max_tokens=1, temperature=0)
        tokens = (result.usage or {}).get("prompt_tokens")
        if result.status != 200 or not tokens:
            raise MeasurementError(f"calibration prompt: the server answered {result.status} "
                                   f"without usage.prompt_tokens: {result.error_body[:300]}")
        counts.append(tokens)
    return TextSize(words_per_token=600 / max(1, counts[1] - counts[0]))


class Workload:
    """Builds the requests of one round. Subclasses: the long shared prefix, the agent conversation."""

    name: str = ""
    description: str = ""

    def __init__(self, size: TextSize) -> None:
        self.size = size
        self.run_salt = salt()  # HIT prefix of this run: never seen by the server before this run

    def priming(self, cache: str) -> list[Request]:
        """Requests sent once before a series (unmeasured, before the metrics snapshot)."""
        return []

    def plan(self, cache: str, index: int) -> list[Request]:
        raise NotImplementedError


class LongPrefix(Workload):
    name = "long_prefix"
    description = f"one shared system prompt of ~{LONG_PREFIX_TOKENS} tokens, a new short question each round"

    def messages(self, prefix_salt: str, index: int) -> list[dict[str, Any]]:
        system = f"Session {prefix_salt}. Operations runbook follows. " + filler(
            self.size.words(LONG_PREFIX_TOKENS), seed=7)
        question = f"Question {index}: which step of the runbook covers {_WORDS[index % len(_WORDS)]}? Be brief."
        return [{"role": "system", "content": system}, {"role": "user", "content": question}]

    def priming(self, cache: str) -> list[Request]:
        return [Request(self.messages(self.run_salt, -1), measured=False)] if cache == "hit" else []

    def plan(self, cache: str, index: int) -> list[Request]:
        return [Request(self.messages(self.run_salt if cache == "hit" else salt(), index))]


class AgentConversation(Workload):
    name = "agent_conversation"
    description = (f"agent conversation of {CONVERSATION_TURNS} turns sharing a growing history "
                   f"(+~{CONVERSATION_TOOL_TOKENS + CONVERSATION_REPLY_TOKENS} tokens a turn); turns 2.. measured")

    def messages(self, conversation_salt: str, turn: int) -> list[dict[str, Any]]:
        """The request of turn `turn` (1-based): system, the history of earlier turns, this turn's tool output."""
        words = self.size.words
        out: list[dict[str, Any]] = [{"role": "system", "content": f"Session {conversation_salt}. You are an "
                                      "operations agent. " + filler(words(CONVERSATION_SYSTEM_TOKENS), seed=11)}]
        for k in range(1, turn + 1):
            out.append({"role": "user", "content": f"Turn {k}. Tool output:\n"
                        + filler(words(CONVERSATION_TOOL_TOKENS), seed=100 + k)})
            if k < turn:
                out.append({"role": "assistant", "content": filler(words(CONVERSATION_REPLY_TOKENS), seed=500 + k)})
        return out

    def plan(self, cache: str, index: int) -> list[Request]:
        turns = range(2, CONVERSATION_TURNS + 1)
        if cache == "miss":  # every turn salted apart: each one prefills its whole history
            return [Request(self.messages(salt(), turn)) for turn in turns]
        conversation = salt()  # one conversation; each turn finds the previous turn's prefix cached
        return [Request(self.messages(conversation, 1), measured=False),
                *(Request(self.messages(conversation, turn)) for turn in turns)]


WORKLOAD_TYPES: dict[str, type[Workload]] = {w.name: w for w in (LongPrefix, AgentConversation)}
WORKLOADS = tuple(WORKLOAD_TYPES)
