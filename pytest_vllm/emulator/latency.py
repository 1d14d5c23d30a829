"""The emulator's latency model: a known ground truth for TTFT and KV-cache measurements.

    TTFT      = base_ms + prefill_ms_per_token x (prompt tokens not found in the prefix cache)
    each next = decode_ms_per_token

each multiplied by an independent log-normal factor of mean 1 and coefficient of variation
`noise_cv` drawn from a seeded generator, so a run is reproducible and its noise is known.

The prefix cache works like vLLM's: the prompt is cut into full blocks of `block_size` tokens, each
block's hash chains its parent's hash and its own tokens, a hit is the longest run of leading blocks
already cached, and at least the last prompt token is always recomputed. Blocks are kept LRU up to
`cache_blocks`. Requests are timed independently (no batching, no queueing).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class LatencyModel:
    base_ms: float = 2.0
    prefill_ms_per_token: float = 0.1
    decode_ms_per_token: float = 2.0
    block_size: int = 16
    cache_blocks: int = 65536
    noise_cv: float = 0.0
    seed: int | None = 0

    def __post_init__(self) -> None:
        if self.block_size < 1 or self.cache_blocks < 0 or self.noise_cv < 0:
            raise ValueError("latency model: block_size >= 1, cache_blocks >= 0 and noise_cv >= 0 are required")


@dataclass(frozen=True)
class Timing:
    """The injected timing of one request: what a perfect client would measure."""

    prompt_tokens: int
    cached_tokens: int
    ttft_s: float
    token_gaps_s: tuple[float, ...]  # delay before each output token after the first

    @property
    def e2e_s(self) -> float:
        return self.ttft_s + sum(self.token_gaps_s)


def block_hashes(tokens: Sequence[str], block_size: int) -> list[bytes]:
    """Chained hashes of the full blocks, as vLLM hashes (parent hash, block tokens)."""
    hashes: list[bytes] = []
    parent = b""
    for start in range(0, len(tokens) - block_size + 1, block_size):
        h = hashlib.sha256(parent)
        for token in tokens[start:start + block_size]:
            h.update(token.encode("utf-8") + b"\x00")
        parent = h.digest()
        hashes.append(parent)
    return hashes


class PrefixCache:
    """Block-level prefix cache with LRU eviction. Not thread-safe: the server serialises calls."""

    def __init__(self, block_size: int, capacity_blocks: int) -> None:
        self.block_size = block_size
        self.capacity = capacity_blocks
        self._blocks: OrderedDict[bytes, None] = OrderedDict()

    def lookup_and_insert(self, tokens: Sequence[str]) -> int:
        """Cached prompt tokens for this prompt; then its full blocks are cached for the next one."""
        hashes = block_hashes(tokens, self.block_size)
        max_hit_blocks = (len(tokens) - 1) // self.block_size  # the last token is always computed
        hit = 0
        for h in hashes[:max_hit_blocks]:
            if h not in self._blocks:
                break
            hit += 1
        for h in hashes:
            self._blocks[h] = None
            self._blocks.move_to_end(h)
        while len(self._blocks) > self.capacity:
            self._blocks.popitem(last=False)
        return hit * self.block_size

    def clear(self) -> None:
        self._blocks.clear()


class Clock:
    """Turns token counts into a Timing with the model's noise. Not thread-safe (seeded sequence)."""

    def __init__(self, model: LatencyModel) -> None:
        self.model = model
        self._rng = random.Random(model.seed)
        cv = model.noise_cv
        self._sigma = math.sqrt(math.log(1.0 + cv * cv))

    def _noise(self) -> float:
        if self._sigma == 0.0:
            return 1.0
        return self._rng.lognormvariate(-self._sigma ** 2 / 2.0, self._sigma)

    def timing(self, prompt_tokens: int, cached_tokens: int, output_tokens: int,
               uncached_tokens: int | None = None) -> Timing:
        """`uncached_tokens` overrides what prefill pays for (the no_cache_speedup fault pays for all)."""
        m = self.model
        paid = prompt_tokens - cached_tokens if uncached_tokens is None else uncached_tokens
        ttft_ms = (m.base_ms + m.prefill_ms_per_token * paid) * self._noise()
        gaps = tuple(m.decode_ms_per_token * self._noise() / 1000.0 for _ in range(max(0, output_tokens - 1)))
        return Timing(prompt_tokens, cached_tokens, ttft_ms / 1000.0, gaps)
