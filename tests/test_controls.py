"""The platform's controls (``scaleplay.controls``), one at a time: the autoscaler (reactive, predictive,
cold starts, scale-to-zero), the cascade, time-boxed answers, surge modes and overflow; then the books
every controlled run must keep, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from conftest import assert_outcomes_balance, make_arrivals
from scaleplay.controls import (
    AutoscalerConfig,
    CascadeConfig,
    ColdStart,
    ModeControllerConfig,
    ModeKnobs,
    ModeSettings,
    ModeSignals,
    OverflowConfig,
    TimeBoxConfig,
    autoscale_efficiency,
    autoscale_report,
    cascade_report,
    offline_report,
)
from scaleplay.metrics import latency_percentiles
from scaleplay.profiles import AffineServiceTime, RandomServiceTime, load_model, model_names
from scaleplay.rng import stream
from scaleplay.schema import CONTROL_LOG_COLUMNS, CONTROL_TIMELINE_COLUMNS, REQUEST_LOG_COLUMNS
from scaleplay.simulator import BatcherConfig, GatewayConfig, PlatformConfig, PoolConfig, simulate
from scaleplay.workload import Burst, DiurnalCosine, Workload, generate_arrivals

EXPONENTIAL = RandomServiceTime(AffineServiceTime(fixed_s=1.0), "exponential")


def poisson_times(rate_per_s: float, start_s: float, end_s: float, seed: int, name: str) -> np.ndarray:
    gaps = stream(seed, name).exponential(1.0 / rate_per_s, int(rate_per_s * (end_s - start_s) * 1.5) + 50)
    t = start_s + np.cumsum(gaps)
    return t[t < end_s]


def step_arrivals(seed: int, low: float = 2.0, high: float = 8.0, step_s: float = 300.0) -> pd.DataFrame:
    """Poisson at ``low`` per second until ``step_s``, then at ``high`` until twice that."""
    t = np.concatenate(
        (
            poisson_times(low, 0.0, step_s, seed, "low"),
            poisson_times(high, step_s, 2 * step_s, seed, "high"),
        )
    )
    return make_arrivals(t)


def scaled(cold_s: float = 0.0, **kwargs: object) -> PlatformConfig:
    settings = {"max_replicas": 20, "interval_s": 10.0, "target": 0.7, "cooldown_s": 60.0}
    settings.update(kwargs)
    scaler = AutoscalerConfig(cold_start=ColdStart(fixed_s=cold_s), **settings)
    return PlatformConfig(PoolConfig(3, EXPONENTIAL, autoscaler=scaler))


def provisioned_at(result, t_s: float) -> int:
    """Replicas billed (starting, serving or draining) at ``t_s``, from the provisioning table."""
    p = result.provisioning
    return int(((p["requested_s"] <= t_s) & (p["end_s"] > t_s)).sum())


def check_books(result, arrivals: pd.DataFrame) -> None:
    """Every request once with one outcome, the timeline's counts matching the log."""
    log, timeline = result.log, result.timeline
    assert_outcomes_balance(log, timeline, arrivals)
    done = log["outcome"] == "completed"
    assert log.loc[done, ["model_start_s", "model_end_s", "responded_s"]].notna().all().all()
    assert (log.loc[done, "model_start_s"] <= log.loc[done, "model_end_s"]).all()
    assert (timeline["busy_replicas"] <= timeline["replicas"] + 1e-9).all()


# -- autoscaler ---------------------------------------------------------------------------------------


def test_cold_starts_raise_p99_after_a_step_in_load():
    arrivals = step_arrivals(seed=1)
    instant = simulate(arrivals, scaled(cold_s=0.0), seed=1)
    cold = simulate(arrivals, scaled(cold_s=60.0), seed=1)
    after = arrivals["t_s"].to_numpy() >= 300.0
    p99_instant = latency_percentiles(instant.log[after])["p99_s"]
    p99_cold = latency_percentiles(cold.log[after])["p99_s"]
    # requests that arrive during a 60 s cold start wait for it; an instant start scales in one interval
    assert p99_cold > 30.0 > 3 * p99_instant
    assert autoscale_report(instant)["starting_replica_s"] == 0.0
    assert autoscale_report(cold)["starting_replica_s"] > 0.0
    # both end up with far more replicas than the 3 they started with, and both keep their books
    for result in (instant, cold):
        check_books(result, arrivals)
        assert result.timeline["replicas"].iloc[-60:].mean() > 9


def test_cold_start_is_fixed_time_plus_weights_over_bandwidth():
    assert ColdStart(fixed_s=20.0, model_bytes=16e9, load_bandwidth_bytes_per_s=2e9).seconds == 28.0
    spec = load_model(model_names()[0])
    cold = ColdStart.for_model(spec, load_bandwidth_bytes_per_s=1e9, fixed_s=5.0)
    assert cold.seconds == pytest.approx(5.0 + spec.weight_bytes / 1e9)


