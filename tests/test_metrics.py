"""Metrics on small hand-made logs and timelines whose answers are worked out by hand, then on a real run."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from conftest import poisson_arrivals
from scaleplay import metrics
from scaleplay.metrics import (
    batch_means_ci,
    goodput_per_s,
    latency_percentiles,
    littles_law,
    mean_batch_size,
    outcome_counts,
    outcome_shares,
    peak_hour_successes,
    replication_ci,
    stage_breakdown,
    summarize,
    utilization,
)
from scaleplay.profiles import AffineServiceTime, RandomServiceTime
from scaleplay.schema import REQUEST_LOG_COLUMNS, TIMELINE_COLUMNS
from scaleplay.simulator import GatewayConfig, IngestionConfig, PlatformConfig, PoolConfig, simulate

nan = math.nan


def make_log(rows: list[dict]) -> pd.DataFrame:
    """A RequestLog from partial rows: ids in order, defaults for what a test does not care about."""
    defaults = {"class_name": "paid", "priority": 0, "tokens_in": 10, "tokens_out": 10, "replica": 0}
    log = pd.DataFrame([{"request_id": i, **defaults, **row} for i, row in enumerate(rows)])
    for column in ("admitted_s", "features_ready_s", "model_start_s", "model_end_s", "responded_s"):
        if column not in log:
            log[column] = nan
    log["reject_reason"] = np.where(log["outcome"] == "rejected", "queue_full", "")
    served = log["outcome"] == "completed"
    given = log["batch_size"] if "batch_size" in log else pd.Series(nan, index=log.index)
    log["batch_size"] = given.fillna(served.astype(float)).astype(np.int64)  # default: 1 if served
    log["latency_s"] = np.where(log["outcome"] == "completed", log["responded_s"] - log["arrived_s"], nan)
    return log[list(REQUEST_LOG_COLUMNS)]


def done(arrived, admitted, ready, start, end, responded, **extra):
    return {
        "outcome": "completed",
        "arrived_s": arrived,
        "admitted_s": admitted,
        "features_ready_s": ready,
        "model_start_s": start,
        "model_end_s": end,
        "responded_s": responded,
        **extra,
    }


# Three completed (latency 1.6, 2.2 and 0.6 s), one rejected, one timed out in the model queue.
LOG = make_log(
    [
        done(0.0, 0.1, 0.3, 0.5, 1.5, 1.6),
        done(1.0, 1.0, 1.2, 2.0, 3.0, 3.2, class_name="free"),
        {"outcome": "rejected", "arrived_s": 2.0, "class_name": "free", "batch_size": 0},
        {
            "outcome": "timed_out",
            "arrived_s": 3.0,
            "admitted_s": 3.0,
            "features_ready_s": 3.5,
            "batch_size": 0,
        },
        done(4.0, 4.0, 4.0, 4.0, 4.4, 4.6),
    ]
)


def make_timeline(**columns) -> pd.DataFrame:
    n = len(next(iter(columns.values())))
    timeline = pd.DataFrame({"t_s": np.arange(n, dtype=np.float64)})
    for column in TIMELINE_COLUMNS:
        if column != "t_s":
            timeline[column] = columns.get(column, np.zeros(n))
    return timeline


def test_latency_percentiles_overall_and_by_class():
    overall = latency_percentiles(LOG)
    assert list(overall.index) == ["p50_s", "p95_s", "p99_s"]
    # Sorted latencies 0.6, 1.6, 2.2: p95 sits 90% of the way from 1.6 to 2.2.
    assert overall["p50_s"] == pytest.approx(1.6)
    assert overall["p95_s"] == pytest.approx(2.14)
    by_class = latency_percentiles(LOG, quantiles=(0.5, 0.999), by="class_name")
    assert list(by_class.columns) == ["p50_s", "p99.9_s"]
    assert by_class.loc["paid", "p50_s"] == pytest.approx(1.1)
    assert by_class.loc["free", "p50_s"] == pytest.approx(2.2)


def test_latency_percentiles_class_with_nothing_completed_is_nan():
    log = make_log(
        [done(0.0, 0.0, 0.0, 0.0, 1.0, 1.0), {"outcome": "rejected", "arrived_s": 0.5, "class_name": "x"}]
    )
    table = latency_percentiles(log, by="class_name")
    assert math.isnan(table.loc["x", "p50_s"])
    assert table.loc["paid", "p99_s"] == pytest.approx(1.0)


def test_stage_breakdown_tiles_the_latency():
    table = stage_breakdown(LOG)
    assert list(table.index) == list(metrics.STAGES)
    # Stages per completed request: (0.1, 0.2, 0.2, 1.0, 0.1), (0, 0.2, 0.8, 1.0, 0.2), (0, 0, 0, 0.4, 0.2).
    expected = np.array([0.1, 0.4, 1.0, 2.4, 0.5]) / 3
    np.testing.assert_allclose(table["mean_s"], expected)
    assert table["mean_s"].sum() == pytest.approx(LOG["latency_s"].mean())
    assert table["share_of_mean"].sum() == pytest.approx(1.0)
    assert table.loc["model", "p50_s"] == pytest.approx(1.0)
    assert table.loc["model_queue", "p99_s"] == pytest.approx(0.2 + 0.98 * 0.6)


def test_outcome_counts_and_shares():
    counts = outcome_counts(LOG)
    assert counts.to_dict() == {"completed": 3, "rejected": 1, "timed_out": 1, "in_flight": 0}
    assert counts.sum() == len(LOG)
    shares = outcome_shares(LOG)
    assert shares["rejected"] == pytest.approx(0.2)
    assert shares.sum() == pytest.approx(1.0)


def test_outcome_counts_refuse_unknown_outcomes():
    log = LOG.copy()
    log.loc[2, "outcome"] = "dropped"
    with pytest.raises(ValueError, match="'dropped'"):
        outcome_counts(log)


def test_goodput_counts_arrivals_in_the_window_that_met_the_slo():
    assert goodput_per_s(LOG, slo_s=2.0, start_s=0.0, end_s=5.0) == pytest.approx(2 / 5)  # 1.6 and 0.6 s
    assert goodput_per_s(LOG, slo_s=1.0, start_s=0.0, end_s=5.0) == pytest.approx(1 / 5)
    assert goodput_per_s(LOG, slo_s=10.0, start_s=1.0, end_s=4.0) == pytest.approx(1 / 3)  # only id 1
    assert goodput_per_s(LOG, slo_s=2.2, start_s=0.0, end_s=5.0) == pytest.approx(
        3 / 5
    )  # the SLO is inclusive


def test_utilization_is_busy_over_provisioned_replica_seconds():
    timeline = make_timeline(busy_replicas=[1.0, 2.0, 0.0], replicas=[2.0, 2.0, 4.0])
    assert utilization(timeline) == pytest.approx(3 / 8)
    # A last interval half as long as the others: (1 + 2 + 0) / (2 + 2 + 2).
    assert utilization(timeline, horizon_s=2.5) == pytest.approx(3 / 6)
    assert math.isnan(utilization(make_timeline(busy_replicas=[0.0], replicas=[0.0]), horizon_s=1.0))


def test_mean_batch_size_counts_batches_not_requests():
    # Batches of 3, 1 and 2: six requests in three batches. Requests see a mean of (9 + 1 + 4) / 6.
    log = make_log([done(0.0, 0.0, 0.0, 0.0, 1.0, 1.0, batch_size=b) for b in (3, 3, 3, 1, 2, 2)])
    assert mean_batch_size(log) == pytest.approx(2.0)
    assert mean_batch_size(make_timeline(mean_batch_size=[4.0, nan, 2.0])) == pytest.approx(3.0)
    assert math.isnan(mean_batch_size(make_log([{"outcome": "rejected", "arrived_s": 0.0}])))
    with pytest.raises(ValueError, match="batch_size"):
        mean_batch_size(pd.DataFrame({"x": [1]}))


def test_peak_hour_successes_finds_the_busiest_window():
    # Three arrivals in [3600, 3700), two of them good; the first hour holds only one request.
    log = make_log(
        [
            done(0.0, 0.0, 0.0, 0.0, 0.5, 0.5),
            done(3600.0, 3600.0, 3600.0, 3600.0, 3600.5, 3600.5),
            done(3650.0, 3650.0, 3650.0, 3650.0, 3655.0, 3655.0),
            done(3700.0, 3700.0, 3700.0, 3700.0, 3700.5, 3700.5),
            done(9000.0, 9000.0, 9000.0, 9000.0, 9000.5, 9000.5),
        ]
    )
    peak = peak_hour_successes(log, slo_s=1.0)
    assert peak.to_dict() == {"start_s": 3600.0, "end_s": 7200.0, "arrivals": 3.0, "successes": 2.0}


def test_peak_hour_of_a_short_run_is_the_whole_run():
    peak = peak_hour_successes(LOG, slo_s=2.0)
    assert peak["arrivals"] == len(LOG) and peak["successes"] == 2
    # A shorter window over evenly spaced arrivals: the earliest of the busiest windows.
    short = peak_hour_successes(LOG, slo_s=2.0, window_s=2.5)
    assert short.to_dict() == {"start_s": 0.0, "end_s": 2.5, "arrivals": 3.0, "successes": 1.0}


def test_littles_law_on_a_hand_made_queue():
    # Waits for a replica of 0.2, 0.8 and 0 s over a 5 s window: lambda * W = (3 / 5) * (1 / 3) = 0.2.
    log = LOG[LOG["outcome"] != "timed_out"]
    timeline = make_timeline(queue_length=[0.2, 0.8, 0.0, 0.0, 0.0])
    law = littles_law(log, timeline)
    assert law["arrival_rate_per_s"] == pytest.approx(3 / 5)
    assert law["mean_wait_s"] == pytest.approx(1 / 3)
    assert law["lambda_w"] == pytest.approx(0.2)
    assert law["queue_length"] == pytest.approx(0.2)
    assert law["relative_gap"] == pytest.approx(0.0, abs=1e-12)


def test_littles_law_counts_timed_out_requests_until_their_deadline():
    # Request 3 joined the line at 3.5 s and timed out at 3.0 + 1.0 s: 0.5 s more in the line.
    timeline = make_timeline(queue_length=[0.2, 0.8, 0.0, 0.5, 0.0])
    with pytest.raises(ValueError, match="timeout_s is needed"):
        littles_law(LOG, timeline)
    law = littles_law(LOG, timeline, timeout_s=1.0)
    assert law["arrival_rate_per_s"] == pytest.approx(4 / 5)
    assert law["mean_wait_s"] == pytest.approx(1.5 / 4)
    assert law["relative_gap"] == pytest.approx(0.0, abs=1e-12)
    # Still waiting at the end of a shorter run: counted until the horizon, 4.2 - 3.5 s.
    cut = littles_law(
        LOG.iloc[:4].assign(outcome=["completed", "completed", "rejected", "in_flight"]),
        timeline.iloc[:5],
        horizon_s=4.2,
    )
    assert cut["mean_wait_s"] == pytest.approx((0.2 + 0.8 + 0.7) / 3)


def test_summarize_names_each_figure_with_its_unit():
    timeline = make_timeline(busy_replicas=[1.0, 1.0, 0.5, 0.5, 0.0], replicas=[1.0] * 5)
    summary = summarize(LOG, timeline, slo_s=2.0)
    assert summary["requests"] == 5 and summary["completed"] == 3
    assert summary["p50_s"] == pytest.approx(1.6)
    assert summary["mean_latency_s"] == pytest.approx(4.4 / 3)
    assert summary["throughput_per_s"] == pytest.approx(3 / 5)
    assert summary["goodput_per_s"] == pytest.approx(2 / 5)
    assert summary["slo_attainment"] == pytest.approx(2 / 5)
    assert summary["rejected_share"] == pytest.approx(0.2)
    assert summary["timed_out_share"] == pytest.approx(0.2)
    assert summary["utilization"] == pytest.approx(0.6)
    assert summary["mean_batch_size"] == pytest.approx(1.0)


def test_metrics_agree_with_each_other_on_a_simulated_run():
    # M/M/2 at 90% behind a feature fetch, with deadlines and a hop back: every outcome but in_flight.
    config = PlatformConfig(
        pool=PoolConfig(replicas=2, service=RandomServiceTime(AffineServiceTime(fixed_s=1.0))),
        gateway=GatewayConfig(queue_capacity=12, timeout_s=6.0),
        ingestion=IngestionConfig(fetch_mean_s=0.05),
        network_hop_s=0.02,
    )
    result = simulate(poisson_arrivals(1.8, 4000, seed=1), config, seed=1, timeline_step_s=7.0)
    log, timeline, horizon_s = result.log, result.timeline, result.horizon_s
    counts = outcome_counts(log)
    assert counts.sum() == len(log) and counts["rejected"] > 0 and counts["timed_out"] > 0
    summary = summarize(log, timeline, slo_s=5.0, horizon_s=horizon_s)
    stages = stage_breakdown(log)
    assert stages["mean_s"].sum() == pytest.approx(summary["mean_latency_s"])
    assert stages.loc["response", "p99_s"] == pytest.approx(0.02)
    law = littles_law(log, timeline, timeout_s=6.0, horizon_s=horizon_s)
    assert law["queue_length"] > 1.0
    assert law["relative_gap"] == pytest.approx(0.0, abs=1e-9)
    served = log.dropna(subset=["model_start_s"])
    busy_s = float((served["model_end_s"] - served["model_start_s"]).sum())
    assert utilization(timeline, horizon_s=horizon_s) == pytest.approx(busy_s / (2 * horizon_s))
    assert summary["throughput_per_s"] == pytest.approx(counts["completed"] / horizon_s)
    assert summary["mean_batch_size"] == 1.0


def test_t_critical_values_match_the_tables():
    table = {(0.95, 1): 12.7062, (0.95, 4): 2.7764, (0.95, 19): 2.0930, (0.99, 9): 3.2498, (0.9, 30): 1.6973}
    for (confidence, df), expected in table.items():
        assert metrics._t_critical(confidence, df) == pytest.approx(expected, abs=1e-4)
    assert metrics._t_critical(0.95, 1000) == pytest.approx(1.96234, abs=1e-5)
    assert metrics._t_critical(0.95, 10**9) == pytest.approx(1.959964, abs=1e-6)


def test_replication_ci_by_hand():
    # Mean 2, sample sd 1, n 3: half width t(0.975, 2) / sqrt(3) = 4.3027 / 1.7321.
    mean, half_width = replication_ci([1.0, 2.0, 3.0])
    assert mean == pytest.approx(2.0)
    assert half_width == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)


def test_batch_means_ci_drops_the_remainder_from_the_start():
    values = np.concatenate([[100.0], np.tile([1.0, 3.0], 10)])  # 21 values, the outlier first
    mean, half_width = batch_means_ci(values, batches=5)
    assert mean == pytest.approx(2.0)
    assert half_width == pytest.approx(0.0)


def test_ci_covers_the_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    samples = rng.normal(0.0, 1.0, (4000, 5))
    covered = [abs(m) <= h for m, h in map(replication_ci, samples)]
    assert 0.94 < np.mean(covered) < 0.96


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: latency_percentiles(LOG.drop(columns="latency_s")), ValueError, "latency_s"),
        (
            lambda: latency_percentiles(LOG, quantiles=(0.5, 1.0)),
            ValueError,
            r"quantiles\[1\] must lie in \(0, 1\)",
        ),
        (lambda: latency_percentiles(LOG, quantiles=(0.0,)), ValueError, "quantiles"),
        (lambda: latency_percentiles(LOG, quantiles=0.5), ValueError, "sequence"),
        (lambda: latency_percentiles(LOG, by="region"), ValueError, "'region'"),
        (lambda: stage_breakdown(LOG.drop(columns="admitted_s")), ValueError, "admitted_s"),
        (lambda: goodput_per_s(LOG, slo_s=0.0, start_s=0.0, end_s=1.0), ValueError, "slo_s must be > 0"),
        (lambda: goodput_per_s(LOG, slo_s=1.0, start_s=2.0, end_s=1.0), ValueError, "end_s must be >"),
        (lambda: peak_hour_successes(LOG, slo_s=-1.0), ValueError, "slo_s"),
        (lambda: summarize(LOG, make_timeline(replicas=[1.0]), slo_s=1.0), ValueError, "at least 2 rows"),
        (
            lambda: utilization(make_timeline(replicas=[1.0, 1.0]), horizon_s=1.0),
            ValueError,
            "horizon_s must be",
        ),
        (lambda: utilization(pd.DataFrame({"busy_replicas": [1.0]})), ValueError, "replicas"),
        (lambda: outcome_counts("log"), TypeError, "DataFrame"),
        (lambda: replication_ci([1.0]), ValueError, "at least 2"),
        (lambda: replication_ci([1.0, nan]), ValueError, "finite"),
        (lambda: replication_ci([1.0, 2.0], confidence=1.0), ValueError, "confidence"),
        (lambda: batch_means_ci([1.0, 2.0], batches=3), ValueError, "at least batches=3"),
        (lambda: batch_means_ci([1.0, 2.0], batches=1), ValueError, "batches must be >= 2"),
    ],
)
def test_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()


# ---- bad input: a clear error naming the parameter -----------------------------------------------


@pytest.mark.parametrize(
    ("values", "error"),
    [
        (["a", "b"], TypeError),
        (["1", "2"], TypeError),  # strings are not numbers, even when they read as one
        ([[1.0], [1.0, 2.0]], TypeError),  # ragged
        ([True, False, True], TypeError),
        (None, TypeError),
        ("12", TypeError),
        ([1e308, -1e308, 1e308], ValueError),  # a spread that overflows
        ([10**400, 1], ValueError),
    ],
)
def test_replication_ci_names_values_it_cannot_use(values, error):
    with pytest.raises(error, match="values"):
        replication_ci(values)


def test_replication_ci_takes_big_python_integers():
    mean, half_width = replication_ci([10**30, 10**30 + 2 * 10**15, 10**30 + 4 * 10**15])
    assert mean == pytest.approx(1e30) and math.isfinite(half_width)


def test_latency_percentiles_by_must_be_a_column_name():
    with pytest.raises(TypeError, match="by must be None or a column name"):
        latency_percentiles(LOG, by=["class_name"])
    with pytest.raises(ValueError, match="by must be None or a column of log"):
        latency_percentiles(LOG, by="tier")


@pytest.mark.parametrize(("timeout_s", "error"), [(-1.0, ValueError), (nan, ValueError), ("1", TypeError)])
def test_littles_law_checks_timeout_s_even_when_nobody_timed_out(timeout_s, error):
    log = LOG[LOG["outcome"] != "timed_out"]
    timeline = make_timeline(queue_length=[0.2, 0.8, 0.0, 0.0, 0.0])
    with pytest.raises(error, match="timeout_s"):
        littles_law(log, timeline, timeout_s=timeout_s)


def test_busy_intervals_and_goodput_refuse_what_they_cannot_use():
    batches = pd.DataFrame({"pool": ["a"], "replica": [0], "start_s": [1.0], "end_s": [5.0]})
    with pytest.raises(TypeError, match="batches must be a DataFrame"):
        metrics.busy_intervals([1, 2], 10.0)
    for horizon_s, error in ((nan, ValueError), ("10", TypeError), (None, TypeError)):
        with pytest.raises(error, match="horizon_s"):
            metrics.busy_intervals(batches, horizon_s)
    with pytest.raises(ValueError, match="end_s - start_s"):
        goodput_per_s(LOG, slo_s=2.0, start_s=0.0, end_s=5e-324)
