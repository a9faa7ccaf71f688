"""Speculative decoding priced by the step-time model: the expected tokens per step, and where it pays;
and in the continuous-batching engine (``SpeculativeStepTime``, ``sim.speculative_costs``)."""

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import assert_outcomes_balance, make_arrivals, poisson_arrivals
from scaleplay.levers import UNDER_LOAD_COLUMNS, speculation_under_load
from scaleplay.sim.continuous import StepCosts
from scaleplay.sim.speculative_costs import SpeculativeCosts
from scaleplay.simulator import BatcherConfig, ContinuousBatcherConfig, PlatformConfig, PoolConfig, simulate
from scaleplay.speculative import (
    SpeculativeStepTime,
    break_even_batch,
    expected_tokens_per_step,
    speculation_table,
    time_per_token_s,
)
from scaleplay.steptime import StepTimeModel, load_step_profile

TARGET = load_step_profile("h100-80gb", "Llama-3.1-70B", 4)
DRAFT = load_step_profile("h100-80gb", "Llama-3.1-8B", 1)
SPEC = dict(draft_tokens=4, acceptance=0.8, context_tokens=1000.0)


def test_expected_tokens_match_the_closed_form_and_its_limits():
    assert expected_tokens_per_step(4, 0.8) == pytest.approx(1 + 0.8 + 0.64 + 0.512 + 0.4096)
    assert expected_tokens_per_step(4, 0.0) == 1.0  # every guess rejected: the target's own token
    assert expected_tokens_per_step(4, 1.0) == 5.0  # every guess kept
    assert expected_tokens_per_step(0, 0.7) == 1.0  # no draft: plain decoding


@given(st.integers(0, 64), st.floats(0.0, 1.0))
def test_expected_tokens_lie_between_one_and_k_plus_one(k, alpha):
    tokens = expected_tokens_per_step(k, alpha)
    assert 1.0 - 1e-12 <= tokens <= k + 1 + 1e-12


def test_without_a_draft_the_two_times_agree():
    without, with_ = time_per_token_s(
        TARGET, DRAFT, draft_tokens=0, acceptance=0.5, batch=8, context_tokens=500
    )
    assert with_ == pytest.approx(without, rel=1e-12)


def test_the_times_are_the_step_models_own():
    without, with_ = time_per_token_s(TARGET, DRAFT, batch=2, **SPEC)
    assert without == pytest.approx(TARGET.decode_step_time_s(2, 2000.0))
    verify = TARGET.step_time_s(8, 2, 2 * 1004.0)
    draft = 4 * DRAFT.decode_step_time_s(2, 2000.0)
    assert with_ == pytest.approx((verify + draft) / expected_tokens_per_step(4, 0.8))


def test_speculation_pays_for_small_batches_and_stops_for_large_ones():
    table = speculation_table(TARGET, DRAFT, batches=[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024], **SPEC)
    # memory-bound: checking 5 positions costs about one step (an 8B draft with the fitted overhead of
    # 7 ms a step eats most of the gain: 1.15x here)
    assert table["speedup"].iloc[0] > 1.1
    assert table["speedup"].iloc[-1] < 1.0  # compute-bound: the rejected guesses are paid in full
    assert (table["speedup"].diff().dropna() <= 1e-12).all()  # it only falls with the batch
    first = break_even_batch(TARGET, DRAFT, **SPEC)
    assert first is not None
    for b in (first - 1, first):  # the bisection's answer is the first batch that does not pay
        without, with_ = time_per_token_s(TARGET, DRAFT, batch=b, **SPEC)
        assert (with_ < without) == (b == first - 1)


def test_a_draft_rarely_right_never_pays_and_a_perfect_one_pays_longer():
    assert break_even_batch(TARGET, DRAFT, draft_tokens=4, acceptance=0.0, context_tokens=1000.0) == 1
    poor = break_even_batch(TARGET, DRAFT, **SPEC)
    good = break_even_batch(TARGET, DRAFT, draft_tokens=4, acceptance=0.95, context_tokens=1000.0)
    assert good is None or good > poor


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"draft_tokens": -1}, ValueError, "draft_tokens"),
        ({"draft_tokens": 2.5}, TypeError, "draft_tokens"),
        ({"acceptance": 1.5}, ValueError, "acceptance"),
        ({"acceptance": float("nan")}, ValueError, "acceptance"),
        ({"batch": 0}, ValueError, "batch"),
        ({"context_tokens": -5.0}, ValueError, "context_tokens"),
    ],
)
def test_bad_inputs_name_the_parameter(kwargs, error, match):
    args = dict(draft_tokens=4, acceptance=0.8, batch=4, context_tokens=100.0) | kwargs
    with pytest.raises(error, match=match):
        time_per_token_s(TARGET, DRAFT, **args)