def test_a_replica_serves_only_after_its_cold_start_and_is_billed_from_the_request():
    # one replica, min 1, max 2: a burst makes the autoscaler ask for the second one at t = 10
    arrivals = make_arrivals(np.linspace(0.0, 9.9, 100))
    scaler = AutoscalerConfig(
        max_replicas=2, interval_s=10.0, target=0.5, cold_start=ColdStart(fixed_s=30.0), cooldown_s=1e9
    )
    service = AffineServiceTime(fixed_s=1.0)
    result = simulate(arrivals, PlatformConfig(PoolConfig(1, service, autoscaler=scaler)), seed=0)
    second = result.provisioning[result.provisioning["replica"] == 1].iloc[0]
    assert (second["requested_s"], second["ready_s"]) == (10.0, 40.0)
    served_by_second = result.log[result.log["replica"] == 1]
    assert len(served_by_second) > 0 and served_by_second["model_start_s"].min() == 40.0
    # billed while starting: the timeline counts it from 10 s on
    assert result.timeline.loc[5, "replicas"] == 1.0 and result.timeline.loc[15, "replicas"] == 2.0
    assert result.timeline.loc[15, "busy_replicas"] == 1.0


def test_autoscaler_follows_a_diurnal_load():
    workload = Workload.from_rate(1.0, diurnal=DiurnalCosine(peak_to_mean=1.8, peak_hour=14.0))
    arrivals = generate_arrivals(workload, 86_400.0, seed=3)
    config = scaled(max_replicas=10, interval_s=60.0, cooldown_s=300.0)
    result = simulate(arrivals, config, seed=3, timeline_step_s=3600.0)
    replicas = result.timeline["replicas"].to_numpy()
    # rate 1.8/s at 14:00 needs ~2.6 replicas at 70%; 0.2/s at 02:00 needs 1
    assert replicas[13:15].mean() > replicas[1:3].mean() + 1.0
    assert replicas[1:3].mean() < 2.0
    assert 0.4 < autoscale_efficiency(result, target_utilization=0.7) <= 1.5
    check_books(result, arrivals)


def test_predictive_scaling_provisions_ahead_of_a_known_burst():
    # a launch at 30 min triples the rate; the forecast knows it, the reactive autoscaler finds out
    workload = Workload.from_rate(2.0, bursts=(Burst(start_s=1800.0, duration_s=1800.0, multiplier=3.0),))
    arrivals = generate_arrivals(workload, 3600.0, seed=4)
    common = {"max_replicas": 14, "interval_s": 30.0, "cooldown_s": 300.0, "cold_start": ColdStart(120.0)}
    reactive = AutoscalerConfig(**common)
    predictive = AutoscalerConfig(**common, forecast=workload.rate_per_s, replica_rate_per_s=0.7)
    runs = {
        name: simulate(arrivals, PlatformConfig(PoolConfig(3, EXPONENTIAL, autoscaler=s)), seed=4)
        for name, s in (("reactive", reactive), ("predictive", predictive))
    }
    # the forecast asks lead_s = 150 s ahead, so the new replicas are serving when the burst lands
    assert provisioned_at(runs["predictive"], 1790.0) >= 9 > provisioned_at(runs["reactive"], 1790.0)
    first = (arrivals["t_s"] >= 1800.0) & (arrivals["t_s"] < 2100.0)
    p99 = {name: latency_percentiles(r.log[first.to_numpy()])["p99_s"] for name, r in runs.items()}
    assert 3 * p99["predictive"] < p99["reactive"]


def test_min_and_max_replicas_hold_under_overload_and_idleness():
    overload = make_arrivals(poisson_times(20.0, 0.0, 30.0, 5, "over"))
    result = simulate(overload, scaled(max_replicas=6, min_replicas=2, cold_s=5.0), seed=5, horizon_s=600.0)
    checks = np.arange(0.0, 600.0, 1.0)
    counts = np.array([provisioned_at(result, t) for t in checks])
    assert counts.max() == 6 and counts.min() >= 2
    assert (result.timeline["replicas"] <= 6 + 1e-9).all()
    # the backlog is served by about 150 s; then back down to the minimum, never below
    assert counts[-60:].tolist() == [2] * 60


def test_scale_to_zero_empties_the_pool_and_the_next_request_waits_a_cold_start():
    arrivals = make_arrivals([0.0, 1.0, 2.0, 500.0])
    scaler = AutoscalerConfig(
        max_replicas=2,
        min_replicas=0,
        interval_s=10.0,
        cooldown_s=30.0,
        scale_to_zero_after_s=60.0,
        cold_start=ColdStart(fixed_s=25.0),
    )
    config = PlatformConfig(PoolConfig(1, AffineServiceTime(fixed_s=1.0), autoscaler=scaler))
    result = simulate(arrivals, config, seed=0, timeline_step_s=10.0)
    log = result.log
    assert log["latency_s"].iloc[:3].tolist() == [1.0, 1.0, 1.0]
    assert log["model_start_s"].iloc[3] == 525.0 and log["latency_s"].iloc[3] == 26.0
    timeline = result.timeline.set_index("t_s")["replicas"]
    assert timeline.loc[100.0:490.0].eq(0.0).all() and timeline.loc[0.0] == 1.0
    report = autoscale_report(result)
    assert report["cold_starts"] == 1 and report["starting_replica_s"] == 25.0
    assert report["busy_replica_s"] == 4.0  # what per-request billing charges: 4 model-seconds


def test_concurrency_metric_scales_on_requests_in_the_pool():
    arrivals = step_arrivals(seed=6)
    result = simulate(arrivals, scaled(metric="concurrency", target=2.0), seed=6)
    # 8/s of 1 s work keeps ~8+ requests in service: at 2 per replica the pool grows past 4
    assert result.timeline["replicas"].iloc[-100:].mean() > 4.0
    check_books(result, arrivals)


