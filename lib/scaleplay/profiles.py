"""Service-time curves: how long one batch takes on one replica.

A ``ServiceTime`` answers ``batch_time_s(batch_size, tokens_in, tokens_out, rng)``: the seconds a
replica is busy with a batch of ``batch_size`` requests holding ``tokens_in`` prompt tokens in all and
needing ``tokens_out`` decode steps (the longest output in the batch). Deterministic curves ignore
``rng``; ``RandomServiceTime`` scales any curve by a random factor of mean 1, which is how the
validation runs get exponential (M/M/c) or deterministic (M/D/1) service.

Two more curves, interchangeable with the first two:

- ``RooflineServiceTime``: from a ``Hardware`` and a ``ModelSpec`` (loaded by name with
  ``load_hardware`` / ``load_model`` from ``data/hardware.csv`` and ``data/models.csv``): prefill
  bound by compute, each decode step bound by the larger of memory traffic and compute.
- ``TabulatedServiceTime``: measured seconds per batch (or per decode step) at a few batch sizes,
  interpolated linearly.

Bounds, so that no batch time overflows to ``inf``: a batch holds at most ``MAX_BATCH_SIZE`` = 10**6
requests, ``tokens_in`` (the batch's prompts in all) at most ``MAX_BATCH_TOKENS`` = 10**15 and
``tokens_out`` at most ``MAX_TOKENS`` = 10**9; every coefficient in seconds is at most
``MAX_COEFFICIENT_S`` = 10**6; hardware numbers lie in [1, 1e30] and model sizes are bounded
(``ModelSpec``).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cached_property
from importlib import resources
from typing import Protocol, runtime_checkable

import numpy as np

from ._validate import (
    MAX_TOKENS,
    _kind,
    _show,
    check_in,
    check_int,
    check_numbers,
    check_range,
)

__all__ = [
    "ServiceTime",
    "AffineServiceTime",
    "RandomServiceTime",
    "Hardware",
    "ModelSpec",
    "DTYPE_BYTES",
    "COMPUTE_PRECISIONS",
    "load_hardware",
    "load_model",
    "hardware_names",
    "model_names",
    "RooflineServiceTime",
    "hardware_for_compute",
    "TabulatedServiceTime",
    "MAX_BATCH_SIZE",
    "MAX_BATCH_TOKENS",
    "MAX_COEFFICIENT_S",
]

#: The most requests in one batch.
MAX_BATCH_SIZE = 10**6
#: The most prompt tokens one batch holds in all (``MAX_BATCH_SIZE`` x 10**9).
MAX_BATCH_TOKENS = 10**15
#: The largest coefficient in seconds (a fixed time, a time per item, per token or per step).
MAX_COEFFICIENT_S = 1e6
#: The range of every ``Hardware`` number (bytes/s, FLOP/s, bytes).
HARDWARE_RANGE = (1.0, 1e30)


def _seconds(name: str, value: object) -> float:
    """A coefficient in seconds: in [0, ``MAX_COEFFICIENT_S``]."""
    return check_range(name, value, 0.0, MAX_COEFFICIENT_S, unit=" s")


def _batch_size(value: object) -> int:
    return check_int("batch_size", value, minimum=1, maximum=MAX_BATCH_SIZE)


@runtime_checkable
class ServiceTime(Protocol):
    """Seconds one replica needs for one batch."""

    def batch_time_s(
        self, batch_size: int, tokens_in: int, tokens_out: int, rng: np.random.Generator
    ) -> float: ...


def raw_batch_time(service: ServiceTime) -> Callable[..., float]:
    """The fastest way to time a batch on ``service`` with arguments already checked: its
    ``raw_batch_time_s`` if it has one (the library's curves do), else its ``batch_time_s``."""
    return getattr(service, "raw_batch_time_s", service.batch_time_s)


@dataclass(frozen=True)
class AffineServiceTime:
    """``fixed_s + per_item_s * B + per_token_in_s * tokens_in + per_token_out_s * tokens_out``.

    Each coefficient lies in [0, ``MAX_COEFFICIENT_S``] seconds and one at least is > 0.

    >>> AffineServiceTime(fixed_s=0.02, per_item_s=0.005).batch_time_s(4, 0, 0, None)
    0.04
    """

    fixed_s: float = 0.0
    per_item_s: float = 0.0
    per_token_in_s: float = 0.0
    per_token_out_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("fixed_s", "per_item_s", "per_token_in_s", "per_token_out_s"):
            object.__setattr__(self, name, _seconds(name, getattr(self, name)))
        if self.fixed_s + self.per_item_s + self.per_token_in_s + self.per_token_out_s == 0:
            raise ValueError("AffineServiceTime needs at least one coefficient > 0; all are 0")

    def batch_time_s(
        self, batch_size: int, tokens_in: int, tokens_out: int, rng: np.random.Generator | None = None
    ) -> float:
        batch_size = _batch_size(batch_size)
        tokens_in, tokens_out = _check_tokens(tokens_in, tokens_out)
        return self.raw_batch_time_s(batch_size, tokens_in, tokens_out, rng)

    def raw_batch_time_s(
        self, batch_size: int, tokens_in: int, tokens_out: int, rng: np.random.Generator | None = None
    ) -> float:
        """``batch_time_s`` without the argument checks, for a caller that checked them (the engine)."""
        return (
            self.fixed_s
            + self.per_item_s * batch_size
            + self.per_token_in_s * tokens_in
            + self.per_token_out_s * tokens_out
        )


@dataclass(frozen=True)
class RandomServiceTime:
    """A curve times a random factor of mean 1: ``exponential`` or ``deterministic`` (factor 1)."""

    base: ServiceTime
    distribution: str = "exponential"

    def __post_init__(self) -> None:
        if not isinstance(self.base, ServiceTime):
            raise TypeError(f"base must be a ServiceTime, got {_kind(self.base)}")
        check_in("distribution", self.distribution, ("exponential", "deterministic"))

    def batch_time_s(
        self, batch_size: int, tokens_in: int, tokens_out: int, rng: np.random.Generator
    ) -> float:
        mean_s = self.base.batch_time_s(batch_size, tokens_in, tokens_out, rng)
        if self.distribution == "deterministic":
            return mean_s
        return float(rng.exponential(mean_s))

    def raw_batch_time_s(
        self, batch_size: int, tokens_in: int, tokens_out: int, rng: np.random.Generator
    ) -> float:
        """``batch_time_s`` without the argument checks, for a caller that checked them (the engine)."""
        mean_s = self._base_time_s(batch_size, tokens_in, tokens_out, rng)
        if self.distribution == "deterministic":
            return mean_s
        return float(rng.exponential(mean_s))

    @cached_property
    def _base_time_s(self) -> Callable[..., float]:
        return raw_batch_time(self.base)


# --------------------------------------------------------------------------------------------------
# Hardware and model specs
# --------------------------------------------------------------------------------------------------

#: Bytes per stored number for the dtypes ``load_model`` and ``ModelSpec`` accept.
DTYPE_BYTES: dict[str, float] = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5}


