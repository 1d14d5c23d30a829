"""KV-cache measurement: prompt plans, and MISS/HIT series against the emulator's known latency model."""

from __future__ import annotations

import statistics

import pytest
import yaml

from pytest_vllm import kv_cache
from pytest_vllm.emulator import EmulatedModel, EmulatorServer, LatencyModel
from pytest_vllm.errors import ProfileError
from pytest_vllm.http import VllmClient
from pytest_vllm.kv_cache import (
    CONVERSATION_TURNS,
    AgentConversation,
    KvBench,
    LongPrefix,
    MetricsSnapshot,
    TextSize,
    acceleration_minimum,
    filler,
)
from pytest_vllm.metrics import parse_metrics
from pytest_vllm.profile import load_profile

LATENCY = LatencyModel(base_ms=1.0, prefill_ms_per_token=0.05, decode_ms_per_token=0.1, noise_cv=0.0)


@pytest.fixture(autouse=True)
def no_pause(monkeypatch):
    monkeypatch.setattr(kv_cache.series, "PAUSE_S", 0.0)  # the emulator has no previous answer's tail to wait out


def make_profile(tmp_path, server: dict | None = None, thresholds: dict | None = None, name: str = "emu_kv"):
    path = tmp_path / f"{name}.yml"
    path.write_text(yaml.safe_dump({"deployment": {"backend": "emulator", "port": 0}, "server": server or {},
                                    "thresholds": {"kv_rounds": 3, **(thresholds or {})}}))
    return load_profile(str(path), [tmp_path])


@pytest.fixture
def bench_on(tmp_path):
    """bench_on(model=..., faults=..., server=..., thresholds=...) -> KvBench on a started emulator."""
    started = []

    def make(model: EmulatedModel | None = None, faults=None, server=None, thresholds=None) -> KvBench:
        emulator = EmulatorServer(latency=LATENCY, model=model, faults=faults, log_path=tmp_path / "emu.log").start()
        client = VllmClient(emulator.base_url, None, emulator.model.served_name, timeout=10)
        started.append((emulator, client))
        return KvBench(client, make_profile(tmp_path, server, thresholds), {})

    yield make
    for emulator, client in started:
        client.close()
        emulator.stop()


def test_filler_is_deterministic_and_sized():
    assert filler(100, seed=1) == filler(100, seed=1) != filler(100, seed=2)
    assert len(filler(100, seed=1).split()) == 100


def test_miss_rounds_never_share_a_first_block_and_hit_rounds_share_the_prefix():
    w = LongPrefix(TextSize())
    miss = [w.plan("miss", i)[0].messages for i in range(3)]
    hit = [w.plan("hit", i)[0].messages for i in range(3)]
    assert len({m[0]["content"][:30] for m in miss}) == 3, "each MISS round must start with its own salt"
    assert len({m[0]["content"] for m in hit}) == 1, "HIT rounds repeat one primed prefix"
    assert len({m[1]["content"] for m in hit}) == 3, "the question changes each round"
    assert w.priming("hit")[0].messages[0] == hit[0][0] and w.priming("miss") == []


def test_conversation_turns_grow_a_shared_history():
    w = AgentConversation(TextSize())
    hit = w.plan("hit", 1)
    assert len(hit) == CONVERSATION_TURNS and not hit[0].measured and all(r.measured for r in hit[1:])
    for before, after in zip(hit, hit[1:], strict=False):
        # turn k+1 = turn k's messages + the agent's reply + the next tool output
        assert after.messages[:len(before.messages)] == before.messages
        assert [m["role"] for m in after.messages[len(before.messages):]] == ["assistant", "user"]
    miss = w.plan("miss", 1)
    assert len(miss) == CONVERSATION_TURNS - 1 and all(r.measured for r in miss)
    assert len({r.messages[0]["content"][:30] for r in miss}) == len(miss), "every MISS turn is salted apart"


def test_acceleration_on_the_emulator_matches_its_latency_model(bench_on):
    bench = bench_on(thresholds={"kv_cache_acceleration_min": 3.0, "kv_rounds": 5})  # 5: enough for an interval
    accel = bench.acceleration("long_prefix")
    miss, hit = accel.miss, accel.hit
    tokens = statistics.median(miss.prompt_tokens)
    assert 2500 <= tokens <= 3500, "the long prefix is calibrated to ~3k tokens on the server's tokenizer"
    expected_miss = (LATENCY.base_ms + LATENCY.prefill_ms_per_token * tokens) / 1000
    # The least round: load on a shared CPU only adds delay, so the fastest round shows the model's latency.
    assert min(miss.rounds_s) == pytest.approx(expected_miss, rel=0.1)
    assert accel.ratio >= 3 and accel.comparison.low > 1
    assert accel.caching.effective == "on"
    assert hit.metrics.hits > 0 and hit.metrics.hit_rate > 0.9
    assert miss.metrics.hits == 0, "MISS rounds must not hit the cache"
    assert hit.metrics.ttft_count == len(hit.client_ttft_s)
    assert accel.problems(3.0, "x") == []
    assert "prefix caching ON" in accel.describe()


