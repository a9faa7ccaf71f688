"""The continuous-batching engine's measurements: the RequestLog's token columns, the Timeline's engine
columns, the records of iterations and preemptions, and the metrics read from them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import make_arrivals
from scaleplay.config import CascadeConfig
from scaleplay.measured import replay_arrivals
from scaleplay.metrics import (
    engine_timeline,
    inter_token_latency_percentiles,
    littles_law,
    token_goodput_per_s,
    token_latency_percentiles,
)
from scaleplay.profiles import AffineServiceTime, load_hardware, load_model
from scaleplay.schema import (
    ENGINE_LOG_COLUMNS,
    ENGINE_POOL_TIMELINE_COLUMNS,
    ENGINE_TIMELINE_COLUMNS,
    ITERATION_COLUMNS,
    PREEMPTION_COLUMNS,
    REQUEST_LOG_COLUMNS,
    TIMELINE_COLUMNS,
)
from scaleplay.sim import NARROW_LOG_COLUMNS
from scaleplay.simulator import (
    BatcherConfig,
    ContinuousBatcherConfig,
    PlatformConfig,
    PoolConfig,
    simulate,
)
from scaleplay.steptime import StepTimeModel

HOP_S = 0.01
STEP = StepTimeModel(
    load_hardware("A100 80GB SXM"),
    load_model("Llama-3.1-8B"),
    1,
    compute_efficiency=0.6,
    bandwidth_efficiency=0.6,
    overhead_s=0.005,
)


def tiny_cache(tokens: int) -> float:
    """The gpu_memory_utilization that leaves room for about ``tokens`` of KV cache after the weights."""
    model = STEP.model
    return (model.weight_bytes + tokens * model.kv_bytes_per_token) / STEP.memory_bytes


def continuous(schedule: str = "decode_first", utilization: float = 0.9, name: str = "main") -> PoolConfig:
    batcher = ContinuousBatcherConfig(
        max_batched_tokens=2048, schedule=schedule, gpu_memory_utilization=utilization
    )
    return PoolConfig(1, STEP, batcher, name=name)


def run(pool: PoolConfig, arrivals: pd.DataFrame | None = None, **options: object):
    arrivals = replay_arrivals(300, 3.0).iloc[:150] if arrivals is None else arrivals
    return simulate(arrivals, PlatformConfig(pool=pool, network_hop_s=HOP_S), seed=1, **options)


@pytest.fixture(scope="module", params=["decode_first", "prefill_first"])
def roomy(request):
    return run(continuous(request.param))


@pytest.fixture(scope="module")
def cramped():
    """A KV cache of about three thousand tokens: sequences are preempted."""
    return run(continuous(utilization=tiny_cache(3000)), replay_arrivals(300, 3.0))


# -- the tables' columns ------------------------------------------------------------------------------


def test_a_static_platform_keeps_its_tables_as_they_were():
    arrivals = make_arrivals(np.arange(20) * 0.5)
    config = PlatformConfig(pool=PoolConfig(1, AffineServiceTime(fixed_s=0.2), BatcherConfig(4)))
    result = simulate(arrivals, config, seed=1)
    narrow = simulate(arrivals, config, seed=1, log_columns="narrow")
    assert list(result.log.columns) == list(REQUEST_LOG_COLUMNS)
    assert list(narrow.log.columns) == list(NARROW_LOG_COLUMNS)
    assert list(result.timeline.columns) == list(TIMELINE_COLUMNS)
    assert list(result.iterations.columns) == list(ITERATION_COLUMNS) and result.iterations.empty
    assert list(result.preemptions.columns) == list(PREEMPTION_COLUMNS) and result.preemptions.empty
    assert result.kv_capacity_tokens == {}
    table = engine_timeline(result)
    assert list(table.columns) == list(ENGINE_POOL_TIMELINE_COLUMNS) and table.empty


def test_a_continuous_platform_adds_the_engine_columns(roomy):
    assert list(roomy.log.columns) == list(REQUEST_LOG_COLUMNS) + list(ENGINE_LOG_COLUMNS)
    assert list(roomy.timeline.columns) == list(TIMELINE_COLUMNS) + list(ENGINE_TIMELINE_COLUMNS)
    for name, (dtype, _) in ENGINE_LOG_COLUMNS.items():
        assert roomy.log[name].dtype == dtype, name
    for name, (dtype, _) in ENGINE_TIMELINE_COLUMNS.items():
        assert roomy.timeline[name].dtype == dtype, name
    for name, (dtype, _) in ITERATION_COLUMNS.items():
        column = roomy.iterations[name]
        assert pd.api.types.is_string_dtype(column) if dtype == "object" else column.dtype == dtype, name
    assert len(roomy.iterations) > 0
    assert roomy.kv_capacity_tokens == {"main": ContinuousBatcherConfig().kv_blocks(STEP) * 16}


def test_the_narrow_log_of_a_continuous_platform_gains_ttft_and_tpot(roomy):
    narrow = run(continuous(roomy.config.pool.batcher.schedule), log_columns="narrow")
    assert list(narrow.log.columns) == list(NARROW_LOG_COLUMNS) + ["ttft_s", "tpot_s"]
    for name in ("ttft_s", "tpot_s"):
        np.testing.assert_array_equal(narrow.log[name].to_numpy(), roomy.log[name].to_numpy())


# -- the RequestLog's token times ---------------------------------------------------------------------


def test_token_times_fit_inside_each_request(roomy):
    log = roomy.log
    assert (log["outcome"] == "completed").all()
    first = log["first_token_s"]
    assert (first >= log["model_start_s"]).all() and (first <= log["model_end_s"]).all()
    assert (log["ttft_s"] > 0).all() and (log["ttft_s"] <= log["latency_s"]).all()
    np.testing.assert_allclose(log["ttft_s"], first + HOP_S - log["arrived_s"], rtol=1e-12)
    several = log["tokens_out"] >= 2
    assert (log.loc[several, "tpot_s"] >= 0).all() and log.loc[~several, "tpot_s"].isna().all()
    rebuilt = first + log["tpot_s"] * (log["tokens_out"] - 1)
    np.testing.assert_allclose(rebuilt[several], log.loc[several, "model_end_s"], rtol=1e-12)
    assert (log["preemptions"] == 0).all()


# -- the Timeline and the record of iterations -----------------------------------------------------------


def widths(result) -> np.ndarray:
    return np.diff(np.append(result.timeline["t_s"].to_numpy(), result.horizon_s))


def test_running_seqs_integrate_to_the_record_of_iterations(roomy):
    runs = roomy.iterations
    seconds = (runs["end_s"] - runs["start_s"]).to_numpy()
    assert np.dot(roomy.timeline["running_seqs"], widths(roomy)) == pytest.approx(
        np.dot(runs["decode_seqs"], seconds), rel=1e-12
    )
    capacity = roomy.kv_capacity_tokens["main"]
    utilization = roomy.timeline["kv_cache_utilization"]
    assert ((utilization >= 0) & (utilization <= 1)).all() and utilization.max() > 0
    assert np.dot(utilization, widths(roomy)) * capacity == pytest.approx(
        np.dot(runs["kv_tokens"], seconds), rel=1e-12
    )
    # every token after a request's first is one sequence's share of a decode iteration
    assert int((runs["steps"] * runs["decode_seqs"]).sum()) == int(
        np.maximum(roomy.log["tokens_out"] - 1, 0).sum()
    )


def test_a_tiny_kv_cache_preempts_and_every_record_counts_the_same(cramped):
    capacity = cramped.kv_capacity_tokens["main"]
    assert 2000 < capacity <= 3000
    preempted = len(cramped.preemptions)
    assert preempted > 0
    assert int(cramped.timeline["preemptions"].sum()) == preempted == int(cramped.log["preemptions"].sum())
    assert (cramped.preemptions["pool"] == "main").all()
    utilization = cramped.timeline["kv_cache_utilization"]
    assert ((utilization >= 0) & (utilization <= 1)).all() and utilization.max() > 0.9
    assert (cramped.iterations["kv_tokens"] <= capacity).all()


def test_engine_timeline_splits_the_timeline_by_pool(cramped):
    table = engine_timeline(cramped)
    assert list(table.columns) == list(ENGINE_POOL_TIMELINE_COLUMNS)
    assert (table["pool"] == "main").all() and len(table) == len(cramped.timeline)
    for name in ("kv_cache_utilization", "running_seqs"):
        np.testing.assert_allclose(table[name], cramped.timeline[name], rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(table["preemptions"], cramped.timeline["preemptions"])
    np.testing.assert_allclose(
        table["waiting_seqs"], cramped.timeline["queue_length"], rtol=1e-12, atol=1e-12
    )
    coarse = engine_timeline(cramped, step_s=7.5)
    step_widths = np.diff(np.append(coarse["t_s"].to_numpy(), cramped.horizon_s))
    assert np.dot(coarse["running_seqs"], step_widths) == pytest.approx(
        np.dot(table["running_seqs"], widths(cramped)), rel=1e-12
    )
    assert coarse["preemptions"].sum() == len(cramped.preemptions)


def test_engine_timeline_of_a_cascade_puts_each_wait_in_its_pool():
    arrivals = replay_arrivals(300, 3.0).iloc[:150]
    config = PlatformConfig(
        pool=continuous(), network_hop_s=HOP_S, cascade=CascadeConfig(small=continuous(name="small"))
    )
    result = simulate(arrivals, config, seed=1, horizon_s=40.0)
    table = engine_timeline(result)
    assert set(table["pool"]) == {"main", "small"}
    totals = table.groupby("t_s", sort=True)[["waiting_seqs", "running_seqs"]].sum()
    np.testing.assert_allclose(
        totals["waiting_seqs"], result.timeline["queue_length"], rtol=1e-12, atol=1e-12
    )
    np.testing.assert_allclose(
        totals["running_seqs"], result.timeline["running_seqs"], rtol=1e-12, atol=1e-12
    )
    escalated = result.log["escalated_s"].notna() & (result.log["outcome"] == "completed")
    answered = result.log.loc[escalated & (result.log["model"] == "main")]
    assert len(answered)  # the large model makes its own first token, after the escalation
    assert (answered["first_token_s"] >= answered["escalated_s"]).all() and answered["ttft_s"].notna().all()


def test_a_request_too_long_for_the_cache_leaves_the_line_at_once():
    arrivals = replay_arrivals(300, 3.0).iloc[:40].copy()
    arrivals.loc[5, "tokens_in"] = 5000
    result = run(continuous(utilization=tiny_cache(3000)), arrivals)
    log = result.log
    assert log.loc[5, "reject_reason"] == "too_long" and np.isnan(log.loc[5, "ttft_s"])
    served = log["reject_reason"] != "too_long"
    waits = (log["model_start_s"] - log["features_ready_s"])[served].sum()
    assert np.dot(result.timeline["queue_length"], widths(result)) == pytest.approx(waits, rel=1e-9)
    assert littles_law(log, result.timeline, horizon_s=result.horizon_s)["relative_gap"] == pytest.approx(
        0.0, abs=1e-9
    )


# -- metrics on hand-built tables ---------------------------------------------------------------------


def hand_log() -> pd.DataFrame:
    rng = np.random.default_rng(5)
    n = 40
    outcome = np.where(np.arange(n) % 7 == 3, "rejected", "completed")
    completed = outcome == "completed"
    tokens_out = rng.integers(1, 50, n)
    ttft = np.where(completed, rng.uniform(0.05, 2.0, n), np.nan)
    tpot = np.where(completed & (tokens_out >= 2), rng.uniform(0.01, 0.2, n), np.nan)
    return pd.DataFrame(
        {
            "class_name": np.where(np.arange(n) % 3 == 0, "paid", "free").astype(object),
            "arrived_s": np.sort(rng.uniform(0, 100, n)),
            "outcome": outcome,
            "tokens_out": tokens_out,
            "ttft_s": ttft,
            "tpot_s": tpot,
        }
    )


def test_token_latency_percentiles_by_class_agree_with_numpy():
    log = hand_log()
    table = token_latency_percentiles(log, (0.5, 0.9), by="class_name")
    assert list(table.index.names) == ["class_name", "measure"]
    for name in ("free", "paid"):
        mine = log[log["class_name"] == name]
        for measure in ("ttft", "tpot"):
            values = mine[f"{measure}_s"].dropna().to_numpy()
            assert table.loc[(name, measure)].tolist() == pytest.approx(
                np.quantile(values, [0.5, 0.9]).tolist()
            )
    overall = token_latency_percentiles(log, (0.5,))
    assert overall.loc["ttft", "p50_s"] == pytest.approx(np.median(log["ttft_s"].dropna()))


def test_token_goodput_counts_arrivals_meeting_both_slos():
    log = hand_log()
    ttft_slo, tpot_slo, start, end = 1.0, 0.1, 10.0, 90.0
    inside = (log["arrived_s"] >= start) & (log["arrived_s"] < end)
    good = (
        (log["outcome"] == "completed")
        & (log["ttft_s"] <= ttft_slo)
        & ((log["tpot_s"] <= tpot_slo) | (log["tokens_out"] == 1))
    )
    expected = int((inside & good).sum()) / (end - start)
    assert expected > 0
    assert token_goodput_per_s(log, ttft_slo, tpot_slo, start, end) == pytest.approx(expected)


def hand_runs() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Replica 0 of pool a: a decode run, a prefill-only iteration that stalls the one sequence left,
    a decode run, an idle gap, a prefill and a decode run; replica 0 of pool b: one decode run."""
    iterations = pd.DataFrame(
        [
            ("a", 0, 0.0, 1.0, 10, 2, 0, 100),
            ("a", 0, 1.0, 1.5, 0, 0, 300, 400),
            ("a", 0, 1.5, 2.5, 5, 3, 0, 420),
            ("a", 0, 2.8, 3.0, 0, 0, 50, 60),
            ("a", 0, 3.0, 3.3, 3, 1, 0, 63),
            ("b", 0, 0.0, 0.4, 4, 2, 0, 30),
        ],
        columns=list(ITERATION_COLUMNS),
    )
    batches = pd.DataFrame(
        {
            "pool": ["a", "a", "a", "a", "b", "b"],
            "replica": [0, 0, 0, 0, 0, 0],
            "start_s": [0.0, 0.0, 1.0, 2.8, 0.0, 0.0],
            "end_s": [1.0, 2.5, 2.5, 3.3, 0.4, 0.4],
            "size": [1, 1, 1, 1, 1, 1],
        }
    )
    return iterations, batches