def test_no_autoscaler_keeps_a_flat_provisioning_record():
    arrivals = step_arrivals(seed=7)
    result = simulate(arrivals, PlatformConfig(PoolConfig(3, EXPONENTIAL)), seed=7)
    assert (result.timeline["replicas"] == 3.0).all()
    assert result.provisioning["requested_s"].eq(0.0).all() and len(result.provisioning) == 3
    assert list(result.log.columns) == list(REQUEST_LOG_COLUMNS)


# -- cascade and time-box -----------------------------------------------------------------------------

SMALL = PoolConfig(2, RandomServiceTime(AffineServiceTime(fixed_s=0.2), "exponential"), name="small")
LARGE = PoolConfig(6, EXPONENTIAL, name="large")
# Difficulty ~ Beta(2, 5): P(d > x) = (1 - x)^5 (1 + 5x), so 0.2333 of requests are harder than 0.4.
TAIL_ABOVE_0_4 = 0.6**5 * 3.0


def difficult_arrivals(seed: int, rate_per_s: float = 4.0, duration_s: float = 3000.0) -> pd.DataFrame:
    from scaleplay.workload import Difficulty, TrafficClass

    classes = (TrafficClass("default", 1.0, difficulty=Difficulty(2.0, 5.0)),)
    return generate_arrivals(Workload.from_rate(rate_per_s, classes=classes), duration_s, seed=seed)


def test_cascade_escalates_the_difficulty_tail_and_costs_between_small_and_large():
    arrivals = difficult_arrivals(seed=11)
    cascade = CascadeConfig(SMALL, min_confidence=0.6, small_competence=0.5)  # escalate d > 0.4
    reports = {
        "cascade": cascade_report(
            simulate(arrivals, PlatformConfig(LARGE, cascade=cascade), seed=11), arrivals
        ),
        "small": cascade_report(simulate(arrivals, PlatformConfig(SMALL), seed=11), arrivals, {"small": 0.5}),
        "large": cascade_report(simulate(arrivals, PlatformConfig(LARGE), seed=11), arrivals),
    }
    n, rate = reports["cascade"]["requests"], reports["cascade"]["escalation_rate"]
    half_width = 1.96 * math.sqrt(TAIL_ABOVE_0_4 * (1 - TAIL_ABOVE_0_4) / n)
    assert abs(rate - TAIL_ABOVE_0_4) < half_width
    cost = {name: r["model_s"] for name, r in reports.items()}
    assert cost["small"] < cost["cascade"] < cost["large"]
    # the small model alone answers the requests above its competence (0.5) badly: P(d > 0.5) = 0.109
    assert reports["small"]["quality"] == pytest.approx(1 - 0.5**5 * 3.5, abs=0.02)
    assert reports["cascade"]["quality"] == 1.0 == reports["large"]["quality"]
    assert reports["cascade"]["p50_s"] < reports["large"]["p50_s"]


def test_cascade_log_says_which_model_answered_and_when_it_escalated():
    arrivals = make_arrivals([0.0, 0.0, 10.0])
    arrivals["difficulty"] = [0.1, 0.9, 0.95]
    small = PoolConfig(1, AffineServiceTime(fixed_s=0.5), name="small")
    large = PoolConfig(1, AffineServiceTime(fixed_s=2.0), name="large")
    cascade = CascadeConfig(small, min_confidence=0.5, human_min_confidence=0.08, human_delay_s=30.0)
    log = simulate(arrivals, PlatformConfig(large, cascade=cascade, network_hop_s=0.1), seed=0).log
    assert list(log.columns) == list(REQUEST_LOG_COLUMNS) + list(CONTROL_LOG_COLUMNS)
    assert log["model"].tolist() == ["small", "large", "human"]
    assert log["escalated_s"].tolist()[1:] == [1.0, 10.5] and math.isnan(log["escalated_s"].iloc[0])
    # the second request: small model 0.5-1.0 s (after the first), then the large model 1.0-3.0 s
    assert log["model_start_s"].tolist() == [0.0, 0.5, 10.0]
    assert log["model_end_s"].tolist() == [0.5, 3.0, 12.5]
    assert log["latency_s"].tolist() == pytest.approx([0.6, 3.1, 32.6])
    assert log["replica"].tolist() == [0, 0, 0] and not log["degraded"].any()


def test_time_box_cuts_p99_and_degrades_only_under_load():
    loaded = make_arrivals(poisson_times(3.8, 0.0, 3000.0, 12, "tb"))  # 95% of 4 replicas
    light = make_arrivals(poisson_times(1.0, 0.0, 3000.0, 12, "tb"))
    pool = PoolConfig(4, EXPONENTIAL, name="large")
    boxed = PlatformConfig(pool, timebox=TimeBoxConfig(budget_s=3.0, cache_latency_s=0.05))
    plain = PlatformConfig(pool)
    box_run, plain_run = simulate(loaded, boxed, seed=12), simulate(loaded, plain, seed=12)
    assert latency_percentiles(box_run.log)["p99_s"] < 0.8 * latency_percentiles(plain_run.log)["p99_s"]
    degraded = box_run.log["degraded"]
    assert degraded.mean() > 0.01
    # degraded requests waited until their budget minus the 1 s the large model needs, then the cache
    waited = box_run.log.loc[degraded, "model_start_s"] - box_run.log.loc[degraded, "arrived_s"]
    assert waited.max() <= 2.0 + 1e-9 and (box_run.log.loc[degraded, "model"] == "cache").all()
    np.testing.assert_allclose(box_run.log.loc[degraded, "latency_s"], waited + 0.05)
    check_books(box_run, loaded)
    # light load: nobody waits long enough to degrade
    assert not simulate(light, boxed, seed=12).log["degraded"].any()


