"""Regions and faults (``scaleplay.regions``): the round trip in the latency, geo-routing and spill-over,
failover after a region fails, retried batches after replicas fail, the books every such run keeps,
the reports, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import assert_outcomes_balance, make_arrivals, poisson_arrivals
from scaleplay.alerting import SLO
from scaleplay.config import CONTINUOUS_POLICIES
from scaleplay.metrics import token_slo_met
from scaleplay.profiles import AffineServiceTime, RandomServiceTime
from scaleplay.regions import (
    Fault,
    Region,
    RegionsConfig,
    fault_impact,
    region_report,
    region_token_report,
    served_from,
)
from scaleplay.rng import stream
from scaleplay.schema import REGION_LOG_COLUMNS, REQUEST_LOG_COLUMNS
from scaleplay.simulator import (
    POLICIES,
    BatcherConfig,
    ContinuousBatcherConfig,
    GatewayConfig,
    PlatformConfig,
    PoolConfig,
    simulate,
)
from scaleplay.steptime import load_step_profile
from test_properties import STAMPS, arrivals_tables

#: The balancing policies a static batcher takes (the rest read a continuous batcher's KV cache).
STATIC_POLICIES = tuple(p for p in POLICIES if p not in CONTINUOUS_POLICIES)

EXPONENTIAL = RandomServiceTime(AffineServiceTime(fixed_s=0.5), "exponential")
# us <-> eu 80 ms, eu <-> ap 100 ms, us <-> ap 150 ms
RTT_S = ((0.0, 0.08, 0.15), (0.08, 0.0, 0.1), (0.15, 0.1, 0.0))
SLO_3S = SLO(latency_s=3.0, target=0.99)


def three_regions(
    replicas: int = 10, faults: tuple[Fault, ...] = (), failover: bool = True, **kwargs: object
) -> PlatformConfig:
    regions = (Region("us", 0.5), Region("eu", 0.3), Region("ap", 0.2))
    return PlatformConfig(
        PoolConfig(replicas, EXPONENTIAL),
        GatewayConfig(timeout_s=5.0),
        regions=RegionsConfig(regions, RTT_S, failover=failover, faults=faults, **kwargs),
    )


def check_books(result, arrivals: pd.DataFrame) -> None:
    """Every request once with one outcome, timestamps in order, the timeline agreeing with the log."""
    log, timeline = result.log, result.timeline
    assert list(log.columns) == list(REQUEST_LOG_COLUMNS) + list(REGION_LOG_COLUMNS)
    assert_outcomes_balance(log, timeline, arrivals)
    stamps = log[STAMPS].to_numpy()
    for earlier, later in zip(stamps.T, stamps.T[1:], strict=False):
        both = ~np.isnan(earlier) & ~np.isnan(later)
        assert (earlier[both] <= later[both]).all()
    done = (log["outcome"] == "completed").to_numpy()
    assert not np.isnan(stamps[done]).any()
    assert ((log["region"] == "") == (log["outcome"] == "rejected")).all()
    assert log.loc[log["outcome"] == "timed_out", "retries"].eq(0).all()  # a retried request has started


def served_on(result, region: str, start_s: float, end_s: float) -> pd.DataFrame:
    """Batches of ``region`` running at some moment of ``[start_s, end_s)``."""
    b = result.batches
    return b[(b["pool"] == region) & (b["start_s"] < end_s) & (b["end_s"] > start_s)]


# -- the network and routing --------------------------------------------------------------------------


def test_the_round_trip_shows_up_in_the_latency_exactly():
    # asymmetric and not nearest-on-the-diagonal: users of a are served by b, users of b by b
    rtt = ((0.2, 0.03), (0.3, 0.05))
    regions = RegionsConfig((Region("a", 0.5), Region("b", 0.5)), rtt)
    config = PlatformConfig(
        PoolConfig(2, AffineServiceTime(fixed_s=0.4)), network_hop_s=0.01, regions=regions
    )
    arrivals = make_arrivals(np.arange(20) * 2.0)  # far apart: nobody waits
    arrivals["origin_region"] = np.where(np.arange(20) % 2 == 0, "a", "b").astype(object)
    log = simulate(arrivals, config, seed=1).log
    assert (log["region"] == "b").all()
    expected_rtt = np.where(log["origin_region"] == "a", 0.03, 0.05)
    np.testing.assert_array_equal(log["rtt_s"], expected_rtt)
    np.testing.assert_allclose(log["latency_s"], 0.4 + 0.01 + expected_rtt, rtol=0, atol=1e-12)
    np.testing.assert_allclose(
        log["responded_s"] - log["model_end_s"], 0.01 + expected_rtt, rtol=0, atol=1e-12
    )


def test_routing_picks_the_nearest_region_lower_index_on_ties():
    rtt = ((0.05, 0.05, 0.01), (0.02, 0.02, 0.09), (0.0, 0.3, 0.3))
    regions = RegionsConfig((Region("x", 0.4), Region("y", 0.3), Region("z", 0.3)), rtt)
    config = PlatformConfig(PoolConfig(3, EXPONENTIAL), regions=regions)
    log = simulate(poisson_arrivals(2.0, 600, seed=4), config, seed=4).log
    nearest = {"x": "z", "y": "x", "z": "x"}  # y ties x and y at 0.02: x comes first
    assert (log["region"] == log["origin_region"].map(nearest)).all()
    assert set(log["origin_region"]) == {"x", "y", "z"}


def test_origins_follow_the_shares_from_their_own_stream():
    arrivals = poisson_arrivals(20.0, 20_000, seed=5)
    plain = simulate(arrivals, three_regions(), seed=5).log
    faulty = simulate(arrivals, three_regions(faults=(Fault(100.0, "eu", 3, 50.0),)), seed=5).log
    shares = plain["origin_region"].value_counts(normalize=True)
    for name, share in (("us", 0.5), ("eu", 0.3), ("ap", 0.2)):
        # binomial: 4 standard errors at n = 20000 is under 0.015
        assert abs(shares[name] - share) < 0.015
    # a fault moves no origin (its own stream), and a seed fixes the whole run
    pd.testing.assert_series_equal(plain["origin_region"], faulty["origin_region"])
    again = simulate(arrivals, three_regions(faults=(Fault(100.0, "eu", 3, 50.0),)), seed=5)
    pd.testing.assert_frame_equal(faulty, again.log)
    assert not simulate(arrivals, three_regions(), seed=6).log["origin_region"].equals(plain["origin_region"])


def test_spill_over_sends_requests_on_when_the_nearest_backlog_is_long():
    # a burst of 300 requests at once from eu: eu's line grows, spill sends the rest to us then ap
    arrivals = make_arrivals(np.full(300, 1.0))
    arrivals["origin_region"] = "eu"
    pinned = simulate(arrivals, three_regions(replicas=2), seed=1).log
    spilled = simulate(arrivals, three_regions(replicas=2, spill_backlog=50), seed=1).log
    assert (pinned["region"] == "eu").all()
    counts = spilled["region"].value_counts()
    # the burst is routed before any replica starts: 50 fill eu's backlog, then us's (next nearest from
    # eu), then ap's; with all three at the bound the rest go to the nearest healthy region, eu
    assert (counts["eu"], counts["us"], counts["ap"]) == (200, 50, 50)
    np.testing.assert_array_equal(spilled["region"].iloc[50:100], "us")


# -- failover ------------------------------------------------------------------------------------------


def test_failover_keeps_goodput_when_the_other_regions_have_room():
    # 20 requests/s over three regions of 10 replicas (2 requests/s each): us (10/s) fails for 300 s;
    # eu then carries 16/s of its 20/s, ap 4/s. Without failover us's users wait for it and time out.
    arrivals = poisson_arrivals(20.0, 16_000, seed=2)
    fault = (Fault(200.0, "us", "all", 300.0),)
    baseline = simulate(arrivals, three_regions(), seed=2)
    failover = simulate(arrivals, three_regions(faults=fault), seed=2)
    pinned = simulate(arrivals, three_regions(faults=fault, failover=False), seed=2)
    for result in (baseline, failover, pinned):
        check_books(result, arrivals)
    good = {
        name: region_report(r, SLO_3S).loc["all", "good"]
        for name, r in (("baseline", baseline), ("failover", failover), ("pinned", pinned))
    }
    assert good["failover"] >= 0.9 * good["baseline"]
    assert good["pinned"] < 0.9 * good["baseline"]
    # nothing ran in us during the fault; us's users were served in eu, paying its round trip
    assert served_on(failover, "us", 200.0, 500.0).empty
    log = failover.log
    during = (log["arrived_s"] >= 200.0) & (log["arrived_s"] < 500.0) & (log["origin_region"] == "us")
    assert (log.loc[during, "region"] == "eu").all()
    assert (log.loc[during, "rtt_s"] == 0.08).all()
    # after the recovery us serves its own users again
    after = (log["arrived_s"] >= 520.0) & (log["origin_region"] == "us")
    assert (log.loc[after, "region"] == "us").all()
    impact = fault_impact(pinned, baseline, SLO_3S)
    assert impact.loc["us", "budget_lost"] > impact.loc["all", "budget_lost"] > 0
    assert impact.loc["ap", "budget_lost"] == 0
    assert impact.loc["us", "goodput_ratio"] < 0.9


def test_a_region_that_never_recovers_holds_its_users_in_flight_without_failover():
    arrivals = poisson_arrivals(4.0, 800, seed=3)
    config = three_regions(faults=(Fault(50.0, "ap", "all"),), failover=False)
    config = PlatformConfig(config.pool, regions=config.regions)  # no deadline: they wait for ever
    result = simulate(arrivals, config, seed=3)
    check_books(result, arrivals)
    log = result.log
    stuck = log["outcome"] == "in_flight"
    assert stuck.any()
    assert (log.loc[stuck, "region"] == "ap").all()
    assert (log.loc[stuck, "arrived_s"] >= 50.0 - 10.0).all()  # only those that reached ap near or after it
    with_failover = simulate(arrivals, three_regions(faults=(Fault(50.0, "ap", "all"),)), seed=3).log
    assert (with_failover["outcome"] == "completed").all()


# -- faults on replicas --------------------------------------------------------------------------------


def test_requests_on_failed_replicas_are_retried_and_nothing_is_lost():
    # batches of up to 4 on 4 replicas; 2 of eu's replicas fail at 100 s and 300 s, mid-batch
    arrivals = poisson_arrivals(6.0, 3000, seed=7)
    faults = (Fault(100.0, "eu", 2, 60.0), Fault(300.0, "eu", 2, 60.0))
    config = PlatformConfig(
        PoolConfig(4, AffineServiceTime(fixed_s=0.8, per_item_s=0.2), BatcherConfig(4, 0.05)),
        GatewayConfig(timeout_s=10.0),
        regions=RegionsConfig(
            (Region("us", 0.5), Region("eu", 0.5)), ((0.0, 0.08), (0.08, 0.0)), faults=faults
        ),
    )
    result = simulate(arrivals, config, seed=7)
    check_books(result, arrivals)
    log, batches = result.log, result.batches
    assert (log["outcome"] == "completed").all()
    retried = log[log["retries"] > 0]
    assert len(retried) >= 4  # several batches were running on the failed replicas
    # they stayed in eu (it still had replicas) and were served there after the fault, by a live replica
    assert (retried["region"] == "eu").all()
    assert (retried["model_start_s"] >= 100.0).all()
    # the lost batches end at the fault; the failed replicas (3 and 2) run nothing while down
    cut = batches[(batches["pool"] == "eu") & batches["end_s"].isin([100.0, 300.0])]
    assert cut["size"].sum() == len(retried)
    for start_s in (100.0, 300.0):
        down = served_on(result, "eu", start_s, start_s + 60.0)
        assert not down["replica"].isin([2, 3]).any()
        live = served_on(result, "eu", start_s + 60.0, start_s + 120.0)
        assert live["replica"].isin([2, 3]).any()  # back after the recovery


REGION_RUNS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def regional_platforms(draw: st.DrawFn) -> PlatformConfig:
    batcher = BatcherConfig(
        max_batch_size=draw(st.integers(1, 3)), max_wait_s=draw(st.sampled_from([0.0, 0.2]))
    )
    service = draw(st.sampled_from([AffineServiceTime(fixed_s=1.0), EXPONENTIAL]))
    faulty = draw(st.booleans())
    policy = draw(st.sampled_from(STATIC_POLICIES))
    pool = PoolConfig(draw(st.integers(1, 3)), service, batcher, policy)
    names = ["a", "b", "c"][: draw(st.integers(1, 3))]
    shares = np.full(len(names), 1.0 / len(names))
    rtt = draw(
        st.lists(
            st.lists(st.sampled_from([0.0, 0.05, 0.2]), min_size=len(names), max_size=len(names)),
            min_size=len(names),
            max_size=len(names),
        )
    )
    fault = st.builds(
        Fault,
        at_s=st.floats(0.0, 20.0),
        region=st.sampled_from(names),
        replicas=st.sampled_from(["all", 1]),
        duration_s=st.none() | st.floats(0.5, 10.0),
    )
    regions = RegionsConfig(
        tuple(Region(n, float(s)) for n, s in zip(names, shares, strict=True)),
        rtt,
        failover=draw(st.booleans()),
        spill_backlog=draw(st.none() | st.integers(0, 3)),
        faults=tuple(draw(st.lists(fault, min_size=1, max_size=3))) if faulty else (),
    )
    gateway = GatewayConfig(
        queue_capacity=draw(st.none() | st.integers(2, 6)), timeout_s=draw(st.none() | st.floats(0.5, 5.0))
    )
    return PlatformConfig(pool, gateway, regions=regions)


@REGION_RUNS
@given(arrivals=arrivals_tables(), config=regional_platforms(), seed=st.integers(0, 2**32), data=st.data())
def test_every_regional_run_with_faults_keeps_its_books(arrivals, config, seed, data):
    horizon_s = data.draw(st.none() | st.floats(0.5, 40.0), label="horizon_s")
    result = simulate(arrivals, config, seed=seed, horizon_s=horizon_s)
    arrived = arrivals if horizon_s is None else arrivals[arrivals["t_s"] < horizon_s]
    check_books(result, arrived)
    log = result.log
    assert log.loc[log["outcome"] == "completed", "rtt_s"].notna().all()
    done = log["outcome"] == "completed"
    np.testing.assert_allclose(
        log.loc[done, "responded_s"] - log.loc[done, "model_end_s"], log.loc[done, "rtt_s"], atol=1e-9
    )
    # no batch starts on a replica while a fault holds it down
    for fault in config.regions.faults:
        if fault.replicas == "all":
            down = served_on(result, fault.region, fault.at_s, fault.until_s)
            assert (down["start_s"] < fault.at_s).all() or down.empty
    again = simulate(arrivals, config, seed=seed, horizon_s=horizon_s)
    pd.testing.assert_frame_equal(log, again.log)
    pd.testing.assert_frame_equal(result.timeline, again.timeline)


# -- reports -------------------------------------------------------------------------------------------


def test_region_report_counts_each_origins_requests():
    arrivals = poisson_arrivals(10.0, 3000, seed=8)
    result = simulate(arrivals, three_regions(), seed=8)
    report = region_report(result, SLO_3S)
    assert list(report.index) == ["us", "eu", "ap", "all"]
    assert report.loc[["us", "eu", "ap"], "requests"].sum() == report.loc["all", "requests"] == 3000
    assert report.loc[["us", "eu", "ap"], "good"].sum() == report.loc["all", "good"]
    assert report.loc["all", "goodput_per_s"] == report.loc["all", "good"] / result.horizon_s
    assert (report["served_elsewhere"] == 0).all() and (report["retried"] == 0).all()
    with pytest.raises(ValueError, match="regions"):
        region_report(simulate(arrivals, PlatformConfig(PoolConfig(10, EXPONENTIAL)), seed=8), SLO_3S)


# -- bad input -----------------------------------------------------------------------------------------

TWO = (Region("a", 0.5), Region("b", 0.5))


@pytest.mark.parametrize(
    ("build", "error", "name"),
    [
        (lambda: RegionsConfig(TWO, ((0.0, 0.1, 0.2), (0.1, 0.0, 0.2))), ValueError, "square"),
        (lambda: RegionsConfig(TWO, ((0.0, 0.1),)), ValueError, "square"),
        (lambda: RegionsConfig(TWO, ((0.0, -0.1), (0.1, 0.0))), ValueError, r"rtt_s\[0\]\[1\]"),
        (lambda: RegionsConfig(TWO, ((0.0, math.nan), (0.1, 0.0))), ValueError, r"rtt_s\[0\]\[1\]"),
        (lambda: RegionsConfig(TWO, 0.1), TypeError, "rtt_s"),
        (
            lambda: RegionsConfig((Region("a", 0.5), Region("b", 0.4)), ((0, 0), (0, 0))),
            ValueError,
            "sum to 1",
        ),
        (lambda: RegionsConfig((Region("a", 0.5), Region("a", 0.5)), ((0, 0), (0, 0))), ValueError, "unique"),
        (lambda: RegionsConfig((), ()), ValueError, "at least one"),
        (lambda: RegionsConfig(TWO, ((0, 0), (0, 0)), faults=(Fault(1.0, "c"),)), ValueError, "fault region"),
        (lambda: RegionsConfig(TWO, ((0, 0), (0, 0)), spill_backlog=-1), ValueError, "spill_backlog"),
        (lambda: RegionsConfig(TWO, ((0, 0), (0, 0)), failover=1), TypeError, "failover"),
        (lambda: Region("a", 1.5), ValueError, "share"),
        (lambda: Region("", 0.5), ValueError, "region name"),
        (lambda: Fault(-1.0, "a"), ValueError, "at_s"),
        (lambda: Fault(1.0, "a", 0), ValueError, "replicas"),
        (lambda: Fault(1.0, "a", "some"), TypeError, "replicas"),
        (lambda: Fault(1.0, "a", duration_s=0.0), ValueError, "duration_s"),
        (
            lambda: PlatformConfig(
                PoolConfig(2, EXPONENTIAL),
                regions=RegionsConfig(TWO, ((0, 0), (0, 0)), faults=(Fault(1.0, "a", 3),)),
            ),
            ValueError,
            "fault replicas",
        ),
    ],
)
def test_bad_regions_are_refused_by_name(build, error, name):
    with pytest.raises(error, match=name):
        build()


def test_unknown_origin_names_in_the_arrivals_are_refused():
    config = PlatformConfig(PoolConfig(2, EXPONENTIAL), regions=RegionsConfig(TWO, ((0, 0), (0, 0))))
    arrivals = make_arrivals(np.arange(3.0))
    arrivals["origin_region"] = ["a", "b", "mars"]
    with pytest.raises(ValueError, match=r"origin_region.*row 2.*mars"):
        simulate(arrivals, config, seed=1)


# -- reports: hostile input refused by name, before any work ------------------------------------------


def _report_runs():
    arrivals = poisson_arrivals(5.0, 200, seed=3)
    faulty = three_regions(faults=(Fault(5.0, "us"),))
    return simulate(arrivals, faulty, seed=3), simulate(arrivals, three_regions(), seed=3)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        # regressions: None raised AttributeError "'NoneType' object has no attribute 'config'"
        (
            lambda f, b: region_report(None, SLO_3S),
            TypeError,
            r"result must be a SimulationResult .*got None",
        ),
        (
            lambda f, b: fault_impact(None, b, SLO_3S),
            TypeError,
            r"faulty must be a SimulationResult .*got None",
        ),
        (
            lambda f, b: fault_impact(f, None, SLO_3S),
            TypeError,
            r"baseline must be a SimulationResult .*got None",
        ),
        (
            lambda f, b: region_report(b.log, SLO_3S),
            TypeError,
            r"result must be a SimulationResult.*\(DataFrame\)",
        ),
        # regressions: step_s=1e-300 raised OverflowError "Python int too large to convert to C long"
        (
            lambda f, b: region_report(b, SLO_3S, step_s=1e-300),
            ValueError,
            r"step_s must lie in \[1e-06, 1e\+09\]",
        ),
        (lambda f, b: fault_impact(f, b, SLO_3S, step_s=1e-300), ValueError, r"step_s must lie in \[1e-06"),
        (
            lambda f, b: region_report(b, SLO_3S, step_s=1e-6),
            ValueError,
            r"step_s=1e-06 cuts result.horizon_s=",
        ),
        (lambda f, b: region_report(b, SLO_3S, step_s=7.0), ValueError, r"window 5m=300.0 .* step_s=7.0"),
        (lambda f, b: region_report(b, "slo"), TypeError, r"slo must be an SLO, got 'slo' \(str\)"),
        (lambda f, b: fault_impact(f, b, None), TypeError, r"slo must be an SLO, got None"),
    ],
)
def test_reports_refuse_hostile_input_by_name(call, error, match):
    faulty, baseline = _report_runs()
    with pytest.raises(error, match=match):
        call(faulty, baseline)


def test_fault_impact_names_the_run_without_regions_or_with_other_regions():
    faulty, baseline = _report_runs()
    plain = simulate(poisson_arrivals(5.0, 50, seed=3), PlatformConfig(PoolConfig(2, EXPONENTIAL)), seed=3)
    with pytest.raises(ValueError, match="baseline must come from a platform with regions"):
        fault_impact(faulty, plain, SLO_3S)
    other = simulate(
        poisson_arrivals(5.0, 50, seed=3),
        PlatformConfig(PoolConfig(2, EXPONENTIAL), regions=RegionsConfig(TWO, ((0, 0), (0, 0)))),
        seed=3,
    )
    with pytest.raises(
        ValueError, match=r"faulty and baseline must have the same regions, got \['us', 'eu', 'ap'\]"
    ):
        fault_impact(faulty, other, SLO_3S)
    impact = fault_impact(faulty, baseline, SLO_3S)
    assert list(impact.index) == ["us", "eu", "ap", "all"]
    assert np.isfinite(impact[["goodput_per_s", "baseline_goodput_per_s", "budget_lost"]].to_numpy()).all()


# -- the token SLO by region, and a central pool seen from every region --------------------------------

ENGINE_STEP = load_step_profile("h100-80gb", "Llama-3.1-8B", 1)
# users in "far" are nearer to "home" than to their own region's servers: everyone is served at home
PINNED_RTT = ((0.01, 0.5), (0.05, 0.6))
HOME_FAR = (Region("home", 0.6), Region("far", 0.4))


def _engine_arrivals(seed: int) -> pd.DataFrame:
    arrivals = poisson_arrivals(6.0, 600, seed=seed, tokens_in=400, tokens_out=60)
    origins = np.where(stream(seed, "test-origins").random(len(arrivals)) < 0.6, "home", "far")
    return arrivals.assign(origin_region=origins.astype(object))


def test_a_central_pool_seen_from_its_users_is_a_platform_whose_users_all_route_home():
    """served_from on a run without regions gives the very log of a run with regions in which every
    origin's nearest region is the home one: the same service, the round trip added on the way back."""
    arrivals = _engine_arrivals(21)
    pool = PoolConfig(2, ENGINE_STEP, ContinuousBatcherConfig())
    regions = RegionsConfig(HOME_FAR, PINNED_RTT, failover=False)
    central = simulate(arrivals.drop(columns="origin_region"), PlatformConfig(pool), seed=21)
    routed = simulate(arrivals, PlatformConfig(pool, regions=regions), seed=21)
    seen = served_from(central.log, arrivals["origin_region"], regions, "home")
    assert (routed.log["region"] == "home").all()
    columns = ["origin_region", "region", "retries", "outcome"]
    pd.testing.assert_frame_equal(seen[columns], routed.log[columns])
    for column in ("rtt_s", "ttft_s", "latency_s", "responded_s", "tpot_s"):
        np.testing.assert_allclose(seen[column], routed.log[column], rtol=0, atol=1e-9, err_msg=column)
    # the far users' first tokens came 50 ms later than the engine made them
    far = (seen["origin_region"] == "far").to_numpy()
    np.testing.assert_allclose((seen["ttft_s"] - central.log["ttft_s"])[far], 0.05, atol=1e-12)


