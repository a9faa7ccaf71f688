"""Continuous batching (``sim.continuous``): on random platforms (hypothesis: faults, autoscalers,
cascades, time-boxes, gateway rules, every policy) every run keeps its books; a lone request takes
exactly the iterations ``StepTimeModel`` times; prompts are chunked, requests preempted and recomputed,
and what can never fit is rejected; the memoryless engine is the bulk-service queue with late entry;
bad configs are refused by name."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

from conftest import assert_outcomes_balance, finishes, make_arrivals, poisson_arrivals
from scaleplay.controls import AutoscalerConfig, CascadeConfig, ColdStart, OverflowConfig, TimeBoxConfig
from scaleplay.metrics import littles_law
from scaleplay.profiles import AffineServiceTime, load_hardware, load_model
from scaleplay.queueing import bulk_service_mean_in_system
from scaleplay.regions import Fault, Region, RegionsConfig
from scaleplay.simulator import (
    POLICIES,
    BatcherConfig,
    ContinuousBatcherConfig,
    GatewayConfig,
    IngestionConfig,
    PlatformConfig,
    PoolConfig,
    simulate,
)
from scaleplay.steptime import ExponentialStepTime, StepTimeModel, load_step_profile
from test_compose import surge
from test_properties import STAMPS

A100 = load_hardware("A100 80GB SXM")
LLAMA_8B = load_model("Llama-3.1-8B")
#: One GPU: no tensor-parallel terms, but a cost per decode token.
STEP = StepTimeModel(
    A100, LLAMA_8B, 1, compute_efficiency=0.6, bandwidth_efficiency=0.6, overhead_s=0.005,
    decode_s_per_token=2e-4,
)  # fmt: skip
#: Two GPUs with a shipped fitted profile: the all-reduce terms too.
STEP_TP2 = load_step_profile("a100-80gb", "Llama-2-70B", 2)
#: A fixed cost on every iteration that holds prompt tokens (vLLM V0's, ``measured.calibrate_vllm_step``).
STEP_PROMPT_COST = dataclasses.replace(STEP, prefill_overhead_s=0.015)
#: The share of the KV blocks the engine keeps free when admitting (vLLM's watermark).
WATERMARK = 0.01
EXAMPLES = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
#: Set, a plain platform runs on ``sim.continuous``'s simpy scheduler, not the compiled loop.
NO_FASTLOOP = "SCALEPLAY_NO_FASTLOOP"


@contextmanager
def scheduler_only(on: bool) -> Iterator[None]:
    """Within, runs use the simpy scheduler of ``sim.continuous`` whatever the platform (when ``on``)."""
    before = os.environ.get(NO_FASTLOOP)
    if on:
        os.environ[NO_FASTLOOP] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(NO_FASTLOOP, None)
        else:
            os.environ[NO_FASTLOOP] = before


@pytest.fixture(params=["default", "scheduler"])
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each exact test runs twice: on the engine a run picks (a plain platform may take a compiled
    loop) and on the simpy scheduler of ``sim.continuous``."""
    if request.param == "scheduler":
        monkeypatch.setenv(NO_FASTLOOP, "1")
    else:
        monkeypatch.delenv(NO_FASTLOOP, raising=False)
    return request.param


def utilization_for(step: StepTimeModel, kv_tokens: int) -> float:
    """The ``gpu_memory_utilization`` that leaves ``kv_tokens`` tokens of KV cache beside the weights."""
    return (step.model.weight_bytes + (kv_tokens + 0.5) * step.model.kv_bytes_per_token) / step.memory_bytes


def batcher(step: StepTimeModel, kv_tokens: int, **kwargs: object) -> ContinuousBatcherConfig:
    return ContinuousBatcherConfig(gpu_memory_utilization=utilization_for(step, kv_tokens), **kwargs)


def lone(step: StepTimeModel = STEP, replicas: int = 1, **kwargs: object) -> PlatformConfig:
    """A pool of ``replicas`` continuous replicas, no network hop."""
    return PlatformConfig(PoolConfig(replicas, step, ContinuousBatcherConfig(**kwargs)), network_hop_s=0.0)


def token_limit(pool: PoolConfig) -> int:
    """The most tokens (prompt and answer) a request may need on ``pool``: the KV cache less the
    watermark, and under ``"prefill_first"`` the token budget too."""
    config = pool.batcher
    blocks = config.kv_blocks(pool.service)
    limit = (blocks - int(WATERMARK * blocks)) * config.block_tokens
    return min(limit, config.max_batched_tokens) if config.schedule == "prefill_first" else limit


def capacity_tokens(pool: PoolConfig) -> int:
    return pool.batcher.kv_blocks(pool.service) * pool.batcher.block_tokens


def needs(log: pd.DataFrame) -> np.ndarray:
    return (log["tokens_in"] + np.maximum(log["tokens_out"], 1)).to_numpy()


def alone_s(step: StepTimeModel, tokens_in: int, tokens_out: int) -> tuple[float, float]:
    """A request served alone, from ``step_time_s``: its prefill (one iteration) and its latency (the
    prefill, then ``tokens_out - 1`` decode iterations, its context one token longer each time)."""
    prefill_s = step.step_time_s(tokens_in, 0, tokens_in)
    context = tokens_in + 1 + np.arange(max(tokens_out - 1, 0))
    return prefill_s, prefill_s + float(np.sum(step.step_time_s(0, 1, context)))


# -- random platforms (hypothesis) ---------------------------------------------------------------------


