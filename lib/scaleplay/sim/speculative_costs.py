"""The iterations of a speculative-decoding replica (``speculative.SpeculativeStepTime``), priced
mean-field for ``sim.continuous.Scheduler``: the same interface as ``continuous.StepCosts``.

An engine iteration still makes one token per running sequence. A real verification step of ``D``
sequences makes ``E = tokens(k, alpha)`` tokens each (``speculative.expected_tokens_per_step``), so
an engine iteration is ``1 / E`` of one:

    real(P, D, C) = draft(P, D, C) + (k - 1) draft(0, D, C) + target(P + D k, D, C + D k)
    decode        = real(0, D, C) / E                         (speculative.time_per_token_s's "with")
    prefill       = real(P, 0, C) = draft(P, 0, C) + target(P, 0, C)
    mixed         = real(P, D, C) - (1 - 1 / E) real(0, D, C)

with ``draft`` and ``target`` each model's ``StepCosts.iteration_s`` and ``C`` the KV tokens the
iteration reads. The draft makes its ``k`` guesses (its first pass also takes the prompt tokens, so
it has their KV), the target verifies them in one pass over ``P + D (k + 1)`` positions, the guesses'
KV read with the context. A mixed iteration (chunked prefill beside decodes) pays the prompt tokens'
extra cost in full, once, and the decodes' part at the per-token rate: it equals the decode at
``P = 0`` and the prefill at ``D = 0``. With ``k = 0`` every formula is the target's own.

**Runs in closed form.** Over a run of decode iterations the context grows by ``D`` each, so

    decode_run_s = (k x draft.decode_run_s(D, C, n) + verify.decode_run_s(D, C + D k, n)) / E

where ``verify`` is the target's ``StepCosts`` with the per-token compute and communication terms
times ``k + 1`` (each sequence's pass holds ``k + 1`` positions; its memory reads and its per-sequence
decode cost stay): two max(compute, memory) series, each a ``StepCosts`` closed form.

The scheduler's token budget and KV blocks still count one token per sequence an iteration: the
verify pass's ``D k`` extra positions are not charged to ``max_batched_tokens``.
"""

from __future__ import annotations

import copy
from typing import Protocol

from ..speculative import SpeculativeStepTime
from .runs import DecodeRuns

__all__ = ["SpeculativeCosts"]


class RooflineCosts(Protocol):
    """What ``SpeculativeCosts`` reads of a ``continuous.StepCosts`` (not imported: ``continuous``
    imports this module)."""

    compute_per_token: float
    per_token_s: float

    def iteration_s(self, prefill: int, decode: int, context: float) -> float: ...

    def decode_run_s(self, batch: int, context: float, steps: int) -> float: ...


class SpeculativeCosts(DecodeRuns):
    """A ``SpeculativeStepTime``'s iterations (module docstring), from the ``StepCosts`` of its draft
    and its target."""

    __slots__ = ("draft", "target", "verify", "draft_tokens", "tokens_per_step", "kept")

    def __init__(self, service: SpeculativeStepTime, draft: RooflineCosts, target: RooflineCosts) -> None:
        if not isinstance(service, SpeculativeStepTime):
            raise TypeError(f"service must be a SpeculativeStepTime, got {type(service).__name__}")
        self.draft, self.target = draft, target
        self.draft_tokens = service.draft_tokens
        self.tokens_per_step = service.tokens_per_step
        self.kept = 1.0 - 1.0 / self.tokens_per_step  # the share of a real decode step not charged
        positions = float(self.draft_tokens + 1)
        self.verify = copy.copy(target)
        self.verify.compute_per_token = target.compute_per_token * positions
        self.verify.per_token_s = target.per_token_s * positions

    def real_s(self, prefill: int, decode: int, context: float) -> float:
        """One real verification step: the draft's ``k`` passes and the target's verify pass."""
        k = self.draft_tokens
        verify = self.target.iteration_s(prefill + decode * k, decode, context + decode * k)
        if k == 0:
            return verify
        draft = self.draft.iteration_s(prefill, decode, context)
        if decode and k > 1:
            draft += (k - 1) * self.draft.iteration_s(0, decode, context)
        return draft + verify

    def iteration_s(self, prefill: int, decode: int, context: float) -> float:
        """One engine iteration: ``prefill`` prompt tokens and a token for each of ``decode`` sequences,
        on average, reading ``context`` KV tokens."""
        if not decode:
            return self.real_s(prefill, 0, context)
        if not prefill:
            return self.real_s(0, decode, context) / self.tokens_per_step
        return self.real_s(prefill, decode, context) - self.kept * self.real_s(0, decode, context)

    def decode_run_s(self, batch: int, context: float, steps: int) -> float:
        """``steps`` decode iterations of ``batch`` sequences from ``context`` KV tokens, the context
        growing by ``batch`` each: the sum of ``iteration_s(0, batch, context + batch j)``, closed form."""
        if steps <= 0:
            return 0.0
        k = self.draft_tokens
        verify = self.verify.decode_run_s(batch, context + batch * k, steps)
        if k == 0:
            return verify
        return (k * self.draft.decode_run_s(batch, context, steps) + verify) / self.tokens_per_step