def test_a_prompt_pass_cost_is_refused_under_speculation():
    costly = dataclasses.replace(DRAFT, prefill_overhead_s=0.01)
    with pytest.raises(ValueError, match=r"draft.prefill_overhead_s must be 0 .* got 0.01"):
        time_per_token_s(TARGET, costly, draft_tokens=4, acceptance=0.8, batch=4, context_tokens=100.0)


def test_models_must_be_step_time_models():
    with pytest.raises(TypeError, match="draft must be a StepTimeModel"):
        time_per_token_s(TARGET, "small", draft_tokens=4, acceptance=0.8, batch=1, context_tokens=1.0)
    with pytest.raises(ValueError, match="batches"):
        speculation_table(TARGET, DRAFT, batches=[], **SPEC)
    with pytest.raises(ValueError, match="max_batch"):
        break_even_batch(TARGET, DRAFT, max_batch=0, **SPEC)


# --------------------------------------------------------------------------------------------------
# Speculative decoding in the continuous-batching engine (SpeculativeStepTime, sim.speculative_costs)
# --------------------------------------------------------------------------------------------------


DRAFT_TP4 = load_step_profile("h100-80gb", "Llama-3.1-8B", 4)
SERVICE = SpeculativeStepTime(TARGET, DRAFT_TP4, draft_tokens=4, acceptance=0.8)


@pytest.fixture(autouse=False)
def scheduler(monkeypatch: pytest.MonkeyPatch) -> None:
    """The plain engine on the simpy scheduler (the compiled loop gives the same tables, compiles slowly)."""
    monkeypatch.setenv("SCALEPLAY_NO_FASTLOOP", "1")


def run(service: object, arrivals: pd.DataFrame, seed: int = 1, **batcher: object) -> pd.DataFrame:
    pool = PoolConfig(1, service, ContinuousBatcherConfig(**batcher))
    return simulate(arrivals, PlatformConfig(pool=pool, network_hop_s=0.0), seed=seed)


def costs(service: SpeculativeStepTime) -> SpeculativeCosts:
    return SpeculativeCosts(service, StepCosts(service.draft), StepCosts(service.target))


def test_a_speculative_service_is_no_step_time_model():
    # the compiled loop takes only StepTimeModel pools (sim.fastloop.eligible): this one stays out
    assert not isinstance(SERVICE, StepTimeModel)
    assert SERVICE.tokens_per_step == expected_tokens_per_step(4, 0.8)
    assert (SERVICE.model, SERVICE.hardware, SERVICE.tensor_parallel) == (TARGET.model, TARGET.hardware, 4)


def test_the_kv_cache_holds_both_models_per_gpu():
    gpu = TARGET.hardware.memory_bytes * 0.9
    for draft in (DRAFT_TP4, DRAFT):  # the draft sharded like the target, or whole on one GPU
        tp = draft.tensor_parallel
        weights = TARGET.model.weight_bytes / 4 + draft.model.weight_bytes / tp
        per_token = TARGET.model.kv_bytes_per_token / 4 + draft.model.kv_bytes_per_token / tp
        service = SpeculativeStepTime(TARGET, draft, draft_tokens=4, acceptance=0.8)
        assert service.kv_blocks(0.9, 16) == int((gpu - weights) // (per_token * 16))
    alone = ContinuousBatcherConfig().kv_blocks(TARGET)
    assert (
        SpeculativeStepTime(TARGET, DRAFT, draft_tokens=4, acceptance=0.8).kv_blocks(0.9, 16)
        < SERVICE.kv_blocks(0.9, 16)
        < alone
    )


def test_engine_iterations_are_time_per_token_s():
    priced = costs(SERVICE)
    for batch, context in ((1, 1000.0), (8, 517.0), (64, 2048.0)):
        _, with_ = time_per_token_s(
            TARGET, DRAFT_TP4, draft_tokens=4, acceptance=0.8, batch=batch, context_tokens=context
        )
        assert priced.iteration_s(0, batch, batch * context) == pytest.approx(with_, rel=1e-12)
    prefill = TARGET.step_time_s(700, 0, 700) + DRAFT_TP4.step_time_s(700, 0, 700)
    assert priced.iteration_s(700, 0, 700.0) == pytest.approx(prefill, rel=1e-12)
    # a mixed iteration: the prompt's extra cost in full, the decodes' at the per-token rate
    decode = priced.iteration_s(0, 8, 8000.0)
    mixed = priced.iteration_s(300, 8, 8300.0)
    assert decode < mixed < decode + priced.iteration_s(300, 0, 300.0)

    def real_s(prefill: int) -> float:  # one verification step of 8 sequences, by hand
        drafting = DRAFT_TP4.step_time_s(prefill, 8, 8300) + 3 * DRAFT_TP4.step_time_s(0, 8, 8300)
        return drafting + TARGET.step_time_s(prefill + 32, 8, 8300 + 32)

    kept = 1 - 1 / expected_tokens_per_step(4, 0.8)
    assert mixed == pytest.approx(real_s(300) - kept * real_s(0), rel=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 512), st.floats(0.0, 1e6), st.integers(0, 3000), st.integers(0, 8), st.floats(0.0, 1.0))