@st.composite
def continuous_pools(draw: st.DrawFn, step: StepTimeModel, name: str) -> PoolConfig:
    seqs = draw(st.integers(1, 8))
    kv_tokens = draw(st.integers(300, 12_000))  # small enough to preempt, at times too small for a request
    knobs = {
        "max_num_seqs": seqs,
        "max_batched_tokens": draw(st.integers(seqs, 4096)),
        "block_tokens": draw(st.sampled_from([1, 16, 32])),
        "schedule": draw(st.sampled_from(["decode_first", "prefill_first"])),
    }
    if draw(st.integers(0, 4)) == 0:  # now and then the memoryless engine
        service = ExponentialStepTime(
            mean_s=draw(st.sampled_from([0.01, 0.05])), kv_capacity_tokens=kv_tokens
        )
        config = ContinuousBatcherConfig(**knobs)
    else:
        service, config = step, batcher(step, kv_tokens, **knobs)
    autoscaler = None
    if draw(st.booleans()):
        low = draw(st.integers(0, 1))
        metric = draw(st.sampled_from(["utilization", "concurrency", "saturation"]))
        autoscaler = AutoscalerConfig(
            max_replicas=draw(st.integers(1, 3)),
            min_replicas=low,
            interval_s=draw(st.sampled_from([0.5, 2.0])),
            cooldown_s=draw(st.sampled_from([0.0, 3.0])),
            cold_start=ColdStart(draw(st.sampled_from([0.0, 1.0]))),
            metric=metric,
            target=0.7 if metric == "utilization" else draw(st.sampled_from([0.5, 2.0])),
            scale_to_zero_after_s=2.0 if low == 0 else None,
        )
    replicas = 1 if autoscaler is not None else draw(st.integers(1, 3))
    # "prefix_affinity" needs prefix caching and arrivals with prefix_blocks (tests/test_prefix_engine.py)
    policy = draw(st.sampled_from([p for p in POLICIES if p != "prefix_affinity"]))
    return PoolConfig(replicas, service, config, policy, name, autoscaler)


@st.composite
def continuous_platforms(draw: st.DrawFn) -> PlatformConfig:
    regions = None
    if draw(st.booleans()):
        names = ["us", "eu"][: draw(st.integers(1, 2))]
        fault = st.builds(
            Fault,
            at_s=st.floats(0.0, 10.0),
            region=st.sampled_from(names),
            replicas=st.sampled_from(["all", 1]),
            duration_s=st.floats(0.2, 5.0) | st.none(),
        )
        regions = RegionsConfig(
            tuple(Region(name, 1.0 / len(names)) for name in names),
            [[0.0 if a == b else 0.05 for b in range(len(names))] for a in range(len(names))],
            failover=draw(st.booleans()),
            faults=tuple(draw(st.lists(fault, max_size=2))),
        )
    cascade = None
    if draw(st.booleans()):
        cascade = CascadeConfig(
            draw(continuous_pools(STEP_TP2, "small")), min_confidence=draw(st.floats(0.0, 1.0))
        )
    gateway = GatewayConfig()
    if draw(st.booleans()):
        gateway = GatewayConfig(
            queue_capacity=draw(st.none() | st.integers(1, 6)),
            rate_limit_per_s=draw(st.none() | st.floats(1.0, 5.0)),
            rate_limit_burst=draw(st.integers(1, 3)),
            shed_queue_length=draw(st.none() | st.integers(0, 4)),
            timeout_s=draw(st.none() | st.floats(0.5, 5.0)),
        )
    return PlatformConfig(
        draw(continuous_pools(STEP, "main")),
        gateway,
        ingestion=draw(st.none() | st.just(IngestionConfig(0.05, cache_hit_ratio=0.5))),
        network_hop_s=draw(st.sampled_from([0.0, 0.02])),
        cascade=cascade,
        timebox=draw(st.none() | st.builds(TimeBoxConfig, st.floats(0.5, 6.0), st.sampled_from([0.0, 0.1]))),
        modes=draw(st.none() | st.just(surge())),
        overflow=OverflowConfig(1.0) if gateway.queue_capacity is not None and draw(st.booleans()) else None,
        regions=regions,
    )


@st.composite
def workloads(draw: st.DrawFn, max_size: int = 30) -> pd.DataFrame:
    n = draw(st.integers(0, max_size))

    def column(values: st.SearchStrategy) -> np.ndarray:
        return np.array(draw(st.lists(values, min_size=n, max_size=n)))

    gaps = column(st.sampled_from([0.0, 0.05, 0.3, 1.0, 4.0]))
    arrivals = make_arrivals(
        np.cumsum(gaps) if n else gaps,
        priority=column(st.integers(0, 1)).astype(np.int64),
        tokens_in=column(st.integers(1, 3000)).astype(np.int64),
        tokens_out=column(st.integers(1, 500)).astype(np.int64),
    )
    arrivals["difficulty"] = column(st.floats(0.0, 1.0)).astype(np.float64)
    return arrivals


def model_pools(config: PlatformConfig) -> dict[str, PoolConfig]:
    """Each model's pool (every region runs the main pool's config here)."""
    pools = {"main": config.pool}
    if config.cascade is not None:
        pools["small"] = config.cascade.small
    return pools


def only_replicas_reject(config: PlatformConfig, horizon_s: float | None) -> bool:
    """Nothing but a replica's rule decides who is rejected as too long: no horizon, deadline, gateway
    rule, surge mode, cascade or time-box."""
    gateway = config.gateway
    return (
        horizon_s is None and config.cascade is None and config.timebox is None and config.modes is None
        and gateway.timeout_s is None and gateway.queue_capacity is None and gateway.rate_limit_per_s is None
        and gateway.shed_queue_length is None
    )  # fmt: skip


def check_tokens_made(result) -> None:
    """Each answer's tokens, made once: the first by its prefill, one by each recompute of a preempted
    request (which carries on where it stopped), every other by a decode iteration."""
    log, runs = result.log, result.iterations
    done = log["outcome"] == "completed"
    decoded = int((runs["steps"] * runs["decode_seqs"]).sum())
    made_by_prefills = int(done.sum() + log["preemptions"].sum())
    assert decoded + made_by_prefills == int(np.maximum(log.loc[done, "tokens_out"], 1).sum())


