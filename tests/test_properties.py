"""Properties of every run, on random small platforms (hypothesis): no request lost or counted twice,
timestamps in order, batches within their cap, the backlog within the gateway's bound, a timeline that
agrees with the log, and a seed that fixes everything."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import make_arrivals
from scaleplay.config import CONTINUOUS_POLICIES
from scaleplay.profiles import AffineServiceTime, RandomServiceTime
from scaleplay.schema import OUTCOMES
from scaleplay.simulator import (
    POLICIES,
    BatcherConfig,
    GatewayConfig,
    IngestionConfig,
    PlatformConfig,
    PoolConfig,
    simulate,
)

#: The balancing policies a static batcher takes (the rest read a continuous batcher's KV cache).
STATIC_POLICIES = tuple(p for p in POLICIES if p not in CONTINUOUS_POLICIES)

SERVICES = [
    AffineServiceTime(fixed_s=1.0),
    AffineServiceTime(fixed_s=0.2, per_item_s=0.1, per_token_in_s=0.001),
    RandomServiceTime(AffineServiceTime(fixed_s=0.7), "exponential"),
]
STAMPS = ["arrived_s", "admitted_s", "features_ready_s", "model_start_s", "model_end_s", "responded_s"]
RUNS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def arrivals_tables(draw: st.DrawFn, min_size: int = 0, max_size: int = 25) -> pd.DataFrame:
    n = draw(st.integers(min_size, max_size))
    gap = st.one_of(st.sampled_from([0.0, 0.1, 0.5, 1.0]), st.floats(0.0, 3.0, allow_nan=False))
    t_s = np.cumsum(draw(st.lists(gap, min_size=n, max_size=n)))
    ints = st.lists(st.integers(0, 2), min_size=n, max_size=n)
    arrivals = make_arrivals(
        t_s,
        priority=draw(ints) if n else 0,
        tokens_in=np.array(draw(st.lists(st.integers(0, 400), min_size=n, max_size=n)), dtype=np.int64),
    )
    if draw(st.booleans()):
        arrivals["service_s"] = draw(st.lists(st.floats(0.0, 2.0), min_size=n, max_size=n)) if n else []
    return arrivals


@st.composite
def platforms(draw: st.DrawFn) -> PlatformConfig:
    batcher = BatcherConfig(
        max_batch_size=draw(st.integers(1, 4)),
        max_wait_s=draw(st.sampled_from([0.0, 0.2, 1.0])),
        max_concurrent_batches=draw(st.integers(1, 2)),
    )
    service, policy = draw(st.sampled_from(SERVICES)), draw(st.sampled_from(STATIC_POLICIES))
    pool = PoolConfig(draw(st.integers(1, 3)), service, batcher, policy)
    rate = draw(st.none() | st.floats(0.5, 5.0))
    gateway = GatewayConfig(
        queue_capacity=draw(st.none() | st.integers(1, 5)),
        rate_limit_per_s=rate,
        rate_limit_burst=draw(st.integers(1, 3)),
        shed_queue_length=draw(st.none() | st.integers(0, 4)),
        shed_min_priority=draw(st.integers(0, 2)),
        timeout_s=draw(st.none() | st.floats(0.3, 5.0)),
    )
    ingestion = draw(
        st.none()
        | st.builds(
            IngestionConfig,
            fetch_mean_s=st.floats(0.01, 1.0),
            fetch_cv=st.floats(0.0, 2.0),
            cache_hit_ratio=st.floats(0.0, 1.0),
            cache_latency_s=st.sampled_from([0.0, 0.01]),
        )
    )
    return PlatformConfig(pool, gateway, ingestion, draw(st.sampled_from([0.0, 0.05])))


def waiting_intervals(
    log: pd.DataFrame, config: PlatformConfig, horizon_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """``[features ready, left the line)`` of every request that joined a line."""
    timeout_s = config.gateway.timeout_s if config.gateway.timeout_s is not None else math.inf
    left = np.where(log["outcome"] == "timed_out", log["arrived_s"] + timeout_s, log["model_start_s"])
    left = np.where(np.isnan(left), horizon_s, left)
    joined = log["features_ready_s"].notna().to_numpy()
    return log["features_ready_s"].to_numpy()[joined], left[joined]


def time_average(begin: np.ndarray, end: np.ndarray, lows: np.ndarray, highs: np.ndarray) -> np.ndarray:
    """Brute force: the mean number of intervals [begin, end) open during each bin [low, high)."""
    inside = np.clip(np.minimum(end[:, None], highs) - np.maximum(begin[:, None], lows), 0, None)
    widths = highs - lows
    return np.divide(inside.sum(axis=0), widths, out=np.zeros_like(widths), where=widths > 0)


@RUNS
@given(arrivals=arrivals_tables(), config=platforms(), seed=st.integers(0, 2**32), data=st.data())
def test_every_run_keeps_its_books(arrivals, config, seed, data):
    horizon_s = data.draw(st.none() | st.floats(0.5, 40.0), label="horizon_s")
    step_s = data.draw(st.sampled_from([0.3, 1.0, 5.0]), label="timeline_step_s")
    result = simulate(arrivals, config, seed=seed, horizon_s=horizon_s, timeline_step_s=step_s)
    log, timeline = result.log, result.timeline
    outcome = log["outcome"]

    # conservation: each request that arrived before the horizon appears once, with one outcome
    arrived = arrivals if horizon_s is None else arrivals[arrivals["t_s"] < horizon_s]
    assert log["request_id"].tolist() == arrived["request_id"].tolist()
    assert outcome.isin(OUTCOMES).all()
    assert ((log["reject_reason"] != "") == (outcome == "rejected")).all()
    if horizon_s is None:
        assert not (outcome == "in_flight").any()
    for name in ("rejected", "completed", "timed_out"):
        assert timeline[name].sum() == (outcome == name).sum()
    assert timeline["arrived"].sum() == len(log)
    assert timeline["admitted"].sum() == (outcome != "rejected").sum()

    # timestamps in order wherever present, and present exactly when the outcome says so
    stamps = log[STAMPS].to_numpy()
    for earlier, later in zip(stamps.T, stamps.T[1:], strict=False):
        both = ~np.isnan(earlier) & ~np.isnan(later)
        assert (earlier[both] <= later[both]).all()
    done = (outcome == "completed").to_numpy()
    assert not np.isnan(stamps[done]).any()
    assert np.isnan(log["responded_s"][~done]).all() and np.isnan(log["latency_s"][~done]).all()
    assert np.allclose(log["latency_s"][done], log["responded_s"][done] - log["arrived_s"][done])
    assert (log["responded_s"][done] <= result.horizon_s).all()

    # batches within their cap; requests never started sit in no batch
    started = log["model_start_s"].notna()
    cap = config.pool.batcher.max_batch_size
    assert log.loc[started, "batch_size"].between(1, cap).all()
    assert log.loc[started, "replica"].between(0, config.pool.replicas - 1).all()
    assert (log.loc[~started, "batch_size"] == 0).all() and (log.loc[~started, "replica"] == -1).all()

    # deadlines: nobody starts after one, and the timed-out never start
    if config.gateway.timeout_s is not None:
        late = log["model_start_s"] - log["arrived_s"] >= config.gateway.timeout_s
        assert not late.any()
    assert log.loc[outcome == "timed_out", "model_start_s"].isna().all()

    # the backlog (admitted, not yet started) never exceeds queue_capacity
    if config.gateway.queue_capacity is not None:
        timeout_s = config.gateway.timeout_s if config.gateway.timeout_s is not None else math.inf
        admitted = log[outcome != "rejected"]
        deadline = admitted["arrived_s"] + timeout_s
        leaves = np.where(admitted["outcome"] == "timed_out", deadline, admitted["model_start_s"])
        times = np.concatenate([admitted["arrived_s"].to_numpy(), leaves[~np.isnan(leaves)]])
        steps = np.concatenate([np.ones(len(admitted)), -np.ones(int((~np.isnan(leaves)).sum()))])
        order = np.lexsort((steps, times))  # at equal times, leaving before joining
        assert np.cumsum(steps[order]).max(initial=0) <= config.gateway.queue_capacity

    # the timeline's queue length, recomputed by brute force from the log
    lows = timeline["t_s"].to_numpy()
    highs = np.minimum(np.append(lows[1:], result.horizon_s), result.horizon_s)
    joined, left = waiting_intervals(log, config, result.horizon_s)
    expected = time_average(joined, left, lows, highs)
    np.testing.assert_allclose(timeline["queue_length"], expected, rtol=1e-9, atol=1e-9)
    assert (timeline["busy_replicas"] <= config.pool.replicas * (1 + 1e-12)).all()
    if config.pool.batcher.max_concurrent_batches == 1:  # then busy periods are the batches themselves
        batches = log[started].drop_duplicates(["replica", "model_start_s", "model_end_s"])
        begin = batches["model_start_s"].to_numpy()
        end = batches["model_end_s"].fillna(result.horizon_s).to_numpy()
        expected = time_average(begin, end, lows, highs)
        np.testing.assert_allclose(timeline["busy_replicas"], expected, rtol=1e-9, atol=1e-9)


@RUNS
@given(arrivals=arrivals_tables(), config=platforms(), seed=st.integers(0, 2**32))
def test_a_seed_fixes_the_whole_run(arrivals, config, seed):
    first = simulate(arrivals, config, seed=seed)
    again = simulate(arrivals, config, seed=seed)
    pd.testing.assert_frame_equal(first.log, again.log)
    pd.testing.assert_frame_equal(first.timeline, again.timeline)


@settings(max_examples=25, deadline=None)
@given(arrivals=arrivals_tables(min_size=3, max_size=15), seed=st.integers(0, 2**31))
def test_another_seed_draws_other_service_times(arrivals, seed):
    config = PlatformConfig(PoolConfig(2, SERVICES[2], BatcherConfig(max_batch_size=2)))
    arrivals = arrivals.drop(columns="service_s", errors="ignore")
    first = simulate(arrivals, config, seed=seed).log
    other = simulate(arrivals, config, seed=seed + 1).log
    assert not np.array_equal(first["model_end_s"], other["model_end_s"])
