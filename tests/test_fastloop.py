"""The compiled loop (``sim.fastloop``) plays a plain continuous-batching platform exactly as the simpy
engine does: on random platforms (hypothesis: both schedules, 1-5 replicas, KV caches small enough to
preempt, few and many sequences, token budgets that chunk, simultaneous arrivals, requests too long,
with and without a horizon) every table and every request column is equal to the last bit. It is used
only where it applies."""

from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import make_arrivals
from scaleplay.controls import AutoscalerConfig, CascadeConfig
from scaleplay.profiles import AffineServiceTime, load_hardware, load_model
from scaleplay.regions import Region, RegionsConfig
from scaleplay.sim import fastloop
from scaleplay.sim.continuous import StepCosts
from scaleplay.sim.engine import Platform
from scaleplay.sim.output import result
from scaleplay.sim.requests import arrival_columns
from scaleplay.simulator import (
    BatcherConfig,
    ContinuousBatcherConfig,
    GatewayConfig,
    PlatformConfig,
    PoolConfig,
    simulate,
)
from scaleplay.steptime import ExponentialStepTime, StepTimeModel, load_step_profile

A100 = load_hardware("A100 80GB SXM")
LLAMA_8B = load_model("Llama-3.1-8B")
#: One GPU with a per-decode-token cost and a fixed cost per prompt pass; the fitted profiles add the
#: tensor-parallel terms.
STEPS = (
    StepTimeModel(
        A100, LLAMA_8B, 1, compute_efficiency=0.6, bandwidth_efficiency=0.6, overhead_s=0.005,
        decode_s_per_token=2e-4, prefill_overhead_s=0.003,
    ),
    load_step_profile("a100-80gb", "Llama-2-70B", 2),
    load_step_profile("h100-80gb", "Llama-3.1-8B", 1),
)  # fmt: skip
#: The request columns the engines write.
COLUMNS = ("state", "reason", "batch_of", "first_token", "generated", "preemptions")