def test_region_token_report_splits_the_share_at_the_slo_by_origin():
    arrivals = _engine_arrivals(22)
    regions = RegionsConfig(HOME_FAR, PINNED_RTT, failover=False)
    pool = PoolConfig(2, ENGINE_STEP, ContinuousBatcherConfig())
    log = simulate(arrivals, PlatformConfig(pool, regions=regions), seed=22).log
    # a TTFT SLO at the home users' median: the far users' 40 ms more round trip puts more above it
    ttft = log["ttft_s"].to_numpy()
    origin = log["origin_region"].to_numpy()
    slo_s = float(np.nanpercentile(ttft[origin == "home"], 50))
    report = region_token_report(log, regions, ttft_slo_s=slo_s, tpot_slo_s=1.0)
    assert list(report.index) == ["home", "far", "all"]
    assert report.loc[["home", "far"], "requests"].sum() == report.loc["all", "requests"] == len(log)
    for name in ("home", "far"):
        part = log[origin == name]
        assert report.loc[name, "attainment"] == float(token_slo_met(part, slo_s, 1.0).mean())
        assert report.loc[name, "p99_ttft_s"] == pytest.approx(np.nanpercentile(part["ttft_s"], 99))
    assert report.loc["far", "attainment"] < report.loc["home", "attainment"]  # the round trip shows
    # the matrix makes home every user's nearest region: nobody was served elsewhere
    assert (report["served_elsewhere"] == 0).all()


