"""Sizing on the engine: the share of requests at a token SLO, and the fewest replicas reaching it."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from conftest import make_arrivals
from scaleplay.disagg import DisaggregatedConfig, simulate_disaggregated
from scaleplay.experiments import fewest_replicas, slo_attainment, usd_per_1k_requests
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