def check_engine_books(result, arrivals: pd.DataFrame, horizon_s: float | None) -> None:
    """Outcomes add up; stamps in order; the first token within the model's time; no answer faster
    than the request alone; too-long requests are those over the limit (exactly, when nothing else
    rejects); the iteration record within the batcher's caps; preemptions counted once."""
    config, log = result.config, result.log
    arrived = arrivals if horizon_s is None else arrivals[arrivals["t_s"] < horizon_s]
    assert_outcomes_balance(log, result.timeline, arrived)
    if horizon_s is None:
        assert not (log["outcome"] == "in_flight").any()
    stamps = log[STAMPS].to_numpy()
    for earlier, later in zip(stamps.T, stamps.T[1:], strict=False):
        both = ~np.isnan(earlier) & ~np.isnan(later)
        assert (earlier[both] <= later[both] + 1e-9).all()
    done = (log["outcome"] == "completed").to_numpy()
    assert not np.isnan(stamps[done]).any()

    # every answer a pool made: its first token inside its model time, and no faster than alone
    pools = model_pools(config)
    made = done & ~log["degraded"].to_numpy(dtype=bool) if "degraded" in log else done  # not a held answer
    answered_by = {
        name: made & ((log["model"] == name).to_numpy() if "model" in log else True) for name in pools
    }
    first = log["first_token_s"].to_numpy()
    latency, ttft = log["latency_s"].to_numpy(), log["ttft_s"].to_numpy()
    for name, pool in pools.items():
        mine = answered_by[name]
        assert not np.isnan(first[mine]).any(), name
        assert (log["model_start_s"].to_numpy()[mine] <= first[mine] + 1e-9).all(), name
        assert (first[mine] <= log["model_end_s"].to_numpy()[mine] + 1e-9).all(), name
        if isinstance(pool.service, StepTimeModel):
            for i in np.flatnonzero(mine):
                prefill_s, total_s = alone_s(pool.service, log["tokens_in"].iat[i], log["tokens_out"].iat[i])
                assert latency[i] >= total_s * (1 - 1e-9), (name, i)
                if not np.isnan(ttft[i]):
                    assert ttft[i] >= prefill_s * (1 - 1e-9), (name, i)
    assert np.isnan(first[np.isnan(log["model_start_s"].to_numpy())]).all()  # never started, no token
    has_ttft = ~np.isnan(ttft)
    assert (ttft[has_ttft] <= latency[has_ttft] + 1e-9).all()
    assert (log["preemptions"] >= 0).all()

    # too long: over the smallest limit; a pool never answers a request over its own limit
    too_long = (log["reject_reason"] == "too_long").to_numpy()
    need = needs(log)
    assert (need[too_long] > min(token_limit(p) for p in pools.values())).all()
    for name, pool in pools.items():
        assert (need[answered_by[name]] <= token_limit(pool)).all(), name
    if only_replicas_reject(config, horizon_s):
        np.testing.assert_array_equal(too_long, need > token_limit(config.pool))
        if config.regions is None or not config.regions.faults:  # no work lost: every token made once
            check_tokens_made(result)

    # the iteration record: caps, the KV cache, one run at a time on a replica
    runs = result.iterations
    small = runs["pool"].str.endswith("small").to_numpy()
    for name, pool in pools.items():
        mine, caps = runs[small == (name == "small")], pool.batcher
        assert (mine["decode_seqs"] <= caps.max_num_seqs).all()
        assert (mine["prefill_tokens"] + mine["decode_seqs"] <= caps.max_batched_tokens).all()
        assert (mine["kv_tokens"] <= capacity_tokens(pool)).all()
        if caps.schedule == "prefill_first":
            assert ((mine["prefill_tokens"] == 0) | (mine["decode_seqs"] == 0)).all()
    assert (runs["end_s"] >= runs["start_s"]).all()
    for _, replica in runs.sort_values("start_s", kind="stable").groupby(["pool", "replica"]):
        assert (replica["start_s"].to_numpy()[1:] >= replica["end_s"].to_numpy()[:-1] - 1e-9).all()
    assert int(log["preemptions"].sum()) == len(result.preemptions)


@EXAMPLES
@given(config=continuous_platforms(), arrivals=workloads(), seed=st.integers(0, 2**31), data=st.data())
def test_every_continuous_run_keeps_its_books(config, arrivals, seed, data):
    permanent = config.regions is not None and any(f.duration_s is None for f in config.regions.faults)
    horizon = st.floats(1.0, 60.0) if permanent else st.none() | st.floats(1.0, 60.0)
    horizon_s = data.draw(horizon, label="horizon_s")
    with scheduler_only(data.draw(st.booleans(), label="scheduler_only")):
        result = finishes(lambda: simulate(arrivals, config, seed=seed, horizon_s=horizon_s))
    check_engine_books(result, arrivals, horizon_s)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=continuous_platforms(), arrivals=workloads(max_size=15), seed=st.integers(0, 2**31))
def test_a_seed_fixes_every_table(config, arrivals, seed):
    permanent = config.regions is not None and any(f.duration_s is None for f in config.regions.faults)
    horizon_s = 30.0 if permanent else None
    first = simulate(arrivals, config, seed=seed, horizon_s=horizon_s)
    again = simulate(arrivals, config, seed=seed, horizon_s=horizon_s)
    for name in ("log", "timeline", "batches", "iterations", "preemptions", "provisioning"):
        pd.testing.assert_frame_equal(getattr(first, name), getattr(again, name), obj=name)


@pytest.mark.parametrize("policy", [p for p in POLICIES if p not in ("shared_queue", "prefix_affinity")])
@pytest.mark.parametrize("schedule", ["decode_first", "prefill_first"])
def test_every_policy_over_three_replicas_keeps_its_books(policy, schedule):
    # the hypothesis test draws one replica as often as three; here each balancer has a choice to make
    pool = PoolConfig(
        3, STEP, batcher(STEP, 4000, max_num_seqs=4, max_batched_tokens=2048, schedule=schedule), policy
    )
    config = PlatformConfig(pool, network_hop_s=0.01)
    arrivals = poisson_arrivals(
        8.0, 150, 7, tokens_in=np.arange(150) * 37 % 2500 + 1, tokens_out=np.arange(150) * 53 % 400 + 1
    )
    result = simulate(arrivals, config, seed=7)
    check_engine_books(result, arrivals, None)
    assert set(result.log["replica"]) - {-1} == {0, 1, 2}
    assert result.log["preemptions"].sum() > 0
    again = simulate(arrivals, config, seed=7)
    pd.testing.assert_frame_equal(result.log, again.log)


