"""Sweeps of one design over loads: the share at a token SLO at each load, and the first load it misses."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from conftest import make_arrivals
from scaleplay.experiments import (
    SWEEP_STATISTICS,
    attainment_sweep,
    first_miss,
    replicate,
    slo_attainment,
)
from scaleplay.metrics import token_latency_percentiles
from scaleplay.profiles import AffineServiceTime
from scaleplay.simulator import ContinuousBatcherConfig, GatewayConfig, PlatformConfig, PoolConfig, simulate
from scaleplay.steptime import load_step_profile

STEP = load_step_profile("h100-80gb", "Llama-3.1-8B", 1)
SLO = {"ttft_slo_s": 0.3, "tpot_slo_s": 0.03}


def platform(**gateway: object) -> PlatformConfig:
    return PlatformConfig(PoolConfig(1, STEP, ContinuousBatcherConfig()), gateway=GatewayConfig(**gateway))


def poisson(rate_per_s: float, seed: int, duration_s: float = 60.0) -> pd.DataFrame:
    """Poisson arrivals at ``rate_per_s`` with random prompt and answer lengths, fixed by ``seed``."""
    rng = np.random.default_rng(seed)
    n = rng.poisson(rate_per_s * duration_s)
    times = np.sort(rng.uniform(0.0, duration_s, n))
    return make_arrivals(times, tokens_in=rng.integers(200, 2000, n), tokens_out=rng.integers(20, 300, n))


def test_one_replication_is_the_run_on_the_seed_itself():
    sweep = attainment_sweep(poisson, platform(), [5.0, 20.0], seed=7, **SLO)
    for rate in (5.0, 20.0):
        log = simulate(poisson(rate, 7), platform(), seed=7).log
        assert sweep.loc[rate, "attainment"] == slo_attainment(log, **SLO)
        tails = token_latency_percentiles(log[log["outcome"] == "completed"], quantiles=(0.99,))
        assert sweep.loc[rate, "p99_ttft_s"] == tails.loc["ttft", "p99_s"]
        assert sweep.loc[rate, "p99_tpot_s"] == tails.loc["tpot", "p99_s"]
    assert list(sweep.index) == [5.0, 20.0] and sweep.index.name == "load"
    assert sweep.filter(like="_half_width").isna().all().all()
    assert list(sweep.columns[: len(SWEEP_STATISTICS)]) == list(SWEEP_STATISTICS)


def test_replications_are_replicates_mean_and_interval():
    sweep = attainment_sweep(poisson, platform(), [30.0], seed=3, replications=3, **SLO)

    def run(seed: int) -> dict[str, float]:
        return {"attainment": slo_attainment(simulate(poisson(30.0, seed), platform(), seed=seed).log, **SLO)}

    expected = replicate(run, 3, seed=3)
    assert sweep.loc[30.0, "attainment"] == pytest.approx(expected.mean("attainment"))
    assert sweep.loc[30.0, "attainment_half_width"] == pytest.approx(expected.half_width("attainment"))


def test_an_overloaded_design_misses_and_first_miss_finds_it():
    loads = [2.0, 400.0]  # a light load, and far more than one replica can serve
    sweep = attainment_sweep(poisson, platform(), loads, seed=1, target=0.9, **SLO)
    assert sweep.loc[2.0, "meets"] and not sweep.loc[400.0, "meets"]
    assert sweep.loc[400.0, "attainment"] < sweep.loc[2.0, "attainment"]
    assert first_miss(sweep) == 400.0
    assert math.isnan(first_miss(sweep.loc[[2.0]]))


def test_refusals_are_counted_against_the_design():
    sweep = attainment_sweep(poisson, platform(queue_capacity=1, timeout_s=0.05), [400.0], seed=1, **SLO)
    assert 0 < sweep.loc[400.0, "refused_share"] <= 1
    assert sweep.loc[400.0, "attainment"] <= 1 - sweep.loc[400.0, "refused_share"]


@pytest.mark.parametrize(
    "loads, kwargs, error, match",
    [
        ([], {}, ValueError, "at least one load"),
        ([5.0, 5.0], {}, ValueError, "increase strictly"),
        ([10.0, 5.0], {}, ValueError, "increase strictly"),
        ([-1.0], {}, ValueError, r"loads\[0\]"),
        ("5", {}, TypeError, "loads"),
        (5.0, {}, TypeError, "loads"),
        ([5.0], {"replications": 0}, ValueError, "replications"),
        ([5.0], {"target": 0.0}, ValueError, "target"),
        ([5.0], {"seed": -1}, ValueError, "seed"),
        ([5.0], {"ttft_slo_s": 0.0}, ValueError, "ttft_slo_s"),
    ],
)
def test_bad_sweep_input_is_refused(loads, kwargs, error, match):
    slo = SLO | {k: v for k, v in kwargs.items() if k in SLO}
    rest = {k: v for k, v in kwargs.items() if k not in SLO}
    with pytest.raises(error, match=match):
        attainment_sweep(poisson, platform(), loads, seed=rest.pop("seed", 0), **slo, **rest)


def test_a_sweep_needs_a_token_engine_and_arrivals():
    static = PlatformConfig(PoolConfig(1, AffineServiceTime(fixed_s=1.0)))
    with pytest.raises(ValueError, match="ContinuousBatcherConfig"):
        attainment_sweep(poisson, static, [5.0], seed=0, **SLO)
    with pytest.raises(TypeError, match="PlatformConfig"):
        attainment_sweep(poisson, "a platform", [5.0], seed=0, **SLO)
    with pytest.raises(TypeError, match="arrivals_at must be a callable"):
        attainment_sweep("arrivals", platform(), [5.0], seed=0, **SLO)
    with pytest.raises(TypeError, match="arrivals DataFrame"):
        attainment_sweep(lambda load, seed: [load], platform(), [5.0], seed=0, **SLO)


def test_first_miss_refuses_a_table_without_meets():
    with pytest.raises(TypeError, match="attainment_sweep"):
        first_miss(pd.DataFrame({"attainment": [0.5]}))
    with pytest.raises(TypeError, match="attainment_sweep"):
        first_miss([True, False])