def test_served_from_and_region_token_report_refuse_bad_input_by_name():
    arrivals = _engine_arrivals(23)
    regions = RegionsConfig(HOME_FAR, PINNED_RTT)
    pool = PoolConfig(1, ENGINE_STEP, ContinuousBatcherConfig())
    plain = simulate(arrivals.drop(columns="origin_region"), PlatformConfig(pool), seed=23).log
    origins = arrivals["origin_region"]
    with pytest.raises(ValueError, match="region must be one of"):
        served_from(plain, origins, regions, "moon")
    with pytest.raises(TypeError, match="origins"):
        served_from(plain, "home", regions, "home")
    with pytest.raises(ValueError, match="origins must name a region for every request_id"):
        served_from(plain, origins[:10], regions, "home")
    with pytest.raises(ValueError, match="origin_region"):
        served_from(plain, origins.replace("far", "mars"), regions, "home")
    with pytest.raises(TypeError, match="regions"):
        served_from(plain, origins, {"home": 1.0}, "home")
    seen = served_from(plain, origins, regions, "home")
    with pytest.raises(ValueError, match="without regions"):
        served_from(seen, origins, regions, "home")
    with pytest.raises(ValueError, match="origin_region"):
        region_token_report(plain, regions, ttft_slo_s=1.0, tpot_slo_s=0.1)
    with pytest.raises(TypeError, match="regions"):
        region_token_report(seen, None, ttft_slo_s=1.0, tpot_slo_s=0.1)
    with pytest.raises(ValueError, match="ttft_slo_s"):
        region_token_report(seen, regions, ttft_slo_s=0.0, tpot_slo_s=0.1)
