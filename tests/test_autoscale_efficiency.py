"""Autoscale efficiency (the book's secondary metric) on a continuous-batching pool: capacity needed
(the requests at a replica's rate within the SLO) over capacity provisioned. Busy time misleads there,
since a replica runs iterations whenever it holds one sequence: an oversized pool reads busy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import make_arrivals, poisson_arrivals
from scaleplay.controls import AutoscalerConfig, autoscale_efficiency, autoscale_report
from scaleplay.profiles import AffineServiceTime
from scaleplay.regions import Region, RegionsConfig
from scaleplay.simulator import ContinuousBatcherConfig, PlatformConfig, PoolConfig, simulate
from scaleplay.steptime import load_step_profile

STEP = load_step_profile("h100-80gb", "Llama-3.1-8B", 1)
ENGINE = ContinuousBatcherConfig()


def engine_pool(replicas: int, **pool: object) -> PlatformConfig:
    return PlatformConfig(PoolConfig(replicas, STEP, ENGINE, **pool))


@pytest.fixture(scope="module")
def light_load():
    """Three requests a second of long answers (seconds each), well within one replica, dealt round
    robin over an oversized pool of eight."""
    arrivals = poisson_arrivals(3.0, 600, seed=11, tokens_in=500, tokens_out=800)
    return simulate(arrivals, engine_pool(8, policy="round_robin"), seed=11)


def test_needed_over_provisioned_is_the_requests_at_the_rate_over_the_replica_seconds(light_load):
    result = light_load
    rate = 5.0
    provisioned_s = 8 * result.horizon_s  # a fixed pool: every replica billed all run
    want = len(result.log) / rate / provisioned_s
    assert autoscale_efficiency(result, replica_rate_per_s=rate) == pytest.approx(want, rel=1e-9)
    report = autoscale_report(result, replica_rate_per_s=rate)
    assert report["needed_replica_s"] == pytest.approx(len(result.log) / rate)
    assert report["efficiency"] == pytest.approx(report["needed_replica_s"] / report["provisioned_replica_s"])
    # twice the rate a replica carries, half the capacity needed
    assert autoscale_efficiency(result, replica_rate_per_s=2 * rate) == pytest.approx(want / 2, rel=1e-9)


def test_busy_time_calls_an_oversized_continuous_pool_efficient_and_the_rate_does_not(light_load):
    """Round robin keeps all eight replicas holding a sequence most of the time: busy over provisioned
    reads high, while the load needs about one of them (a replica of this model serves far more than
    three such requests a second within a 100 ms TPOT)."""
    report = autoscale_report(light_load, replica_rate_per_s=3.0)  # one replica's worth, at most
    busy_share = report["busy_replica_s"] / report["provisioned_replica_s"]
    assert busy_share > 0.7
    assert autoscale_efficiency(light_load, replica_rate_per_s=3.0) < 0.15


def test_a_continuous_pool_needs_the_rate(light_load):
    with pytest.raises(ValueError, match="replica_rate_per_s"):
        autoscale_efficiency(light_load)
    assert math.isnan(autoscale_report(light_load)["efficiency"])
    assert math.isnan(autoscale_report(light_load)["needed_replica_s"])


@pytest.mark.parametrize("rate", [0.0, -1.0, math.nan, math.inf, "fast"])
def test_a_bad_rate_is_refused_by_name(light_load, rate):
    with pytest.raises((ValueError, TypeError), match="replica_rate_per_s"):
        autoscale_efficiency(light_load, replica_rate_per_s=rate)
    with pytest.raises((ValueError, TypeError), match="replica_rate_per_s"):
        autoscale_report(light_load, replica_rate_per_s=rate)


def test_the_rate_and_a_target_utilization_are_not_both_given(light_load):
    with pytest.raises(ValueError, match="not both"):
        autoscale_efficiency(light_load, 0.7, replica_rate_per_s=2.0)


def test_result_must_be_a_run():
    with pytest.raises(TypeError, match="SimulationResult"):
        autoscale_efficiency("a run", replica_rate_per_s=1.0)


def test_a_static_pool_keeps_busy_over_provisioned():
    arrivals = make_arrivals(np.arange(0.0, 100.0, 1.0))
    result = simulate(arrivals, PlatformConfig(PoolConfig(2, AffineServiceTime(fixed_s=0.5))), seed=0)
    report = autoscale_report(result)
    assert report["efficiency"] == pytest.approx(report["busy_replica_s"] / report["provisioned_replica_s"])
    assert math.isnan(report["needed_replica_s"])
    # one of two replicas busy half the time: a quarter of the capacity
    assert autoscale_efficiency(result) == pytest.approx(0.25, abs=0.01)


def test_an_autoscaled_pool_that_follows_its_load_beats_the_same_pool_fixed():
    """A step from one request a second to eight and back: the saturation autoscaler provisions
    fewer replica-seconds than a pool fixed at the step's size, for the same requests."""
    quiet = poisson_arrivals(1.0, 150, seed=12, tokens_in=500, tokens_out=100)
    busy = poisson_arrivals(8.0, 1600, seed=13, tokens_in=500, tokens_out=100)
    t_busy = busy["t_s"].to_numpy() + quiet["t_s"].max()
    t_all = np.concatenate([quiet["t_s"], t_busy, t_busy.max() + quiet["t_s"].to_numpy()])
    arrivals = make_arrivals(t_all, tokens_in=500, tokens_out=100)
    scaler = AutoscalerConfig(max_replicas=4, metric="saturation", kv_saturation=0.3, kv_scale_down=0.1)
    scaled = simulate(arrivals, engine_pool(1, autoscaler=scaler), seed=12)
    fixed = simulate(arrivals, engine_pool(4), seed=12)
    rate = 4.0
    assert autoscale_efficiency(scaled, replica_rate_per_s=rate) > autoscale_efficiency(
        fixed, replica_rate_per_s=rate
    )


def test_with_regions_a_pool_counts_the_requests_routed_to_its_region():
    arrivals = poisson_arrivals(4.0, 400, seed=14, tokens_in=300, tokens_out=50)
    regions = RegionsConfig(
        (Region("near", 0.75), Region("far", 0.25)), ((0.0, 0.1), (0.1, 0.0)), failover=False
    )
    result = simulate(arrivals, PlatformConfig(PoolConfig(1, STEP, ENGINE), regions=regions), seed=14)
    routed = (result.log["region"] == "far").sum()
    report = autoscale_report(result, "far", replica_rate_per_s=2.0)
    assert report["needed_replica_s"] == pytest.approx(routed / 2.0)
    total = autoscale_report(result, replica_rate_per_s=2.0)["needed_replica_s"]
    assert total == pytest.approx(len(result.log) / 2.0)
    with pytest.raises(ValueError, match="pool must be one of"):
        autoscale_report(result, "nowhere", replica_rate_per_s=2.0)