#: The precisions a model's matrix multiplies may run at: ``"bf16"`` (16-bit, also standing for fp16:
#: the same datasheet peak) and ``"fp8"`` (W8A8: FP8 weights and activations, FP8 tensor cores).
COMPUTE_PRECISIONS: tuple[str, ...] = ("bf16", "fp8")


@dataclass(frozen=True)
class Hardware:
    """One accelerator: the two roofline numbers and its memory (prices live elsewhere).

    ``peak_flops_per_s`` is the dense (no 2:4 sparsity) tensor-core peak of the datasheet at
    ``precision``: the BF16 one as loaded (``precision="bf16"``), the FP8 one in the copy
    ``at_precision("fp8")`` returns. The roofline and the engine read only ``peak_flops_per_s``, so
    that copy is how FP8 compute reaches them. ``fp8_peak_flops_per_s`` is the dense FP8 tensor
    peak, ``None`` where the GPU has no FP8 tensor cores (A100); ``bf16_peak_flops_per_s`` the BF16
    one (``peak_flops_per_s`` when left out at ``precision="bf16"``).

    ``memory_bandwidth_bytes_per_s`` is the datasheet memory bandwidth; ``memory_bytes`` the memory
    as the datasheet states it (decimal GB x 1e9). ``source``/``source_date`` say where the numbers
    come from and when they were taken. Each number lies in [1, 1e30].

    >>> h100 = load_hardware("H100 SXM")
    >>> round(h100.at_precision("fp8").peak_flops_per_s / h100.peak_flops_per_s, 3)
    2.001
    """

    name: str
    memory_bandwidth_bytes_per_s: float
    peak_flops_per_s: float
    memory_bytes: float
    source: str = ""
    source_date: str = ""
    fp8_peak_flops_per_s: float | None = None
    precision: str = "bf16"
    bf16_peak_flops_per_s: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Hardware name must be a non-empty string, got {_kind(self.name)}")
        low, high = HARDWARE_RANGE
        for field in ("memory_bandwidth_bytes_per_s", "peak_flops_per_s", "memory_bytes"):
            object.__setattr__(self, field, check_range(field, getattr(self, field), low, high))
        for field in ("fp8_peak_flops_per_s", "bf16_peak_flops_per_s"):
            if getattr(self, field) is not None:
                object.__setattr__(self, field, check_range(field, getattr(self, field), low, high))
        check_in("precision", self.precision, COMPUTE_PRECISIONS)
        if self.precision == "bf16" and self.bf16_peak_flops_per_s is None:
            object.__setattr__(self, "bf16_peak_flops_per_s", self.peak_flops_per_s)
        at = self.peak_flops_for(self.precision)
        if at != self.peak_flops_per_s:
            raise ValueError(
                f"peak_flops_per_s={_show(self.peak_flops_per_s)} must be the {self.precision} peak of "
                f"{self.name} at precision={self.precision!r}, which is {_show(at)}"
            )

    @property
    def ridge_flops_per_byte(self) -> float:
        """Arithmetic intensity (FLOP per byte) above which a kernel is compute-bound."""
        return self.peak_flops_per_s / self.memory_bandwidth_bytes_per_s

    def peak_flops_for(self, precision: str) -> float:
        """The dense tensor peak FLOP/s at ``precision`` (one of ``COMPUTE_PRECISIONS``).

        A ``ValueError`` naming ``precision`` when this GPU has no such tensor cores (FP8 on an A100)
        or the figure is unknown.
        """
        check_in("precision", precision, COMPUTE_PRECISIONS)
        peak = self.fp8_peak_flops_per_s if precision == "fp8" else self.bf16_peak_flops_per_s
        if peak is None:
            why = "has no FP8 tensor cores" if precision == "fp8" else "has no known BF16 peak"
            raise ValueError(
                f"precision={precision!r} is not available on {self.name}: it {why} "
                f"({precision}_peak_flops_per_s is None); use precision='bf16' or other hardware"
            )
        return peak

    def at_precision(self, precision: str) -> Hardware:
        """This GPU with ``peak_flops_per_s`` set to its dense peak at ``precision`` (``self`` if
        already there). A ``ValueError`` naming ``precision`` where the GPU lacks it."""
        if precision == self.precision:
            return self
        return replace(self, peak_flops_per_s=self.peak_flops_for(precision), precision=precision)


