"""Speculative decoding priced by the step-time model: the expected tokens per step, and where it pays."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scaleplay.speculative import (
    break_even_batch,
    expected_tokens_per_step,
    speculation_table,
    time_per_token_s,
)
from scaleplay.steptime import load_step_profile

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


def test_models_must_be_step_time_models():
    with pytest.raises(TypeError, match="draft must be a StepTimeModel"):
        time_per_token_s(TARGET, "small", draft_tokens=4, acceptance=0.8, batch=1, context_tokens=1.0)
    with pytest.raises(ValueError, match="batches"):
        speculation_table(TARGET, DRAFT, batches=[], **SPEC)
    with pytest.raises(ValueError, match="max_batch"):
        break_even_batch(TARGET, DRAFT, max_batch=0, **SPEC)