def test_time_box_returns_the_small_answer_of_an_escalation_that_ran_out_of_budget():
    arrivals = difficult_arrivals(seed=13, rate_per_s=6.0, duration_s=1500.0)
    large = PoolConfig(2, EXPONENTIAL, name="large")  # too few: escalations queue
    cascade = CascadeConfig(SMALL, min_confidence=0.6)
    config = PlatformConfig(large, cascade=cascade, timebox=TimeBoxConfig(budget_s=4.0))
    result = simulate(arrivals, config, seed=13)
    log = result.log
    degraded = log[log["degraded"]]
    assert len(degraded) > 0 and (degraded["model"] == "small").all()
    assert degraded["escalated_s"].notna().all()
    check_books(result, arrivals)
    untimed = simulate(arrivals, PlatformConfig(large, cascade=cascade), seed=13).log
    assert not untimed["degraded"].any()
    assert latency_percentiles(log)["p99_s"] < latency_percentiles(untimed)["p99_s"]


# -- surge modes --------------------------------------------------------------------------------------

BATCHABLE = RandomServiceTime(AffineServiceTime(fixed_s=0.8, per_item_s=0.2), "exponential")


def burst_times(seed: int, rate: float, burst_rate: float, start_s: float, end_s: float, stop_s: float):
    """Poisson arrivals at ``rate``, at ``burst_rate`` in [start_s, end_s), until ``stop_s``."""
    return np.concatenate(
        (
            poisson_times(rate, 0.0, start_s, seed, "before"),
            poisson_times(burst_rate, start_s, end_s, seed, "burst"),
            poisson_times(rate, end_s, stop_s, seed, "after"),
        )
    )


def burst_arrivals(seed: int) -> pd.DataFrame:
    """3/s with a 2.5x burst from 600 s to 900 s, two classes (priority 1 is a quarter)."""
    t = burst_times(seed, 3.0, 7.5, 600.0, 900.0, 1800.0)
    priority = (stream(seed, "classes").random(len(t)) < 0.25).astype(np.int64)
    return make_arrivals(t, priority=priority)


SURGE = ModeControllerConfig(
    surge=ModeSettings(
        enter=ModeSignals(queue_length=25.0, p99_s=15.0),
        exit=ModeSignals(queue_length=5.0, p99_s=6.0),
        knobs=ModeKnobs(max_batch_size=8, max_wait_s=0.0),
    ),
    emergency=ModeSettings(
        enter=ModeSignals(queue_length=60.0),
        exit=ModeSignals(queue_length=20.0),
        knobs=ModeKnobs(max_batch_size=8, shed_priority_from=1),
    ),
    interval_s=5.0,
    window_s=30.0,
    min_dwell_s=60.0,
)


def test_surge_mode_cuts_rejections_and_timeouts_in_a_burst():
    arrivals = burst_arrivals(seed=21)
    pool = PoolConfig(4, BATCHABLE)  # 1 request/s per replica unbatched, 3.3/s in batches of 8
    gateway = GatewayConfig(queue_capacity=80, timeout_s=30.0)
    plain = simulate(arrivals, PlatformConfig(pool, gateway), seed=21)
    surged = simulate(arrivals, PlatformConfig(pool, gateway, modes=SURGE), seed=21)
    lost = {
        name: int(r.log["outcome"].isin(["rejected", "timed_out"]).sum())
        for name, r in (("plain", plain), ("surge", surged))
    }
    assert lost["surge"] < 0.5 * lost["plain"]
    modes = surged.timeline["mode"]
    assert list(surged.timeline.columns)[-1:] == list(CONTROL_TIMELINE_COLUMNS)
    assert (modes.iloc[:600] == "normal").mean() > 0.8 and (modes.iloc[600:900] != "normal").mean() > 0.5
    assert modes.iloc[-1] == "normal"
    assert surged.modes["mode"].iloc[0] == "normal" and len(surged.modes) >= 3
    check_books(surged, arrivals)
    # shedding in emergency rejects only the non-critical class, with reason "shed"
    shed = surged.log[surged.log["reject_reason"] == "shed"]
    assert (shed["priority"] == 1).all()


def test_hysteresis_stops_flapping_on_a_steady_load_near_the_threshold():
    arrivals = make_arrivals(poisson_times(3.0, 0.0, 3600.0, 22, "steady"))
    pool = PoolConfig(6, EXPONENTIAL)

    def controller(enter: float, exit_: float, dwell_s: float) -> ModeControllerConfig:
        settings = ModeSettings(ModeSignals(arrival_rate_per_s=enter), ModeSignals(arrival_rate_per_s=exit_))
        return ModeControllerConfig(surge=settings, interval_s=5.0, window_s=30.0, min_dwell_s=dwell_s)

    twitchy = simulate(arrivals, PlatformConfig(pool, modes=controller(3.0, 3.0, 0.0)), seed=22)
    steady = simulate(arrivals, PlatformConfig(pool, modes=controller(3.8, 2.2, 120.0)), seed=22)
    assert len(twitchy.modes) > 40  # the windowed rate crosses 3.0 over and over
    assert len(steady.modes) <= 5
    # a mode held for less than the dwell is never left downward
    times = steady.modes["t_s"].to_numpy()
    assert (np.diff(times)[1::2] >= 120.0).all()


