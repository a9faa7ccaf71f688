"""The sizing loop: the queueing estimate against Erlang C by hand, the plan against re-simulation on
fresh traffic, the choice against every feasible candidate, determinism across executors, the
frontier, and bad input. Workloads are a few thousand requests so the whole file stays fast."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest

from conftest import make_arrivals
from scaleplay.metrics import latency_percentiles, outcome_shares
from scaleplay.planner import (
    CANDIDATE_COLUMNS,
    ESTIMATE_COLUMNS,
    ModelOption,
    estimate,
    peak_start_s,
    plan,
    roofline_option,
    sweep,
)
from scaleplay.profiles import AffineServiceTime
from scaleplay.queueing import erlang_c
from scaleplay.simulator import GatewayConfig, PlatformConfig, PoolConfig, simulate
from scaleplay.workload import (
    Burst,
    DiurnalCosine,
    TokenDistribution,
    TrafficClass,
    Workload,
    generate_arrivals,
)

# 4 requests a second with spread-out sizes: 600 s of peak is about 2400 requests.
WORKLOAD = Workload.from_rate(
    4.0,
    classes=(
        TrafficClass(
            "default",
            1.0,
            tokens_in=TokenDistribution(500, 0.5),
            tokens_out=TokenDistribution(100, 0.5, maximum=400),
        ),
    ),
)
# A cheap slow tier and a dear fast one; a batch of B costs a fixed part once and tokens per request.
OPTIONS = (
    ModelOption("small", AffineServiceTime(fixed_s=0.05, per_token_in_s=1e-5, per_token_out_s=2e-3), 1.0),
    ModelOption("large", AffineServiceTime(fixed_s=0.02, per_token_in_s=5e-6, per_token_out_s=1e-3), 2.5),
)
SLO_S, MAX_DROPPED = 1.0, 0.01
PLAN_ARGS = dict(slo_s=SLO_S, max_rejected_share=MAX_DROPPED, batch_sizes=(1, 4), duration_s=600.0)


@pytest.fixture(scope="module")
def threaded_plan():
    with ThreadPoolExecutor(max_workers=2) as pool:
        return plan(WORKLOAD, OPTIONS, seed=1, replications=2, executor=pool, **PLAN_ARGS)


def test_the_plan_meets_the_slo_on_fresh_traffic(threaded_plan):
    assert threaded_plan.feasible
    for seed in (101, 102, 103):
        arrivals = generate_arrivals(WORKLOAD, 600.0, seed=seed, start_s=threaded_plan.peak_start_s)
        log = simulate(arrivals, threaded_plan.config, seed=seed).log
        shares = outcome_shares(log)
        assert latency_percentiles(log, (0.99,))["p99_s"] <= SLO_S
        assert shares["rejected"] + shares["timed_out"] <= MAX_DROPPED


def test_the_choice_is_the_cheapest_feasible_candidate(threaded_plan):
    candidates = threaded_plan.candidates
    assert list(candidates.columns) == list(CANDIDATE_COLUMNS)
    meets = (candidates["p99_s"] <= SLO_S) & (
        candidates["rejected_share"] + candidates["timed_out_share"] <= MAX_DROPPED
    )
    assert (candidates["meets_slo"] == meets).all()
    feasible = candidates[meets]
    choice = threaded_plan.choice
    assert choice["cost_usd_per_hour"] == feasible["cost_usd_per_hour"].min()
    ties = feasible[feasible["cost_usd_per_hour"] == choice["cost_usd_per_hour"]]
    assert choice["p99_s"] == ties["p99_s"].min()
    # The config is the chosen row's, and its cost is replicas x the option's price.
    option = next(o for o in OPTIONS if o.name == choice["option"])
    pool = threaded_plan.config.pool
    assert (pool.replicas, pool.batcher.max_batch_size, pool.service) == (
        choice["replicas"],
        choice["max_batch_size"],
        option.service,
    )
    assert choice["cost_usd_per_hour"] == pytest.approx(choice["replicas"] * option.usd_per_replica_hour)
    assert choice["cost_usd_per_month"] == pytest.approx(choice["cost_usd_per_hour"] * 730)
    # The search stopped at a boundary: one replica fewer of the chosen group was tried and failed.
    group = candidates[
        (candidates["option"] == choice["option"])
        & (candidates["max_batch_size"] == choice["max_batch_size"])
    ]
    below = group[group["replicas"] == choice["replicas"] - 1]
    assert choice["replicas"] == 1 or (len(below) == 1 and not below["meets_slo"].iloc[0])


def test_the_frontier_holds_exactly_the_undominated_candidates(threaded_plan):
    candidates = threaded_plan.candidates
    ok = candidates[candidates["rejected_share"] + candidates["timed_out_share"] <= MAX_DROPPED]
    for i, row in ok.iterrows():
        dominated = (
            (ok["cost_usd_per_hour"] <= row["cost_usd_per_hour"])
            & (ok["p99_s"] <= row["p99_s"])
            & ((ok["cost_usd_per_hour"] < row["cost_usd_per_hour"]) | (ok["p99_s"] < row["p99_s"]))
        ).any()
        assert candidates.at[i, "on_frontier"] == (not dominated)
    assert threaded_plan.frontier["on_frontier"].all()


def test_same_seed_same_plan_with_threads_and_processes(threaded_plan):
    with ProcessPoolExecutor(max_workers=2) as pool:
        again = plan(WORKLOAD, OPTIONS, seed=1, replications=2, executor=pool, **PLAN_ARGS)
    pd.testing.assert_frame_equal(again.candidates, threaded_plan.candidates)
    pd.testing.assert_frame_equal(again.estimates, threaded_plan.estimates)
    assert again.config == threaded_plan.config
    # Each candidate its own seed: still the same whatever the executor, and a different table.
    with ThreadPoolExecutor(max_workers=2) as threads, ProcessPoolExecutor(max_workers=2) as procs:
        a = sweep(
            threaded_plan.arrivals,
            OPTIONS[:1],
            replicas=(2, 3),
            slo_s=SLO_S,
            seed=5,
            common_seed=False,
            executor=threads,
        )
        b = sweep(
            threaded_plan.arrivals,
            OPTIONS[:1],
            replicas=(2, 3),
            slo_s=SLO_S,
            seed=5,
            common_seed=False,
            executor=procs,
        )
    pd.testing.assert_frame_equal(a, b)
    assert a["seed"].nunique() == 2


def test_the_estimate_is_erlang_c_by_hand():
    # Exactly 3 requests a second for 600 s, each 1 s on a replica (no batching). One replica is one
    # M/M/c server: the p99 wait with c servers is ln(C(c, 3) / 0.01) / (c - 3) when C(c, 3) > 0.01.
    arrivals = make_arrivals(np.arange(1800) / 3.0)
    option = ModelOption("unit", AffineServiceTime(fixed_s=1.0), 1.0)
    table = estimate(arrivals, [option], slo_s=2.0, duration_s=600.0)
    assert list(table.columns) == list(ESTIMATE_COLUMNS)
    row = table.iloc[0]
    assert row["arrival_rate_per_s"] == pytest.approx(3.0)
    assert row["batch_time_s"] == pytest.approx(1.0) and row["replica_throughput_per_s"] == pytest.approx(1.0)
    assert row["min_stable_replicas"] == 4
    p99_latency = {c: np.log(erlang_c(c, 3.0) / 0.01) / (c - 3) + 1.0 for c in (5, 6)}
    assert p99_latency[5] > 2.0 >= p99_latency[6]  # 2.58 s and 1.76 s
    assert row["estimated_replicas"] == 6
    assert row["estimated_latency_s"] == pytest.approx(p99_latency[6])
    # A full batch of 4 takes 1.3 s: four servers per replica at 1.3 s each.
    batched = estimate(
        arrivals,
        [ModelOption("b", AffineServiceTime(fixed_s=1.0, per_item_s=0.075), 1.0)],
        [4],
        slo_s=2.0,
        duration_s=600.0,
    )
    assert batched.iloc[0]["batch_time_s"] == pytest.approx(1.3)
    assert batched.iloc[0]["replica_throughput_per_s"] == pytest.approx(4 / 1.3)


def test_a_gateway_template_counts_refusals_against_the_plan():
    # One replica that is too slow for the traffic behind a small queue: most requests are refused,
    # so it fails the plan however fast the ones it serves are.
    template = PlatformConfig(PoolConfig(1, OPTIONS[0].service), GatewayConfig(queue_capacity=2))
    table = sweep(
        generate_arrivals(WORKLOAD, 300.0, seed=3),
        OPTIONS[:1],
        replicas=(1, 6),
        slo_s=SLO_S,
        seed=3,
        template=template,
    )
    one = table[table["replicas"] == 1].iloc[0]
    assert one["rejected_share"] > MAX_DROPPED and not one["meets_slo"]
    assert table[table["replicas"] == 6].iloc[0]["rejected_share"] == 0


def test_the_peak_window_and_roofline_options():
    day = Workload(
        daily_active_users=1e5, requests_per_user_per_day=5, diurnal=DiurnalCosine(1.5, peak_hour=14)
    )
    assert peak_start_s(day, 3600.0) == pytest.approx(13.5 * 3600)  # centered on 14:00
    launch = Workload.from_rate(1.0, bursts=(Burst(7200.0, 600.0, 3.0),))
    assert peak_start_s(launch, 600.0) == 7200.0
    option = roofline_option("Llama-3.1-8B", "int8")
    assert option.usd_per_replica_hour == pytest.approx(55.04 / 8, abs=1e-3)  # p5.48xlarge / 8
    assert (option.tier, option.quantization, option.gpus_per_replica) == ("Llama-3.1-8B", "int8", 1)
    # Llama-3.1-70B in bf16 (141 GB) does not fit one 80 GB H100; two GPUs or int8 weights do.
    with pytest.raises(ValueError, match="tensor_parallel"):
        roofline_option("Llama-3.1-70B", "bf16")
    assert roofline_option("Llama-3.1-70B", "bf16", tensor_parallel=2).usd_per_replica_hour == pytest.approx(
        2 * 55.04 / 8, abs=1e-3
    )
    assert roofline_option("Llama-3.1-70B", "int8", usd_per_gpu_hour=2.0).usd_per_replica_hour == 2.0


def test_an_impossible_slo_gives_no_plan_but_a_table():
    with ThreadPoolExecutor(max_workers=2) as pool:
        result = plan(
            WORKLOAD, OPTIONS[:1], slo_s=0.01, seed=2, max_replicas=4, duration_s=120.0, executor=pool
        )
    assert not result.feasible and result.choice is None
    assert not result.candidates["meets_slo"].any()
    assert result.candidates["replicas"].max() == 4  # it grew to the cap before giving up


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"options": []}, ValueError, "at least one ModelOption"),
        ({"options": [OPTIONS[0], OPTIONS[0]]}, ValueError, "unique"),
        ({"options": ["small"]}, TypeError, "ModelOption"),
        ({"slo_s": -1.0}, ValueError, "slo_s"),
        ({"quantile": 1.0}, ValueError, "quantile"),
        ({"max_rejected_share": 1.5}, ValueError, "max_rejected_share"),
        ({"batch_sizes": (0,)}, ValueError, r"batch_sizes\[0\]"),
        ({"batch_sizes": (2, 2)}, ValueError, "repeat"),
        ({"max_replicas": 0}, ValueError, "max_replicas"),
        ({"replications": 0}, ValueError, "replications"),
        ({"seed": -1}, ValueError, "seed"),
        ({"executor": "dask"}, TypeError, "Executor"),
        ({"template": "gateway"}, TypeError, "template"),
        ({"workload": "chat"}, TypeError, "workload"),
        (
            {"workload": make_arrivals(np.arange(10.0)), "replications": 2},
            ValueError,
            "replications must be 1",
        ),
        ({"progress": 1}, TypeError, "progress"),
    ],
)
def test_bad_input_is_refused(kwargs, error, match):
    args = {"workload": WORKLOAD, "options": OPTIONS, "slo_s": SLO_S, "seed": 0} | kwargs
    with pytest.raises(error, match=match):
        plan(args.pop("workload"), args.pop("options"), **args)


def test_bad_options_are_refused():
    with pytest.raises(TypeError, match="service"):
        ModelOption("x", lambda b: 1.0, 1.0)
    with pytest.raises(ValueError, match="usd_per_replica_hour"):
        ModelOption("x", OPTIONS[0].service, 0.0)
    with pytest.raises(ValueError, match="gpus_per_replica"):
        ModelOption("x", OPTIONS[0].service, 1.0, gpus_per_replica=0)


def test_a_dask_cluster_executor_gives_the_same_plan(threaded_plan):
    """The sweep runs unchanged on a Dask distributed client's executor (a local two-worker cluster)."""
    from distributed import Client, LocalCluster  # noqa: PLC0415 - only this test needs a cluster

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        again = plan(WORKLOAD, OPTIONS, seed=1, replications=2, executor=client.get_executor(), **PLAN_ARGS)
    pd.testing.assert_frame_equal(again.candidates, threaded_plan.candidates)
    assert again.config == threaded_plan.config