def test_decode_runs_in_closed_form_are_the_sum_of_their_iterations(batch, context, steps, k, alpha):
    priced = costs(SpeculativeStepTime(TARGET, DRAFT_TP4, draft_tokens=k, acceptance=alpha))
    by_step = math.fsum(priced.iteration_s(0, batch, context + batch * j) for j in range(steps))
    assert priced.decode_run_s(batch, context, steps) == pytest.approx(by_step, rel=1e-9, abs=1e-12)
    if steps:
        half = priced.decode_run_s(batch, context, steps // 2)
        assert priced.steps_within(batch, context, steps, half) >= steps // 2
        assert priced.steps_within(batch, context, steps, half * (1 - 1e-9) - 1e-12) < max(steps // 2, 1)


def test_a_lone_request_takes_the_hand_computed_time(scheduler):
    prompt, answer, arrive_s = 900, 40, 0.5
    log = run(SERVICE, make_arrivals(np.array([arrive_s]), tokens_in=prompt, tokens_out=answer)).log
    prefill_s = TARGET.step_time_s(prompt, 0, prompt) + DRAFT_TP4.step_time_s(prompt, 0, prompt)
    decode_s = 0.0
    for context in range(prompt + 1, prompt + answer):  # each later token: 4 draft steps, one verify
        step = 4 * DRAFT_TP4.step_time_s(0, 1, context) + TARGET.step_time_s(4, 1, context + 4)
        decode_s += step / expected_tokens_per_step(4, 0.8)
    row = log.iloc[0]
    assert row["outcome"] == "completed"
    assert row["ttft_s"] == pytest.approx(prefill_s, rel=1e-9)
    assert row["latency_s"] == pytest.approx(prefill_s + decode_s, rel=1e-9)
    assert row["tpot_s"] == pytest.approx(decode_s / (answer - 1), rel=1e-9)


def test_without_drafting_the_engine_is_the_plain_one(scheduler):
    arrivals = poisson_arrivals(3.0, 300, 7, tokens_in=600, tokens_out=120)
    off = SpeculativeStepTime(TARGET, DRAFT_TP4, draft_tokens=0, acceptance=0.3)
    plain, speculative = run(TARGET, arrivals), run(off, arrivals)
    assert (plain.log["outcome"] == "completed").all()
    assert plain.iterations["kv_tokens"].max() < off.kv_blocks(0.9, 16) * 16  # the smaller cache never fills
    pd.testing.assert_frame_equal(plain.log, speculative.log)
    pd.testing.assert_frame_equal(plain.iterations, speculative.iterations)


def test_the_engine_stops_gaining_at_the_break_even_batch(scheduler):
    prompt = 500  # every sequence decodes its one later token at prompt + 1 tokens of context
    first = break_even_batch(TARGET, DRAFT_TP4, draft_tokens=4, acceptance=0.8, context_tokens=prompt + 1)
    assert first is not None and first > 2
    for batch in (1, first - 1, first, 2 * first):
        arrivals = make_arrivals(np.zeros(batch), tokens_in=prompt, tokens_out=2)
        tpot = {
            name: run(service, arrivals, max_batched_tokens=batch * prompt).log["tpot_s"].to_numpy()
            for name, service in (("plain", TARGET), ("speculative", SERVICE))
        }
        assert np.ptp(tpot["plain"]) == 0 and np.ptp(tpot["speculative"]) == 0  # one decode iteration
        assert (tpot["speculative"][0] < tpot["plain"][0]) == (batch < first), batch


def test_runs_keep_their_books_and_repeat(scheduler):
    arrivals = poisson_arrivals(6.0, 400, 3, tokens_in=2000, tokens_out=300)
    small = dict(gpu_memory_utilization=0.55)  # a small cache: preemptions
    first, again = run(SERVICE, arrivals, **small), run(SERVICE, arrivals, **small)
    assert_outcomes_balance(first.log, first.timeline, arrivals)
    assert (first.log["preemptions"] > 0).any()
    pd.testing.assert_frame_equal(first.log, again.log)
    pd.testing.assert_frame_equal(first.iterations, again.iterations)
    done = first.log[first.log["outcome"] == "completed"]
    assert len(done) == len(arrivals)
    # every token made once, but the recomputed ones: a preempted request's later tokens are decoded
    # again only if they were lost, so without preemptions the decode tokens are exactly the answers'
    calm = run(SERVICE, arrivals.assign(t_s=arrivals["t_s"] * 4))
    assert (calm.log["preemptions"] == 0).all()
    made = int((calm.iterations["steps"] * calm.iterations["decode_seqs"]).sum())
    assert made == int((calm.log["tokens_out"] - 1).sum())
    assert int(calm.iterations["prefill_tokens"].sum()) == int(calm.log["tokens_in"].sum())


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"target": "big"}, TypeError, "target must be a StepTimeModel"),
        ({"draft": 8}, TypeError, "draft must be a StepTimeModel"),
        ({"draft": TARGET}, ValueError, "draft must be a smaller model"),
        ({"draft": load_step_profile("a100-80gb", "Llama-3.1-8B", 1)}, ValueError, "draft must run on"),
        ({"draft": load_step_profile("h100-80gb", "Llama-3.1-8B", 8)}, ValueError, "draft.tensor_parallel"),
        ({"draft_tokens": 65}, ValueError, "draft_tokens"),
        ({"draft_tokens": -1}, ValueError, "draft_tokens"),
        ({"draft_tokens": 2.0}, TypeError, "draft_tokens"),
        ({"acceptance": 1.01}, ValueError, "acceptance"),
        ({"acceptance": float("nan")}, ValueError, "acceptance"),
        (
            {"target": dataclasses.replace(TARGET, prefill_overhead_s=0.01)},
            ValueError,
            "target.prefill_overhead_s must be 0 under speculative decoding",
        ),
        (
            {"target": load_step_profile("h100-80gb", "Llama-3.1-70B", 2), "draft": DRAFT},
            ValueError,
            "the weights do not fit",
        ),
    ],
)
def test_bad_speculative_services_are_refused_by_name(kwargs, error, match):
    args = dict(target=TARGET, draft=DRAFT_TP4, draft_tokens=4, acceptance=0.8) | kwargs
    with pytest.raises(error, match=match):
        SpeculativeStepTime(**args)