def test_inter_token_latency_weighs_each_token_and_charges_prefill_stalls():
    iterations, batches = hand_runs()
    tokens = np.concatenate(
        [
            np.full(20, 0.1),  # 10 steps x 2 sequences in 1 s
            [0.2 + 0.5],  # the sequence left from the first run waited through the prefill
            np.full(14, 0.2),  # the rest of 5 steps x 3 sequences in 1 s
            np.full(3, 0.1),  # after the idle gap nothing was stalled
            np.full(8, 0.1),  # pool b
        ]
    )
    quantiles = [0.1, 0.5, 0.9, 0.95, 0.99]
    got = inter_token_latency_percentiles(iterations, batches, quantiles)
    assert got.tolist() == pytest.approx(np.quantile(tokens, quantiles).tolist(), rel=1e-12)
    shuffled = iterations.sample(frac=1.0, random_state=3)
    assert inter_token_latency_percentiles(shuffled, batches, quantiles).tolist() == pytest.approx(
        got.tolist()
    )
    empty = inter_token_latency_percentiles(iterations.iloc[:0], batches, (0.5,))
    assert np.isnan(empty["p50_s"])


def test_inter_token_latency_of_a_run_counts_every_decode_token(cramped):
    runs = cramped.iterations
    got = inter_token_latency_percentiles(runs, cramped.batches, (0.5,))
    assert 0 < got["p50_s"] < cramped.log["tpot_s"].max()