@dataclass(frozen=True)
class ModelSpec:
    """A decoder-only transformer, as far as the roofline needs it.

    ``bytes_per_parameter`` is the weight storage (2 for bf16, 1 for int8/fp8 weights);
    ``kv_bytes_per_element`` the KV-cache storage (2 for a bf16 cache). One token of context holds
    ``2 (K and V) x layers x kv_heads x head_dim x kv_bytes_per_element`` bytes of KV cache.

    Bounds: ``parameters`` in [1, 1e18]; bytes per parameter or element in (0, 64]; ``layers``,
    ``kv_heads`` and ``head_dim`` in [1, 10**6].
    """

    name: str
    parameters: float
    bytes_per_parameter: float
    layers: int
    kv_heads: int
    head_dim: int
    kv_bytes_per_element: float = 2.0
    source: str = ""
    source_date: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"ModelSpec name must be a non-empty string, got {_kind(self.name)}")
        object.__setattr__(self, "parameters", check_range("parameters", self.parameters, 1.0, 1e18))
        for field in ("bytes_per_parameter", "kv_bytes_per_element"):
            object.__setattr__(
                self, field, check_range(field, getattr(self, field), 0.0, 64.0, open_low=True)
            )
        for field in ("layers", "kv_heads", "head_dim"):
            object.__setattr__(self, field, check_int(field, getattr(self, field), minimum=1, maximum=10**6))

    @property
    def weight_bytes(self) -> float:
        """Bytes of weights read once per forward pass."""
        return self.parameters * self.bytes_per_parameter

    @property
    def kv_bytes_per_token(self) -> float:
        """Bytes of KV cache one token of context occupies (and each decode step reads)."""
        return 2.0 * self.layers * self.kv_heads * self.head_dim * self.kv_bytes_per_element


