"""KV-cache acceleration: TTFT on prompts the server has never seen (MISS) against prompts whose prefix it
already holds (HIT), on the users' workloads, confirmed by vLLM's own prefix-cache counters.

Workloads:
- `long_prefix`: one long shared system prompt (~3k tokens) and a short question that changes each round.
- `agent_conversation`: an agent conversation of `CONVERSATION_TURNS` turns whose history grows every
  turn (tool output in, scripted reply out); turn 1 opens it, turns 2..N are measured.

MISS rounds put a fresh random salt at the very start of the prompt, so no cache block can match
anything sent before. HIT rounds repeat a prefix the server has just computed: the long prefix primed
once, or the conversation's previous turn. A round's value is the TTFT of its request, or the mean TTFT
over the measured turns of one conversation. Prompt sizes are stated in tokens and calibrated on the
server's own tokenizer (`usage.prompt_tokens` of two probe prompts), so "3k tokens" holds on any model.

Each series takes `/metrics` before and after: `vllm:prefix_cache_queries_total` and
`vllm:prefix_cache_hits_total` deltas (tokens) say whether HIT rounds really were served from the cache,
and the `vllm:time_to_first_token_seconds` histogram cross-checks our client-side TTFT.
"""

from __future__ import annotations

import random
import secrets
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from .errors import VllmTestError
from .http import VllmClient
from .metrics import Sample, has_vllm_metrics, total
from .profile import Profile
from .samples import Comparison, Summary, compare

WORKLOADS = ("long_prefix", "agent_conversation")
CACHE_STATES = ("miss", "hit")
LONG_PREFIX_TOKENS = 3000
CONVERSATION_TURNS = 12  # turn 1 opens the conversation; 11 turns measured
CONVERSATION_SYSTEM_TOKENS = 1000  # agent instructions and tool descriptions
CONVERSATION_TOOL_TOKENS = 180  # tool output the agent reads each turn
CONVERSATION_REPLY_TOKENS = 50  # the agent's (scripted) reply each turn
MAX_TOKENS = 4  # the answer only has to start; a few tokens in case the first is a silent special token
PAUSE_S = 0.05  # untimed gap before each request: the previous answer's tail must not weigh on this TTFT
HIT_RATE_ON = 0.5  # share of HIT prompt tokens served from cache above which caching is plainly on
MISS_HIT_RATE_MAX = 0.1  # MISS rounds must not hit the cache more than this (the salt works)
METRICS_SETTLE_S = 2.0

PREFIX_HITS = "vllm:prefix_cache_hits_total"
PREFIX_QUERIES = "vllm:prefix_cache_queries_total"
TTFT_SUM = "vllm:time_to_first_token_seconds_sum"
TTFT_COUNT = "vllm:time_to_first_token_seconds_count"

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


@dataclass(frozen=True)
class MetricsSnapshot:
    queries: float
    hits: float
    ttft_sum: float
    ttft_count: float
    has_prefix_counters: bool

    @classmethod
    def take(cls, client: VllmClient) -> MetricsSnapshot | None:
        """None when the server has no vLLM `/metrics` (an external endpoint behind a proxy, say)."""
        try:
            samples = client.metrics()
        except Exception:  # noqa: BLE001 - no metrics is a normal case for external endpoints
            return None
        if not has_vllm_metrics(samples):
            return None
        return cls.of(samples)

    @classmethod
    def of(cls, samples: list[Sample]) -> MetricsSnapshot:
        return cls(total(samples, PREFIX_QUERIES), total(samples, PREFIX_HITS), total(samples, TTFT_SUM),
                   total(samples, TTFT_COUNT), any(s.name == PREFIX_QUERIES for s in samples))

    def minus(self, before: MetricsSnapshot) -> MetricsDelta:
        return MetricsDelta(self.queries - before.queries, self.hits - before.hits,
                            self.ttft_sum - before.ttft_sum, self.ttft_count - before.ttft_count,
                            self.has_prefix_counters)