def test_a_fault_mid_answer_retries_and_makes_a_new_first_token():
    regions = RegionsConfig((Region("us", 1.0),), ((0.0,),), faults=(Fault(0.5, "us", "all", 1.0),))
    config = PlatformConfig(
        PoolConfig(1, STEP, ContinuousBatcherConfig()), network_hop_s=0.0, regions=regions
    )
    log = simulate(make_arrivals([0.0, 0.2], tokens_in=100, tokens_out=200), config, seed=0).log
    assert (log["outcome"] == "completed").all() and (log["retries"] == 1).all()
    assert (log["model_start_s"] == 1.5).all()  # retried when the replica came back
    assert (log["first_token_s"] > log["model_start_s"]).all()
    assert (log["first_token_s"] <= log["model_end_s"]).all()
    np.testing.assert_allclose(log["ttft_s"], log["first_token_s"] - log["arrived_s"], rtol=1e-12)


# -- exact times ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", ["decode_first", "prefill_first"])
@pytest.mark.parametrize("step", [STEP, STEP_TP2, STEP_PROMPT_COST], ids=["tp1", "tp2", "prompt-cost"])
@pytest.mark.parametrize(("tokens_in", "tokens_out"), [(1, 1), (700, 1), (37, 300), (2000, 513)])
def test_a_lone_request_takes_its_prefill_and_decode_steps(schedule, step, tokens_in, tokens_out, engine):
    log = simulate(
        make_arrivals([1.5], tokens_in=tokens_in, tokens_out=tokens_out),
        lone(step, schedule=schedule),
        seed=0,
    ).log
    prefill_s, total_s = alone_s(step, tokens_in, tokens_out)
    row = log.iloc[0]
    assert row["model_start_s"] == 1.5
    assert row["first_token_s"] == pytest.approx(1.5 + prefill_s, rel=1e-12)
    assert row["latency_s"] == pytest.approx(total_s, rel=1e-9)
    assert row["ttft_s"] == pytest.approx(prefill_s, rel=1e-12)
    if tokens_out > 1:
        assert row["tpot_s"] == pytest.approx((total_s - prefill_s) / (tokens_out - 1), rel=1e-9)
    else:
        assert np.isnan(row["tpot_s"])
    assert row["preemptions"] == 0
    if step is STEP_PROMPT_COST:  # the prompt pass alone pays the fixed cost; the decode steps do not
        plain = alone_s(STEP, tokens_in, tokens_out)
        assert prefill_s == pytest.approx(plain[0] + 0.015, rel=1e-12)
        assert total_s - prefill_s == pytest.approx(plain[1] - plain[0], rel=1e-12)


def test_a_decode_run_switches_from_compute_to_memory_bound_as_exactly_as_step_by_step(engine):
    # 200 one-token prompts together: one prefill of 200 tokens, then 299 decode iterations of 200
    # sequences, compute-bound while the contexts are short and memory-bound once they have grown.
    batch, tokens_out = 200, 300
    contexts = batch * 2 + batch * np.arange(tokens_out - 1)
    steps = STEP.step_time_s(0, batch, contexts)
    compute = STEP.compute_time_s(batch)
    memory = STEP.memory_time_s(contexts)
    assert memory[0] < compute < memory[-1]  # the switch happens inside the run
    log = simulate(make_arrivals(np.zeros(batch), tokens_in=1, tokens_out=tokens_out), lone(), seed=0).log
    prefill_s = STEP.step_time_s(batch, 0, batch)
    np.testing.assert_allclose(log["first_token_s"], prefill_s, rtol=1e-12)
    np.testing.assert_allclose(log["model_end_s"], prefill_s + steps.sum(), rtol=1e-9)


@pytest.mark.parametrize("schedule", ["decode_first", "prefill_first"])
def test_requests_arriving_together_are_prefilled_in_one_iteration(schedule, engine):
    log = simulate(
        make_arrivals([0.0, 0.0, 0.0], tokens_in=500, tokens_out=40), lone(schedule=schedule), seed=0
    ).log
    assert (log["model_start_s"] == 0.0).all()
    np.testing.assert_allclose(log["first_token_s"], STEP.step_time_s(1500, 0, 1500), rtol=1e-12)
    contexts = 3 * 501 + 3 * np.arange(39)
    np.testing.assert_allclose(
        log["model_end_s"], log["first_token_s"] + STEP.step_time_s(0, 3, contexts).sum(), rtol=1e-9
    )


@pytest.mark.parametrize("schedule", ["decode_first", "prefill_first"])
@pytest.mark.parametrize("step", [STEP, STEP_TP2], ids=["tp1", "tp2"])
def test_a_request_arriving_mid_decode_starts_when_the_iteration_in_progress_ends(schedule, step, engine):
    # A decodes alone; B arrives inside A's 12th decode iteration and starts at its end
    a_in, a_out, b_in, b_out = 300, 200, 100, 20
    a_prefill_s = step.step_time_s(a_in, 0, a_in)
    boundaries = a_prefill_s + np.cumsum(step.step_time_s(0, 1, a_in + 1 + np.arange(a_out - 1)))
    arrive_s = 0.5 * (boundaries[10] + boundaries[11])
    arrivals = make_arrivals([0.0, arrive_s], tokens_in=[a_in, b_in], tokens_out=[a_out, b_out])
    log = simulate(arrivals, lone(step, schedule=schedule), seed=0).log
    start_s = boundaries[11]
    assert log["model_start_s"].iat[1] == pytest.approx(start_s, rel=1e-12)
    a_context = a_in + 1 + 12  # A's context when B joins: its prompt, its first token, 12 decoded
    if schedule == "decode_first":  # B's prompt rides with A's decode token
        iteration_s = step.step_time_s(b_in, 1, a_context + b_in)
        a_context += 1
    else:  # B's prompt alone, A waits
        iteration_s = step.step_time_s(b_in, 0, b_in)
    first_s = start_s + iteration_s
    assert log["first_token_s"].iat[1] == pytest.approx(first_s, rel=1e-12)
    together = step.step_time_s(0, 2, a_context + b_in + 1 + 2 * np.arange(b_out - 1))
    assert log["model_end_s"].iat[1] == pytest.approx(first_s + together.sum(), rel=1e-9)


# -- chunks, limits, preemption --------------------------------------------------------------------------