def _read_table(filename: str) -> dict[str, dict[str, str]]:
    with resources.files("scaleplay").joinpath("data", filename).open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        if not row.get("source") or not row.get("source_date"):
            raise ValueError(f"{filename}: row {row.get('name')!r} lacks its source or source_date")
    return {row["name"]: row for row in rows}


def hardware_names() -> list[str]:
    """Names ``load_hardware`` knows (rows of ``data/hardware.csv``)."""
    return list(_read_table("hardware.csv"))


def model_names() -> list[str]:
    """Names ``load_model`` knows (rows of ``data/models.csv``)."""
    return list(_read_table("models.csv"))


def load_hardware(name: str) -> Hardware:
    """The ``Hardware`` row called ``name`` in ``data/hardware.csv``, at ``precision="bf16"``.

    An empty ``fp8_peak_flops_per_s`` cell (a GPU without FP8 tensor cores) loads as ``None``.

    >>> load_hardware("H100 SXM").memory_bandwidth_bytes_per_s
    3350000000000.0
    """
    table = _read_table("hardware.csv")
    if not isinstance(name, str) or name not in table:
        raise ValueError(f"unknown hardware name {_show(name)}; known: {', '.join(map(repr, table))}")
    row = table[name]
    return Hardware(
        name=row["name"],
        memory_bandwidth_bytes_per_s=float(row["memory_bandwidth_bytes_per_s"]),
        peak_flops_per_s=float(row["peak_flops_per_s"]),
        memory_bytes=float(row["memory_bytes"]),
        source=row["source"],
        source_date=row["source_date"],
        fp8_peak_flops_per_s=float(fp8) if (fp8 := row.get("fp8_peak_flops_per_s", "").strip()) else None,
    )


def load_model(name: str, dtype: str = "bf16", *, kv_dtype: str = "bf16") -> ModelSpec:
    """The ``ModelSpec`` row called ``name`` in ``data/models.csv``, weights stored as ``dtype``.

    ``dtype`` sets ``bytes_per_parameter`` and ``kv_dtype`` the KV cache's bytes per element, both
    from ``DTYPE_BYTES`` (``"int8"`` weights with a ``"bf16"`` cache is weight-only quantization).

    >>> load_model("Llama-3.1-8B", "int8").weight_bytes
    8030261248.0
    """
    check_in("dtype", dtype, tuple(DTYPE_BYTES))
    check_in("kv_dtype", kv_dtype, tuple(DTYPE_BYTES))
    table = _read_table("models.csv")
    if not isinstance(name, str) or name not in table:
        raise ValueError(f"unknown model name {_show(name)}; known: {', '.join(map(repr, table))}")
    row = table[name]
    return ModelSpec(
        name=row["name"],
        parameters=float(row["parameters"]),
        bytes_per_parameter=DTYPE_BYTES[dtype],
        layers=int(row["layers"]),
        kv_heads=int(row["kv_heads"]),
        head_dim=int(row["head_dim"]),
        kv_bytes_per_element=DTYPE_BYTES[kv_dtype],
        source=row["source"],
        source_date=row["source_date"],
    )