@dataclass(frozen=True)
class MetricsDelta:
    """What `/metrics` counted during one series (prefix cache in tokens, the server's TTFT histogram)."""

    queries: float
    hits: float
    ttft_sum: float
    ttft_count: float
    has_prefix_counters: bool

    @property
    def hit_rate(self) -> float | None:
        return self.hits / self.queries if self.queries else None

    @property
    def server_ttft_mean_s(self) -> float | None:
        return self.ttft_sum / self.ttft_count if self.ttft_count else None

    def as_dict(self) -> dict[str, Any]:
        rate = self.hit_rate
        return {"prefix_cache_queries": int(self.queries), "prefix_cache_hits": int(self.hits),
                "hit_rate": None if rate is None else round(rate, 4), "server_ttft_count": int(self.ttft_count)}


@dataclass
class SeriesResult:
    """One MISS or HIT series: a TTFT value per round, and what the server counted meanwhile."""

    workload: str
    cache: str
    rounds_s: list[float]
    prompt_tokens: list[int]  # of the measured requests
    client_ttft_s: list[float]  # every request inside the metrics window, measured or not
    metrics: MetricsDelta | None

    @property
    def summary(self) -> Summary:
        return Summary.of(self.rounds_s)

    @property
    def server_ttft_mean_s(self) -> float | None:
        return self.metrics.server_ttft_mean_s if self.metrics else None

    @property
    def client_ttft_mean_s(self) -> float:
        return statistics.fmean(self.client_ttft_s)

    def as_dict(self) -> dict[str, Any]:
        server = self.server_ttft_mean_s
        return {"workload": self.workload, "cache": self.cache, "ttft_ms": self.summary.as_dict(1000, 2),
                "rounds_ms": [round(v * 1000, 2) for v in self.rounds_s],
                "prompt_tokens_median": int(statistics.median(self.prompt_tokens)),
                "client_ttft_mean_ms": round(self.client_ttft_mean_s * 1000, 2),
                "server_ttft_mean_ms": None if server is None else round(server * 1000, 2),
                "metrics": self.metrics.as_dict() if self.metrics else None}


class Series:
    """MISS or HIT rounds of one workload, in the shape pytest-benchmark's `pedantic` wants:
    `prepare()` once, then `setup()` / `run_round(requests)` per round, then `finish()`."""

    def __init__(self, client: VllmClient, workload: Workload, cache: str, rounds: int) -> None:
        if cache not in CACHE_STATES:
            raise ValueError(f"cache must be one of {CACHE_STATES}, got {cache!r}")
        self.client, self.workload, self.cache, self.rounds = client, workload, cache, rounds
        self._index = 0
        self._before: MetricsSnapshot | None = None
        self._rounds_s: list[float] = []
        self._prompt_tokens: list[int] = []
        self._window_ttft: list[float] = []
        self.result: SeriesResult | None = None

    @property
    def name(self) -> str:
        return f"{self.workload.name}/{self.cache}"

    def prepare(self) -> None:
        """Prime (HIT), run one unmeasured warm-up round, then snapshot `/metrics`."""
        for request in self.workload.priming(self.cache):
            self._send(request)
        self._run(self._plan(), record=False)
        self._before = self._quiet_snapshot()
        self._rounds_s, self._prompt_tokens, self._window_ttft = [], [], []

    def setup(self) -> tuple[tuple[list[Request]], dict[str, Any]]:
        """Arguments of the next round (pytest-benchmark's `setup`: salting happens here, untimed)."""
        return (self._plan(),), {}

    def run_round(self, requests: list[Request]) -> float:
        """Send one round; returns its TTFT value in seconds (mean over its measured requests)."""
        value = self._run(requests, record=True)
        self._rounds_s.append(value)
        return value

    def finish(self) -> SeriesResult:
        metrics = self._settled_metrics()
        self.result = SeriesResult(self.workload.name, self.cache, list(self._rounds_s), list(self._prompt_tokens),
                                   list(self._window_ttft), metrics)
        return self.result

    def measure(self) -> SeriesResult:
        """All of it without pytest-benchmark."""
        self.prepare()
        for _ in range(self.rounds):
            (requests,), _ = self.setup()
            self.run_round(requests)
        return self.finish()

    def _plan(self) -> list[Request]:
        self._index += 1
        return self.workload.plan(self.cache, self._index)

    def _run(self, requests: list[Request], record: bool) -> float:
        ttfts = []
        for request in requests:
            ttft, prompt_tokens = self._send(request)
            if record:
                self._window_ttft.append(ttft)
                if request.measured:
                    self._prompt_tokens.append(prompt_tokens)
            if request.measured:
                ttfts.append(ttft)
        return statistics.fmean(ttfts)

    def _send(self, request: Request) -> tuple[float, int]:
        time.sleep(PAUSE_S)
        result = self.client.stream_chat(request.messages, max_tokens=MAX_TOKENS, temperature=0)
        if result.status != 200:
            raise MeasurementError(f"{self.name}: the server answered {result.status}: {result.error_body[:300]}")
        if result.ttft_s is None:
            raise MeasurementError(
                f"{self.name}: the stream carried no content or reasoning text in {MAX_TOKENS} tokens "
                f"(finish_reason {result.finish_reason!r}), so there is no first token to time")
        return result.ttft_s, int((result.usage or {}).get("prompt_tokens") or 0)

    def _quiet_snapshot(self) -> MetricsSnapshot | None:
        """A snapshot once the unmeasured requests are counted too (the server's stats trail the stream)."""
        deadline = time.monotonic() + METRICS_SETTLE_S
        last = MetricsSnapshot.take(self.client)
        while last is not None and time.monotonic() < deadline:
            time.sleep(0.1)
            now = MetricsSnapshot.take(self.client)
            if now == last:
                break
            last = now
        return last

    def _settled_metrics(self) -> MetricsDelta | None:
        """The delta once the server has counted every request of the window (its stats trail the stream)."""
        if self._before is None:
            return None
        deadline = time.monotonic() + METRICS_SETTLE_S
        while True:
            after = MetricsSnapshot.take(self.client)
            if after is None:
                return None
            delta = after.minus(self._before)
            if delta.ttft_count >= len(self._window_ttft) or time.monotonic() > deadline:
                return delta
            time.sleep(0.05)


