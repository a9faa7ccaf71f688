"""The platform's mechanisms one at a time, on small hand-made arrivals: the batcher, priorities, the
gateway (rate limit, bounded queue, shedding, deadlines), ingestion, the balancer policies, the
horizon, the timeline, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from conftest import make_arrivals, poisson_arrivals
from scaleplay.metrics import batch_means_ci, replication_ci
from scaleplay.profiles import AffineServiceTime, RandomServiceTime, ServiceTime
from scaleplay.schema import REQUEST_LOG_COLUMNS, TIMELINE_COLUMNS
from scaleplay.simulator import (
    POLICIES,
    BatcherConfig,
    GatewayConfig,
    IngestionConfig,
    PlatformConfig,
    PoolConfig,
    SimulationResult,
    simulate,
)

FIXED = AffineServiceTime(fixed_s=1.0)
EXPONENTIAL = RandomServiceTime(AffineServiceTime(fixed_s=1.0), "exponential")


def platform(
    replicas: int = 1,
    service: ServiceTime = FIXED,
    *,
    max_batch_size: int = 1,
    max_wait_s: float = 0.0,
    slots: int = 1,
    policy: str = "shared_queue",
    **gateway: object,
) -> PlatformConfig:
    batcher = BatcherConfig(max_batch_size, max_wait_s, slots)
    return PlatformConfig(PoolConfig(replicas, service, batcher, policy), GatewayConfig(**gateway))


def backlog_at_arrivals(log: pd.DataFrame, timeout_s: float = math.inf) -> np.ndarray:
    """For each request, how many earlier ones were admitted and not yet started when it arrived."""
    arrived = log["arrived_s"].to_numpy()
    admitted = log["outcome"].to_numpy() != "rejected"
    left = log["model_start_s"].to_numpy()
    left = np.where(log["outcome"] == "timed_out", arrived + timeout_s, left)
    left = np.where(np.isnan(left), np.inf, left)
    earlier = np.tril(np.ones((len(log), len(log)), dtype=bool), k=-1)
    return (earlier & admitted[None, :] & (left[None, :] > arrived[:, None])).sum(axis=1)


# -- tables ------------------------------------------------------------------------------------------


def test_log_and_timeline_have_the_documented_columns_and_dtypes():
    result = simulate(poisson_arrivals(0.5, 200, seed=1), platform(2, EXPONENTIAL), seed=1)
    assert isinstance(result, SimulationResult)
    for frame, columns in ((result.log, REQUEST_LOG_COLUMNS), (result.timeline, TIMELINE_COLUMNS)):
        assert list(frame.columns) == list(columns)
        for name, (dtype, _) in columns.items():
            if dtype in ("int64", "float64"):
                assert frame[name].dtype == dtype, name
    assert result.log["request_id"].tolist() == list(range(200))


def test_empty_arrivals_give_empty_tables():
    empty = make_arrivals(np.empty(0))
    result = simulate(empty, platform(), seed=0)
    assert result.log.empty and result.timeline.empty and result.horizon_s == 0.0
    result = simulate(empty, platform(), seed=0, horizon_s=5.0)
    assert len(result.timeline) == 5 and result.timeline["arrived"].sum() == 0


# -- the batcher ----------------------------------------------------------------------------------


def test_batcher_waits_for_the_oldest_request_or_a_full_batch():
    t_s = [0.0, 0.1, 0.2, 2.0, 2.1, 2.2, 2.3, 2.35]
    config = platform(service=AffineServiceTime(fixed_s=0.1), max_batch_size=4, max_wait_s=0.5)
    log = simulate(make_arrivals(t_s), config, seed=0).log
    # three requests go when the first has waited 0.5 s; four fill a batch at once; the last waits again
    assert log["model_start_s"].tolist() == pytest.approx([0.5] * 3 + [2.3] * 4 + [2.85])
    assert log["batch_size"].tolist() == [3, 3, 3, 4, 4, 4, 4, 1]


def test_zero_wait_takes_whatever_waits_up_to_the_cap():
    t_s = [0.0, 0.01, 0.02, 0.03, 0.04, 0.05]
    log = simulate(make_arrivals(t_s), platform(max_batch_size=4), seed=0).log
    assert log["model_start_s"].tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 2.0]
    assert log["batch_size"].tolist() == [1, 4, 4, 4, 4, 1]


def test_batch_time_sees_total_prompt_tokens_and_longest_output():
    service = AffineServiceTime(per_token_in_s=0.001, per_token_out_s=0.01)
    arrivals = make_arrivals([0.0, 0.1], tokens_in=[100, 300], tokens_out=[5, 20])
    log = simulate(arrivals, platform(service=service, max_batch_size=2, max_wait_s=1.0), seed=0).log
    assert log["model_start_s"].tolist() == [0.1, 0.1]
    assert log["model_end_s"].tolist() == pytest.approx([0.1 + 0.4 + 0.2] * 2)


def test_two_slots_on_one_replica_serve_like_two_replicas():
    rng = np.random.default_rng(2)
    t_s = np.cumsum(rng.exponential(0.6, 3000))
    arrivals = make_arrivals(t_s, service_s=rng.exponential(1.0, 3000))
    one = simulate(arrivals, platform(1, slots=2), seed=0)
    two = simulate(arrivals, platform(2), seed=0)
    np.testing.assert_array_equal(one.log["model_start_s"], two.log["model_start_s"])
    assert (one.log["replica"] == 0).all()
    assert one.timeline["busy_replicas"].max() <= 1.0 + 1e-12
    assert two.timeline["busy_replicas"].max() > 1.0


def test_service_s_column_replaces_the_curve_only_without_batching():
    arrivals = make_arrivals([0.0, 5.0], service_s=[0.25, 0.5])
    unbatched = simulate(arrivals, platform(), seed=0).log
    batched = simulate(arrivals, platform(max_batch_size=2), seed=0).log
    assert (unbatched["model_end_s"] - unbatched["model_start_s"]).tolist() == [0.25, 0.5]
    assert (batched["model_end_s"] - batched["model_start_s"]).tolist() == [1.0, 1.0]


def test_a_service_curve_returning_nan_is_an_error():
    class Broken:
        def batch_time_s(self, batch_size: int, tokens_in: int, tokens_out: int, rng: object) -> float:
            return math.nan

    with pytest.raises(ValueError, match="batch_time_s"):
        simulate(make_arrivals([0.0]), platform(service=Broken()), seed=0)


# -- priorities -------------------------------------------------------------------------------------


def test_lower_priority_number_goes_first_fifo_within_a_class_no_preemption():
    arrivals = make_arrivals([0.0, 0.1, 0.2, 0.3, 0.4], priority=[1, 1, 0, 1, 0])
    log = simulate(arrivals, platform(), seed=0).log
    # the running request keeps its replica; then class 0 in arrival order, then class 1
    assert log["model_start_s"].tolist() == [0.0, 3.0, 1.0, 4.0, 2.0]


# -- the gateway ----------------------------------------------------------------------------------


def test_rate_limit_admits_every_other_request_at_twice_the_rate():
    arrivals = make_arrivals(np.arange(200) * 0.05)
    log = simulate(arrivals, platform(100, rate_limit_per_s=10.0), seed=0).log
    assert (log["reject_reason"] == "rate_limited").tolist() == [False, True] * 100


def test_rate_limit_caps_admissions_under_poisson_overload():
    rate_per_s, burst, horizon_s = 10.0, 5, 200.0
    arrivals = poisson_arrivals(50.0, 10_500, seed=3)
    config = platform(50, rate_limit_per_s=rate_per_s, rate_limit_burst=burst)
    log = simulate(arrivals, config, seed=3, horizon_s=horizon_s).log
    admitted = int((log["outcome"] != "rejected").sum())
    # the bucket never hands out more than rate * time + burst, and at 5x overload it is rarely full
    assert 0.99 * rate_per_s * horizon_s <= admitted <= rate_per_s * horizon_s + burst
    assert set(log["reject_reason"]) == {"", "rate_limited"}


def test_bounded_queue_and_shedding_follow_the_backlog_rule_at_every_arrival():
    capacity, shed_at = 8, 4
    arrivals = poisson_arrivals(3.0, 2000, seed=4, priority=np.arange(2000) % 2)
    config = platform(2, EXPONENTIAL, queue_capacity=capacity, shed_queue_length=shed_at, shed_min_priority=1)
    log = simulate(arrivals, config, seed=4).log
    backlog = backlog_at_arrivals(log)
    low = log["priority"].to_numpy() >= 1
    expected = np.where(low & (backlog >= shed_at), "shed", np.where(backlog >= capacity, "queue_full", ""))
    np.testing.assert_array_equal(log["reject_reason"].to_numpy(), expected)
    assert backlog[log["outcome"] != "rejected"].max() == capacity - 1
    # the low class is shed first: its rejections are more frequent, and only it is shed
    rejected = log["outcome"] == "rejected"
    assert rejected[low].mean() > 2 * rejected[~low].mean()
    assert (log.loc[~low, "reject_reason"] != "shed").all()


@pytest.mark.parametrize(("max_batch_size", "max_wait_s"), [(1, 0.0), (4, 0.5)])
def test_timed_out_requests_leave_at_their_deadline_and_never_start(max_batch_size, max_wait_s):
    timeout_s = 3.0
    arrivals = poisson_arrivals(2.0 * max_batch_size, 3000, seed=5)
    config = platform(
        service=EXPONENTIAL, max_batch_size=max_batch_size, max_wait_s=max_wait_s, timeout_s=timeout_s
    )
    log = simulate(arrivals, config, seed=5).log
    out = log[log["outcome"] == "timed_out"]
    assert len(out) > 0.2 * len(log)
    assert out["model_start_s"].isna().all()
    assert (out["replica"] == -1).all() and (out["batch_size"] == 0).all()
    started = log[log["model_start_s"].notna()]
    assert (started["model_start_s"] - started["arrived_s"] < timeout_s).all()
    assert set(log["outcome"]) == {"completed", "timed_out"}
    # each batch holds exactly batch_size requests: timed-out ones took no place in it
    sizes = started.groupby(["replica", "model_start_s"])["batch_size"].agg(["size", "first"])
    assert (sizes["size"] == sizes["first"]).all()


def test_requests_can_time_out_while_their_features_are_fetched():
    config = PlatformConfig(
        PoolConfig(4, FIXED), GatewayConfig(timeout_s=1.0), IngestionConfig(fetch_mean_s=1.0, fetch_cv=1.0)
    )
    log = simulate(poisson_arrivals(1.0, 500, seed=6), config, seed=6).log
    fetching = (log["outcome"] == "timed_out") & log["features_ready_s"].isna()
    assert fetching.sum() > 50
    done = log[log["outcome"] == "completed"]
    assert (done["features_ready_s"] - done["arrived_s"] < 1.0).all()


# -- ingestion and the response hop -----------------------------------------------------------------


def test_feature_fetch_delays_follow_the_configured_lognormal_and_cache():
    mean_s, cv, hit_ratio, cache_s = 0.05, 1.5, 0.3, 0.002
    config = PlatformConfig(
        PoolConfig(8, FIXED),
        ingestion=IngestionConfig(mean_s, cv, hit_ratio, cache_s),
        network_hop_s=0.02,
    )
    log = simulate(poisson_arrivals(1.0, 20_000, seed=7), config, seed=7).log
    delay = (log["features_ready_s"] - log["admitted_s"]).to_numpy()
    hit = np.abs(delay - cache_s) < 1e-9
    p, n = hit.mean(), len(hit)
    assert abs(p - hit_ratio) <= 1.96 * math.sqrt(hit_ratio * (1 - hit_ratio) / n)
    # on a miss, log(delay) is normal with these parameters: check its mean and variance in CI
    sigma2 = math.log1p(cv**2)
    logs = np.log(delay[~hit])
    mean, half = batch_means_ci(logs, batches=20)
    assert abs(mean - (math.log(mean_s) - sigma2 / 2)) <= half
    mean, half = batch_means_ci((logs - (math.log(mean_s) - sigma2 / 2)) ** 2, batches=20)
    assert abs(mean - sigma2) <= half
    done = log[log["outcome"] == "completed"]
    np.testing.assert_allclose(done["responded_s"] - done["model_end_s"], 0.02)
    np.testing.assert_allclose(done["latency_s"], done["responded_s"] - done["arrived_s"])


def test_same_seed_draws_the_same_fetches_whatever_the_pool():
    ingestion = IngestionConfig(0.1)
    arrivals = poisson_arrivals(2.0, 500, seed=8)
    small = simulate(arrivals, PlatformConfig(PoolConfig(3, EXPONENTIAL), ingestion=ingestion), seed=8).log
    large = simulate(arrivals, PlatformConfig(PoolConfig(9, FIXED), ingestion=ingestion), seed=8).log
    np.testing.assert_array_equal(small["features_ready_s"], large["features_ready_s"])


# -- balancer policies ----------------------------------------------------------------------------


def test_round_robin_cycles_through_the_replicas():
    log = simulate(poisson_arrivals(1.0, 100, seed=9), platform(3, policy="round_robin"), seed=9).log
    assert log["replica"].tolist() == [i % 3 for i in range(100)]


def test_join_shortest_queue_counts_waiting_and_in_service():
    arrivals = make_arrivals([0.0, 1.0, 1.5, 2.5], service_s=[10.0, 1.0, 1.0, 1.0])
    log = simulate(arrivals, platform(2, policy="join_shortest_queue"), seed=0).log
    # request 2 finds one request on each replica (a tie, lowest index wins); request 3 finds r1 idle
    assert log["replica"].tolist() == [0, 1, 0, 1]
    assert log["model_start_s"].tolist() == [0.0, 1.0, 10.0, 2.5]


def test_policies_rank_as_theory_says_under_common_random_numbers():
    """At 80% load on 4 replicas: one shared line < join-shortest-queue < power of two < round robin."""
    order = ["shared_queue", "join_shortest_queue", "power_of_two", "round_robin"]
    waits = {policy: [] for policy in order}
    for rep in range(5):
        arrivals = poisson_arrivals(3.2, 10_000, seed=10, replication=rep)
        for policy in order:
            log = simulate(arrivals, platform(4, EXPONENTIAL, policy=policy), seed=100 + rep).log
            waits[policy].append((log["model_start_s"] - log["arrived_s"]).iloc[1000:].mean())
    for better, worse in zip(order, order[1:], strict=False):
        mean, half_width = replication_ci(np.subtract(waits[worse], waits[better]))
        assert mean - half_width > 0, f"{better} should wait less than {worse}"


def test_power_of_two_draws_from_the_balancer_stream():
    arrivals = poisson_arrivals(3.0, 2000, seed=11)
    config = platform(4, FIXED, policy="power_of_two")
    first = simulate(arrivals, config, seed=1).log["replica"]
    again = simulate(arrivals, config, seed=1).log["replica"]
    other = simulate(arrivals, config, seed=2).log["replica"]
    assert first.equals(again) and not first.equals(other)


# -- horizon, timeline, progress --------------------------------------------------------------------


def test_horizon_cuts_the_run_and_agrees_with_the_full_run_before_it():
    arrivals = poisson_arrivals(4.5, 3000, seed=12)
    config = platform(4, EXPONENTIAL, max_batch_size=2, max_wait_s=0.1)
    full = simulate(arrivals, config, seed=12)
    cut = simulate(arrivals, config, seed=12, horizon_s=300.0)
    log = cut.log
    assert cut.horizon_s == 300.0 and len(cut.timeline) == 300
    assert len(log) == int((arrivals["t_s"] < 300.0).sum())
    assert (log["outcome"] == "in_flight").any() and not (full.log["outcome"] == "in_flight").any()
    done = log["outcome"] == "completed"
    assert (log.loc[done, "responded_s"] <= 300.0).all()
    # everything that happened before the horizon happened the same way in the full run
    for column in ("model_start_s", "model_end_s", "responded_s", "replica", "batch_size"):
        pd.testing.assert_series_equal(log.loc[done, column], full.log.loc[log.index[done], column])
    started = log.index[log["model_start_s"].notna()]
    pd.testing.assert_series_equal(log.loc[started, "model_start_s"], full.log.loc[started, "model_start_s"])
    assert full.horizon_s == full.log["responded_s"].max()


def test_timeline_counts_add_up_to_the_log():
    config = platform(
        2, EXPONENTIAL, max_batch_size=3, max_wait_s=0.2, queue_capacity=10, timeout_s=4.0
    )
    result = simulate(poisson_arrivals(4.0, 3000, seed=13), config, seed=13, timeline_step_s=2.5)
    log, timeline = result.log, result.timeline
    counts = log["outcome"].value_counts()
    assert timeline["arrived"].sum() == len(log)
    assert timeline["admitted"].sum() == log["admitted_s"].notna().sum()
    for name in ("rejected", "completed", "timed_out"):
        assert timeline[name].sum() == counts.get(name, 0), name
    assert (timeline["busy_replicas"] <= timeline["replicas"] * (1 + 1e-12)).all()
    # the batch sizes started per interval, recomputed from the log
    batches = log.dropna(subset=["model_start_s"]).drop_duplicates(["replica", "model_start_s"])
    per_bin = batches.groupby((batches["model_start_s"] // 2.5).astype(int))["batch_size"].mean()
    np.testing.assert_allclose(timeline["mean_batch_size"].iloc[per_bin.index], per_bin.to_numpy())
    assert timeline["mean_batch_size"].drop(per_bin.index).isna().all()


def test_progress_bar_changes_nothing(capsys):
    arrivals = poisson_arrivals(3.0, 2000, seed=14)
    config = platform(4, EXPONENTIAL, timeout_s=2.0)
    quiet = simulate(arrivals, config, seed=14, horizon_s=500.0)
    shown = simulate(arrivals, config, seed=14, horizon_s=500.0, progress=True)
    pd.testing.assert_frame_equal(quiet.log, shown.log)
    pd.testing.assert_frame_equal(quiet.timeline, shown.timeline)
    assert "simulate" in capsys.readouterr().err


# -- bad input ------------------------------------------------------------------------------------

POOL = PoolConfig(1, FIXED)


@pytest.mark.parametrize(
    ("build", "error", "name"),
    [
        (lambda: BatcherConfig(max_batch_size=0), ValueError, "max_batch_size"),
        (lambda: BatcherConfig(max_batch_size=2.0), TypeError, "max_batch_size"),
        (lambda: BatcherConfig(max_wait_s=-0.1), ValueError, "max_wait_s"),
        (lambda: BatcherConfig(max_wait_s=math.nan), ValueError, "max_wait_s"),
        (lambda: BatcherConfig(max_concurrent_batches=0), ValueError, "max_concurrent_batches"),
        (lambda: PoolConfig(0, FIXED), ValueError, "replicas"),
        (lambda: PoolConfig(True, FIXED), TypeError, "replicas"),
        (lambda: PoolConfig(1, "fast"), TypeError, "service"),
        (lambda: PoolConfig(1, FIXED, batcher={"max_batch_size": 4}), TypeError, "batcher"),
        (lambda: PoolConfig(1, FIXED, policy="random"), ValueError, "policy"),
        (lambda: GatewayConfig(queue_capacity=0), ValueError, "queue_capacity"),
        (lambda: GatewayConfig(rate_limit_per_s=0.0), ValueError, "rate_limit_per_s"),
        (lambda: GatewayConfig(rate_limit_per_s=-5.0), ValueError, "rate_limit_per_s"),
        (lambda: GatewayConfig(rate_limit_per_s=math.nan), ValueError, "rate_limit_per_s"),
        (lambda: GatewayConfig(rate_limit_burst=0), ValueError, "rate_limit_burst"),
        (lambda: GatewayConfig(shed_queue_length=-1), ValueError, "shed_queue_length"),
        (lambda: GatewayConfig(shed_min_priority=-1), ValueError, "shed_min_priority"),
        (lambda: GatewayConfig(timeout_s=0.0), ValueError, "timeout_s"),
        (lambda: GatewayConfig(timeout_s=math.inf), ValueError, "timeout_s"),
        (lambda: IngestionConfig(fetch_mean_s=0.0), ValueError, "fetch_mean_s"),
        (lambda: IngestionConfig(0.1, fetch_cv=-0.5), ValueError, "fetch_cv"),
        (lambda: IngestionConfig(0.1, cache_hit_ratio=1.5), ValueError, "cache_hit_ratio"),
        (lambda: IngestionConfig(0.1, cache_hit_ratio=-0.1), ValueError, "cache_hit_ratio"),
        (lambda: IngestionConfig(0.1, cache_hit_ratio=math.nan), ValueError, "cache_hit_ratio"),
        (lambda: IngestionConfig(0.1, cache_latency_s=-1.0), ValueError, "cache_latency_s"),
        (lambda: PlatformConfig(None), TypeError, "pool"),
        (lambda: PlatformConfig(POOL, gateway=None), TypeError, "gateway"),
        (lambda: PlatformConfig(POOL, ingestion=0.1), TypeError, "ingestion"),
        (lambda: PlatformConfig(POOL, network_hop_s=-0.01), ValueError, "network_hop_s"),
        (lambda: PlatformConfig(POOL, network_hop_s=math.nan), ValueError, "network_hop_s"),
    ],
)
def test_bad_configs_are_refused_by_name(build, error, name):
    with pytest.raises(error, match=name):
        build()


GOOD = make_arrivals([0.0, 1.0, 2.0])


def _with(column: str, values: object) -> pd.DataFrame:
    frame = GOOD.copy()
    frame[column] = values
    return frame


@pytest.mark.parametrize(
    ("arrivals", "kwargs", "error", "name"),
    [
        (GOOD, {"seed": -1}, ValueError, "seed"),
        (GOOD, {"seed": 1.5}, TypeError, "seed"),
        (GOOD, {"seed": 0, "horizon_s": 0.0}, ValueError, "horizon_s"),
        (GOOD, {"seed": 0, "horizon_s": math.nan}, ValueError, "horizon_s"),
        (GOOD, {"seed": 0, "timeline_step_s": 0.0}, ValueError, "timeline_step_s"),
        (GOOD, {"seed": 0, "horizon_s": 1e9, "timeline_step_s": 1.0}, ValueError, "timeline_step_s"),
        (GOOD, {"seed": 0, "progress": "yes"}, TypeError, "progress"),
        (GOOD.drop(columns="tokens_in"), {"seed": 0}, ValueError, "tokens_in"),
        (GOOD.to_dict(), {"seed": 0}, TypeError, "arrivals"),
        (_with("t_s", [0.0, 2.0, 1.0]), {"seed": 0}, ValueError, "sorted by t_s"),
        (_with("t_s", [0.0, math.nan, 2.0]), {"seed": 0}, ValueError, "t_s"),
        (_with("t_s", [-1.0, 0.0, 1.0]), {"seed": 0}, ValueError, "t_s"),
        (_with("priority", [0.0, 1.0, 0.0]), {"seed": 0}, TypeError, "priority"),
        (_with("tokens_out", [5, -1, 5]), {"seed": 0}, ValueError, "tokens_out"),
        (_with("request_id", [0, 1, 1]), {"seed": 0}, ValueError, "request_id"),
        (_with("service_s", [1.0, -1.0, 1.0]), {"seed": 0}, ValueError, "service_s"),
    ],
)
def test_bad_simulate_input_is_refused_by_name(arrivals, kwargs, error, name):
    with pytest.raises(error, match=name):
        simulate(arrivals, platform(), **kwargs)


def test_config_must_be_a_platform_config():
    with pytest.raises(TypeError, match="config"):
        simulate(GOOD, POOL, seed=0)


def test_policies_are_the_documented_ones():
    assert POLICIES == (
        "shared_queue",
        "round_robin",
        "join_shortest_queue",
        "power_of_two",
        "least_outstanding_tokens",
        "least_kv_cache",
        "prefix_affinity",
    )