def test_a_prompt_over_the_token_budget_is_chunked_across_iterations(engine):
    budget, tokens_in, tokens_out = 512, 1300, 10
    log = simulate(
        make_arrivals([0.0], tokens_in=tokens_in, tokens_out=tokens_out),
        lone(max_batched_tokens=budget),
        seed=0,
    ).log
    chunks = np.array([512, 512, 276])
    first_s = STEP.step_time_s(chunks, 0, np.cumsum(chunks)).sum()
    decode_s = STEP.step_time_s(0, 1, tokens_in + 1 + np.arange(tokens_out - 1)).sum()
    assert log["model_start_s"].iat[0] == 0.0
    assert log["first_token_s"].iat[0] == pytest.approx(first_s, rel=1e-12)
    assert log["model_end_s"].iat[0] == pytest.approx(first_s + decode_s, rel=1e-9)
    assert first_s > alone_s(STEP, tokens_in, tokens_out)[0]  # chunking costs


def test_chunks_of_a_long_prompt_share_iterations_with_running_decodes(engine):
    # decode_first: A keeps decoding while B's long prompt goes through in chunks of what is left
    config = lone(max_batched_tokens=256)
    arrivals = make_arrivals([0.0, 0.1], tokens_in=[50, 1000], tokens_out=[100, 5])
    result = simulate(arrivals, config, seed=0)
    runs = result.iterations
    mixed = runs[(runs["prefill_tokens"] > 0) & (runs["decode_seqs"] > 0)]
    assert mixed["prefill_tokens"].tolist()[:3] == [255, 255, 255]
    assert (mixed["prefill_tokens"] + mixed["decode_seqs"] <= 256).all()
    assert result.log["first_token_s"].iat[1] == mixed["end_s"].iat[3]  # the fourth chunk ends the prompt


def test_under_prefill_first_a_prompt_over_the_token_budget_is_rejected_too_long(engine):
    config = lone(max_batched_tokens=512, schedule="prefill_first")
    arrivals = make_arrivals([0.0, 0.0, 1.0], tokens_in=[1300, 400, 511], tokens_out=[10, 112, 2])
    log = finishes(lambda: simulate(arrivals, config, seed=0)).log
    # tokens_in + tokens_out over the budget is too long too: a preempted request recomputes both
    assert log["outcome"].tolist() == ["rejected", "completed", "rejected"]
    assert (log.loc[log["outcome"] == "rejected", "reject_reason"] == "too_long").all()


@pytest.mark.parametrize("schedule", ["decode_first", "prefill_first"])
def test_a_request_larger_than_the_kv_cache_is_rejected_never_stuck(schedule, engine):
    pool = PoolConfig(1, STEP, batcher(STEP, 1000, block_tokens=16, schedule=schedule))
    limit = token_limit(pool)
    assert limit == 992  # 62 blocks of 16 tokens, a watermark of int(0.62) = 0 blocks
    arrivals = make_arrivals(
        [0.0, 0.0, 0.5, 1.0], tokens_in=[900, 500, 500, 5000], tokens_out=[200, limit - 500, limit - 499, 1]
    )
    result = finishes(lambda: simulate(arrivals, PlatformConfig(pool, network_hop_s=0.0), seed=0))
    assert result.kv_capacity_tokens == {"main": 992}
    log = result.log
    assert log["outcome"].tolist() == ["rejected", "completed", "rejected", "rejected"]
    assert log.loc[[0, 2, 3], "reject_reason"].eq("too_long").all()
    assert np.isnan(log.loc[[0, 2, 3], "model_start_s"]).all()


@pytest.mark.parametrize("schedule", ["decode_first", "prefill_first"])
def test_a_full_kv_cache_preempts_and_every_request_completes(schedule, engine):
    pool = PoolConfig(
        1, STEP, batcher(STEP, 2000, max_num_seqs=6, max_batched_tokens=1500, schedule=schedule)
    )
    arrivals = make_arrivals(np.arange(6) * 0.01, tokens_in=200, tokens_out=500)
    result = finishes(
        lambda: simulate(arrivals, PlatformConfig(pool, network_hop_s=0.0), seed=0, timeline_step_s=0.5)
    )
    log = result.log
    assert (log["outcome"] == "completed").all()
    assert log["preemptions"].sum() > 0
    assert log["preemptions"].sum() == len(result.preemptions) == result.timeline["preemptions"].sum()
    assert log["preemptions"].iat[0] == 0  # the oldest is never the one preempted
    check_tokens_made(result)
    # a preempted request recomputes its prompt and the tokens it had made
    runs = result.iterations
    assert runs["prefill_tokens"].sum() > arrivals["tokens_in"].sum()
    for _, row in log.iterrows():
        assert row["latency_s"] >= alone_s(STEP, 200, 500)[1]


@pytest.mark.parametrize("policy", ["shared_queue", "round_robin"])
@pytest.mark.parametrize("schedule", ["decode_first", "prefill_first"])
def test_a_draining_replica_recomputes_its_own_preempted_requests(policy, schedule):
    # the autoscaler drains replica 1 at 1 s while it holds preempted requests (/tmp/ct/repro_drain.py)
    config = batcher(STEP, 1000, max_num_seqs=4, max_batched_tokens=1024, block_tokens=16, schedule=schedule)
    scaler = AutoscalerConfig(
        max_replicas=2, min_replicas=1, interval_s=1.0, cooldown_s=0.0, target=50.0, metric="concurrency"
    )
    platform = PlatformConfig(PoolConfig(2, STEP, config, policy, autoscaler=scaler), network_hop_s=0.0)
    arrivals = make_arrivals(np.zeros(8), tokens_in=200, tokens_out=500)
    result = finishes(lambda: simulate(arrivals, platform, seed=0))
    log, runs = result.log, result.iterations
    assert (log["outcome"] == "completed").all()
    on_one = log["replica"] == 1
    assert on_one.any() and (log.loc[on_one, "preemptions"] > 0).any()
    recomputed = runs[(runs["replica"] == 1) & (runs["start_s"] > 1.0) & (runs["prefill_tokens"] > 0)]
    assert len(recomputed)  # after the drain began
    check_tokens_made(result)