@dataclass(frozen=True)
class PrefixCaching:
    """Whether prefix caching is effectively on, on what evidence, and where the configuration disagrees."""

    effective: str  # on | off | partial | unknown
    evidence: str
    configured: bool | None  # the profile's enable-prefix-caching (None: not set)
    engine: bool | None  # the engine's own report (start-up log or vllm:cache_config_info)
    warnings: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"effective": self.effective, "evidence": self.evidence, "profile_flag": self.configured,
                "engine_reports": self.engine, "warnings": list(self.warnings)}


def prefix_caching_verdict(profile: Profile, engine_config: dict[str, Any], hit: SeriesResult,
                           ratio: float) -> PrefixCaching:
    configured = profile.flag("enable-prefix-caching")
    configured = None if configured is None else bool(configured)
    engine = engine_config.get("enable_prefix_caching")
    engine = None if engine is None else bool(engine)
    m = hit.metrics
    n = len(hit.rounds_s)
    if m is not None and m.has_prefix_counters:
        counted = (f"/metrics: {PREFIX_HITS} rose by {int(m.hits)} tokens of {int(m.queries)} queried "
                   f"over {n} HIT rounds")
        rate = m.hit_rate or 0.0
        if m.hits == 0:
            effective, evidence = "off", counted
        elif rate >= HIT_RATE_ON:
            effective, evidence = "on", f"{counted} ({rate:.0%} served from cache)"
        else:
            effective, evidence = "partial", (f"{counted}: only {rate:.0%} of HIT prompt tokens came from the cache "
                                              "(cache too small for the prefix, or evicted between rounds?)")
    elif engine is not None:
        effective = "on" if engine else "off"
        evidence = f"engine reports enable_prefix_caching={engine}; no prefix-cache counters in /metrics to confirm"
    else:
        effective = "unknown"
        evidence = f"no /metrics counters and no engine config; TTFT MISS/HIT ratio ×{ratio:.2f}"
    return PrefixCaching(effective, evidence, configured, engine,
                         tuple(_configuration_warnings(profile, effective, configured, engine, evidence)))