@pytest.fixture(autouse=True, scope="module")
def loop_switch_unset():
    """These tests choose the engine themselves, whatever ``SCALEPLAY_NO_FASTLOOP`` says outside."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(fastloop.DISABLE_ENV, raising=False)
        yield


def utilization_for(step: StepTimeModel, kv_tokens: int) -> float:
    """The ``gpu_memory_utilization`` that leaves ``kv_tokens`` tokens of KV cache beside the weights."""
    return (step.model.weight_bytes + (kv_tokens + 0.5) * step.model.kv_bytes_per_token) / step.memory_bytes


def play(arrivals: pd.DataFrame, config: PlatformConfig, horizon_s: float | None, fast: bool,
         progress: bool = False) -> tuple[Platform, object]:  # fmt: skip
    """A run as ``simulate`` makes it, in the loop or in simpy; the platform and its tables."""
    columns = arrival_columns(arrivals)
    n = len(columns["t_s"]) if horizon_s is None else int(np.searchsorted(columns["t_s"], horizon_s, "left"))
    columns = {name: values[:n] for name, values in columns.items()}
    previous, fastloop.enabled = fastloop.enabled, fast
    try:
        platform = Platform(columns, config, 1, horizon_s)
    finally:
        fastloop.enabled = previous
    assert platform.fast == fast
    platform.run(progress)
    return platform, result(platform, columns, arrivals["class_name"], 1.0, False)


def assert_same_run(arrivals: pd.DataFrame, config: PlatformConfig, horizon_s: float | None = None,
                    progress: bool = False) -> None:  # fmt: skip
    """The loop and simpy leave the same tables and request columns, bit for bit."""
    fast, fast_result = play(arrivals, config, horizon_s, True, progress)
    slow, slow_result = play(arrivals, config, horizon_s, False)
    for name in ("log", "timeline", "batches", "iterations", "preemptions", "provisioning"):
        pd.testing.assert_frame_equal(
            getattr(fast_result, name), getattr(slow_result, name), check_exact=True
        )
    assert fast_result.horizon_s == slow_result.horizon_s
    assert fast_result.kv_capacity_tokens == slow_result.kv_capacity_tokens
    for name in COLUMNS:
        np.testing.assert_array_equal(
            np.asarray(getattr(fast.requests, name)), np.asarray(getattr(slow.requests, name)), err_msg=name
        )
    line, other = fast.lines[0], slow.lines[0]
    assert (line.head, line.fed, line.count) == (other.head, other.fed, other.count)
    assert fast.gateway.backlog == slow.gateway.backlog
    assert [r.in_service for r in fast.pools[0].replicas] == [r.in_service for r in slow.pools[0].replicas]


# -- random plain platforms (hypothesis) -------------------------------------------------------------------


@st.composite
def plain_platforms(draw: st.DrawFn) -> PlatformConfig:
    step = draw(st.sampled_from(STEPS))
    seqs = draw(st.sampled_from([1, 2, 3, 5, 8, 64, 256]))
    kv_tokens = draw(st.sampled_from([300, 1000, 3000, 12_000, 10**6]))  # small ones preempt
    batcher = ContinuousBatcherConfig(
        max_num_seqs=seqs,
        max_batched_tokens=draw(st.integers(seqs, max(seqs, 4096))),
        block_tokens=draw(st.sampled_from([1, 16, 32])),
        gpu_memory_utilization=min(utilization_for(step, kv_tokens), 1.0),
        schedule=draw(st.sampled_from(["decode_first", "prefill_first"])),
    )
    return PlatformConfig(
        PoolConfig(draw(st.integers(1, 5)), step, batcher), network_hop_s=draw(st.sampled_from([0.0, 0.02]))
    )


@st.composite
def workloads(draw: st.DrawFn, max_size: int = 60, min_prompt: int = 1) -> pd.DataFrame:
    n = draw(st.integers(0, max_size))

    def column(values: st.SearchStrategy) -> np.ndarray:
        return np.array(draw(st.lists(values, min_size=n, max_size=n)), dtype=np.int64)

    # Many equal times (simultaneous arrivals, and arrivals landing on a run's end), some far apart.
    gaps = np.array(draw(st.lists(st.sampled_from([0.0, 0.0, 0.001, 0.02, 0.05, 0.3, 1.0, 4.0]), min_size=n,
                                  max_size=n)))  # fmt: skip
    return make_arrivals(
        np.cumsum(gaps),
        tokens_in=column(st.integers(min_prompt, 3000)),
        tokens_out=column(st.integers(0, 500)),
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plain_platforms(), workloads(), st.none() | st.floats(0.5, 60.0))
def test_the_loop_plays_every_plain_platform_as_simpy_does(config, arrivals, horizon_s):
    assert_same_run(arrivals, config, horizon_s)


@pytest.mark.parametrize("schedule", ["decode_first", "prefill_first"])
@pytest.mark.parametrize(("replicas", "kv_tokens", "rate_per_s"), [(3, None, 40.0), (2, 20_000, 30.0)])
def test_long_poisson_runs_match(schedule, replicas, kv_tokens, rate_per_s):
    """Thousands of requests on vLLM's defaults (long decode runs, cut by arrivals), and on a cache small
    enough to preempt often."""
    step = STEPS[2]
    batcher = ContinuousBatcherConfig(schedule=schedule)
    if kv_tokens is not None:
        batcher = ContinuousBatcherConfig(
            schedule=schedule, gpu_memory_utilization=utilization_for(step, kv_tokens)
        )
    rng = np.random.default_rng(7)
    count = 3000
    arrivals = make_arrivals(
        np.cumsum(rng.exponential(1.0 / rate_per_s, count)),
        tokens_in=rng.integers(300, 701, count),
        tokens_out=rng.integers(150, 251, count),
    )
    config = PlatformConfig(PoolConfig(replicas, step, batcher), network_hop_s=0.0)
    assert_same_run(arrivals, config)
    assert_same_run(arrivals, config, horizon_s=float(arrivals["t_s"].iloc[count // 2]))
    if kv_tokens is not None:
        _, tables = play(arrivals, config, None, True)
        assert len(tables.preemptions) > 0  # the case it is meant to be


def room_tokens(step: StepTimeModel) -> int:
    """The most KV tokens the GPUs hold beside the weights: the largest cache one may state."""
    return int((step.memory_bytes - step.model.weight_bytes) // step.model.kv_bytes_per_token)


@st.composite
def padded_platforms(draw: st.DrawFn) -> PlatformConfig:
    """vLLM V0's padded prefills (``max_paddings``), on caches sized in memory or stated in blocks."""
    step = draw(st.sampled_from(STEPS))
    seqs = draw(st.sampled_from([1, 2, 3, 5, 8, 64, 256]))
    block_tokens = draw(st.sampled_from([1, 16, 32]))
    kv_tokens = draw(st.sampled_from([300, 1000, 3000, 12_000, 10**6]))  # small ones preempt
    stated = draw(st.booleans())
    batcher = ContinuousBatcherConfig(
        max_num_seqs=seqs,
        max_batched_tokens=draw(st.integers(seqs, max(seqs, 4096))),
        block_tokens=block_tokens,
        gpu_memory_utilization=0.9 if stated else min(utilization_for(step, kv_tokens), 1.0),
        schedule="prefill_first",
        max_paddings=draw(st.sampled_from([0, 1, 16, 256, 2000, 10**6])),
        kv_cache_blocks=max(min(kv_tokens, room_tokens(step)) // block_tokens, 1) if stated else None,
    )
    return PlatformConfig(
        PoolConfig(draw(st.integers(1, 5)), step, batcher), network_hop_s=draw(st.sampled_from([0.0, 0.02]))
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(padded_platforms(), workloads(), st.none() | st.floats(0.5, 60.0))
def test_the_loop_pads_prefills_as_simpy_does(config, arrivals, horizon_s):
    assert_same_run(arrivals, config, horizon_s)


@pytest.mark.parametrize("max_paddings", [0, 256, 10**6])
@pytest.mark.parametrize("kv_cache_blocks", [None, 150], ids=["roomy", "preempting"])
def test_padded_prefills_match(max_paddings, kv_cache_blocks):
    """Prompts of very different lengths, so that padding splits iterations (0, 256) or pads them (a
    large budget); a stated cache of 150 blocks of 16 tokens preempts often."""
    step = STEPS[2]
    rng = np.random.default_rng(5)
    count = 1500
    arrivals = make_arrivals(
        np.cumsum(rng.exponential(1.0 / 25.0, count)),
        tokens_in=rng.integers(20, 1500, count),
        tokens_out=rng.integers(20, 300, count),
    )

    def config(paddings: int | None) -> PlatformConfig:
        batcher = ContinuousBatcherConfig(
            max_num_seqs=32, max_batched_tokens=4096, schedule="prefill_first", max_paddings=paddings,
            kv_cache_blocks=kv_cache_blocks,
        )  # fmt: skip
        return PlatformConfig(PoolConfig(2, step, batcher), network_hop_s=0.0)

    assert_same_run(arrivals, config(max_paddings))
    assert_same_run(arrivals, config(max_paddings), horizon_s=float(arrivals["t_s"].iloc[count // 2]))
    _, padded = play(arrivals, config(max_paddings), None, True)
    _, unpadded = play(arrivals, config(None), None, True)
    assert not padded.iterations.equals(unpadded.iterations)  # the padding changes the run
    if kv_cache_blocks is not None:
        assert padded.kv_capacity_tokens == {"main": kv_cache_blocks * 16}
        assert len(padded.preemptions) > 0  # the case it is meant to be


def test_the_progress_bar_changes_nothing():
    rng = np.random.default_rng(3)
    arrivals = make_arrivals(
        np.cumsum(rng.exponential(0.05, 400)), tokens_in=300, tokens_out=rng.integers(1, 300, 400)
    )
    config = PlatformConfig(
        PoolConfig(2, STEPS[0], ContinuousBatcherConfig(max_num_seqs=8)), network_hop_s=0.0
    )
    assert_same_run(arrivals, config, progress=True)
    assert_same_run(arrivals, config, horizon_s=10.0, progress=True)


def test_simulate_uses_the_loop_and_the_switch_turns_it_off(monkeypatch):
    arrivals = make_arrivals(np.arange(20) * 0.1, tokens_in=200, tokens_out=30)
    config = PlatformConfig(PoolConfig(2, STEPS[0], ContinuousBatcherConfig()), network_hop_s=0.0)
    used, real = [], fastloop.run

    def counted(platform: Platform, progress: bool) -> None:
        used.append(platform)
        real(platform, progress)

    monkeypatch.setattr(fastloop, "run", counted)
    simulate(arrivals, config, seed=1)
    assert len(used) == 1
    monkeypatch.setenv(fastloop.DISABLE_ENV, "1")
    simulate(arrivals, config, seed=1)
    assert len(used) == 1


def test_a_prompt_of_no_tokens_is_refused_before_the_run():
    """A continuous batcher prefills at least one token to make the first: an empty prompt is a bad
    input, named, before either engine starts."""
    arrivals = make_arrivals([0.0, 1.0], tokens_in=np.array([100, 0]), tokens_out=5)
    config = PlatformConfig(PoolConfig(1, STEPS[0], ContinuousBatcherConfig()), network_hop_s=0.0)
    for fast in (True, False):
        with pytest.raises(ValueError, match=r"arrivals\['tokens_in'\] must be >= 1 .* row 1 holds 0"):
            play(arrivals, config, None, fast)


def test_the_compiled_step_costs_are_stepcosts_to_the_last_bit():
    """The same floating-point operations in the same order, memory-bound and compute-bound runs alike."""
    fastloop.compile_loop()
    rng = np.random.default_rng(11)
    compute_bound = 0
    for step in STEPS:
        costs, cost = StepCosts(step), fastloop.step_costs(step)
        for _ in range(3000):
            batch = int(rng.integers(1, 1025))
            context = float(rng.integers(0, 10 ** int(rng.integers(1, 8))))
            steps = int(rng.integers(0, 3000))
            run_s = costs.decode_run_s(batch, context, steps)
            assert fastloop.decode_run_s(cost, batch, context, steps) == run_s
            seconds = float(rng.uniform(0.0, 1.1 * run_s))
            assert fastloop.steps_within(cost, batch, context, steps, seconds) == costs.steps_within(
                batch, context, steps, seconds
            )
            prefill = int(rng.integers(0, 8193))
            assert fastloop.iteration_s(cost, prefill, batch, context) == costs.iteration_s(
                prefill, batch, context
            )
            compute_bound += costs.compute_per_token * batch > costs.weights_s + costs.per_context_s * context
    assert compute_bound > 100  # the switch in decode_run_s is exercised


# -- who runs in the loop -----------------------------------------------------------------------------------


def platform_for(config: PlatformConfig, priority: int | np.ndarray = 0) -> Platform:
    arrivals = make_arrivals(np.arange(4) * 0.5, priority=priority)
    columns = arrival_columns(arrivals)
    if config.regions is not None:
        columns["origin"] = np.zeros(len(arrivals), dtype=np.int64)
    return Platform(columns, config, 1, None)


CONTINUOUS = PoolConfig(2, STEPS[0], ContinuousBatcherConfig())


def test_a_plain_continuous_platform_is_eligible():
    assert platform_for(PlatformConfig(CONTINUOUS)).fast


@pytest.mark.parametrize(
    "config",
    [
        PlatformConfig(
            PoolConfig(2, AffineServiceTime(0.01, 0.002), BatcherConfig(max_batch_size=4))
        ),  # static
        PlatformConfig(PoolConfig(2, ExponentialStepTime(0.02), ContinuousBatcherConfig())),
        PlatformConfig(PoolConfig(2, STEPS[0], ContinuousBatcherConfig(), policy="round_robin")),
        PlatformConfig(
            PoolConfig(1, STEPS[0], ContinuousBatcherConfig(), autoscaler=AutoscalerConfig(max_replicas=2))
        ),
        PlatformConfig(
            CONTINUOUS,
            cascade=CascadeConfig(PoolConfig(1, STEPS[1], ContinuousBatcherConfig(), name="small")),
        ),  # fmt: skip
        PlatformConfig(CONTINUOUS, regions=RegionsConfig((Region("us", 1.0),), [[0.0]])),
        PlatformConfig(CONTINUOUS, GatewayConfig(queue_capacity=10)),
        PlatformConfig(CONTINUOUS, GatewayConfig(timeout_s=5.0)),
    ],
    ids=[
        "static",
        "exponential",
        "round_robin",
        "autoscaler",
        "cascade",
        "regions",
        "queue_capacity",
        "timeout",
    ],
)
def test_anything_else_runs_in_simpy(config):
    assert not platform_for(config).fast


def test_priority_classes_the_switches_and_no_numba_run_in_simpy(monkeypatch):
    assert not platform_for(PlatformConfig(CONTINUOUS), priority=np.array([0, 1, 0, 1])).fast
    monkeypatch.setenv(fastloop.DISABLE_ENV, "1")
    assert not platform_for(PlatformConfig(CONTINUOUS)).fast
    monkeypatch.delenv(fastloop.DISABLE_ENV)
    monkeypatch.setattr(fastloop, "enabled", False)
    assert not platform_for(PlatformConfig(CONTINUOUS)).fast
    monkeypatch.setattr(fastloop, "enabled", True)
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "numba" else find_spec(name, *a)
    )
    assert not platform_for(PlatformConfig(CONTINUOUS)).fast  # no numba: simpy