def hardware_for_compute(hardware: Hardware, model: ModelSpec, compute_precision: str) -> Hardware:
    """``hardware`` at ``compute_precision``, as a roofline of ``model`` must see it.

    ``"fp8"`` is W8A8: the weights must be stored in at most 1 byte (``load_model(name, "fp8")``),
    and the GPU must have FP8 tensor cores; otherwise a ``ValueError`` naming ``compute_precision``.
    Weight-only quantization (``"int8"`` weights) keeps ``compute_precision="bf16"``.
    """
    check_in("compute_precision", compute_precision, COMPUTE_PRECISIONS)
    if compute_precision == "fp8" and model.bytes_per_parameter > 1.0:
        raise ValueError(
            f"compute_precision='fp8' multiplies FP8 weights, but {model.name} stores "
            f"{model.bytes_per_parameter:g} bytes per parameter; load it with dtype='fp8' or use "
            "compute_precision='bf16'"
        )
    if compute_precision == "fp8" and hardware.fp8_peak_flops_per_s is None:
        raise ValueError(
            f"compute_precision='fp8' is not available on {hardware.name}: it has no FP8 tensor cores "
            "(fp8_peak_flops_per_s is None); use compute_precision='bf16' (weight-only int8 keeps it)"
        )
    try:
        return hardware.at_precision(compute_precision)
    except ValueError as error:
        raise ValueError(f"compute_precision={compute_precision!r}: {error}") from error


def _check_tokens(tokens_in: object, tokens_out: object) -> tuple[int, int]:
    """The batch's prompt tokens in all (at most 10**15) and its longest output (at most 10**9)."""
    return (
        check_int("tokens_in", tokens_in, minimum=0, maximum=MAX_BATCH_TOKENS),
        check_int("tokens_out", tokens_out, minimum=0, maximum=MAX_TOKENS),
    )