def _configuration_warnings(profile: Profile, effective: str, configured: bool | None, engine: bool | None,
                            evidence: str) -> list[str]:
    """Where the profile's flags or the engine's report disagree with what was measured. Worded without the
    workload's numbers, so the same finding on two workloads is one warning in the report."""
    where = f"profile '{profile.name}' ({profile.path})"
    basis = "per /metrics prefix-cache counters" if "/metrics" in evidence else "per the engine's own report"
    out = []
    if configured is None and effective in ("on", "partial"):
        out.append(f"{where} does not set server.enable-prefix-caching, and prefix caching is ON ({basis}): vLLM "
                   ">= 0.10 (V1) enables it by default, so omitting --enable-prefix-caching does not disable it. To "
                   "run without it, write 'enable-prefix-caching: false' (--no-enable-prefix-caching).")
    elif configured is False and effective in ("on", "partial"):
        out.append(f"{where} sets enable-prefix-caching: false, yet the server caches ({basis}): the flag did not "
                   "reach the server; check the command the deployment really runs (compose command, extra_args).")
    elif configured is True and effective == "off":
        out.append(f"{where} sets enable-prefix-caching: true, yet nothing is served from the cache ({basis}): "
                   "check that the flag reaches the server and that the KV cache is large enough.")
    if engine is not None and effective in ("on", "off") and engine != (effective == "on"):
        out.append(f"the engine reports enable_prefix_caching={engine} but the measurement says {effective.upper()} "
                   f"({basis}): trust the measurement, and check which server answered.")
    return out


@dataclass
class Acceleration:
    """TTFT MISS / HIT of one workload: the ratio of medians, its interval, and the prefix-caching verdict."""

    workload: str
    miss: SeriesResult
    hit: SeriesResult
    comparison: Comparison  # miss / hit, Hodges-Lehmann with interval
    caching: PrefixCaching
    notes: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        """Ratio of medians, the headline number."""
        return self.miss.summary.median / self.hit.summary.median

    def describe(self) -> str:
        ms, hs = self.miss.summary, self.hit.summary
        c = self.comparison
        return (f"{self.workload}: TTFT MISS median {ms.median * 1000:.1f} ms (IQR {ms.q1 * 1000:.1f}-"
                f"{ms.q3 * 1000:.1f}), HIT median {hs.median * 1000:.1f} ms (IQR {hs.q1 * 1000:.1f}-"
                f"{hs.q3 * 1000:.1f}), {ms.n}+{hs.n} rounds: acceleration ×{self.ratio:.2f} "
                f"({c.confidence:.0%} interval ×{c.low:.2f}-×{c.high:.2f}); prefix caching "
                f"{self.caching.effective.upper()} ({self.caching.evidence})")

    def problems(self, minimum: float | None, source: str) -> list[str]:
        """What makes this measurement fail: below the threshold, hits not confirmed, MISS rounds cached."""
        out = []
        miss_rate = self.miss.metrics.hit_rate if self.miss.metrics else None
        if miss_rate is not None and miss_rate > MISS_HIT_RATE_MAX:
            out.append(f"MISS rounds were served from the cache ({miss_rate:.0%} of their prompt tokens hit): the salt "
                       "did not make them cold, so the acceleration is understated; is a proxy rewriting prompts?")
        if minimum is not None and self.ratio < minimum:
            out.append(f"KV-cache acceleration ×{self.ratio:.2f} is below the required ×{minimum:g} ({source}). "
                       + self._why_slow())
        elif self.caching.effective == "off" and self.ratio >= 1.5:  # a real speed-up, not noise
            out.append(f"TTFT drops ×{self.ratio:.2f} on HIT rounds but /metrics shows no prefix-cache hit "
                       f"({self.caching.evidence}): the speed-up does not come from vLLM's prefix cache "
                       "(a response cache in front of the server?)")
        return out

    def _why_slow(self) -> str:
        c = self.caching
        if c.effective == "off":
            cause = "Prefix caching is OFF on this deployment: " + c.evidence + "."
            if c.configured is False:
                cause += (" The profile sets enable-prefix-caching: false (--no-enable-prefix-caching). Fix: remove "
                          "it; vLLM V1 enables prefix caching by default.")
            elif c.configured is None:
                cause += " Fix: add 'enable-prefix-caching: true' to the profile's server flags."
            return cause
        if c.effective == "partial":
            return "Prefix caching is only partly effective: " + c.evidence + "."
        if c.effective == "on":
            return ("Prefix caching is ON (" + c.evidence + ") but the prefill is not what the MISS rounds wait "
                    "for: look at queueing, tokenization or network time (client TTFT "
                    f"{self.miss.client_ttft_mean_s * 1000:.0f} ms vs server "
                    f"{_ms(self.miss.server_ttft_mean_s)} on MISS).")
        return "Whether prefix caching is on cannot be told: " + c.evidence + "."

    def as_dict(self) -> dict[str, Any]:
        c, ms, hs = self.comparison, self.miss.summary, self.hit.summary
        return {"workload": self.workload, "acceleration": round(self.ratio, 3),
                "interval": [round(c.low, 3), round(c.high, 3)], "confidence": c.confidence,
                "miss_ms_median": round(ms.median * 1000, 2), "miss_ms_iqr": round((ms.q3 - ms.q1) * 1000, 2),
                "hit_ms_median": round(hs.median * 1000, 2), "hit_ms_iqr": round((hs.q3 - hs.q1) * 1000, 2),
                "miss": self.miss.as_dict(), "hit": self.hit.as_dict(), "prefix_caching": self.caching.as_dict(),
                "notes": self.notes}


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.0f} ms"