# -- bad inputs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "error", "word"),
    [
        (lambda log: token_goodput_per_s(log, 0.0, 0.1, 0.0, 10.0), ValueError, "ttft_slo_s"),
        (lambda log: token_goodput_per_s(log, 1.0, -1.0, 0.0, 10.0), ValueError, "tpot_slo_s"),
        (lambda log: token_goodput_per_s(log, 1.0, 0.1, 10.0, 10.0), ValueError, "end_s"),
        (lambda log: token_goodput_per_s(log, 1.0, 0.1, float("nan"), 10.0), ValueError, "start_s"),
        (
            lambda log: token_goodput_per_s(log.drop(columns="tpot_s"), 1.0, 0.1, 0.0, 9.0),
            ValueError,
            "tpot_s",
        ),
        (lambda log: token_latency_percentiles(log, by="nope"), ValueError, "by"),
        (lambda log: token_latency_percentiles(log, by=3), TypeError, "by"),
        (lambda log: token_latency_percentiles(log, (0.5, 1.5)), ValueError, "quantiles"),
        (lambda log: engine_timeline(log), TypeError, "result"),
    ],
)
def test_bad_inputs_to_the_token_metrics_are_refused(call, error, word):
    with pytest.raises(error, match=word):
        call(hand_log())


def test_bad_inputs_to_the_engine_metrics_are_refused(cramped):
    iterations, batches = hand_runs()
    with pytest.raises(ValueError, match="step_s"):
        engine_timeline(cramped, step_s=0.0)
    with pytest.raises(ValueError, match="step_s"):
        engine_timeline(cramped, step_s=1e-9)
    with pytest.raises(TypeError, match="batches"):
        inter_token_latency_percentiles(iterations, None)
    with pytest.raises(ValueError, match="iterations lacks"):
        inter_token_latency_percentiles(iterations.drop(columns="steps"), batches)
    with pytest.raises(ValueError, match="batches lacks"):
        inter_token_latency_percentiles(iterations, batches.drop(columns="end_s"))
    bad = iterations.copy()
    bad.loc[0, "steps"] = -1
    with pytest.raises(ValueError, match="steps >= 0"):
        inter_token_latency_percentiles(bad, batches)
    with pytest.raises(ValueError, match="quantiles"):
        inter_token_latency_percentiles(iterations, batches, ())
