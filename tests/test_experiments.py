"""Sizing on the engine: the share of requests at a token SLO, and the fewest replicas reaching it."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from conftest import make_arrivals
from scaleplay.disagg import DisaggregatedConfig, simulate_disaggregated
from scaleplay.experiments import (
    REPLICATION_COLUMNS,
    fewest_replicas,
    replicate,
    replication_seed,
    slo_attainment,
    usd_per_1k_requests,
)
from scaleplay.metrics import replication_ci
from scaleplay.profiles import AffineServiceTime
from scaleplay.simulator import ContinuousBatcherConfig, PlatformConfig, PoolConfig, simulate
from scaleplay.steptime import load_step_profile

STEP = load_step_profile("h100-80gb", "Llama-3.1-8B", 1)


def platform(replicas: int = 1) -> PlatformConfig:
    return PlatformConfig(PoolConfig(replicas, STEP, ContinuousBatcherConfig()))


def poisson(rate_per_s: float, n: int, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return make_arrivals(
        np.cumsum(rng.exponential(1 / rate_per_s, n)),
        tokens_in=rng.integers(200, 2000, n),
        tokens_out=rng.integers(20, 300, n),
    )


def test_attainment_counts_every_arrival_and_both_slos():
    log = pd.DataFrame(
        {
            "outcome": ["completed", "completed", "completed", "rejected", "completed"],
            "ttft_s": [0.1, 0.9, 0.1, math.nan, 0.1],
            "tpot_s": [0.01, 0.01, 0.2, math.nan, math.nan],
            "tokens_out": [10, 10, 10, 10, 1],
        }
    )
    # the first meets both; the second misses TTFT, the third TPOT, the fourth was rejected; the last
    # made one token, so it has no TPOT to miss
    assert slo_attainment(log, 0.5, 0.05) == pytest.approx(2 / 5)


def test_the_fewest_replicas_reach_the_target_and_one_fewer_do_not():
    arrivals = poisson(40.0, 2000)
    sizing = fewest_replicas(arrivals, platform(), ttft_slo_s=0.3, tpot_slo_s=0.03, target=0.95, seed=2)
    assert sizing.attainment >= 0.95
    assert sizing.gpus == sizing.replicas * STEP.tensor_parallel
    fewer = simulate(arrivals, platform(sizing.replicas - 1), seed=2).log if sizing.replicas > 1 else None
    if fewer is not None:
        assert slo_attainment(fewer, 0.3, 0.03) < 0.95
    assert sizing.tried[sizing.replicas] == sizing.attainment
    assert slo_attainment(sizing.result.log, 0.3, 0.03) == sizing.attainment


def test_an_unreachable_slo_is_reported_not_looped_on():
    arrivals = poisson(40.0, 300)
    with pytest.raises(ValueError, match="max_replicas=4"):
        fewest_replicas(arrivals, platform(), ttft_slo_s=1e-4, tpot_slo_s=0.03, max_replicas=4)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"target": 0.0}, "target"),
        ({"target": 1.5}, "target"),
        ({"max_replicas": 0}, "max_replicas"),
        ({"ttft_slo_s": -1.0}, "ttft_slo_s"),
    ],
)
def test_bad_sizing_input_is_refused(kwargs, message):
    arguments = {"ttft_slo_s": 0.5, "tpot_slo_s": 0.05} | kwargs
    with pytest.raises(ValueError, match=message):
        fewest_replicas(poisson(1.0, 5), platform(), **arguments)


def test_a_static_pool_has_no_token_slo():
    static = PlatformConfig(PoolConfig(1, AffineServiceTime(fixed_s=0.1, per_item_s=0.01)))
    with pytest.raises(ValueError, match="ContinuousBatcherConfig"):
        fewest_replicas(poisson(1.0, 5), static, ttft_slo_s=0.5, tpot_slo_s=0.05)


def test_cost_per_1k_requests():
    # 10 GPUs at $2/h serving 5 requests/s: $20/h for 18,000 requests
    assert usd_per_1k_requests(10, 2.0, 5.0) == pytest.approx(20 / 18)
    with pytest.raises(ValueError, match="requests_per_s"):
        usd_per_1k_requests(10, 2.0, 0.0)


def test_a_disaggregated_design_is_sized_over_its_splits():
    arrivals = poisson(40.0, 600)
    link = 450e9
    design = DisaggregatedConfig(
        PoolConfig(1, STEP, ContinuousBatcherConfig()), PoolConfig(1, STEP, ContinuousBatcherConfig()), link
    )
    sizing = fewest_replicas(arrivals, design, ttft_slo_s=0.5, tpot_slo_s=0.03, target=0.95, seed=2)
    prefill, decode = sizing.split
    assert prefill + decode == sizing.replicas and prefill >= 1 and decode >= 1
    assert sizing.attainment >= 0.95
    assert slo_attainment(sizing.result.log, 0.5, 0.03) == sizing.attainment
    assert sizing.replicas > 3  # so that the check below tries several splits
    fewer = sizing.replicas - 1
    assert sizing.tried[fewer] < 0.95  # every split of one replica fewer misses
    for p in range(1, fewer):
        pools = [PoolConfig(n, STEP, ContinuousBatcherConfig()) for n in (p, fewer - p)]
        config = DisaggregatedConfig(*pools, link)
        assert slo_attainment(simulate_disaggregated(arrivals, config, 2).log, 0.5, 0.03) < 0.95


# --- replications under one statistics convention ---------------------------------------------------



def test_replications_get_distinct_reproducible_seeds_and_a_t_interval():
    def run(seed):
        rng = np.random.default_rng(seed)
        return {"p99_s": float(np.quantile(rng.exponential(1.0, 500), 0.99)), "n": 500.0}

    first = replicate(run, 6, seed=11)
    again = replicate(run, 6, seed=11)
    pd.testing.assert_frame_equal(first.runs, again.runs)
    assert first.runs["seed"].nunique() == 6
    assert list(first.runs["seed"]) == [replication_seed(11, r) for r in range(6)]
    assert list(first.summary.columns) == list(REPLICATION_COLUMNS)
    mean, half = replication_ci(first.runs["p99_s"])
    assert first.mean("p99_s") == pytest.approx(mean)
    assert first.half_width("p99_s") == pytest.approx(half)
    assert first.half_width("n") == 0.0
    # the exponential's p99 is ln(100) = 4.6: the interval of six replications holds it
    assert first.summary.loc["p99_s", "low"] < math.log(100) < first.summary.loc["p99_s", "high"]
    assert replicate(run, 6, seed=12).runs["seed"].iloc[0] != first.runs["seed"].iloc[0]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"replications": 1}, ValueError, "replications"),
        ({"replications": 10**6}, ValueError, "replications"),
        ({"replications": 2.5}, TypeError, "replications"),
        ({"seed": -1}, ValueError, "seed"),
        ({"confidence": 1.0}, ValueError, "confidence"),
        ({"progress": "yes"}, TypeError, "progress"),
    ],
)
def test_replicate_refuses_bad_input_before_running(kwargs, error, match):
    calls = []
    args = {"replications": 3, "seed": 0, **kwargs}
    with pytest.raises(error, match=match):
        replicate(lambda s: calls.append(s) or {"x": 1.0}, args.pop("replications"), **args)
    assert calls == []


def test_replicate_refuses_a_run_that_is_not_callable_or_returns_no_mapping():
    with pytest.raises(TypeError, match="run must be a callable"):
        replicate(3, 2, seed=0)
    with pytest.raises(TypeError, match="mapping of statistics"):
        replicate(lambda s: 1.0, 2, seed=0)