class KvBench:
    """The KV-cache measurements of one deployment: series built on demand, measured once, reused."""

    def __init__(self, client: VllmClient, profile: Profile, engine_config: dict[str, Any],
                 rounds: int | None = None, confidence: float | None = None) -> None:
        self.client, self.profile, self.engine_config = client, profile, engine_config
        self.rounds = int(rounds or profile.thresholds.kv_rounds)
        self.confidence = float(confidence or profile.thresholds.regression_confidence)
        self.size: TextSize | None = None
        self._workloads: dict[str, Workload] = {}
        self._series: dict[tuple[str, str], Series] = {}

    def calibrate(self) -> TextSize:
        """Words per token of the server's tokenizer, from two probe prompts (also warms the server up)."""
        if self.size is None:
            counts = []
            for words in (300, 900):
                probe = [{"role": "system", "content": f"Session {salt()}. " + filler(words, seed=3)},
                         {"role": "user", "content": "Hi."}]
                result = self.client.stream_chat(probe, max_tokens=1, temperature=0)
                tokens = (result.usage or {}).get("prompt_tokens")
                if result.status != 200 or not tokens:
                    raise MeasurementError(f"calibration prompt: the server answered {result.status} "
                                           f"without usage.prompt_tokens: {result.error_body[:300]}")
                counts.append(tokens)
            self.size = TextSize(words_per_token=600 / max(1, counts[1] - counts[0]))
        return self.size

    def workload(self, name: str) -> Workload:
        if name not in WORKLOAD_TYPES:
            raise ValueError(f"unknown workload {name!r}; known: {', '.join(WORKLOAD_TYPES)}")
        if name not in self._workloads:
            self._workloads[name] = WORKLOAD_TYPES[name](self.calibrate())
        return self._workloads[name]

    def series(self, workload: str, cache: str) -> Series:
        key = (workload, cache)
        if key not in self._series:
            self._series[key] = Series(self.client, self.workload(workload), cache, self.rounds)
        return self._series[key]

    def result(self, workload: str, cache: str) -> SeriesResult:
        """The series' result, measured now (without pytest-benchmark) if no test measured it yet."""
        series = self.series(workload, cache)
        return series.result or series.measure()

    def acceleration(self, workload: str) -> Acceleration:
        miss, hit = self.result(workload, "miss"), self.result(workload, "hit")
        comparison = compare(miss.rounds_s, hit.rounds_s, self.confidence)
        caching = prefix_caching_verdict(self.profile, self.engine_config, hit,
                                         miss.summary.median / hit.summary.median)
        result = Acceleration(workload, miss, hit, comparison, caching)
        for series in (miss, hit):
            server = series.server_ttft_mean_s
            if server is not None:
                result.notes.append(f"{series.cache}: client TTFT mean {series.client_ttft_mean_s * 1000:.1f} ms, "
                                    f"server histogram mean {server * 1000:.1f} ms over the same "
                                    f"{int(series.metrics.ttft_count) if series.metrics else 0} requests")
        return result