def test_emergency_mode_sheds_only_the_non_critical_class():
    arrivals = burst_arrivals(seed=23)
    pool = PoolConfig(3, EXPONENTIAL)
    settings = ModeSettings(
        enter=ModeSignals(queue_length=30.0),
        exit=ModeSignals(queue_length=5.0),
        knobs=ModeKnobs(shed_priority_from=1),
    )
    modes = ModeControllerConfig(surge=settings, interval_s=5.0, window_s=30.0, min_dwell_s=30.0)
    result = simulate(arrivals, PlatformConfig(pool, modes=modes), seed=23)
    shed = result.log[result.log["reject_reason"] == "shed"]
    assert len(shed) > 50 and (shed["priority"] == 1).all()
    surge_s = result.modes["t_s"].to_numpy()
    assert surge_s[1] <= shed["arrived_s"].min() and (result.log["priority"] == 0).sum() > 0
    check_books(result, arrivals)


# -- overflow ----------------------------------------------------------------------------------------


def test_overflow_sends_what_the_queue_turns_away_offline_at_its_price():
    arrivals = burst_arrivals(seed=24)
    pool = PoolConfig(4, EXPONENTIAL)
    gateway = GatewayConfig(queue_capacity=20)
    overflow = OverflowConfig(offline_rate_per_s=2.0, opens_s=1200.0, price_per_request_usd=0.002)
    plain = simulate(arrivals, PlatformConfig(pool, gateway), seed=24)
    spilled = simulate(arrivals, PlatformConfig(pool, gateway, overflow=overflow), seed=24)
    # the online run is the same; only the reason changes, and the rejected go offline
    was_full = plain.log["reject_reason"] == "queue_full"
    assert was_full.sum() > 100
    assert (spilled.log.loc[was_full, "reject_reason"] == "overflow").all()
    assert (spilled.log.loc[~was_full, "reject_reason"] != "overflow").all()
    pd.testing.assert_series_equal(plain.log["responded_s"], spilled.log["responded_s"])
    offline = spilled.offline
    assert offline["request_id"].tolist() == spilled.log.loc[was_full, "request_id"].tolist()
    # the tier opens at 1200 and serves 2/s in arrival order
    expected, free_s = [], 1200.0
    for queued_s in offline["queued_s"]:
        free_s = max(free_s, queued_s) + 0.5
        expected.append(free_s)
    np.testing.assert_allclose(offline["done_s"], expected)
    assert offline["done_s"].iloc[0] == 1200.5
    report = offline_report(spilled)
    assert report["requests"] == was_full.sum()
    assert report["cost_usd"] == pytest.approx(0.002 * was_full.sum())
    assert report["mean_delay_s"] > 1200.0 - 900.0
    assert offline_report(plain)["requests"] == 0 and plain.offline.empty


# -- the books of every controlled run (hypothesis) ----------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@st.composite
def controlled_platforms(draw: st.DrawFn) -> PlatformConfig:
    service = draw(st.sampled_from([AffineServiceTime(fixed_s=1.0), EXPONENTIAL, BATCHABLE]))
    batcher = BatcherConfig(
        draw(st.integers(1, 3)), draw(st.sampled_from([0.0, 0.5])), draw(st.integers(1, 2))
    )
    scaler = None
    if draw(st.booleans()):
        low = draw(st.integers(0, 1))
        scaler = AutoscalerConfig(
            max_replicas=draw(st.integers(1, 3)),
            min_replicas=low,
            interval_s=draw(st.sampled_from([1.0, 3.0])),
            cooldown_s=draw(st.sampled_from([0.0, 5.0])),
            cold_start=ColdStart(draw(st.sampled_from([0.0, 2.0]))),
            scale_to_zero_after_s=4.0 if low == 0 else None,
        )
    pool = PoolConfig(1, service, batcher, name="large", autoscaler=scaler)
    cascade = None
    if draw(st.booleans()):
        small = PoolConfig(draw(st.integers(1, 2)), AffineServiceTime(fixed_s=0.3), name="small")
        cascade = CascadeConfig(
            small,
            min_confidence=draw(st.floats(0.0, 1.0)),
            human_min_confidence=draw(st.none() | st.floats(0.0, 1.0)),
            human_delay_s=2.0,
        )
    timebox = draw(st.none() | st.builds(TimeBoxConfig, st.floats(0.5, 6.0), st.sampled_from([0.0, 0.1])))
    modes = None
    if draw(st.booleans()):
        modes = ModeControllerConfig(
            surge=ModeSettings(
                ModeSignals(queue_length=3.0),
                ModeSignals(queue_length=1.0),
                ModeKnobs(
                    max_batch_size=4, queue_capacity=draw(st.none() | st.integers(1, 4)), shed_priority_from=1
                ),
            ),
            interval_s=1.0,
            window_s=5.0,
            min_dwell_s=draw(st.sampled_from([0.0, 3.0])),
        )
    capacity = draw(st.none() | st.integers(1, 5))
    gateway = GatewayConfig(queue_capacity=capacity, timeout_s=draw(st.none() | st.floats(0.5, 5.0)))
    overflow = None
    if capacity is not None and draw(st.booleans()):
        overflow = OverflowConfig(offline_rate_per_s=1.0)
    return PlatformConfig(pool, gateway, cascade=cascade, timebox=timebox, modes=modes, overflow=overflow)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=controlled_platforms(), seed=st.integers(0, 2**31), data=st.data())
