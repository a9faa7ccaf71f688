"""Prefill/decode disaggregation: two runs of the engine joined by request id (``scaleplay.disagg``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import make_arrivals, poisson_arrivals
from scaleplay.config import AutoscalerConfig
from scaleplay.disagg import (
    DISAGG_LOG_COLUMNS,
    SPLIT_COLUMNS,
    TRADEOFF_COLUMNS,
    DisaggregatedConfig,
    best_split,
    disaggregation_table,
    goodput_per_gpu,
    simulate_disaggregated,
)
from scaleplay.metrics import token_goodput_per_s, token_latency_percentiles
from scaleplay.profiles import AffineServiceTime
from scaleplay.schema import OUTCOMES
from scaleplay.sim.continuous import StepCosts
from scaleplay.simulator import BatcherConfig, ContinuousBatcherConfig, PlatformConfig, PoolConfig, simulate
from scaleplay.steptime import ExponentialStepTime, load_step_profile

STEP = load_step_profile("h100-80gb", "Llama-3.1-8B", 1)
BATCHER = ContinuousBatcherConfig()
NVLINK_BYTES_PER_S = 450e9
NETWORK_BYTES_PER_S = 25e9  # 200 Gb/s


def config(
    prefill: int = 1, decode: int = 1, link: float = NETWORK_BYTES_PER_S, latency: float = 0.0, **pools
):
    return DisaggregatedConfig(
        PoolConfig(prefill, pools.get("prefill_step", STEP), pools.get("prefill_batcher", BATCHER)),
        PoolConfig(decode, pools.get("decode_step", STEP), pools.get("decode_batcher", BATCHER)),
        link,
        latency,
    )


# --------------------------------------------------------------------------------------- one request


@pytest.mark.parametrize("link, latency", [(NETWORK_BYTES_PER_S, 0.0), (NVLINK_BYTES_PER_S, 0.002)])
def test_a_lone_request_takes_a_prefill_the_link_and_its_decode_steps(link, latency):
    prompt, answer = 2000, 50
    costs = StepCosts(STEP)
    log = simulate_disaggregated(
        make_arrivals([0.5], tokens_in=[prompt], tokens_out=[answer]),
        config(link=link, latency=latency),
        seed=1,
    ).log
    row = log.iloc[0]
    prefill_s = costs.iteration_s(prompt, 0, prompt)
    transfer_s = prompt * STEP.model.kv_bytes_per_token / link + latency
    # on the decode replica: one new token over the sent prompt's context (a decode step's work), then
    # the rest one decode step each
    decode_s = costs.iteration_s(1, 0, prompt + 1) + costs.decode_run_s(1, prompt + 2, answer - 2)
    assert row.outcome == "completed" and row.stage == "decode"
    assert row.ttft_s == pytest.approx(prefill_s, rel=1e-12)
    assert row.first_token_s == pytest.approx(0.5 + prefill_s, rel=1e-12)
    assert row.transfer_s == pytest.approx(transfer_s, rel=1e-12)
    assert (
        row.decode_arrived_s == row.decode_start_s == pytest.approx(row.first_token_s + transfer_s, rel=1e-12)
    )
    assert row.tpot_s == pytest.approx((transfer_s + decode_s) / (answer - 1), rel=1e-9)
    assert row.latency_s == pytest.approx(prefill_s + transfer_s + decode_s, rel=1e-9)
    assert (row.prefill_replica, row.decode_replica, row.preemptions) == (0, 0, 0)


def test_a_one_token_answer_never_leaves_the_prefill_pool():
    arrivals = make_arrivals([0.0, 0.1], tokens_in=[300, 300], tokens_out=[1, 0])
    result = simulate_disaggregated(arrivals, config(), seed=1)
    log = result.log
    assert (log.outcome == "completed").all() and (log.stage == "prefill").all()
    assert log.transfer_s.isna().all() and log.tpot_s.isna().all() and (log.decode_replica == -1).all()
    assert (log.last_token_s == log.first_token_s).all()
    assert len(result.decode.log) == 0


def test_a_prefix_cache_on_the_prefill_side_still_skips_its_tokens():
    arrivals = make_arrivals([0.0], tokens_in=[3000], tokens_out=[10])
    arrivals["cached_tokens"] = np.array([2500])
    row = simulate_disaggregated(arrivals, config(), seed=1).log.iloc[0]
    assert row.ttft_s == pytest.approx(StepCosts(STEP).iteration_s(500, 0, 3000), rel=1e-12)
    # the whole prompt's KV crosses the link, cached or not
    assert row.transfer_s == pytest.approx(3000 * STEP.model.kv_bytes_per_token / NETWORK_BYTES_PER_S)


def test_transfer_time_scales_with_the_bytes_sent():
    slow, fast = config(link=10e9, latency=0.003), config(link=40e9, latency=0.003)
    base = slow.transfer_s(1000) - 0.003
    assert slow.transfer_s(4000) - 0.003 == pytest.approx(4 * base, rel=1e-12)
    assert base == pytest.approx(1000 * STEP.model.kv_bytes_per_token / 10e9, rel=1e-12)
    assert fast.transfer_s(1000) - 0.003 == pytest.approx(base / 4, rel=1e-12)
    np.testing.assert_allclose(slow.transfer_s([1000, 4000]), [slow.transfer_s(1000), slow.transfer_s(4000)])
    assert slow.transfer_s(0) == 0.003
    with pytest.raises(ValueError, match="prompt_tokens must be finite and >= 0"):
        slow.transfer_s([10, -1])
    # in a run, a slower link leaves TTFT alone and adds its extra seconds to the decode side
    arrivals = make_arrivals([0.0], tokens_in=[4000], tokens_out=[21])
    a, b = (simulate_disaggregated(arrivals, c, seed=1).log.iloc[0] for c in (slow, fast))
    assert a.ttft_s == b.ttft_s
    extra = slow.transfer_s(4000) - fast.transfer_s(4000)
    assert a.tpot_s - b.tpot_s == pytest.approx(extra / 20, rel=1e-9)
    assert a.latency_s - b.latency_s == pytest.approx(extra, rel=1e-9)


# ------------------------------------------------------------------------------- the join, the outcomes


def test_every_request_ends_once_and_the_stages_join_by_id():
    arrivals = poisson_arrivals(6.0, 400, seed=4, tokens_in=0, tokens_out=0)
    draws = np.random.default_rng(4)
    arrivals["tokens_in"] = draws.integers(1, 6000, len(arrivals))
    arrivals["tokens_out"] = draws.integers(0, 400, len(arrivals))
    arrivals["request_id"] = arrivals["request_id"] * 7 + 3  # ids need not be 0, 1, 2...
    arrivals.loc[5, "tokens_in"] = 1_000_000  # too long for the prefill pool's cache
    # the decode pool's small cache refuses some long answers the prefill pool took
    small = ContinuousBatcherConfig(gpu_memory_utilization=0.21)  # 5,632 tokens
    cfg = config(prefill=1, decode=4, latency=0.5, decode_batcher=small)  # a slow link: some still on it
    horizon_s = float(arrivals.t_s.iloc[300])
    result = simulate_disaggregated(arrivals, cfg, seed=2, horizon_s=horizon_s)
    log = result.log
    assert list(log.columns) == list(DISAGG_LOG_COLUMNS)
    assert log.request_id.tolist() == arrivals.request_id.tolist()[:300]  # arrived before the horizon
    assert log.outcome.isin(OUTCOMES).all() and log.stage.isin(["prefill", "transfer", "decode"]).all()
    counts = log.outcome.value_counts()
    assert counts.sum() == len(log) == 300
    stages = log.groupby(["stage", "outcome"]).size()
    for stage, outcome in [("prefill", "completed"), ("prefill", "rejected"), ("prefill", "in_flight"),
                           ("transfer", "in_flight"), ("decode", "completed"), ("decode", "rejected"),
                           ("decode", "in_flight")]:  # fmt: skip
        assert stages.get((stage, outcome), 0) > 0, (stage, outcome)
    # where each stopped
    one = result.prefill.log.set_index("request_id")
    two = result.decode.log.set_index("request_id")
    assert log.loc[log.stage == "prefill", "outcome"].tolist() == [
        "completed" if done and out <= 1 else one.outcome[i]
        for i, done, out in zip(
            log.request_id[log.stage == "prefill"],
            one.outcome[log.request_id[log.stage == "prefill"]] == "completed",
            log.tokens_out[log.stage == "prefill"],
            strict=True,
        )
    ]
    sent = log[log.stage != "prefill"]
    assert (one.outcome[sent.request_id] == "completed").all() and (sent.tokens_out >= 2).all()
    assert set(two.index) == set(log.request_id[log.stage == "decode"])
    in_transfer = log[log.stage == "transfer"]
    assert (in_transfer.outcome == "in_flight").all() and (in_transfer.decode_arrived_s >= horizon_s).all()
    decoded = log[log.stage == "decode"].set_index("request_id")
    assert (decoded.outcome == two.outcome[decoded.index]).all()
    assert (decoded.reject_reason == two.reject_reason[decoded.index]).all()
    rejected_late = decoded[decoded.outcome == "rejected"]
    assert len(rejected_late) and (rejected_late.reject_reason == "too_long").all()
    assert log.reject_reason[log.request_id == 38].item() == "too_long"  # row 5 (id 5 x 7 + 3)
    # the decode pool saw each request's prompt plus its first token, and the rest of its answer
    np.testing.assert_array_equal(two.tokens_in, one.tokens_in[two.index] + 1)
    np.testing.assert_array_equal(two.tokens_out, log.set_index("request_id").tokens_out[two.index] - 1)
    # a completed request's stamps come in order, and its measures follow from them
    done = log[log.outcome == "completed"]
    answer = done[done.tokens_out >= 2]
    assert len(answer) > 50
    for earlier, later in [("arrived_s", "prefill_start_s"), ("prefill_start_s", "first_token_s"),
                           ("first_token_s", "decode_arrived_s"), ("decode_arrived_s", "decode_start_s"),
                           ("decode_start_s", "last_token_s")]:  # fmt: skip
        assert (answer[later] >= answer[earlier]).all(), (earlier, later)
    np.testing.assert_allclose(
        answer.tpot_s, (answer.last_token_s - answer.first_token_s) / (answer.tokens_out - 1)
    )
    np.testing.assert_allclose(done.latency_s, done.last_token_s - done.arrived_s)
    np.testing.assert_allclose(done.ttft_s, done.first_token_s - done.arrived_s)
    assert log.loc[log.outcome != "completed", ["ttft_s", "tpot_s", "latency_s"]].isna().all().all()
    # the metrics read the log as they read an engine's
    assert token_latency_percentiles(log).shape == (2, 3)


def test_same_seed_same_run():
    arrivals = poisson_arrivals(20.0, 200, seed=3, tokens_in=1500, tokens_out=80)
    cfg = DisaggregatedConfig(
        PoolConfig(2, STEP, BATCHER, policy="power_of_two"),
        PoolConfig(3, STEP, BATCHER, policy="power_of_two"),
        25e9,
    )
    a, b = (simulate_disaggregated(arrivals, cfg, seed=9) for _ in range(2))
    pd.testing.assert_frame_equal(a.log, b.log)
    assert a.prefill.log.replica.nunique() == 2 and a.decode.log.replica.nunique() == 3
    # the seed reaches both stages (power of two draws its pair of replicas), each from its own stream
    other = simulate_disaggregated(arrivals, cfg, seed=10).log
    assert (other.prefill_replica != a.log.prefill_replica).any()
    assert (other.decode_replica != a.log.decode_replica).any()
    assert not np.array_equal(a.log.prefill_replica, a.log.decode_replica)


def test_goodput_per_gpu_counts_both_pools():
    arrivals = poisson_arrivals(10.0, 100, seed=5, tokens_in=1000, tokens_out=50)
    step2 = load_step_profile("h100-80gb", "Llama-3.1-8B", 2)
    cfg = config(prefill=1, decode=2, decode_step=step2)
    assert (cfg.prefill_gpus, cfg.decode_gpus, cfg.gpus) == (1, 4, 5)
    result = simulate_disaggregated(arrivals, cfg, seed=1)
    end_s = float(arrivals.t_s.iloc[-1]) + 1e-9
    good = token_goodput_per_s(result.log, 1.0, 0.05, 0.0, end_s)
    assert good > 0
    assert result.goodput_per_gpu(1.0, 0.05, 0.0, end_s) == pytest.approx(good / 5, rel=1e-15)
    assert goodput_per_gpu(result.log, 1.0, 0.05, 0.0, end_s, 5) == pytest.approx(good / 5, rel=1e-15)


# -------------------------------------------------------------------------------------------- bad input


def test_bad_configs_are_refused_naming_the_field():
    seventy = load_step_profile("h100-80gb", "Llama-3.1-70B", 4)
    with pytest.raises(ValueError, match=r"decode\.service\.model must be .*'Llama-3.1-8B'.*Llama-3.1-70B"):
        config(decode_step=seventy)
    fp8 = load_step_profile("h100-80gb", "Llama-3.1-8B", 1, kv_dtype="fp8")
    with pytest.raises(ValueError, match="another precision"):
        config(decode_step=fp8)
    static = PoolConfig(1, AffineServiceTime(fixed_s=0.01, per_item_s=0.001), BatcherConfig())
    with pytest.raises(
        ValueError, match=r"prefill\.batcher must be a ContinuousBatcherConfig.*BatcherConfig"
    ):
        DisaggregatedConfig(static, PoolConfig(1, STEP, BATCHER), 25e9)
    with pytest.raises(TypeError, match=r"decode must be a PoolConfig"):
        DisaggregatedConfig(PoolConfig(1, STEP, BATCHER), "decode", 25e9)
    memoryless = PoolConfig(1, ExponentialStepTime(0.01), BATCHER)
    with pytest.raises(TypeError, match=r"decode\.service must be a StepTimeModel"):
        DisaggregatedConfig(PoolConfig(1, STEP, BATCHER), memoryless, 25e9)
    scaled = PoolConfig(1, STEP, BATCHER, autoscaler=AutoscalerConfig(min_replicas=1, max_replicas=3))
    with pytest.raises(ValueError, match=r"prefill\.autoscaler must be None"):
        DisaggregatedConfig(scaled, PoolConfig(1, STEP, BATCHER), 25e9)
    for bandwidth, message in [(-1.0, r"link_bytes_per_s must be > 0, got -1\.0"), (0, "link_bytes_per_s"),
                               (float("inf"), "link_bytes_per_s must be a finite")]:  # fmt: skip
        with pytest.raises(ValueError, match=message):
            config(link=bandwidth)
    with pytest.raises(TypeError, match="link_bytes_per_s must be a real number"):
        config(link="fast")
    with pytest.raises(ValueError, match="link_latency_s must lie in"):
        config(latency=-0.001)
    with pytest.raises(TypeError, match="config must be a DisaggregatedConfig"):
        simulate_disaggregated(make_arrivals([0.0]), PlatformConfig(PoolConfig(1, STEP, BATCHER)), seed=1)
    with pytest.raises(ValueError, match="seed must be >= 0"):
        simulate_disaggregated(make_arrivals([0.0]), config(), seed=-1)
    with pytest.raises(ValueError, match="gpus must be > 0"):
        goodput_per_gpu(simulate_disaggregated(make_arrivals([0.0]), config(), seed=1).log, 1, 1, 0, 1, 0)


def test_bad_sweeps_are_refused():
    arrivals = make_arrivals([0.0, 1.0])
    step4 = load_step_profile("h100-80gb", "Llama-3.1-70B", 4)
    with pytest.raises(ValueError, match="splits .* must be a multiple of tensor_parallel=4, got 10"):
        best_split(arrivals, step4, 10, 1.0, 0.1, link_bytes_per_s=25e9)
    with pytest.raises(ValueError, match="splits must be >= 2"):
        best_split(arrivals, STEP, 1, 1.0, 0.1, link_bytes_per_s=25e9)
    with pytest.raises(ValueError, match=r"splits\[1\]\[1\] must be >= 1, got 0"):
        best_split(arrivals, STEP, [(1, 1), (2, 0)], 1.0, 0.1, link_bytes_per_s=25e9)
    with pytest.raises(TypeError, match=r"splits\[0\] must be a \(prefill_replicas, decode_replicas\) pair"):
        best_split(arrivals, STEP, [3], 1.0, 0.1, link_bytes_per_s=25e9)
    with pytest.raises(ValueError, match="tpot_slo_s must be > 0"):
        best_split(arrivals, STEP, 2, 1.0, 0.0, link_bytes_per_s=25e9)
    with pytest.raises(ValueError, match="link_bytes_per_s must be > 0"):
        best_split(arrivals, STEP, 2, 1.0, 0.1, link_bytes_per_s=-5.0)
    with pytest.raises(TypeError, match="decode_batcher must be a ContinuousBatcherConfig"):
        best_split(arrivals, STEP, 2, 1.0, 0.1, link_bytes_per_s=25e9, decode_batcher=BatcherConfig())
    with pytest.raises(TypeError, match="step must be a StepTimeModel"):
        best_split(arrivals, ExponentialStepTime(0.01), 2, 1.0, 0.1, link_bytes_per_s=25e9)
    with pytest.raises(TypeError, match=r"slos\['x'\] must be a \(ttft_slo_s, tpot_slo_s\) pair"):
        disaggregation_table({"a": arrivals}, STEP, 2, {"x": 0.1}, link_bytes_per_s=25e9)
    with pytest.raises(TypeError, match=r"gpus must be a GPU count \(int\)"):
        disaggregation_table({"a": arrivals}, STEP, [(1, 1)], {"x": (1.0, 0.1)}, link_bytes_per_s=25e9)
    with pytest.raises(TypeError, match="workloads must be a non-empty mapping"):
        disaggregation_table({}, STEP, 2, {"x": (1.0, 0.1)}, link_bytes_per_s=25e9)


# -------------------------------------------------------------------------------- the planner's knob


def test_best_split_ranks_the_splits_beside_the_colocated_pool():
    arrivals = poisson_arrivals(6.0, 120, seed=6, tokens_in=2000, tokens_out=100)
    table = best_split(arrivals, STEP, 4, 1.0, 0.03, link_bytes_per_s=25e9, start_s=2.0, seed=3)
    assert list(table.columns) == list(SPLIT_COLUMNS)
    assert table[["prefill_replicas", "decode_replicas"]].values.tolist() == [[1, 3], [2, 2], [3, 1], [0, 0]]
    assert table.design.tolist() == ["disaggregated"] * 3 + ["colocated"]
    assert (table.gpus == 4).all() and (table.replicas == 4).all()
    assert table.best.sum() == 1
    split = table[table.design == "disaggregated"]
    assert table.goodput_per_gpu[table.best].item() == split.goodput_per_gpu.max()
    # each row is what a direct run gives: the colocated pool ...
    end_s = float(np.nextafter(arrivals.t_s.max(), np.inf))
    alone = simulate(arrivals, PlatformConfig(PoolConfig(4, STEP, BATCHER)), seed=3).log
    row = table.iloc[3]
    assert row.goodput_per_s == token_goodput_per_s(alone, 1.0, 0.03, 2.0, end_s)
    assert row.goodput_per_gpu == row.goodput_per_s / 4
    assert row.p99_tpot_s == token_latency_percentiles(alone, (0.99,)).loc["tpot", "p99_s"]
    # ... and each split
    log = simulate_disaggregated(arrivals, config(2, 2), seed=3).log
    assert table.goodput_per_s[1] == token_goodput_per_s(log, 1.0, 0.03, 2.0, end_s)
    inside = ((arrivals.t_s >= 2.0) & (arrivals.t_s < end_s)).sum()
    assert table.attainment[1] == pytest.approx(table.goodput_per_s[1] * (end_s - 2.0) / inside, rel=1e-12)
    # pairs given: one colocated row per total
    pairs = best_split(arrivals, STEP, [(1, 1), (1, 2), (2, 1)], 1.0, 0.03, link_bytes_per_s=25e9)
    assert pairs.design.tolist() == ["disaggregated"] * 3 + ["colocated"] * 2
    assert pairs.replicas.tolist() == [2, 3, 3, 2, 3]


# --------------------------------------------------------------------------- where it wins, where it loses


def test_long_prompts_under_a_tight_tpot_slo_favour_disaggregation():
    # 4,000-token prompts at 6/s on 4 H100s: on a colocated replica prompt chunks share the decode
    # iterations and stretch them; a decode pool of 3 never prefills
    arrivals = poisson_arrivals(6.0, 240, seed=1, tokens_in=4000, tokens_out=200)
    table = best_split(arrivals, STEP, [(1, 3)], 2.0, 0.02, link_bytes_per_s=NETWORK_BYTES_PER_S, start_s=5.0)
    split, alone = table.iloc[0], table.iloc[1]
    assert (split.design, alone.design, split.gpus, alone.gpus) == ("disaggregated", "colocated", 4, 4)
    assert split.goodput_per_gpu > 1.05 * alone.goodput_per_gpu
    assert split.p99_tpot_s < alone.p99_tpot_s
    assert split.p99_ttft_s > alone.p99_ttft_s  # the price: one prefill replica instead of four


def test_short_prompts_on_a_small_fleet_favour_the_colocated_pool():
    # 200-token prompts at 8/s on 2 GPUs: the lone decode replica carries every answer, its batch
    # grows and its steps pass the TPOT SLO, while the prefill replica idles
    arrivals = poisson_arrivals(8.0, 240, seed=1, tokens_in=200, tokens_out=200)
    slos = {"tight TPOT": (2.0, 0.02), "loose": (5.0, 0.2)}
    table = disaggregation_table(
        {"short": arrivals}, STEP, 2, slos, link_bytes_per_s=NETWORK_BYTES_PER_S, start_s=5.0
    )
    assert list(table.columns) == list(TRADEOFF_COLUMNS)
    tight, loose = table.iloc[0], table.iloc[1]
    assert (tight.best_prefill_replicas, tight.best_decode_replicas, tight.gpus) == (1, 1, 2)
    assert tight.winner == "colocated" and tight.gain < 0.5
    assert tight.disaggregated_p99_tpot_s > 0.02 > tight.colocated_p99_tpot_s
    # a loose SLO: every request meets it either way, so the same goodput per GPU
    assert loose.winner == "tie" and loose.gain == 1.0
    assert loose.colocated_goodput_per_gpu == tight.colocated_goodput_per_gpu


def test_with_short_answers_the_link_decides():
    # Llama-3.1-70B on 4 H100s per replica, 4,000-token prompts and 20-token answers: the 1.3 GB of KV
    # a request sends takes 2.9 ms over NVLink and 52 ms over a 200 Gb/s network, spread over 19
    # tokens' TPOT; at a 32 ms TPOT SLO the split wins on the first and loses on the second
    seventy = load_step_profile("h100-80gb", "Llama-3.1-70B", 4)
    arrivals = poisson_arrivals(3.0, 120, seed=1, tokens_in=4000, tokens_out=20)
    fast, slow = (
        best_split(arrivals, seventy, [(2, 2)], 4.0, 0.032, link_bytes_per_s=link, start_s=5.0)
        for link in (NVLINK_BYTES_PER_S, NETWORK_BYTES_PER_S)
    )
    assert fast.iloc[1].goodput_per_gpu == slow.iloc[1].goodput_per_gpu  # the colocated pool has no link
    assert fast.iloc[0].goodput_per_gpu > 1.2 * fast.iloc[1].goodput_per_gpu
    assert slow.iloc[0].goodput_per_gpu < 0.8 * slow.iloc[1].goodput_per_gpu
    assert fast.iloc[0].p99_ttft_s == slow.iloc[0].p99_ttft_s  # the first token never crosses the link