@pytest.mark.parametrize("schedule", ["decode_first", "prefill_first"])
def test_the_kv_cache_never_holds_more_than_its_capacity(schedule, engine):
    # 99 blocks of one token. B's 77-token prompt is admitted beside A's 21 tokens (99: it fits); the
    # iteration leaves A's next token (decode_first) and B's first token in the cache as well
    pool = PoolConfig(
        1, STEP, batcher(STEP, 99, max_num_seqs=4, max_batched_tokens=512, block_tokens=1, schedule=schedule)
    )
    arrivals = make_arrivals([0.0, 0.2], tokens_in=[10, 77], tokens_out=[60, 5])
    result = simulate(arrivals, PlatformConfig(pool, network_hop_s=0.0), seed=0, timeline_step_s=0.005)
    assert result.iterations["kv_tokens"].max() <= capacity_tokens(pool)
    assert result.timeline["kv_cache_utilization"].max() <= 1.0


def test_a_preempted_request_does_not_take_back_the_room_made_for_the_decodes(engine):
    # 20 blocks of 16 tokens. A holds 32 tokens (2 full blocks) and decodes; B's prompt takes the 18
    # blocks left. A's next token needs a third block, so B is preempted, as vLLM does; vLLM then gives
    # A its block and B waits (the engine once readmitted B at once, counting A's 2 blocks, not the 3 A
    # needs, and B's prefill ran again and again while A waited).
    pool = PoolConfig(
        1, STEP, batcher(STEP, 320, max_num_seqs=4, max_batched_tokens=512, schedule="prefill_first")
    )
    arrivals = make_arrivals([0.0, 0.001], tokens_in=[31, 273], tokens_out=[50, 10])
    result = simulate(arrivals, PlatformConfig(pool, network_hop_s=0.0), seed=0)
    assert result.log["preemptions"].iat[1] <= 1
    # the prompts and at most one recompute (the prompt and the tokens B made before its preemption)
    assert result.iterations["prefill_tokens"].sum() < 31 + 273 + 2 * 273


# -- vLLM V0's padded prefills, a stated KV cache ---------------------------------------------------------


def prefill_runs(result) -> pd.DataFrame:
    runs = result.iterations
    return runs[runs["prefill_tokens"] > 0]


@pytest.mark.parametrize(
    ("max_paddings", "together"), [(0, False), (199, False), (200, True), (10**6, True), (None, True)]
)
def test_padding_splits_or_pads_a_prefill_iteration(max_paddings, together, engine):
    # 300 and 500 tokens waiting together: padded to 2 x 500 the pass holds 200 tokens of padding
    config = lone(schedule="prefill_first", max_paddings=max_paddings)
    arrivals = make_arrivals([0.0, 0.0], tokens_in=[300, 500], tokens_out=[20, 20])
    result = simulate(arrivals, config, seed=0)
    prefills = prefill_runs(result)
    durations = (prefills["end_s"] - prefills["start_s"]).to_numpy()
    if not together:  # the second prompt waits for an iteration of its own
        assert prefills["prefill_tokens"].tolist() == [300, 500]
        assert durations[0] == pytest.approx(STEP.step_time_s(300, 0, 300), rel=1e-12)
        assert result.log["model_start_s"].iat[1] == prefills["start_s"].iat[1] > 0.0
    else:  # one pass; padded, it computes (and reads) 2 x 500 tokens
        assert prefills["prefill_tokens"].tolist() == [800]
        tokens = 800 if max_paddings is None else 1000
        assert durations[0] == pytest.approx(STEP.step_time_s(tokens, 0, tokens), rel=1e-12)
        assert (result.log["first_token_s"] == prefills["end_s"].iat[0]).all()
    assert STEP.step_time_s(1000, 0, 1000) > STEP.step_time_s(800, 0, 800) * (1 + 1e-6)  # it shows