def test_every_controlled_run_keeps_its_books(config, seed, data):
    n = data.draw(st.integers(0, 30), label="n")
    gaps = data.draw(
        st.lists(st.sampled_from([0.0, 0.2, 1.0, 3.0, 12.0]), min_size=n, max_size=n), label="gaps"
    )
    arrivals = make_arrivals(np.cumsum(gaps), priority=np.arange(n) % 2)
    arrivals["difficulty"] = stream(seed, "difficulty").random(n)
    horizon_s = data.draw(st.none() | st.floats(1.0, 60.0), label="horizon_s")
    result = simulate(arrivals, config, seed=seed, horizon_s=horizon_s, timeline_step_s=2.0)
    check_books(result, arrivals)
    log = result.log
    if horizon_s is None:
        assert not (log["outcome"] == "in_flight").any()
    done = log["outcome"] == "completed"
    assert (log.loc[done, "responded_s"] <= result.horizon_s).all()
    assert (log.loc[log["outcome"] == "timed_out", "model_start_s"].isna()).all()
    assert (result.timeline["queue_length"] >= -1e-9).all()
    if config.overflow is None:
        assert not (log["reject_reason"] == "overflow").any()
    assert len(result.offline) == (log["reject_reason"] == "overflow").sum()
    scaler = config.pool.autoscaler
    if scaler is not None:
        mine = result.provisioning[result.provisioning["pool"] == "large"]
        for t_s in mine["requested_s"]:
            assert ((mine["requested_s"] <= t_s) & (mine["end_s"] > t_s)).sum() <= scaler.max_replicas
    if "model" in log:
        assert (log.loc[done, "model"] != "").all() and (log.loc[~done, "model"] == "").all()
        assert (log.loc[log["degraded"], "outcome"] != "rejected").all()
    again = simulate(arrivals, config, seed=seed, horizon_s=horizon_s, timeline_step_s=2.0)
    pd.testing.assert_frame_equal(result.log, again.log)


# -- bad input -----------------------------------------------------------------------------------------

POOL = PoolConfig(1, EXPONENTIAL)
SIGNALS = ModeSignals(queue_length=5.0)


@pytest.mark.parametrize(
    ("build", "error", "name"),
    [
        (lambda: ColdStart(fixed_s=-1.0), ValueError, "fixed_s"),
        (lambda: ColdStart(model_bytes=1e9), ValueError, "load_bandwidth_bytes_per_s"),
        (lambda: ColdStart(model_bytes=1e9, load_bandwidth_bytes_per_s=0.0), ValueError, "load_bandwidth"),
        (lambda: AutoscalerConfig(max_replicas=0), ValueError, "max_replicas"),
        (lambda: AutoscalerConfig(max_replicas=2, min_replicas=3), ValueError, "min_replicas"),
        (lambda: AutoscalerConfig(max_replicas=2, min_replicas=0), ValueError, "scale_to_zero_after_s"),
        (lambda: AutoscalerConfig(max_replicas=2, interval_s=0.0), ValueError, "interval_s"),
        (lambda: AutoscalerConfig(max_replicas=2, metric="latency"), ValueError, "metric"),
        (lambda: AutoscalerConfig(max_replicas=2, target=1.5), ValueError, "target"),
        (lambda: AutoscalerConfig(max_replicas=2, target=0.0), ValueError, "target"),
        (lambda: AutoscalerConfig(max_replicas=2, cooldown_s=-1.0), ValueError, "cooldown_s"),
        (lambda: AutoscalerConfig(max_replicas=2, cold_start=30.0), TypeError, "cold_start"),
        (lambda: AutoscalerConfig(max_replicas=2, forecast=3.0), TypeError, "forecast"),
        (lambda: AutoscalerConfig(max_replicas=2, forecast=lambda t: 1.0), ValueError, "replica_rate_per_s"),
        (
            lambda: PoolConfig(3, EXPONENTIAL, autoscaler=AutoscalerConfig(max_replicas=2)),
            ValueError,
            "replicas",
        ),
        (lambda: PoolConfig(1, EXPONENTIAL, autoscaler=2), TypeError, "autoscaler"),
        (lambda: PoolConfig(1, EXPONENTIAL, name="cache"), ValueError, "name"),
        (lambda: PoolConfig(1, EXPONENTIAL, name=""), ValueError, "name"),
        (lambda: CascadeConfig(small=EXPONENTIAL), TypeError, "small"),
        (lambda: CascadeConfig(POOL, min_confidence=1.5), ValueError, "min_confidence"),
        (lambda: CascadeConfig(POOL, human_delay_s=-1.0), ValueError, "human_delay_s"),
        (lambda: PlatformConfig(POOL, cascade=CascadeConfig(POOL)), ValueError, "cascade.small.name"),
        (lambda: PlatformConfig(POOL, cascade=POOL), TypeError, "cascade"),
        (lambda: TimeBoxConfig(budget_s=0.0), ValueError, "budget_s"),
        (lambda: TimeBoxConfig(budget_s=1.0, cache_latency_s=-0.1), ValueError, "cache_latency_s"),
        (lambda: ModeSignals(), ValueError, "at least one"),
        (lambda: ModeSignals(p99_s=-1.0), ValueError, "p99_s"),
        (lambda: ModeSettings(SIGNALS, ModeSignals(queue_length=9.0)), ValueError, "hysteresis"),
        (lambda: ModeSettings(SIGNALS, ModeSignals(p99_s=1.0)), ValueError, "both thresholds"),
        (lambda: ModeKnobs(max_batch_size=0), ValueError, "max_batch_size"),
        (lambda: ModeKnobs(shed_priority_from=-1), ValueError, "shed_priority_from"),
        (lambda: ModeControllerConfig(surge=SIGNALS), TypeError, "surge"),
        (lambda: ModeControllerConfig(ModeSettings(SIGNALS, SIGNALS), window_s=0.0), ValueError, "window_s"),
        (lambda: OverflowConfig(offline_rate_per_s=0.0), ValueError, "offline_rate_per_s"),
        (lambda: PlatformConfig(POOL, overflow=OverflowConfig(1.0)), ValueError, "queue_capacity"),
    ],
)
def test_bad_control_configs_are_refused_by_name(build, error, name):
    with pytest.raises(error, match=name):
        build()


