"""Prefix caching inside the continuous-batching engine (``sim.prefix``): a request whose leading prompt
blocks a replica holds prefills only the rest, exactly; each replica's cache is an LRU within the KV
memory the running sequences leave free; ``"prefix_affinity"`` routes on it; off, nothing changes."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from conftest import assert_outcomes_balance, make_arrivals
from scaleplay.prefixcache import PREFIX_CACHING_TABLE_COLUMNS, prefix_caching_table
from scaleplay.profiles import AffineServiceTime
from scaleplay.regions import Fault, Region, RegionsConfig
from scaleplay.schema import ENGINE_LOG_COLUMNS, PREFIX_LOG_COLUMNS, REQUEST_LOG_COLUMNS
from scaleplay.sim import fastloop
from scaleplay.sim.continuous import StepCosts
from scaleplay.sim.engine import Platform
from scaleplay.sim.prefix import PrefixCache
from scaleplay.sim.requests import arrival_columns
from scaleplay.simulator import (
    BatcherConfig,
    ContinuousBatcherConfig,
    GatewayConfig,
    PlatformConfig,
    PoolConfig,
    simulate,
)
from scaleplay.steptime import ExponentialStepTime, load_step_profile
from scaleplay.trace import load_mooncake_trace
from test_continuous import batcher

STEP = load_step_profile("h100-80gb", "Llama-3.1-8B", 1)
P = 512  # tokens a prefix block
TABLES = ("log", "timeline", "batches", "iterations", "preemptions", "provisioning")


def caching(replicas: int = 1, policy: str = "shared_queue", **knobs: object) -> PlatformConfig:
    config = ContinuousBatcherConfig(**{"prefix_caching": True, **knobs})
    return PlatformConfig(PoolConfig(replicas, STEP, config, policy), network_hop_s=0.0)


def with_blocks(arrivals: pd.DataFrame, blocks: list[tuple]) -> pd.DataFrame:
    arrivals["prefix_blocks"] = pd.Series(blocks, index=arrivals.index, dtype=object)
    return arrivals


@pytest.fixture(scope="module")
def mooncake() -> pd.DataFrame:
    return load_mooncake_trace()


# -- what a hit saves -----------------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", ["decode_first", "prefill_first"])
def test_a_second_request_with_the_same_prefix_skips_the_prefill_of_its_cached_blocks(schedule):
    costs = StepCosts(STEP)
    prompt = 3 * P + 100  # three full blocks and a partial one
    arrivals = make_arrivals([0.0, 10.0], tokens_in=prompt, tokens_out=[2, 20])
    with_blocks(arrivals, [(1, 2, 3, 4), (1, 2, 3, 9)])
    log = simulate(arrivals, caching(schedule=schedule), seed=1).log
    assert log["cached_tokens"].tolist() == [0, 3 * P]
    # alone on an idle replica: one iteration computing the 100 tokens left, over the whole prompt's context
    assert log["ttft_s"][0] == pytest.approx(costs.iteration_s(prompt, 0, prompt), abs=1e-12)
    assert log["ttft_s"][1] == pytest.approx(costs.iteration_s(100, 0, prompt), abs=1e-12)
    off = simulate(arrivals, caching(schedule=schedule, prefix_caching=False), seed=1).log
    assert "cached_tokens" not in off
    skipped = costs.iteration_s(prompt, 0, prompt) - costs.iteration_s(100, 0, prompt)
    assert skipped > 0.5 * off["ttft_s"][1]
    assert off["ttft_s"][1] - log["ttft_s"][1] == pytest.approx(skipped, abs=1e-12)
    # the answer's decode steps read the same context either way
    assert log["latency_s"][1] - log["ttft_s"][1] == pytest.approx(
        off["latency_s"][1] - off["ttft_s"][1], abs=1e-12
    )


def test_a_prompt_cached_whole_still_computes_its_last_token():
    costs = StepCosts(STEP)
    arrivals = with_blocks(make_arrivals([0.0, 10.0], tokens_in=2 * P, tokens_out=3), [(5, 6), (5, 6)])
    log = simulate(arrivals, caching(), seed=1).log
    assert log["cached_tokens"].tolist() == [0, 2 * P - 1]
    assert log["ttft_s"][1] == pytest.approx(costs.iteration_s(1, 0, 2 * P), abs=1e-12)


def test_only_a_leading_run_of_full_blocks_hits():
    # the first prompt's third block is partial (never cached); the second misses its second block
    prompts = [2 * P + 10, 3 * P, 3 * P, 3 * P]
    arrivals = make_arrivals([0.0, 10.0, 20.0, 30.0], tokens_in=prompts, tokens_out=2)
    with_blocks(arrivals, [(1, 2, 3), (1, 9, 10), (1, 2, 3), (7, 2, 3)])
    log = simulate(arrivals, caching(), seed=1).log
    assert log["cached_tokens"].tolist() == [0, P, 2 * P, 0]


def test_prefill_work_is_the_prompts_less_what_was_cached(mooncake):
    arrivals = mooncake.iloc[:400]
    result = simulate(arrivals, caching(4, "prefix_affinity"), seed=3)
    log = result.log
    assert (log["outcome"] == "completed").all() and log["preemptions"].sum() == 0
    assert log["cached_tokens"].sum() > 0
    assert (log["cached_tokens"] % P == 0).all()  # whole blocks (no prompt here is a whole-block multiple)
    computed = result.iterations["prefill_tokens"].sum()
    assert computed == log["tokens_in"].sum() - log["cached_tokens"].sum()


# -- the LRU ------------------------------------------------------------------------------------------


def fake_scheduler(blocks: list[tuple], tokens_in: list[int], total_blocks: int, block_tokens: int):
    """What a ``PrefixCache`` reads of a scheduler, with the KV tokens in use settable."""
    n = len(blocks)
    requests = SimpleNamespace(
        n=n, prefix=blocks, cached=None, tokens_in=memoryview(np.asarray(tokens_in, dtype=np.int64))
    )
    scheduler = SimpleNamespace(
        requests=requests, total_blocks=total_blocks, block_tokens=block_tokens, used=0
    )
    scheduler.kv_tokens = lambda: scheduler.used
    return scheduler


def test_the_cache_evicts_the_least_recently_used_block_first():
    # 4-token blocks, a KV cache of 3 x 4 tokens: three blocks when nothing runs
    blocks = [(1, 2), (3,), (4,), (5, 6, 7)]
    scheduler = fake_scheduler(blocks, [8, 4, 4, 12], total_blocks=3, block_tokens=4)
    cache = PrefixCache(scheduler, 4)
    cache.prefilled(0)
    assert list(cache.lru) == [2, 1]  # its first block the most recent
    cache.prefilled(1)
    assert list(cache.lru) == [2, 1, 3]
    assert cache.lookup(0) == 7  # two blocks, less the last token, which is always computed
    cache.admitted(0)
    assert list(cache.lru) == [3, 2, 1]  # the hit blocks used again
    assert scheduler.requests.cached_hit[0] == 7
    cache.prefilled(2)
    assert list(cache.lru) == [2, 1, 4]  # 3 was the least recently used
    scheduler.used = 8  # running sequences take two blocks' worth: one block left
    assert cache.hit_blocks(0) == 0 and list(cache.lru) == [4]
    scheduler.used = 0
    cache.prefilled(3)  # three blocks into a cache of three: the oldest, 4, goes
    assert list(cache.lru) == [7, 6, 5]
    scheduler.used = 4
    assert cache.hit_blocks(3) == 2 and list(cache.lru) == [6, 5]  # a prefix's tail goes before its root


def test_the_cache_never_holds_more_than_the_free_kv_memory(monkeypatch, mooncake):
    seen: list[tuple[int, int]] = []
    lookup, prefilled = PrefixCache.hit_blocks, PrefixCache.prefilled

    def spy_lookup(self, i):
        hit = lookup(self, i)
        seen.append((len(self), self.capacity_blocks()))
        return hit

    def spy_prefilled(self, i):
        prefilled(self, i)
        seen.append((len(self), self.capacity_blocks()))

    monkeypatch.setattr(PrefixCache, "hit_blocks", spy_lookup)
    monkeypatch.setattr(PrefixCache, "prefilled", spy_prefilled)
    # 60,000 tokens of KV cache (117 blocks of 512): the Mooncake prompts fill it
    config = PlatformConfig(
        PoolConfig(2, STEP, batcher(STEP, 60_000, prefix_caching=True), "prefix_affinity"), network_hop_s=0.0
    )
    arrivals = mooncake.iloc[:150]
    arrivals = arrivals[arrivals["tokens_in"] < 50_000]
    log = simulate(arrivals, config, seed=1).log
    sizes, capacities = np.array(seen).T
    assert (sizes <= capacities).all()
    assert capacities.min() < 60_000 // P // 2 and sizes.max() > 60  # the bound binds, the cache fills
    assert log["cached_tokens"].sum() > 0


def test_a_preempted_request_recomputes_its_whole_prompt():
    # a KV cache of 2,200 tokens: two prompts of 1,024 fit, their answers do not
    config = PlatformConfig(
        PoolConfig(1, STEP, batcher(STEP, 2200, block_tokens=16, prefix_caching=True)), network_hop_s=0.0
    )
    arrivals = with_blocks(
        make_arrivals([0.0, 10.0, 10.0], tokens_in=[1024, 1024, 1024], tokens_out=[2, 300, 300]),
        [(1, 2), (1, 2), (1, 2)],
    )
    result = simulate(arrivals, config, seed=1)
    log = result.log
    assert log["preemptions"].sum() > 0 and (log["outcome"] == "completed").all()
    first_pass = log["tokens_in"].sum() - log["cached_tokens"].sum()
    assert log["cached_tokens"].tolist()[1:] == [1023, 1023]
    # each recompute prefills its prompt and the tokens made so far, with no help from the cache
    assert result.iterations["prefill_tokens"].sum() > first_pass + 1024 * log["preemptions"].sum()


# -- routing ------------------------------------------------------------------------------------------


def test_prefix_affinity_follows_the_prefix_where_round_robin_does_not():
    arrivals = make_arrivals([0.0, 0.0, 10.0], tokens_in=2 * P, tokens_out=2)
    with_blocks(arrivals, [(1, 2), (7, 8), (7, 8)])
    affinity = simulate(arrivals, caching(2, "prefix_affinity"), seed=1).log
    assert affinity["replica"].tolist() == [0, 1, 1]
    assert affinity["cached_tokens"].tolist() == [0, 0, 2 * P - 1]
    robin = simulate(arrivals, caching(2, "round_robin"), seed=1).log
    assert robin["replica"].tolist() == [0, 1, 0] and robin["cached_tokens"].sum() == 0


@pytest.mark.parametrize("slack, third", [(0.0, 1), (0.9, 1), (1.0, 0), (2.0, 0)])
def test_the_load_cap_sends_a_prefix_elsewhere_when_its_replica_is_busy(slack, third):
    # replica 1 runs one long answer from t=0; three long answers with the prefix go to replica 0 (at
    # loads 1 and 2 against 1, within the cap 2 even without slack); the fifth finds replica 0 at load
    # 3 against 1: within (1 + slack) x 1 + 1 only with some slack
    arrivals = make_arrivals([0.0, 0.0, 1.0, 1.5, 2.0], tokens_in=2 * P, tokens_out=[2000] * 4 + [2])
    with_blocks(arrivals, [(1, 2), (5, 6), (1, 2), (1, 2), (1, 2)])
    pool = PoolConfig(
        2, STEP, ContinuousBatcherConfig(prefix_caching=True), "prefix_affinity", affinity_slack=slack
    )
    log = simulate(arrivals, PlatformConfig(pool, network_hop_s=0.0), seed=1).log
    assert log["replica"].tolist() == [0, 1, 0, 0, third]
    assert log["cached_tokens"][4] == (2 * P - 1 if third == 0 else 0)


def test_prefix_affinity_beats_round_robin_on_the_mooncake_slice(mooncake):
    step = load_step_profile("h100-80gb", "Llama-3.1-70B", 4)
    table = prefix_caching_table(mooncake, step, 8).set_index(["policy", "prefix_caching"])
    assert list(table.reset_index().columns) == list(PREFIX_CACHING_TABLE_COLUMNS)
    assert (table["completed"] == len(mooncake)).all()
    on = table.xs(True, level="prefix_caching")
    off = table.xs(False, level="prefix_caching")
    assert (off["block_hit_rate"] == 0).all()
    assert on.loc["prefix_affinity", "block_hit_rate"] > 1.5 * on.loc["round_robin", "block_hit_rate"]
    assert on.loc["round_robin", "ttft_mean_s"] < off.loc["round_robin", "ttft_mean_s"]
    assert on.loc["prefix_affinity", "ttft_mean_s"] < off["ttft_mean_s"].min()


# -- off, nothing changes ------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["shared_queue", "round_robin", "least_kv_cache"])
def test_caching_off_is_the_engine_as_before(policy, mooncake):
    arrivals = mooncake.iloc[:300]
    step = load_step_profile("h100-80gb", "Llama-3.1-70B", 4)
    old = PlatformConfig(PoolConfig(2, step, ContinuousBatcherConfig(), policy), network_hop_s=0.0)
    new = PlatformConfig(
        PoolConfig(2, step, ContinuousBatcherConfig(prefix_caching=False, prefix_block_tokens=64), policy),
        network_hop_s=0.0,
    )
    before = simulate(arrivals.drop(columns="prefix_blocks"), old, seed=5)
    after = simulate(arrivals, new, seed=5)
    assert list(after.log.columns) == list(REQUEST_LOG_COLUMNS) + list(ENGINE_LOG_COLUMNS)
    for name in TABLES:
        pd.testing.assert_frame_equal(getattr(before, name), getattr(after, name), obj=name)


def test_the_compiled_loop_plays_only_platforms_without_prefix_caching(mooncake):
    columns = arrival_columns(mooncake.iloc[:10])
    on = Platform(columns, caching(), 0, None)
    assert not on.fast
    off = Platform(columns, caching(prefix_caching=False), 0, None)
    assert off.fast == fastloop.eligible(off)
    assert off.fast or not fastloop.enabled


# -- books and seeds ----------------------------------------------------------------------------------


@pytest.mark.parametrize("service", ["step", "memoryless"])
def test_every_request_ends_once_under_pressure(service, mooncake):
    arrivals = mooncake.iloc[:300].assign(t_s=mooncake["t_s"].iloc[:300] / 4)  # four times the rate
    step = STEP if service == "step" else ExponentialStepTime(mean_s=0.02, kv_capacity_tokens=400_000)
    pool = PoolConfig(3, step, ContinuousBatcherConfig(prefix_caching=True), "prefix_affinity")
    config = PlatformConfig(pool, GatewayConfig(timeout_s=20.0), network_hop_s=0.01)
    result = simulate(arrivals, config, seed=2, horizon_s=40.0)
    log = result.log
    assert_outcomes_balance(log, result.timeline, arrivals[arrivals["t_s"] < 40.0])
    counts = log["outcome"].value_counts()
    assert counts.sum() == len(log) and counts["completed"] > 0
    assert counts["timed_out"] + counts["in_flight"] > 0
    assert (log["cached_tokens"] >= 0).all() and (log["cached_tokens"] < log["tokens_in"]).all()
    assert log.loc[log["model_start_s"].isna(), "cached_tokens"].eq(0).all()  # never admitted: none


def test_a_fault_retries_requests_and_the_books_still_balance(mooncake):
    # two regions, one replica set down for a while: retried requests look the cache up again
    regions = RegionsConfig(
        (Region("us", 0.5), Region("eu", 0.5)), ((0.0, 0.05), (0.05, 0.0)),
        faults=(Fault(20.0, "us", "all", 10.0),),
    )  # fmt: skip
    arrivals = mooncake.iloc[:200]
    config = PlatformConfig(caching(2, "prefix_affinity").pool, network_hop_s=0.01, regions=regions)
    result = simulate(arrivals, config, seed=4)
    log = result.log
    assert_outcomes_balance(log, result.timeline, arrivals)
    assert (log["outcome"] == "completed").all() and log["retries"].sum() > 0
    assert log["cached_tokens"].sum() > 0


def test_a_seed_fixes_every_table(mooncake):
    arrivals = mooncake.iloc[:200]
    config = caching(3, "power_of_two")
    first, again = simulate(arrivals, config, seed=11), simulate(arrivals, config, seed=11)
    for name in TABLES:
        pd.testing.assert_frame_equal(getattr(first, name), getattr(again, name), obj=name)
    assert list(first.log.columns)[-len(PREFIX_LOG_COLUMNS) :] == list(PREFIX_LOG_COLUMNS)
    assert first.log["cached_tokens"].dtype == np.int64


# -- bad input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "knobs, error, message",
    [
        ({"prefix_caching": "yes"}, TypeError, "prefix_caching must be True or False"),
        ({"prefix_caching": 1}, TypeError, "prefix_caching"),
        ({"prefix_block_tokens": 0}, ValueError, "prefix_block_tokens must be >= 1"),
        ({"prefix_block_tokens": 512.0}, TypeError, "prefix_block_tokens must be an integer"),
    ],
)
def test_bad_batcher_knobs_are_refused_by_name(knobs, error, message):
    with pytest.raises(error, match=message):
        ContinuousBatcherConfig(**knobs)


def test_bad_pool_knobs_are_refused_by_name():
    with pytest.raises(ValueError, match="prefix_caching=True.*batcher.prefix_caching=False"):
        PoolConfig(2, STEP, ContinuousBatcherConfig(), "prefix_affinity")
    with pytest.raises(ValueError, match="policy='prefix_affinity'.*batcher="):
        PoolConfig(2, AffineServiceTime(fixed_s=0.1), BatcherConfig(), "prefix_affinity")
    on = ContinuousBatcherConfig(prefix_caching=True)
    for slack in (-0.1, 101.0):
        with pytest.raises(ValueError, match=r"affinity_slack must lie in \[0, 100\]"):
            PoolConfig(2, STEP, on, "prefix_affinity", affinity_slack=slack)
    with pytest.raises(ValueError, match="affinity_slack must be a finite number"):
        PoolConfig(2, STEP, on, "prefix_affinity", affinity_slack=float("nan"))
    with pytest.raises(TypeError, match="affinity_slack must be a real number"):
        PoolConfig(2, STEP, on, "prefix_affinity", affinity_slack="wide")


@pytest.mark.parametrize(
    "blocks, error, message",
    [
        ([(1,), 7], TypeError, r"arrivals\['prefix_blocks'\].*row 1 holds 7"),
        ([(1,), "ab"], TypeError, r"row 1 holds 'ab'"),
        ([(1,), (2, 2.5)], TypeError, r"integer block hashes; row 1 holds 2.5 \(float\)"),
        ([(True,), (2,)], TypeError, r"row 0 holds True \(bool\)"),
        ([(1, 2, 3), (2,)], ValueError, r"row 0 holds 3 blocks for tokens_in=1000.*at most 2"),
    ],
)
def test_bad_prefix_blocks_are_refused_naming_the_column(blocks, error, message):
    arrivals = with_blocks(make_arrivals([0.0, 1.0], tokens_in=1000, tokens_out=5), blocks)
    with pytest.raises(error, match=message):
        simulate(arrivals, caching(), seed=1)


def test_caching_needs_the_column_and_no_cached_tokens_beside_it():
    arrivals = make_arrivals([0.0, 1.0], tokens_in=1000, tokens_out=5)
    with pytest.raises(ValueError, match=r"prefix_caching=True.*arrivals\['prefix_blocks'\].*lack"):
        simulate(arrivals, caching(), seed=1)
    with_blocks(arrivals, [(1,), (1,)])
    arrivals["cached_tokens"] = np.array([0, 500])
    with pytest.raises(ValueError, match=r"arrivals\['cached_tokens'\] and .*prefix_caching=True"):
        simulate(arrivals, caching(), seed=1)
    # without caching the blocks are read and left alone: cached_tokens still applies
    log = simulate(arrivals, caching(prefix_caching=False), seed=1).log
    assert "cached_tokens" not in log


def test_the_table_refuses_bad_arguments(mooncake):
    step = load_step_profile("h100-80gb", "Llama-3.1-70B", 4)
    with pytest.raises(ValueError, match="'prefix_blocks' column"):
        prefix_caching_table(mooncake.drop(columns="prefix_blocks"), step, 2)
    with pytest.raises(TypeError, match="step must be a StepTimeModel"):
        prefix_caching_table(mooncake, "h100", 2)
    with pytest.raises(ValueError, match="rate_scale must be > 0"):
        prefix_caching_table(mooncake, step, 2, rate_scale=0.0)
    with pytest.raises(ValueError, match="policies must be a non-empty sequence"):
        prefix_caching_table(mooncake, step, 2, policies="round_robin")
    with pytest.raises(ValueError, match="policy must be one of"):
        prefix_caching_table(mooncake.iloc[:5], step, 2, policies=["fastest"])