# ---- bad and extreme input: refused before any simulation ----------------------------------------


def test_sweep_refuses_a_template_and_flags_of_the_wrong_type():
    arrivals = make_arrivals(np.arange(10.0))
    args = dict(replicas=(1,), slo_s=SLO_S, seed=0, executor=ThreadPoolExecutor(1))
    with pytest.raises(TypeError, match="template must be a PlatformConfig"):
        sweep(arrivals, OPTIONS[:1], template="x", **args)
    with pytest.raises(TypeError, match="common_seed must be True or False"):
        sweep(arrivals, OPTIONS[:1], common_seed="no", **args)
    with pytest.raises(TypeError, match="max_workers"):
        sweep(arrivals, OPTIONS[:1], max_workers="2", **args)
    with pytest.raises(ValueError, match=r"replicas\[0\]"):
        sweep(arrivals, OPTIONS[:1], **(args | {"replicas": (10**30,)}))
    with pytest.raises(TypeError, match="arrivals must be an arrivals DataFrame"):
        sweep(5, OPTIONS[:1], **args)
    with pytest.raises(TypeError, match="options must be a sequence"):
        sweep(arrivals, 5, **args)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"max_replicas": 10**30}, ValueError, "max_replicas"),
        ({"batch_sizes": (10**30,)}, ValueError, r"batch_sizes\[0\]"),
        ({"replications": 10**30}, ValueError, "replications"),
        ({"common_seed": "yes"}, TypeError, "common_seed"),
        ({"max_workers": 0}, ValueError, "max_workers"),
        ({"duration_s": 1e-9}, ValueError, "duration_s"),  # a window with no request in it
    ],
)
def test_plan_bounds_what_it_would_simulate(kwargs, error, match):
    with pytest.raises(error, match=match):
        plan(WORKLOAD, OPTIONS, slo_s=SLO_S, seed=0, **kwargs)