def test_a_cache_with_no_room_is_refused():
    with pytest.raises(ValueError, match="gpu_memory_utilization=0.45 .* leaves no room"):
        SERVICE.kv_blocks(0.45, 16)
    with pytest.raises(ValueError, match="block_tokens"):
        SERVICE.kv_blocks(0.9, 0)


def test_under_load_speculation_pays_at_low_load_and_loses_as_the_batch_grows():
    loads = {rate: poisson_arrivals(rate, 200, 5, tokens_in=1000, tokens_out=250) for rate in (0.25, 3.0)}
    table = speculation_under_load(
        loads, TARGET, DRAFT_TP4, draft_tokens=4, acceptances=[0.6, 0.8], batcher=ContinuousBatcherConfig()
    )
    assert list(table.columns) == list(UNDER_LOAD_COLUMNS)
    assert table["rate_per_s"].tolist() == [0.25] * 3 + [3.0] * 3
    assert table["acceptance"].fillna(-1.0).tolist() == [-1.0, 0.6, 0.8] * 2  # the target alone first
    alone = table[table["acceptance"].isna()]
    assert (alone["tpot_speedup"] == 1.0).all() and alone["break_even_batch"].isna().all()
    good = table[table["acceptance"] == 0.8].set_index("rate_per_s")
    assert good.loc[0.25, "tpot_speedup"] > 1.1  # a batch of about 2: memory-bound, the draft pays
    assert good.loc[0.25, "mean_decode_batch"] < good.loc[0.25, "break_even_batch"]
    assert good.loc[3.0, "tpot_speedup"] < 1.0  # past the break-even batch: it costs more than it saves
    assert good.loc[3.0, "mean_decode_batch"] > good.loc[3.0, "break_even_batch"]
    poor = table[table["acceptance"] == 0.6]
    assert (poor["tpot_speedup"] < 1.0).all() and (poor["break_even_batch"] == 1.0).all()
    assert (table["completed"] == 1.0).all()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"arrivals": {}}, TypeError, "arrivals"),
        ({"arrivals": {-1.0: make_arrivals(np.array([0.0]))}}, ValueError, "rate_per_s"),
        ({"arrivals": {1.0: [0.0]}}, TypeError, r"arrivals\[1.0\]"),
        ({"acceptances": []}, ValueError, "acceptances"),
        ({"acceptances": [1.2]}, ValueError, "acceptances"),
        ({"batcher": BatcherConfig()}, TypeError, "batcher"),
        ({"replicas": 0}, ValueError, "replicas"),
    ],
)
def test_bad_under_load_inputs_are_refused_by_name(kwargs, error, match):
    args = dict(
        arrivals={1.0: make_arrivals(np.array([0.0]))}, target=TARGET, draft=DRAFT_TP4, draft_tokens=4,
        acceptances=[0.8], batcher=ContinuousBatcherConfig(),
    ) | kwargs  # fmt: skip
    with pytest.raises(error, match=match):
        speculation_under_load(**args)