def test_agent_conversation_is_accelerated_and_confirmed(bench_on):
    accel = bench_on().acceleration("agent_conversation")
    assert accel.ratio >= 2
    assert accel.hit.metrics.hit_rate > 0.8 and accel.miss.metrics.hits == 0
    assert len(accel.hit.client_ttft_s) == 3 * CONVERSATION_TURNS  # rounds x (priming turn + measured turns)


def test_prefix_caching_off_fails_and_says_so(bench_on):
    bench = bench_on(model=EmulatedModel(prefix_caching=False), server={"enable-prefix-caching": False},
                     thresholds={"kv_cache_acceleration_min": 2.0})
    accel = bench.acceleration("long_prefix")
    assert accel.ratio == pytest.approx(1.0, abs=0.1)
    assert accel.caching.effective == "off"
    (problem,) = accel.problems(2.0, "thresholds.kv_cache_acceleration_min in emu_kv.yml")
    assert "below the required ×2" in problem and "Prefix caching is OFF" in problem
    assert "--no-enable-prefix-caching" in problem and "rose by 0 tokens" in problem


def test_omitted_flag_with_caching_on_warns_that_v1_enables_it(bench_on):
    accel = bench_on().acceleration("long_prefix")
    (warning,) = accel.caching.warnings
    assert "does not set server.enable-prefix-caching" in warning and "enables it by default" in warning


def test_flag_false_but_server_caching_warns(bench_on):
    accel = bench_on(server={"enable-prefix-caching": False}).acceleration("long_prefix")
    assert any("did not reach the server" in w for w in accel.caching.warnings)


def test_hits_counted_without_speed_up_points_away_from_the_cache(bench_on):
    accel = bench_on(faults=["no_cache_speedup"]).acceleration("long_prefix")
    assert accel.caching.effective == "on"
    (problem,) = accel.problems(3.0, "x")
    assert "Prefix caching is ON" in problem and "prefill is not what the MISS rounds wait for" in problem


def test_speed_up_without_counted_hits_is_not_credited_to_the_prefix_cache(bench_on, tmp_path):
    accel = bench_on().acceleration("long_prefix")
    m = accel.hit.metrics
    accel.hit.metrics = kv_cache.MetricsDelta(m.queries, 0, m.ttft_sum, m.ttft_count, True)  # as a proxy cache would
    accel.caching = kv_cache.prefix_caching_verdict(make_profile(tmp_path, name="v"), {}, accel.hit, accel.ratio)
    assert accel.caching.effective == "off"
    assert any("does not come from vLLM's prefix cache" in p for p in accel.problems(3.0, "x"))


def test_metrics_snapshot_reads_vllm_counters():
    text = ('vllm:prefix_cache_queries_total{engine="0",model_name="m"} 100.0\n'
            'vllm:prefix_cache_hits_total{engine="0",model_name="m"} 64.0\n'
            'vllm:time_to_first_token_seconds_sum{engine="0",model_name="m"} 0.5\n'
            'vllm:time_to_first_token_seconds_count{engine="0",model_name="m"} 4.0\n')
    before = MetricsSnapshot.of(parse_metrics(text.replace("100.0", "20.0").replace("64.0", "0.0")
                                              .replace("0.5", "0.1").replace("4.0", "1.0")))
    delta = MetricsSnapshot.of(parse_metrics(text)).minus(before)
    assert (delta.queries, delta.hits, delta.hit_rate) == (80, 64, 0.8)
    assert delta.server_ttft_mean_s == pytest.approx(0.4 / 3)


def test_a_server_without_metrics_still_gets_measured(bench_on, monkeypatch):
    monkeypatch.setattr(MetricsSnapshot, "take", classmethod(lambda cls, client: None))
    accel = bench_on().acceleration("long_prefix")
    assert accel.miss.metrics is None and accel.caching.effective == "unknown"
    assert accel.ratio >= 3


def test_a_series_measures_the_rounds_asked_for_and_the_window_counts_them(bench_on):
    bench = bench_on()
    asked = []

    def more(rounds_s):
        asked.append(len(rounds_s))
        return 2 if len(rounds_s) < 5 else 0

    result = bench.series("long_prefix", "hit").measure(more)
    assert asked == [3, 5] and len(result.rounds_s) == 5 == len(result.prompt_tokens)
    assert result.metrics.ttft_count == len(result.client_ttft_s) == 5
    assert bench.result("long_prefix", "hit") is result, "measured once, then shared"


def test_acceleration_minimum_is_one_number_or_one_per_workload(tmp_path):
    assert acceleration_minimum(make_profile(tmp_path, thresholds={"kv_cache_acceleration_min": 3}),
                                "agent_conversation")[0] == 3.0
    per = make_profile(tmp_path, thresholds={"kv_cache_acceleration_min": {"long_prefix": 3.0,
                                                                           "agent_conversation": 1.5}})
    minimum, source = acceleration_minimum(per, "agent_conversation")
    assert minimum == 1.5 and source.startswith("thresholds.kv_cache_acceleration_min.agent_conversation in ")
    assert acceleration_minimum(make_profile(tmp_path), "long_prefix")[0] is None
    typo = make_profile(tmp_path, thresholds={"kv_cache_acceleration_min": {"long_prefx": 3.0}})
    with pytest.raises(ProfileError, match="unknown workload long_prefx") as info:
        acceleration_minimum(typo, "long_prefix")
    assert "agent_conversation" in info.value.fix
