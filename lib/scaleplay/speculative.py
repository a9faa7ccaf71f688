"""Speculative decoding: a small draft model guesses ``k`` tokens, the large model checks them in one pass.

Each verification step the draft model runs ``k`` decode steps, then the target model runs one pass
over the ``k + 1`` positions of every sequence and keeps the longest prefix of guesses it agrees with,
plus one token of its own. With each guess accepted independently with probability ``alpha``, a step
yields on average (Leviathan, Kalman and Matias, "Fast Inference from Transformers via Speculative
Decoding", ICML 2023)

    tokens(k, alpha) = (1 - alpha^(k+1)) / (1 - alpha)        (k + 1 when alpha = 1)

tokens per sequence. The time per generated token, with ``B`` sequences of ``C`` context tokens each,
priced by two ``steptime.StepTimeModel``:

    without = target.decode_step_time_s(B, B C)
    with    = (k x draft.decode_step_time_s(B, B C) + target.step_time_s(B k, B, B (C + k)))
              / tokens(k, alpha)

The verify pass holds ``B (k + 1)`` positions: each sequence's ``k`` guesses go through the model as a
short prompt chunk would, and its own decode position carries the step model's per-sequence decode
cost once.

**Why it stops paying.** A decode step of a small batch is memory-bound: it streams every weight for
one token a sequence, so checking ``k + 1`` positions costs little more than one. As the batch grows
the pass turns compute-bound, and ``k + 1`` positions cost about ``k + 1`` times one; the guesses
that are thrown away are then paid in full. ``break_even_batch`` finds the batch from which
speculation is no faster.

>>> round(expected_tokens_per_step(4, 0.8), 3)
3.362
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._validate import _kind, check_int, check_probability, check_range
from .profiles import MAX_BATCH_SIZE, MAX_TOKENS
from .steptime import StepTimeModel

__all__ = [
    "expected_tokens_per_step",
    "time_per_token_s",
    "speculation_table",
    "break_even_batch",
]

#: The most tokens one draft may guess in a step.
MAX_DRAFT_TOKENS = 64


def expected_tokens_per_step(draft_tokens: int, acceptance: float) -> float:
    """Tokens a sequence gains per verification step: ``(1 - alpha^(k+1)) / (1 - alpha)``."""
    k = check_int("draft_tokens", draft_tokens, minimum=0, maximum=MAX_DRAFT_TOKENS)
    alpha = check_probability("acceptance", acceptance)
    if alpha == 1.0:
        return float(k + 1)
    return (1.0 - alpha ** (k + 1)) / (1.0 - alpha)


def _check_models(target: object, draft: object) -> None:
    for name, value in (("target", target), ("draft", draft)):
        if not isinstance(value, StepTimeModel):
            raise TypeError(f"{name} must be a StepTimeModel, got {_kind(value)}")


def time_per_token_s(
    target: StepTimeModel,
    draft: StepTimeModel,
    *,
    draft_tokens: int,
    acceptance: float,
    batch: int,
    context_tokens: float,
) -> tuple[float, float]:
    """Seconds per generated token of one sequence, (without, with) speculation, for ``batch``
    sequences of ``context_tokens`` tokens each (module docstring)."""
    _check_models(target, draft)
    tokens = expected_tokens_per_step(draft_tokens, acceptance)
    k = int(draft_tokens)
    b = check_int("batch", batch, minimum=1, maximum=MAX_BATCH_SIZE)
    c = check_range("context_tokens", context_tokens, 0.0, MAX_TOKENS)
    without = float(target.decode_step_time_s(b, b * c))
    drafting = k * float(draft.decode_step_time_s(b, b * c)) if k else 0.0
    verify = float(target.step_time_s(b * k, b, b * (c + k)))
    return without, (drafting + verify) / tokens


def speculation_table(
    target: StepTimeModel,
    draft: StepTimeModel,
    *,
    draft_tokens: int,
    acceptance: float,
    context_tokens: float,
    batches: object = (1, 2, 4, 8, 16, 32, 64, 128, 256),
) -> pd.DataFrame:
    """One row per batch size: the time per token without and with speculation and the speedup
    (without / with; above 1 speculation pays)."""
    sizes = np.asarray(batches)
    if sizes.ndim != 1 or len(sizes) == 0:
        raise ValueError(f"batches must be a non-empty list of batch sizes, got {batches!r}")
    rows = []
    for b in sizes.tolist():
        without, with_ = time_per_token_s(
            target, draft, draft_tokens=draft_tokens, acceptance=acceptance, batch=b,
            context_tokens=context_tokens,
        )  # fmt: skip
        rows.append((int(b), without, with_, without / with_))
    return pd.DataFrame(rows, columns=["batch", "without_s_per_token", "with_s_per_token", "speedup"])


def break_even_batch(
    target: StepTimeModel,
    draft: StepTimeModel,
    *,
    draft_tokens: int,
    acceptance: float,
    context_tokens: float,
    max_batch: int = 4096,
) -> int | None:
    """The smallest batch at which speculation is no faster than plain decoding (speedup <= 1), or
    ``None`` if it still pays at ``max_batch``. The speedup falls as the batch grows (the verify pass
    turns compute-bound), so the first such batch is found by bisection; at batch 1 it may already not
    pay (then 1)."""
    top = check_int("max_batch", max_batch, minimum=1, maximum=MAX_BATCH_SIZE)

    def pays(b: int) -> bool:
        without, with_ = time_per_token_s(
            target, draft, draft_tokens=draft_tokens, acceptance=acceptance, batch=b,
            context_tokens=context_tokens,
        )  # fmt: skip
        return with_ < without

    if not pays(1):
        return 1
    if pays(top):
        return None
    low, high = 1, top  # pays at low, not at high
    while high - low > 1:
        middle = (low + high) // 2
        if pays(middle):
            low = middle
        else:
            high = middle
    return high