@pytest.mark.parametrize("max_paddings", [0, 256, 10**6, None])
def test_a_padded_iteration_never_computes_more_than_the_token_budget(max_paddings, engine):
    # Bursts of prompts of a few very different lengths on a roomy cache (no preemption): a request's
    # prompt is prefilled whole in the iteration it starts, so the log's requests starting together
    # are the prompts of one prefill iteration.
    budget = 2048
    config = lone(
        max_num_seqs=64, max_batched_tokens=budget, schedule="prefill_first", max_paddings=max_paddings
    )
    rng = np.random.default_rng(4)
    n = 400
    arrivals = make_arrivals(
        np.repeat(np.arange(n // 20) * 0.5, 20),
        tokens_in=rng.choice([10, 64, 100, 300, 333, 512, 1000, 1499], n),
        tokens_out=rng.integers(1, 40, n),
    )
    result = simulate(arrivals, config, seed=0)
    log = result.log
    assert (log["outcome"] == "completed").all() and log["preemptions"].sum() == 0
    groups = log.groupby("model_start_s")["tokens_in"].agg(["count", "max", "sum"])
    prefills = prefill_runs(result).set_index("start_s", drop=False)
    assert len(groups) == len(prefills)
    np.testing.assert_array_equal(groups["sum"], prefills.loc[groups.index, "prefill_tokens"])
    width = groups["count"] * groups["max"]
    durations = (prefills["end_s"] - prefills["start_s"]).loc[groups.index].to_numpy()
    assert (groups["count"] > 1).any()  # some iterations hold several prompts
    if max_paddings is None:  # the pass computes the prompts' sum, padded it would exceed the budget
        assert (width > budget).any()
        computed = groups["sum"]
    else:
        assert (width <= budget).all()
        assert (width - groups["sum"] <= max_paddings).all()
        assert (width > groups["sum"]).any() == (max_paddings > 0)  # padded where allowed
        computed = width
    np.testing.assert_allclose(durations, STEP.step_time_s(computed, 0, computed), rtol=1e-12)


@pytest.mark.parametrize("schedule", ["decode_first", "prefill_first"])
def test_a_stated_kv_cache_is_the_cache_the_engine_uses(schedule, engine):
    # 40 blocks of 16 tokens (a watermark of int(0.4) = 0): 640 tokens, whatever the GPU memory leaves
    blocks, block_tokens = 40, 16
    config = ContinuousBatcherConfig(
        max_num_seqs=8, schedule=schedule, kv_cache_blocks=blocks, block_tokens=block_tokens
    )
    pool = PoolConfig(1, STEP, config)
    assert pool.batcher.kv_blocks(STEP) == blocks
    assert ContinuousBatcherConfig(block_tokens=block_tokens).kv_blocks(STEP) > 100 * blocks  # it binds
    assert token_limit(pool) == blocks * block_tokens == 640
    arrivals = make_arrivals(
        np.arange(12) * 0.01,
        tokens_in=[600, 601] + [150] * 10,
        tokens_out=[40, 40] + [200] * 10,
    )
    result = finishes(lambda: simulate(arrivals, PlatformConfig(pool, network_hop_s=0.0), seed=0))
    assert result.kv_capacity_tokens == {"main": 640}
    log = result.log
    assert log["outcome"].tolist() == ["completed", "rejected"] + ["completed"] * 10
    assert log["reject_reason"].iat[1] == "too_long"
    assert result.iterations["kv_tokens"].max() <= 640
    assert log["preemptions"].sum() > 0  # five of these at once do not fit 640 tokens


@pytest.mark.parametrize("service", [STEP, ExponentialStepTime(0.1)], ids=["steps", "memoryless"])
def test_an_empty_prompt_is_answered_or_refused_by_name(service, engine):
    config = PlatformConfig(PoolConfig(1, service, ContinuousBatcherConfig()), network_hop_s=0.0)
    arrivals = make_arrivals([0.0, 0.5], tokens_in=[0, 7], tokens_out=[5, 3])
    with pytest.raises(ValueError, match=r"arrivals\['tokens_in'\] must be >= 1"):
        finishes(lambda: simulate(arrivals, config, seed=0), 20)


def union_s(starts: np.ndarray, ends: np.ndarray) -> float:
    """Length of the union of the intervals ``[start, end)``."""
    order = np.argsort(starts, kind="stable")
    total, low, high = 0.0, -np.inf, -np.inf
    for start, end in zip(starts[order], ends[order], strict=True):
        if start > high:
            total += high - low if high > low else 0.0
            low, high = start, end
        else:
            high = max(high, end)
    return total + (high - low if high > low else 0.0)


@pytest.mark.parametrize(
    "service",
    [
        STEP,
        pytest.param(
            ExponentialStepTime(0.05),
        ),
    ],
    ids=["steps", "memoryless"],
)
@pytest.mark.parametrize("schedule", ["decode_first", "prefill_first"])
def test_the_iteration_record_covers_every_moment_a_request_is_served(service, schedule):
    # the autoscaler's utilization and the Timeline's engine columns read the runs
    config = ContinuousBatcherConfig(max_num_seqs=4, max_batched_tokens=1024, schedule=schedule)
    n = 300
    arrivals = poisson_arrivals(
        2.0, n, 3, tokens_in=np.arange(n) * 37 % 900 + 1, tokens_out=np.arange(n) * 13 % 60 + 1
    )
    with scheduler_only(True):
        result = simulate(arrivals, PlatformConfig(PoolConfig(1, service, config), network_hop_s=0.0), seed=3)
    log, runs = result.log, result.iterations
    serving_s = union_s(log["model_start_s"].to_numpy(), log["model_end_s"].to_numpy())
    assert union_s(runs["start_s"].to_numpy(), runs["end_s"].to_numpy()) == pytest.approx(serving_s, rel=1e-9)
    assert (runs["end_s"] - runs["start_s"]).sum() == pytest.approx(serving_s, rel=1e-9)


# -- queueing theory -------------------------------------------------------------------------------------


@pytest.mark.slow  # 8 x 100,000 requests: about 10 s
def test_memoryless_iterations_make_the_bulk_service_queue_with_late_entry():
    # ExponentialStepTime iterations, one-token prompts and answers, four sequences: M/M^[4]/1 where
    # arrivals join a batch in progress. L from the sum of latencies over the run (Little's law).
    config = PlatformConfig(
        PoolConfig(
            1, ExponentialStepTime(mean_s=1.0), ContinuousBatcherConfig(max_num_seqs=4, max_batched_tokens=4)
        ),
        network_hop_s=0.0,
    )
    estimates = []
    for replication in range(8):
        arrivals = poisson_arrivals(3.0, 100_000, 2026, replication, tokens_in=1, tokens_out=1)
        log = simulate(arrivals, config, seed=replication, log_columns="narrow").log
        assert (log["outcome"] == "completed").all()
        estimates.append(log["latency_s"].sum() / arrivals["t_s"].iloc[-1])
    mean, error = np.mean(estimates), stats.sem(estimates)
    half = stats.t.ppf(0.975, len(estimates) - 1) * error
    expected = bulk_service_mean_in_system(3.0, 1.0, 4, late_entry=True)
    assert abs(mean - expected) <= half, (mean, half, expected)
    # and not the batcher without late entry, which the same data would put far off
    assert abs(mean - bulk_service_mean_in_system(3.0, 1.0, 4)) > 5 * half


@pytest.mark.parametrize("kv_tokens", [200_000, 6000], ids=["roomy", "preempting"])
def test_littles_law_holds_on_a_long_deterministic_run(kv_tokens, engine):
    pool = PoolConfig(2, STEP, batcher(STEP, kv_tokens, max_num_seqs=8, max_batched_tokens=1024))
    n = 3000
    arrivals = poisson_arrivals(
        3.5, n, 11, tokens_in=np.arange(n) * 97 % 1500 + 1, tokens_out=np.arange(n) * 31 % 300 + 1
    )
    result = simulate(arrivals, PlatformConfig(pool, network_hop_s=0.0), seed=11, timeline_step_s=5.0)
    log, timeline = result.log, result.timeline
    assert (log["outcome"] == "completed").all()
    law = littles_law(log, timeline, horizon_s=result.horizon_s)
    assert 0.1 < law["queue_length"] < 100  # a line formed, and the run is stable
    assert law["queue_length"] == pytest.approx(law["lambda_w"], rel=1e-9)
    # the sequences decoding: the Timeline's running_seqs against each answer's decode time (under
    # decode_first a decoding sequence decodes in every iteration until it ends or is preempted)
    widths = np.diff(np.append(timeline["t_s"].to_numpy(), result.horizon_s))
    running = (timeline["running_seqs"] * widths).sum()
    decoding_s = (log["model_end_s"] - log["first_token_s"]).sum()
    if kv_tokens == 200_000:
        assert log["preemptions"].sum() == 0
        assert running == pytest.approx(decoding_s, rel=1e-9)
    else:  # a preempted sequence stops decoding until it has recomputed
        assert log["preemptions"].sum() > 0
        assert running < decoding_s
    check_tokens_made(result)


# -- bad input ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "names"),
    [
        ({"max_num_seqs": 0}, ValueError, "max_num_seqs"),
        ({"max_num_seqs": -3}, ValueError, "max_num_seqs"),
        ({"max_num_seqs": 2.5}, (TypeError, ValueError), "max_num_seqs"),
        ({"max_num_seqs": "8"}, (TypeError, ValueError), "max_num_seqs"),
        ({"max_batched_tokens": 0}, ValueError, "max_batched_tokens"),
        ({"max_batched_tokens": 1.5}, (TypeError, ValueError), "max_batched_tokens"),
        ({"max_num_seqs": 16, "max_batched_tokens": 8}, ValueError, "max_batched_tokens"),
        ({"block_tokens": 0}, ValueError, "block_tokens"),
        ({"block_tokens": -16}, ValueError, "block_tokens"),
        ({"block_tokens": 16.0001}, (TypeError, ValueError), "block_tokens"),
        ({"gpu_memory_utilization": 0.0}, ValueError, "gpu_memory_utilization"),
        ({"gpu_memory_utilization": -0.5}, ValueError, "gpu_memory_utilization"),
        ({"gpu_memory_utilization": 1.01}, ValueError, "gpu_memory_utilization"),
        ({"gpu_memory_utilization": float("nan")}, ValueError, "gpu_memory_utilization"),
        ({"gpu_memory_utilization": "0.9"}, (TypeError, ValueError), "gpu_memory_utilization"),
        ({"schedule": "fcfs"}, ValueError, "schedule"),
        ({"schedule": None}, (TypeError, ValueError), "schedule"),
        ({"schedule": "prefill_first", "max_paddings": -1}, ValueError, "max_paddings"),
        ({"schedule": "prefill_first", "max_paddings": "x"}, TypeError, "max_paddings"),
        ({"schedule": "prefill_first", "max_paddings": 2.0}, TypeError, "max_paddings"),
        ({"schedule": "prefill_first", "max_paddings": True}, TypeError, "max_paddings"),
        ({"max_paddings": 256}, ValueError, "max_paddings.*prefill_first"),
        ({"schedule": "decode_first", "max_paddings": 0}, ValueError, "max_paddings.*prefill_first"),
        (
            {"schedule": "prefill_first", "max_paddings": 0, "prefix_caching": True},
            ValueError,
            "max_paddings.*prefix_caching",
        ),
        ({"kv_cache_blocks": 0}, ValueError, "kv_cache_blocks"),
        ({"kv_cache_blocks": -5}, ValueError, "kv_cache_blocks"),
        ({"kv_cache_blocks": 10.5}, TypeError, "kv_cache_blocks"),
        ({"kv_cache_blocks": "100"}, TypeError, "kv_cache_blocks"),
    ],
)
def test_bad_continuous_batcher_fields_are_refused_by_name(kwargs, error, names):
    with pytest.raises(error, match=names):
        ContinuousBatcherConfig(**kwargs)


def test_padding_and_a_stated_cache_are_allowed_where_they_apply():
    config = ContinuousBatcherConfig(schedule="prefill_first", max_paddings=0, kv_cache_blocks=1)
    assert (config.max_paddings, config.kv_blocks(STEP)) == (0, 1)
    assert PoolConfig(1, STEP, config).batcher is config


def test_a_stated_kv_cache_needs_step_time_replicas():
    # an ExponentialStepTime states its capacity in tokens itself
    with pytest.raises(ValueError, match="kv_cache_blocks"):
        PoolConfig(1, ExponentialStepTime(0.05), ContinuousBatcherConfig(kv_cache_blocks=100))


def test_a_stated_kv_cache_must_fit_beside_the_weights():
    room = STEP.memory_bytes - STEP.model.weight_bytes
    fits = int(room // (16 * STEP.model.kv_bytes_per_token))
    assert ContinuousBatcherConfig(kv_cache_blocks=fits).kv_blocks(STEP) == fits
    with pytest.raises(ValueError, match=f"kv_cache_blocks={fits + 1} .* do not fit"):
        PoolConfig(1, STEP, ContinuousBatcherConfig(kv_cache_blocks=fits + 1))


def test_gpu_memory_utilization_of_one_is_allowed():
    assert ContinuousBatcherConfig(gpu_memory_utilization=1.0).kv_blocks(STEP) > 0


def test_a_service_time_curve_cannot_drive_a_continuous_batcher():
    with pytest.raises(TypeError, match="service"):
        PoolConfig(1, AffineServiceTime(fixed_s=0.1), ContinuousBatcherConfig())


def test_a_step_time_model_cannot_drive_a_static_batcher():
    with pytest.raises(TypeError, match="service"):
        PoolConfig(1, STEP, BatcherConfig(4))


def test_weights_that_do_not_fit_ask_for_more_tensor_parallel():
    with pytest.raises(ValueError, match="tensor_parallel"):
        StepTimeModel(A100, load_model("Llama-3.1-70B"), 1)


def test_no_room_left_for_the_kv_cache_names_gpu_memory_utilization():
    # the weights take 16 GB of the 80: at 0.2 nothing is left for the cache
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        PoolConfig(1, STEP, ContinuousBatcherConfig(gpu_memory_utilization=0.2))
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        PoolConfig(1, STEP, ContinuousBatcherConfig(gpu_memory_utilization=LLAMA_8B.weight_bytes / 80e9))


@pytest.mark.parametrize("mean_s", [0.0, -1.0, float("nan"), float("inf"), "1"])
def test_exponential_step_time_refuses_a_bad_mean_by_name(mean_s):
    with pytest.raises((TypeError, ValueError), match="mean_s"):
        ExponentialStepTime(mean_s=mean_s)


def test_the_kv_balancer_needs_a_continuous_batcher():
    with pytest.raises(ValueError, match="least_kv_cache"):
        PoolConfig(2, AffineServiceTime(fixed_s=0.1), BatcherConfig(2), "least_kv_cache")