def test_bad_difficulty_and_bad_forecast_are_refused_by_name():
    arrivals = make_arrivals([0.0, 1.0])
    arrivals["difficulty"] = [0.5, 1.5]
    cascade = CascadeConfig(PoolConfig(1, EXPONENTIAL, name="small"))
    with pytest.raises(ValueError, match="difficulty"):
        simulate(arrivals, PlatformConfig(POOL, cascade=cascade), seed=0)
    scaler = AutoscalerConfig(
        max_replicas=2, interval_s=1.0, forecast=lambda t: math.nan, replica_rate_per_s=1.0
    )
    with pytest.raises(ValueError, match="forecast"):
        simulate(
            make_arrivals([0.0, 5.0]), PlatformConfig(PoolConfig(1, EXPONENTIAL, autoscaler=scaler)), seed=0
        )
    with pytest.raises(ValueError, match="target_utilization"):
        autoscale_efficiency(simulate(make_arrivals([0.0]), PlatformConfig(POOL), seed=0), 0.0)


# -- surge modes on a continuous pool: the TTFT signal and the playbook ---------------------------------

from scaleplay.controls import PLAYBOOK_COLUMNS, mode_playbook, mode_switches  # noqa: E402
from scaleplay.simulator import ContinuousBatcherConfig  # noqa: E402
from scaleplay.steptime import load_step_profile  # noqa: E402

FP8_70B = load_step_profile("h100-80gb", "Llama-3.1-70B", 4, dtype="fp8", compute_precision="fp8")
TTFT_MODES = ModeControllerConfig(
    surge=ModeSettings(
        enter=ModeSignals(ttft_p99_s=1.5, arrival_rate_per_s=9.0),
        exit=ModeSignals(ttft_p99_s=1.2, arrival_rate_per_s=7.0),
        knobs=ModeKnobs(shed_priority_from=1),
    ),
    emergency=ModeSettings(
        enter=ModeSignals(ttft_p99_s=4.0, arrival_rate_per_s=20.0),
        exit=ModeSignals(ttft_p99_s=1.5, arrival_rate_per_s=12.0),
        knobs=ModeKnobs(shed_priority_from=1, queue_capacity=20),
    ),
    interval_s=5.0,
    window_s=30.0,
    min_dwell_s=60.0,
)


def token_burst_arrivals(seed: int) -> pd.DataFrame:
    """6/s of 1,000-token prompts and 100-token answers, 30/s from 120 s to 240 s; 70% priority 1."""
    t = burst_times(seed, 6.0, 30.0, 120.0, 240.0, 480.0)
    priority = (stream(seed, "classes").random(len(t)) < 0.7).astype(np.int64)
    return make_arrivals(t, priority=priority, tokens_in=1000, tokens_out=100)


def token_pool() -> PoolConfig:
    return PoolConfig(2, FP8_70B, ContinuousBatcherConfig(max_num_seqs=64))


def test_mode_signals_check_the_ttft_threshold():
    with pytest.raises(ValueError, match="ttft_p99_s"):
        ModeSignals(ttft_p99_s=-1.0)
    with pytest.raises(ValueError, match="hysteresis"):
        ModeSettings(enter=ModeSignals(ttft_p99_s=1.0), exit=ModeSignals(ttft_p99_s=2.0))
    with pytest.raises(ValueError, match="both thresholds or neither"):
        ModeSettings(enter=ModeSignals(ttft_p99_s=1.0), exit=ModeSignals(queue_length=2.0))
    assert TTFT_MODES.reads_ttft and not SURGE.reads_ttft
    signals = {"queue_length": 0.0, "p99_s": math.nan, "arrival_rate_per_s": 1.0, "ttft_p99_s": 5.0}
    assert TTFT_MODES.next_mode(0, signals, 0.0) == 2  # a TTFT of 5 s jumps straight to emergency
    assert TTFT_MODES.next_mode(0, {**signals, "ttft_p99_s": math.nan}, 0.0) == 0  # no reading: no step
    calm = {**signals, "ttft_p99_s": 1.3}  # below surge's entry, above its exit: hold
    assert TTFT_MODES.next_mode(1, calm, 600.0) == 1
    assert TTFT_MODES.next_mode(1, {**calm, "ttft_p99_s": 1.0}, 59.0) == 1  # dwell not served yet
    assert TTFT_MODES.next_mode(1, {**calm, "ttft_p99_s": 1.0}, 60.0) == 0