# --------------------------------------------------------------------------------------------------
# Roofline
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RooflineServiceTime:
    """Service time of a batch from the roofline of ``hardware`` running ``model``.

    With ``F = peak_flops_per_s x compute_efficiency x tensor_parallel``,
    ``BW = memory_bandwidth_bytes_per_s x bandwidth_efficiency x tensor_parallel``, ``P`` the
    parameters, ``W`` the weight bytes and ``k`` the KV bytes per token:

    - **prefill** of ``n`` prompt tokens (the whole batch's): ``max(2 P n / F, W / BW)`` (compute-bound
      for any real prompt; never faster than one read of the weights) ``+ overhead_s``;
    - **decode step** of a batch of ``B`` requests holding ``C`` tokens of context in all:
      ``max((W + k C) / BW, 2 P B / F) + overhead_s``.

    ``batch_time_s(B, tokens_in, tokens_out)`` is one prefill of ``tokens_in`` tokens and then
    ``tokens_out`` decode steps of the whole batch (static batching: the batch runs until its
    longest output is done), the context growing by ``B`` tokens a step from ``tokens_in``. The sum
    over steps is done in closed form. Attention FLOPs and communication are left out;
    ``tensor_parallel`` GPUs are assumed to split weights, bandwidth and FLOP/s perfectly.

    The efficiencies (fractions of the datasheet peaks that kernels reach, in [1e-6, 1]) default to
    1, the ideal bound; measured curves (``TabulatedServiceTime``) are the way to the real thing.
    ``overhead_s`` is at most ``MAX_COEFFICIENT_S``; ``tensor_parallel`` at most 4096.

    ``compute_precision`` (``COMPUTE_PRECISIONS``) is the precision of the multiplies: ``"fp8"``
    (W8A8, FP8 weights) makes ``hardware`` its ``at_precision("fp8")`` copy, whose
    ``peak_flops_per_s`` is the FP8 peak (twice BF16's on H100, H200 and L4); ``"bf16"`` (the
    default) keeps the BF16 peak, also for weight-only ``"int8"`` weights, which only halve the bytes.
    """

    hardware: Hardware
    model: ModelSpec
    overhead_s: float = 0.0
    compute_efficiency: float = 1.0
    bandwidth_efficiency: float = 1.0
    tensor_parallel: int = 1
    compute_precision: str = "bf16"

    def __post_init__(self) -> None:
        if not isinstance(self.hardware, Hardware):
            raise TypeError(f"hardware must be a Hardware, got {_kind(self.hardware)}")
        if not isinstance(self.model, ModelSpec):
            raise TypeError(f"model must be a ModelSpec, got {_kind(self.model)}")
        hardware = hardware_for_compute(self.hardware, self.model, self.compute_precision)
        object.__setattr__(self, "hardware", hardware)
        object.__setattr__(self, "overhead_s", _seconds("overhead_s", self.overhead_s))
        for field in ("compute_efficiency", "bandwidth_efficiency"):
            object.__setattr__(self, field, check_range(field, getattr(self, field), 1e-6, 1.0))
        object.__setattr__(
            self,
            "tensor_parallel",
            check_int("tensor_parallel", self.tensor_parallel, minimum=1, maximum=4096),
        )
        if self.model.weight_bytes >= self.memory_bytes:
            raise ValueError(
                f"{self.model.name} needs {self.model.weight_bytes / 1e9:.1f} GB of weights but "
                f"{self.tensor_parallel} x {self.hardware.name} hold {self.memory_bytes / 1e9:.1f} GB; "
                "raise tensor_parallel or store the weights in a smaller dtype"
            )

    # The effective machine (all tensor-parallel GPUs together).
    @property
    def flops_per_s(self) -> float:
        return self.hardware.peak_flops_per_s * self.compute_efficiency * self.tensor_parallel

    @property
    def bandwidth_bytes_per_s(self) -> float:
        return self.hardware.memory_bandwidth_bytes_per_s * self.bandwidth_efficiency * self.tensor_parallel

    @property
    def memory_bytes(self) -> float:
        return self.hardware.memory_bytes * self.tensor_parallel

    @property
    def kv_capacity_tokens(self) -> int:
        """Tokens of KV cache that fit in the memory the weights leave free."""
        return int((self.memory_bytes - self.model.weight_bytes) // self.model.kv_bytes_per_token)

    @property
    def ridge_batch_size(self) -> float:
        """Batch size at which a decode step turns compute-bound, KV-cache traffic ignored.

        ``2 P B / F = W / BW`` gives ``B = F x bytes_per_parameter / (2 BW)``: about 295 for bf16
        weights on an H100 SXM.
        """
        return self.flops_per_s * self.model.bytes_per_parameter / (2.0 * self.bandwidth_bytes_per_s)

    def ridge_batch_size_with_context(self, context_tokens_per_request: float) -> float:
        """Ridge batch size when each request also reads ``context_tokens_per_request`` of KV cache.

        ``(W + k c B) / BW = 2 P B / F`` gives ``B = (W / BW) / (2 P / F - k c / BW)``; ``inf`` when
        the KV traffic alone outgrows the compute per request (decode never turns compute-bound).
        """
        c = check_range("context_tokens_per_request", context_tokens_per_request, 0.0, MAX_TOKENS)
        per_request = 2.0 * self.model.parameters / self.flops_per_s - (
            self.model.kv_bytes_per_token * c / self.bandwidth_bytes_per_s
        )
        if per_request <= 0:
            return math.inf
        return (self.model.weight_bytes / self.bandwidth_bytes_per_s) / per_request

    def prefill_s(self, tokens_in: int) -> float:
        """Seconds to prefill ``tokens_in`` prompt tokens (one forward pass), overhead included."""
        tokens_in = check_int("tokens_in", tokens_in, minimum=0, maximum=MAX_BATCH_TOKENS)
        compute = 2.0 * self.model.parameters * tokens_in / self.flops_per_s
        memory = self.model.weight_bytes / self.bandwidth_bytes_per_s
        return max(compute, memory) + self.overhead_s

    def decode_step_s(self, batch_size: int, context_tokens: float) -> float:
        """Seconds of one decode step of ``batch_size`` requests holding ``context_tokens`` in all.

        ``context_tokens`` is the KV cache the step reads: the sum over the batch of each
        request's prompt plus the tokens generated so far (at most 2 x 10**15).
        """
        batch_size = _batch_size(batch_size)
        context_tokens = check_range("context_tokens", context_tokens, 0.0, 2.0 * MAX_BATCH_TOKENS)
        memory = (
            self.model.weight_bytes + self.model.kv_bytes_per_token * context_tokens
        ) / self.bandwidth_bytes_per_s
        compute = 2.0 * self.model.parameters * batch_size / self.flops_per_s
        return max(memory, compute) + self.overhead_s

    def batch_time_s(
        self, batch_size: int, tokens_in: int, tokens_out: int, rng: np.random.Generator | None = None
    ) -> float:
        batch_size = _batch_size(batch_size)
        tokens_in, tokens_out = _check_tokens(tokens_in, tokens_out)
        return self.raw_batch_time_s(batch_size, tokens_in, tokens_out, rng)

    def raw_batch_time_s(
        self, batch_size: int, tokens_in: int, tokens_out: int, rng: np.random.Generator | None = None
    ) -> float:
        """``batch_time_s`` without the argument checks, for a caller that checked them (the engine)."""
        total = self.prefill_s(tokens_in)
        steps = tokens_out
        if steps == 0:
            return total
        # Step j (0-based) reads context tokens_in + B j: memory time a + b j against compute c.
        a = (self.model.weight_bytes + self.model.kv_bytes_per_token * tokens_in) / self.bandwidth_bytes_per_s
        b = self.model.kv_bytes_per_token * batch_size / self.bandwidth_bytes_per_s
        c = 2.0 * self.model.parameters * batch_size / self.flops_per_s
        # The first n_compute steps have a + b j < c (compute-bound), the rest are memory-bound.
        if a >= c:
            n_compute = 0
        elif b == 0:
            n_compute = steps
        else:
            n_compute = min(steps, math.ceil((c - a) / b))
        n_memory = steps - n_compute
        j_sum = (n_compute + steps - 1) * n_memory / 2.0  # sum of j over the memory-bound steps
        return total + n_compute * c + n_memory * a + b * j_sum + steps * self.overhead_s


# --------------------------------------------------------------------------------------------------
# Measured tables
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TabulatedServiceTime:
    """Measured seconds at a few batch sizes, interpolated.

    ``seconds_per_batch[i]`` is the time of a batch of ``batch_sizes[i]`` requests. Batch sizes
    must increase strictly and times must not decrease (a larger batch never takes less time; a
    noisy measurement that breaks this is refused rather than smoothed). Between two points the
    time is linear in batch size; beyond the last point it continues the line through the last two
    points (or stays flat if there is one point); between 1 and the first point it stays at the
    first point's time. A batch size below 1 is an error.

    ``per_decode_step=False`` (the default): the table is the whole batch's time and the token
    counts are ignored. ``per_decode_step=True``: the table is one decode step's time and a batch
    takes ``table(B) x tokens_out + prefill_s_per_token x tokens_in``.

    Bounds: batch sizes in [1, ``MAX_BATCH_SIZE``], times in (0, ``MAX_COEFFICIENT_S``] seconds,
    ``prefill_s_per_token`` in [0, ``MAX_COEFFICIENT_S``].

    >>> TabulatedServiceTime((1, 8), (0.010, 0.024)).batch_time_s(4, 0, 0, None)
    0.016
    """

    batch_sizes: tuple[float, ...]
    seconds_per_batch: tuple[float, ...]
    per_decode_step: bool = False
    prefill_s_per_token: float = 0.0

    def __post_init__(self) -> None:
        sizes = np.asarray(check_numbers("batch_sizes", self.batch_sizes), dtype=float)
        times = np.asarray(check_numbers("seconds_per_batch", self.seconds_per_batch), dtype=float)
        if sizes.size == 0:
            raise ValueError("batch_sizes must hold at least one batch size, got none")
        if sizes.size != times.size:
            raise ValueError(
                f"batch_sizes and seconds_per_batch must have the same length, got {sizes.size} and "
                f"{times.size}"
            )
        if not np.all(np.isfinite(sizes)):
            raise ValueError(f"batch_sizes must be finite numbers, got {_show(sizes.tolist())}")
        if not np.all(np.isfinite(times)):
            raise ValueError(
                f"seconds_per_batch must be finite numbers (no NaN), got {_show(times.tolist())}"
            )
        if sizes[0] < 1 or sizes.max() > MAX_BATCH_SIZE:
            raise ValueError(
                f"batch_sizes must be >= 1 and <= {MAX_BATCH_SIZE:,}, got {_show(sizes.tolist())}"
            )
        if np.any(np.diff(sizes) <= 0):
            raise ValueError(f"batch_sizes must increase strictly, got {_show(sizes.tolist())}")
        if np.any(times <= 0) or times.max() > MAX_COEFFICIENT_S:
            raise ValueError(
                f"seconds_per_batch must be > 0 and <= {MAX_COEFFICIENT_S:g} s, got {_show(times.tolist())}"
            )
        if np.any(np.diff(times) < 0):
            raise ValueError(
                f"seconds_per_batch must not decrease as the batch grows, got {_show(times.tolist())} "
                f"at batch sizes {_show(sizes.tolist())}"
            )
        object.__setattr__(self, "batch_sizes", tuple(sizes.tolist()))
        object.__setattr__(self, "seconds_per_batch", tuple(times.tolist()))
        if not isinstance(self.per_decode_step, bool):
            raise TypeError(f"per_decode_step must be a bool, got {_kind(self.per_decode_step)}")
        object.__setattr__(
            self, "prefill_s_per_token", _seconds("prefill_s_per_token", self.prefill_s_per_token)
        )

    def table_s(self, batch_size: float | np.ndarray) -> float | np.ndarray:
        """The interpolated table at ``batch_size`` (scalar or array, each in [1, ``MAX_BATCH_SIZE``])."""
        if isinstance(batch_size, bool | str | bytes) or batch_size is None:
            raise TypeError(f"batch_size must be a number or an array of numbers, got {_kind(batch_size)}")
        try:
            b = np.asarray(batch_size, dtype=float)
        except (TypeError, ValueError, OverflowError):
            raise TypeError(
                f"batch_size must be a number or an array of numbers, got {_kind(batch_size)}"
            ) from None
        if not np.all(np.isfinite(b)) or np.any(b < 1) or np.any(b > MAX_BATCH_SIZE):
            raise ValueError(f"batch_size must lie in [1, {MAX_BATCH_SIZE:,}], got {_show(batch_size)}")
        xs = np.asarray(self.batch_sizes)
        ys = np.asarray(self.seconds_per_batch)
        out = np.interp(b, xs, ys)  # flat outside the table
        if xs.size >= 2:
            slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
            out = np.where(b > xs[-1], ys[-1] + slope * (b - xs[-1]), out)
        return float(out) if out.ndim == 0 else out

    def batch_time_s(
        self, batch_size: int, tokens_in: int, tokens_out: int, rng: np.random.Generator | None = None
    ) -> float:
        batch_size = _batch_size(batch_size)
        tokens_in, tokens_out = _check_tokens(tokens_in, tokens_out)
        return self.raw_batch_time_s(batch_size, tokens_in, tokens_out, rng)

    def raw_batch_time_s(
        self, batch_size: int, tokens_in: int, tokens_out: int, rng: np.random.Generator | None = None
    ) -> float:
        """``batch_time_s`` without the argument checks, for a caller that checked them (the engine)."""
        per = float(self.table_s(batch_size))
        if not self.per_decode_step:
            return per
        return per * tokens_out + self.prefill_s_per_token * tokens_in