def test_peak_start_s_refuses_a_grid_too_fine_before_building_it():
    with pytest.raises(ValueError, match="step_s must be >="):
        peak_start_s(WORKLOAD, 600.0, step_s=1e-6)  # 6 * 10**11 grid points: 4.4 TiB
    with pytest.raises(ValueError, match="step_s must be >="):
        peak_start_s(WORKLOAD, 1e308)
    with pytest.raises(ValueError, match="step_s must be <="):
        peak_start_s(WORKLOAD, 600.0, step_s=1e308)
    assert peak_start_s(WORKLOAD, 600.0, step_s=0.1) == 0.0


def test_estimate_names_what_it_cannot_use():
    arrivals = make_arrivals(np.arange(10.0))
    with pytest.raises(ValueError, match="duration_s"):
        estimate(arrivals, OPTIONS, slo_s=SLO_S, duration_s=5e-324)
    with pytest.raises(TypeError, match="arrivals"):
        estimate(5, OPTIONS, slo_s=SLO_S)
    class Glacial:  # a ServiceTime of one's own, with no bound on its batch time
        def batch_time_s(self, batch_size, tokens_in, tokens_out, rng):
            return 1e300

    slow = ModelOption("slow", Glacial(), 1.0)
    with pytest.raises(ValueError, match="slow"):
        estimate(arrivals, [slow], slo_s=SLO_S, duration_s=10.0)