def test_ttft_signal_steps_up_to_emergency_and_back_without_flapping():
    arrivals = token_burst_arrivals(seed=5)
    pool = token_pool()
    plain = simulate(arrivals, PlatformConfig(pool), seed=5)
    run = simulate(arrivals, PlatformConfig(pool, modes=TTFT_MODES, overflow=OverflowConfig(2.0)), seed=5)
    modes = run.modes["mode"].tolist()
    assert "emergency" in modes and modes[0] == modes[-1] == "normal", run.modes
    # up through the modes and down one step at a time: no mode is entered twice from below
    assert mode_switches(run) == len(modes) - 1 <= 4, run.modes
    steps = np.diff([["normal", "surge", "emergency"].index(m) for m in modes])
    assert (steps[steps < 0] == -1).all()
    changes = run.modes["t_s"].to_numpy()
    assert 120.0 < changes[1] < 150.0 and changes[-1] > 240.0  # it reacts to the burst, not before
    # the controller keeps the paid class at its TTFT where the plain pool lets its line grow
    paid = [r.log[(r.log["priority"] == 0) & (r.log["outcome"] == "completed")] for r in (plain, run)]
    assert np.percentile(paid[1]["ttft_s"], 99) < 0.5 * np.percentile(paid[0]["ttft_s"], 99)
    check_books(run, arrivals)


def test_mode_playbook_accounts_for_every_arrival_by_its_mode():
    arrivals = token_burst_arrivals(seed=5)
    offline = OverflowConfig(2.0, price_per_request_usd=0.01)
    run = simulate(arrivals, PlatformConfig(token_pool(), modes=TTFT_MODES, overflow=offline), seed=5)
    book = mode_playbook(run, ttft_slo_s=2.0, tpot_slo_s=0.1, usd_per_gpu_hour=6.88)
    assert list(book.columns) == ["normal", "surge", "emergency"]
    assert list(book.index) == list(PLAYBOOK_COLUMNS)
    assert book.loc["arrivals"].sum() == len(arrivals)
    assert book.loc["switches flipped", "normal"] == "none"
    assert "queue bounded at 20 (the rest offline)" in book.loc["switches flipped", "emergency"]
    assert book.loc["enter when", "emergency"] == "arrivals >= 20/s or p99 TTFT >= 4 s"
    for mode in ("surge", "emergency"):  # both shed the free class: about 70% of their arrivals
        assert 0.6 < book.loc["refused share", mode] < 0.8
    assert book.loc["offline share", "emergency"] > 0 and book.loc["offline share", "normal"] == 0
    spans = book.loc["time in mode (s)"].astype(float)
    assert spans.sum() == pytest.approx(run.horizon_s)
    shares = book.loc[["refused share", "offline share", "share at SLO"]].astype(float)
    assert (shares.sum() <= 1 + 1e-12).all()
    assert (book.loc["USD per 1k answered"].astype(float) > 0).all()


def test_mode_playbook_and_switches_refuse_bad_input():
    arrivals = token_burst_arrivals(seed=5).iloc[:200]
    plain = simulate(arrivals, PlatformConfig(token_pool()), seed=5)
    with pytest.raises(ValueError, match="no surge controller"):
        mode_playbook(plain, ttft_slo_s=2.0, tpot_slo_s=0.1, usd_per_gpu_hour=6.88)
    with pytest.raises(ValueError, match="no surge controller"):
        mode_switches(plain)
    with pytest.raises(TypeError, match="SimulationResult"):
        mode_switches(plain.log)
    run = simulate(arrivals, PlatformConfig(token_pool(), modes=TTFT_MODES), seed=5)
    assert mode_switches(run) == 0
    with pytest.raises(ValueError, match="ttft_slo_s"):
        mode_playbook(run, ttft_slo_s=0.0, tpot_slo_s=0.1, usd_per_gpu_hour=6.88)


def test_the_ttft_signal_alone_sees_a_line_build_on_a_continuous_pool():
    arrivals = token_burst_arrivals(seed=5)
    on_ttft = ModeControllerConfig(
        surge=ModeSettings(
            enter=ModeSignals(ttft_p99_s=1.5),
            exit=ModeSignals(ttft_p99_s=1.0),
            knobs=ModeKnobs(shed_priority_from=1),
        ),
        interval_s=5.0,
        window_s=30.0,
        min_dwell_s=60.0,
    )
    run = simulate(arrivals, PlatformConfig(token_pool(), modes=on_ttft), seed=5)
    changes = run.modes["t_s"].to_numpy()
    # the line builds within seconds of the burst (the waits so far count), long before answers end
    assert len(changes) >= 2 and 120.0 < changes[1] <= 135.0, run.modes
    # a static pool has no first tokens: the signal reads nothing, so the controller never moves
    static = PoolConfig(2, EXPONENTIAL)
    calm = simulate(arrivals.iloc[:300], PlatformConfig(static, modes=on_ttft), seed=5)
    assert mode_switches(calm) == 0
