"""Prompt tokens whose KV a replica already holds (``arrivals['cached_tokens']``, what a prefill pool
sends a decode pool) are not prefilled again: the first iteration computes only the rest, the KV cache
still holds the whole prompt, and both engines (simpy and the compiled loop) agree to the last bit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import make_arrivals
from scaleplay.profiles import AffineServiceTime
from scaleplay.sim.continuous import StepCosts
from scaleplay.simulator import BatcherConfig, ContinuousBatcherConfig, PlatformConfig, PoolConfig, simulate
from scaleplay.steptime import load_step_profile
from test_fastloop import assert_same_run, plain_platforms, workloads

STEP = load_step_profile("h100-80gb", "Llama-3.1-8B", 1)


def config(schedule: str = "decode_first") -> PlatformConfig:
    return PlatformConfig(PoolConfig(1, STEP, ContinuousBatcherConfig(schedule=schedule)), network_hop_s=0.0)


@pytest.mark.parametrize("schedule", ["decode_first", "prefill_first"])
def test_a_lone_request_prefills_only_what_is_not_cached(schedule):
    costs = StepCosts(STEP)
    arrivals = make_arrivals([0.0], tokens_in=[2001], tokens_out=[50])
    arrivals["cached_tokens"] = np.array([2000])
    log = simulate(arrivals, config(schedule), seed=1).log
    # one token computed over the whole prompt's context: a decode step's cost, not a 2,001-token prefill
    assert log.ttft_s[0] == pytest.approx(costs.iteration_s(1, 0, 2001), rel=1e-12)
    full = simulate(arrivals.drop(columns="cached_tokens"), config(schedule), seed=1).log
    assert full.ttft_s[0] == pytest.approx(costs.iteration_s(2001, 0, 2001), rel=1e-12)
    assert full.ttft_s[0] > 4 * log.ttft_s[0]
    # the answer's decode steps read the same context either way
    tail = costs.decode_run_s(1, 2002, 49)
    assert log.latency_s[0] == pytest.approx(log.ttft_s[0] + tail, rel=1e-9)


def test_cached_tokens_keep_their_kv_blocks():
    arrivals = make_arrivals([0.0, 0.0], tokens_in=[4000, 4000], tokens_out=[10, 10])
    arrivals["cached_tokens"] = np.array([3999, 0])
    result = simulate(arrivals, config(), seed=1)
    first = result.iterations.iloc[0]
    assert first.prefill_tokens == 1 + 4000
    assert first.kv_tokens >= 2 * 4000  # the cached prompt's blocks are held as the computed one's


@pytest.mark.parametrize("cached, message", [(-1, r"\[0, tokens_in - 1\]"), (100, "row 0 holds 100"),
                                             (1.5, "must hold integers")])  # fmt: skip
def test_bad_cached_tokens_are_refused_naming_the_column(cached, message):
    arrivals = make_arrivals([0.0], tokens_in=[100], tokens_out=[5])
    arrivals["cached_tokens"] = np.array([cached])
    with pytest.raises((ValueError, TypeError), match=message):
        simulate(arrivals, config(), seed=1)


def test_a_static_batcher_refuses_cached_tokens():
    arrivals = make_arrivals([0.0], tokens_in=[100], tokens_out=[5])
    arrivals["cached_tokens"] = np.array([50])
    static = PlatformConfig(PoolConfig(1, AffineServiceTime(fixed_s=0.1, per_item_s=0.001), BatcherConfig()))
    with pytest.raises(ValueError, match="cached_tokens"):
        simulate(arrivals, static, seed=1)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plain_platforms(), workloads(max_size=40, min_prompt=1), st.data())
def test_the_loop_and_simpy_agree_with_cached_tokens(platform, arrivals, data):
    tokens_in = arrivals.tokens_in.to_numpy()
    fractions = np.array(data.draw(st.lists(st.floats(0, 1), min_size=len(arrivals), max_size=len(arrivals))))
    arrivals["cached_tokens"] = np.floor(fractions * (tokens_in - 1)).astype(np.int64)
    assert_same_run(arrivals, platform)
