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

**In the engine** (``SpeculativeStepTime``, a continuous-batching pool's ``service``): mean-field. An
iteration still makes one token per running sequence, on average: a decode iteration of ``B``
sequences costs ``time_per_token_s``'s "with" time, ``(k x draft step + verify pass) / tokens(k,
alpha)``, and a prefill iteration the target's prefill plus the draft's of the same tokens (the draft
needs their KV too). Each sequence's tokens come evenly, not in bursts of 1 to ``k + 1``, so a request's
time per output token is right on average and its spread is the batch's, not the acceptance's.
``sim.speculative_costs`` prices the iterations (its docstring: the mixed iterations of chunked
prefill).

>>> round(expected_tokens_per_step(4, 0.8), 3)
3.362
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ._validate import _kind, _show, check_int, check_probability, check_range
from .profiles import MAX_BATCH_SIZE, MAX_TOKENS, Hardware, ModelSpec
from .steptime import StepTimeModel

__all__ = [
    "SpeculativeStepTime",
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
        if value.prefill_overhead_s:  # a verify pass counts its draft tokens as prompt tokens
            raise ValueError(
                f"{name}.prefill_overhead_s must be 0 under speculative decoding, whose verify passes "
                f"the step model counts as prompt passes; got {_show(value.prefill_overhead_s)}"
            )


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


@dataclass(frozen=True)
class SpeculativeStepTime:
    """A continuous-batching replica that decodes speculatively: ``target`` verifies the
    ``draft_tokens`` guesses of ``draft``, each accepted with probability ``acceptance``.

    Give it as a ``PoolConfig``'s ``service`` with a ``ContinuousBatcherConfig``; the engine prices
    its iterations mean-field (module docstring, ``sim.speculative_costs``). Both models run on the
    same GPUs: ``target`` on its ``tensor_parallel`` of them, ``draft`` on the first
    ``draft.tensor_parallel`` (at most the target's; vLLM's default is the target's own). The draft
    must be a smaller model on the same hardware; that the two share a tokenizer is the caller's
    business. ``draft_tokens`` lies in [0, 64] (0: drafting off, the target decodes alone while the
    draft's weights and KV still take memory) and ``acceptance`` in [0, 1].

    **Memory.** On a GPU that holds a shard of both, the weights take ``target / TP_target + draft /
    TP_draft`` bytes and each token of context ``target's KV / TP_target + draft's KV / TP_draft``
    (the draft keeps its own KV of every sequence); ``kv_blocks`` counts the blocks that GPU holds,
    which every GPU then holds (the cache is sharded evenly). The ``k`` guesses' KV slots a step
    writes and throws away are not counted.

    ``model``, ``hardware`` and ``tensor_parallel`` are the target's: the model served and the GPUs
    a replica takes.
    """

    target: StepTimeModel
    draft: StepTimeModel
    draft_tokens: int = 4
    acceptance: float = 0.8

    def __post_init__(self) -> None:
        _check_models(self.target, self.draft)
        k = check_int("draft_tokens", self.draft_tokens, minimum=0, maximum=MAX_DRAFT_TOKENS)
        object.__setattr__(self, "draft_tokens", k)
        object.__setattr__(self, "acceptance", check_probability("acceptance", self.acceptance))
        target, draft = self.target, self.draft
        if draft.model.parameters >= target.model.parameters:
            raise ValueError(
                f"draft must be a smaller model than the target: draft {draft.model.name} has "
                f"{draft.model.parameters:.3g} parameters, target {target.model.name} "
                f"{target.model.parameters:.3g}"
            )
        if draft.hardware.name != target.hardware.name:
            raise ValueError(
                f"draft must run on the target's GPUs ({target.hardware.name}), got draft.hardware="
                f"{draft.hardware.name!r}"
            )
        if draft.tensor_parallel > target.tensor_parallel:
            raise ValueError(
                f"draft.tensor_parallel must be at most the target's ({target.tensor_parallel}): the "
                f"draft runs on the target's GPUs; got {_show(draft.tensor_parallel)}"
            )
        if self.weight_bytes_per_gpu >= target.hardware.memory_bytes:
            raise ValueError(
                f"the weights do not fit: {target.model.name} on {target.tensor_parallel} and "
                f"{draft.model.name} on {draft.tensor_parallel} x {target.hardware.name} take "
                f"{self.weight_bytes_per_gpu / 1e9:.1f} GB of a GPU's "
                f"{target.hardware.memory_bytes / 1e9:.1f} GB; raise the tensor_parallel of either"
            )

    @property
    def tokens_per_step(self) -> float:
        """Tokens a sequence gains per verification step, ``expected_tokens_per_step(k, alpha)``."""
        return expected_tokens_per_step(self.draft_tokens, self.acceptance)

    @property
    def model(self) -> ModelSpec:
        """The target's model: the one served."""
        return self.target.model

    @property
    def hardware(self) -> Hardware:
        """The GPUs' hardware."""
        return self.target.hardware

    @property
    def tensor_parallel(self) -> int:
        """GPUs a replica takes: the target's."""
        return self.target.tensor_parallel

    @property
    def weight_bytes_per_gpu(self) -> float:
        """Weight bytes on a GPU holding a shard of both models."""
        target, draft = self.target, self.draft
        return (
            target.model.weight_bytes / target.tensor_parallel
            + draft.model.weight_bytes / draft.tensor_parallel
        )

    @property
    def kv_bytes_per_token_per_gpu(self) -> float:
        """KV bytes one token of context takes on a GPU holding a shard of both models."""
        target, draft = self.target, self.draft
        return (
            target.model.kv_bytes_per_token / target.tensor_parallel
            + draft.model.kv_bytes_per_token / draft.tensor_parallel
        )

    def kv_blocks(self, gpu_memory_utilization: float, block_tokens: int) -> int:
        """Blocks of ``block_tokens`` tokens of KV cache when each GPU may use ``gpu_memory_utilization``
        of its memory (``config.ContinuousBatcherConfig.kv_blocks`` for this service)."""
        share = check_range("gpu_memory_utilization", gpu_memory_utilization, 1e-6, 1.0)
        block = check_int("block_tokens", block_tokens, minimum=1, maximum=1 << 20)
        usable = self.hardware.memory_bytes * share
        free_bytes = usable - self.weight_bytes_per_gpu
        blocks = int(free_bytes // (self.kv_bytes_per_token_per_gpu * block)) if free_bytes > 0 else 0
        if blocks < 1:
            raise ValueError(
                f"gpu_memory_utilization={_show(gpu_memory_utilization)} of a {self.hardware.name} "
                f"({usable / 1e9:.1f} GB) leaves no room for the KV cache after "
                f"{self.weight_bytes_per_gpu / 1e9:.1f} GB of {self.target.model.name} and "
                f"{self.draft.model.name} weights; raise gpu_memory_utilization or tensor_parallel"
            )
        return blocks
