"""How long one iteration of an LLM serving engine takes: a step-time model, fitted to measured engines.

A continuous-batching engine runs iterations. One iteration pushes ``prefill_tokens`` prompt tokens and
``decode_tokens`` decode tokens (one per running request) through the model in one forward pass, and
its attention reads ``context_tokens`` tokens of KV cache in all. ``StepTimeModel`` times it on
``tensor_parallel`` GPUs of one ``profiles.Hardware`` running one ``profiles.ModelSpec``:

    n        = prefill_tokens + decode_tokens                         tokens in the pass
    compute  = 2 P n / (peak_flops_per_s x compute_efficiency x TP)   (2 FLOPs per weight per token)
    memory   = (W + k x context_tokens) / (bandwidth x bandwidth_efficiency x TP)
    comm     = L x (comm_latency_s_per_layer x (TP - 1) + comm_s_per_token_layer x n x (TP - 1) / TP)
    step     = overhead_s + max(compute, memory) + comm + decode_s_per_token x decode_tokens
               + prefill_overhead_s                                   (if prefill_tokens > 0)

with ``P`` the parameters, ``W`` the weight bytes, ``k`` the KV bytes per token of context and ``L``
the layers. A step with no tokens is no step and takes 0 s.

Why each term:

- **compute and memory** are the roofline of ``profiles.RooflineServiceTime``: the GPUs either stream
  the weights and the KV cache or multiply, whichever takes longer, at a fraction of the datasheet
  peaks. A batch-1 decode is memory-bound (one token for a full read of the weights), a long prefill
  compute-bound.
- **comm** is tensor parallelism's price. Each layer all-reduces its activations twice (after the
  attention and after the MLP). A ring all-reduce over ``TP`` GPUs takes ``2 (TP - 1)`` hops, each
  with a fixed latency, and sends ``2 (TP - 1) / TP`` of the message over each link; the message
  grows with the tokens in the pass. So per layer: a latency ``comm_latency_s_per_layer`` per extra
  GPU and a transfer ``comm_s_per_token_layer`` per token times ``(TP - 1) / TP``. Both vanish at
  ``TP = 1``. This is why tensor parallelism helps but not linearly: the roofline terms shrink as
  ``1 / TP`` while the latency grows as ``TP - 1``.
- **overhead_s** is the engine's fixed cost of an iteration (scheduling, kernel launches).
- **decode_s_per_token** is work per running request that neither FLOPs nor bytes count: sampling its
  next token, the attention kernel's per-sequence setup, the scheduler's bookkeeping. Measured decode
  steps grow with the batch far faster than the roofline says; this term is the simplest account.
- **prefill_overhead_s** is what an iteration holding prompt tokens costs on top: the host-side work
  of a prompt pass (building its inputs, starting the new requests' outputs). ``fit_step_model`` does
  not fit it (the measured steps are GPU kernels alone); ``measured.calibrate_vllm_step`` fits it to a
  real server's first tokens.

Attention FLOPs (quadratic in the prompt) are left out: at the prompts measured they add a few
percent of the prefill.

``fit_step_model`` fits the six coefficients (both efficiencies within (0, 1], the four times
non-negative) by least squares on the logarithm of the step time (``scipy.optimize.least_squares``),
so that a 10% miss costs the same on a 30 ms decode step as on a 3 s prefill.
``splitwise_step_observations`` turns the shipped SplitwiseSim measurements
(``data/serving/splitwise_perf_model.csv``: llama2-70b and bloom-176b on A100 and H100 at TP 2, 4,
8) into steps; ``fit_splitwise_profiles`` fits one profile per hardware on llama2-70b at TP 2 and 8
(``FIT_SUBSET``) and scores it on the held-out llama2-70b at TP 4 and bloom-176b at TP 8. The
result ships as ``data/step_profiles.csv``; ``load_step_profile`` builds a model from it.

>>> from scaleplay.profiles import load_hardware, load_model
>>> step = StepTimeModel(load_hardware("H100 SXM"), load_model("Llama-3.1-8B"))
>>> round(step.decode_step_time_s(1, 1000) * 1e3, 2)  # one batch-1 decode step, ms: the weight read
4.83
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources

import numpy as np
import pandas as pd
from scipy import optimize

from ._validate import _kind, _show, check_int, check_range, check_real_array
from .profiles import (
    MAX_BATCH_TOKENS,
    MAX_COEFFICIENT_S,
    Hardware,
    ModelSpec,
    hardware_for_compute,
    load_hardware,
    load_model,
)

__all__ = [
    "StepTimeModel",
    "ExponentialStepTime",
    "StepFit",
    "fit_step_model",
    "prediction_errors",
    "load_splitwise_measurements",
    "splitwise_step_observations",
    "splitwise_models",
    "fit_splitwise_profiles",
    "splitwise_holdout_errors",
    "load_step_profile",
    "step_profile_names",
    "FIT_SUBSET",
    "HELD_OUT",
    "SPLITWISE_MODELS",
    "SPLITWISE_HARDWARE",
    "FITTED_COEFFICIENTS",
    "MAX_CONTEXT_TOKENS",
    "MAX_TENSOR_PARALLEL",
]

#: The most KV-cache tokens one iteration may read in all (twice ``MAX_BATCH_TOKENS``).
MAX_CONTEXT_TOKENS = 2 * MAX_BATCH_TOKENS
#: The most GPUs one model may be split over.
MAX_TENSOR_PARALLEL = 4096
#: The coefficients ``fit_step_model`` fits, in this order.
FITTED_COEFFICIENTS = (
    "compute_efficiency",
    "bandwidth_efficiency",
    "overhead_s",
    "comm_latency_s_per_layer",
    "comm_s_per_token_layer",
    "decode_s_per_token",
)
# Typical size of each coefficient: the fit works on coefficient / scale, all of order 1.
_SCALE = np.array([1.0, 1.0, 1e-2, 1e-5, 1e-6, 1e-4])
# The smallest efficiency: a fraction of the peak, never 0.
_MIN_EFFICIENCY = 1e-6

#: SplitwiseSim's model names -> ``data/models.csv`` rows (fp16 weights and KV cache).
SPLITWISE_MODELS: dict[str, str] = {"llama2-70b": "Llama-2-70B", "bloom-176b": "BLOOM-176B"}
#: SplitwiseSim's hardware names -> ``data/hardware.csv`` rows. The power-capped H100 is an H100 SXM
#: whose rows in the file are derived (prefill 1.30 x the uncapped one, decode copied).
SPLITWISE_HARDWARE: dict[str, str] = {
    "a100-80gb": "A100 80GB SXM",
    "h100-80gb": "H100 SXM",
    "h100-80gb-pcap": "H100 SXM",
}
#: What each shipped profile is fitted on: llama2-70b at tensor_parallel 2 and 8.
FIT_SUBSET: tuple[tuple[str, int], ...] = (("llama2-70b", 2), ("llama2-70b", 8))
#: What each shipped profile is scored on: llama2-70b at tensor_parallel 4 (between the fitted TPs)
#: and bloom-176b at 8 (a model the fit never saw).
HELD_OUT: tuple[tuple[str, int], ...] = (("llama2-70b", 4), ("bloom-176b", 8))

_SPLITWISE_FILE = ("data", "serving", "splitwise_perf_model.csv")
_PROFILES_FILE = ("data", "step_profiles.csv")


# --------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------


def _tokens(name: str, value: object, maximum: float, *, whole: bool) -> np.ndarray:
    """Token counts as a float array: finite, in [0, maximum], whole numbers when ``whole``."""
    values = check_real_array(name, value)
    bad = ~np.isfinite(values) | (values < 0) | (values > maximum)
    if whole:
        bad |= np.isfinite(values) & (values != np.floor(values))
    if bad.any():
        first = values.ravel()[int(np.argmax(bad.ravel()))]
        where = "" if values.ndim == 0 else f" (entry {int(np.argmax(bad.ravel()))} of {_show(value)})"
        kind = "whole numbers of tokens" if whole else "token counts"
        raise ValueError(f"{name} must be {kind} in [0, {maximum:g}], got {_show(float(first))}{where}")
    return values


def _out(value: np.ndarray) -> float | np.ndarray:
    return float(value) if value.ndim == 0 else value


def _step_core_s(
    coefficients: np.ndarray,
    prefill_tokens: np.ndarray,
    decode_tokens: np.ndarray,
    context_tokens: np.ndarray,
    *,
    parameters: np.ndarray | float,
    weight_bytes: np.ndarray | float,
    kv_bytes_per_token: np.ndarray | float,
    layers: np.ndarray | float,
    peak_flops_per_s: float,
    bandwidth_bytes_per_s: float,
    tensor_parallel: np.ndarray | float,
) -> np.ndarray:
    """The step time for arguments already checked; the model and the fit both call this."""
    ce, be, overhead, latency, per_token_layer, per_decode = coefficients
    tokens = prefill_tokens + decode_tokens
    compute = 2.0 * parameters * tokens / (peak_flops_per_s * ce * tensor_parallel)
    memory = (weight_bytes + kv_bytes_per_token * context_tokens) / (
        bandwidth_bytes_per_s * be * tensor_parallel
    )
    ring = tensor_parallel - 1.0
    comm = layers * (latency * ring + per_token_layer * tokens * ring / tensor_parallel)
    step = overhead + np.maximum(compute, memory) + comm + per_decode * decode_tokens
    return np.where(tokens > 0, step, 0.0)


@dataclass(frozen=True)
class StepTimeModel:
    """Seconds one iteration of a serving engine takes on ``tensor_parallel`` GPUs (module docstring).

    ``compute_efficiency`` and ``bandwidth_efficiency`` are the fractions of the datasheet's dense
    peak FLOP/s and memory bandwidth that the kernels reach, in [1e-6, 1]; the five times
    (``overhead_s`` per iteration, ``comm_latency_s_per_layer`` per layer and extra GPU,
    ``comm_s_per_token_layer`` per token and layer, ``decode_s_per_token`` per decode token,
    ``prefill_overhead_s`` per iteration holding prompt tokens) each lie in [0,
    ``MAX_COEFFICIENT_S``]. The defaults are the ideal roofline: no overhead, no
    communication, the peaks reached. ``tensor_parallel`` lies in [1, 4096] and the GPUs must hold
    the weights.

    ``compute_precision`` is the precision of the multiplies (``profiles.COMPUTE_PRECISIONS``):
    ``"fp8"`` is W8A8 (the model's weights stored in 1 byte, ``load_model(name, "fp8")``) and makes
    ``hardware`` its ``at_precision("fp8")`` copy, whose ``peak_flops_per_s`` is the dense FP8 peak
    (about twice the BF16 one on H100, H200 and L4; refused on an A100, which has no FP8 tensor
    cores). The engine reads ``hardware.peak_flops_per_s``, so it needs nothing more. ``"bf16"`` (the
    default) keeps the BF16 peak, also for weight-only ``"int8"`` weights, which halve only the
    bytes. The efficiencies apply to whichever peak: a profile fitted on FP16 steps, used at FP8,
    assumes FP8 kernels reach the same fraction of their peak; an assumption to check against
    measured FP8 steps.

    >>> from scaleplay.profiles import load_hardware, load_model
    >>> step = StepTimeModel(load_hardware("H100 SXM"), load_model("Llama-3.1-70B"), tensor_parallel=4,
    ...                      overhead_s=0.005, comm_latency_s_per_layer=2e-5)
    >>> round(step.step_time_s(0, 8, 8 * 2000) * 1e3, 1)  # 8 decode tokens over 2,000 tokens each, ms
    20.7
    """

    hardware: Hardware
    model: ModelSpec
    tensor_parallel: int = 1
    compute_efficiency: float = 1.0
    bandwidth_efficiency: float = 1.0
    overhead_s: float = 0.0
    comm_latency_s_per_layer: float = 0.0
    comm_s_per_token_layer: float = 0.0
    decode_s_per_token: float = 0.0
    compute_precision: str = "bf16"
    prefill_overhead_s: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.hardware, Hardware):
            raise TypeError(f"hardware must be a Hardware, got {_kind(self.hardware)}")
        if not isinstance(self.model, ModelSpec):
            raise TypeError(f"model must be a ModelSpec, got {_kind(self.model)}")
        hardware = hardware_for_compute(self.hardware, self.model, self.compute_precision)
        object.__setattr__(self, "hardware", hardware)
        object.__setattr__(
            self,
            "tensor_parallel",
            check_int("tensor_parallel", self.tensor_parallel, minimum=1, maximum=MAX_TENSOR_PARALLEL),
        )
        for name in ("compute_efficiency", "bandwidth_efficiency"):
            object.__setattr__(self, name, check_range(name, getattr(self, name), _MIN_EFFICIENCY, 1.0))
        for name in (*FITTED_COEFFICIENTS[2:], "prefill_overhead_s"):
            value = check_range(name, getattr(self, name), 0.0, MAX_COEFFICIENT_S, unit=" s")
            object.__setattr__(self, name, value)
        if self.model.weight_bytes >= self.memory_bytes:
            raise ValueError(
                f"tensor_parallel={_show(self.tensor_parallel)} is too few: {self.model.name} needs "
                f"{self.model.weight_bytes / 1e9:.1f} GB of weights but {self.tensor_parallel} x "
                f"{self.hardware.name} hold {self.memory_bytes / 1e9:.1f} GB; raise tensor_parallel "
                "or store the weights in a smaller dtype"
            )

    # ---- the machine --------------------------------------------------------------------------------

    @property
    def memory_bytes(self) -> float:
        """Memory of all ``tensor_parallel`` GPUs together."""
        return self.hardware.memory_bytes * self.tensor_parallel

    @property
    def kv_capacity_tokens(self) -> int:
        """Tokens of KV cache that fit in the memory the weights leave free."""
        return int((self.memory_bytes - self.model.weight_bytes) // self.model.kv_bytes_per_token)

    @property
    def coefficients(self) -> dict[str, float]:
        """The six coefficients ``fit_step_model`` fits, by name."""
        return {name: getattr(self, name) for name in FITTED_COEFFICIENTS}

    def _core(self, prefill: np.ndarray, decode: np.ndarray, context: np.ndarray) -> np.ndarray:
        return self.prefill_overhead_s * (prefill > 0) + _step_core_s(
            np.array([getattr(self, name) for name in FITTED_COEFFICIENTS]),
            prefill,
            decode,
            context,
            parameters=self.model.parameters,
            weight_bytes=self.model.weight_bytes,
            kv_bytes_per_token=self.model.kv_bytes_per_token,
            layers=self.model.layers,
            peak_flops_per_s=self.hardware.peak_flops_per_s,
            bandwidth_bytes_per_s=self.hardware.memory_bandwidth_bytes_per_s,
            tensor_parallel=self.tensor_parallel,
        )

    # ---- the terms, each on its own -----------------------------------------------------------------

    def compute_time_s(self, tokens: object) -> float | np.ndarray:
        """Seconds of matrix multiplies for ``tokens`` tokens in one pass: ``2 P n / F``."""
        n = _tokens("tokens", tokens, MAX_BATCH_TOKENS, whole=True)
        flops_per_s = self.hardware.peak_flops_per_s * self.compute_efficiency * self.tensor_parallel
        return _out(2.0 * self.model.parameters * n / flops_per_s)

    def memory_time_s(self, context_tokens: object) -> float | np.ndarray:
        """Seconds to stream the weights and ``context_tokens`` tokens of KV cache once."""
        c = _tokens("context_tokens", context_tokens, MAX_CONTEXT_TOKENS, whole=False)
        bandwidth = (
            self.hardware.memory_bandwidth_bytes_per_s * self.bandwidth_efficiency * self.tensor_parallel
        )
        return _out((self.model.weight_bytes + self.model.kv_bytes_per_token * c) / bandwidth)

    def comm_time_s(self, tokens: object) -> float | np.ndarray:
        """Seconds of the tensor-parallel all-reduces of a pass of ``tokens`` tokens (0 at TP 1)."""
        n = _tokens("tokens", tokens, MAX_BATCH_TOKENS, whole=True)
        tp = float(self.tensor_parallel)
        per_layer = self.comm_latency_s_per_layer * (tp - 1) + self.comm_s_per_token_layer * n * (tp - 1) / tp
        return _out(self.model.layers * per_layer)

    # ---- the iteration ------------------------------------------------------------------------------

    def step_time_s(
        self, prefill_tokens: object, decode_tokens: object, context_tokens: object
    ) -> float | np.ndarray:
        """Seconds of one iteration: ``prefill_tokens`` prompt tokens and ``decode_tokens`` decode
        tokens in one pass, reading ``context_tokens`` tokens of KV cache in all.

        Numbers or arrays (broadcast together); a float for three numbers. Token counts are whole
        numbers in [0, 10**15]; ``context_tokens`` may be fractional (a mean) and at most 2 x 10**15.
        """
        prefill = _tokens("prefill_tokens", prefill_tokens, MAX_BATCH_TOKENS, whole=True)
        decode = _tokens("decode_tokens", decode_tokens, MAX_BATCH_TOKENS, whole=True)
        context = _tokens("context_tokens", context_tokens, MAX_CONTEXT_TOKENS, whole=False)
        try:
            prefill, decode, context = np.broadcast_arrays(prefill, decode, context)
        except ValueError as error:
            raise ValueError(
                "prefill_tokens, decode_tokens and context_tokens must broadcast together, got shapes "
                f"{np.shape(prefill)}, {np.shape(decode)} and {np.shape(context)}"
            ) from error
        return _out(self._core(prefill, decode, context))

    def prefill_time_s(self, batch: object, prompt_tokens: object) -> float | np.ndarray:
        """Seconds to prefill ``batch`` requests of ``prompt_tokens`` prompt tokens each, in one pass.

        The pass holds ``batch x prompt_tokens`` tokens and its attention reads the KV cache it
        writes, the prompts themselves.
        """
        b = _tokens("batch", batch, MAX_BATCH_TOKENS, whole=True)
        p = _tokens("prompt_tokens", prompt_tokens, MAX_BATCH_TOKENS, whole=True)
        tokens = b * p
        if np.any(tokens > MAX_BATCH_TOKENS):
            raise ValueError(
                f"batch x prompt_tokens must be at most {MAX_BATCH_TOKENS:g} tokens, got "
                f"{_show(float(np.max(tokens)))}"
            )
        return self.step_time_s(tokens, 0, tokens)

    def decode_step_time_s(self, batch: object, context_tokens: object) -> float | np.ndarray:
        """Seconds of one decode step of ``batch`` requests holding ``context_tokens`` of KV cache in all
        (the sum over the batch of each request's prompt and the tokens generated so far)."""
        return self.step_time_s(0, batch, context_tokens)


@dataclass(frozen=True)
class ExponentialStepTime:
    """Iterations of random length, exponential with mean ``mean_s`` whatever they hold, and a KV cache
    of ``kv_capacity_tokens``: queueing theory's picture of a continuous batcher, to check the engine
    against it. Memoryless iterations make a request that joins in the middle of one as good as one
    that was there at its start, so the engine lets it join the iteration in progress (late entry):
    with one-token answers and ``max_num_seqs = b`` the replica is the bulk-service queue with late
    entry, ``queueing.bulk_service_mean_in_system(..., late_entry=True)``.
    """

    mean_s: float
    kv_capacity_tokens: int = 10**9

    def __post_init__(self) -> None:
        mean_s = check_range("mean_s", self.mean_s, 1e-12, MAX_COEFFICIENT_S, unit=" s")
        most = int(MAX_BATCH_TOKENS)
        capacity = check_int("kv_capacity_tokens", self.kv_capacity_tokens, minimum=1, maximum=most)
        object.__setattr__(self, "mean_s", mean_s)
        object.__setattr__(self, "kv_capacity_tokens", capacity)


# --------------------------------------------------------------------------------------------------
# The fit
# --------------------------------------------------------------------------------------------------

_OBSERVATION_COLUMNS = (
    "model",
    "tensor_parallel",
    "prefill_tokens",
    "decode_tokens",
    "context_tokens",
    "step_time_s",
)


@dataclass(frozen=True)
class StepFit:
    """The coefficients ``fit_step_model`` found for one ``hardware``, and how well they fit.

    ``fit_mape`` and ``fit_max_ape`` are the mean and largest absolute percentage error (as
    fractions) over the ``points`` steps fitted; ``at_bound`` names the coefficients that ended on a
    bound (an efficiency at 1 wanted more: the data ask for more than the datasheet's peak, and the
    fit held it there; a time at 0 wanted less).
    """

    hardware: Hardware
    compute_efficiency: float
    bandwidth_efficiency: float
    overhead_s: float
    comm_latency_s_per_layer: float
    comm_s_per_token_layer: float
    decode_s_per_token: float
    points: int
    fit_mape: float
    fit_max_ape: float
    at_bound: tuple[str, ...] = ()

    @property
    def coefficients(self) -> dict[str, float]:
        """The six coefficients by name."""
        return {name: getattr(self, name) for name in FITTED_COEFFICIENTS}

    def model(self, model: ModelSpec, tensor_parallel: int) -> StepTimeModel:
        """The ``StepTimeModel`` of ``model`` on ``tensor_parallel`` GPUs with these coefficients."""
        return StepTimeModel(self.hardware, model, tensor_parallel, **self.coefficients)


def _check_observations(observations: object, models: Mapping[str, ModelSpec]) -> pd.DataFrame:
    if not isinstance(observations, pd.DataFrame):
        raise TypeError(f"observations must be a pandas DataFrame, got {_kind(observations)}")
    missing = [c for c in _OBSERVATION_COLUMNS if c not in observations.columns]
    if missing:
        raise ValueError(f"observations lacks the columns {missing}; it has {list(observations.columns)}")
    if len(observations) == 0:
        raise ValueError("observations must hold at least one step, got an empty table")
    unknown = sorted(set(observations["model"]) - set(models))
    if unknown:
        raise ValueError(
            f"observations['model'] holds {_show(unknown)}, not in models: {_show(sorted(models))}"
        )
    for column, maximum in (
        ("prefill_tokens", MAX_BATCH_TOKENS),
        ("decode_tokens", MAX_BATCH_TOKENS),
        ("context_tokens", MAX_CONTEXT_TOKENS),
    ):
        _tokens(
            f"observations['{column}']",
            observations[column].to_numpy(),
            maximum,
            whole=column != "context_tokens",
        )
    times = check_real_array("observations['step_time_s']", observations["step_time_s"].to_numpy())
    if not np.all(np.isfinite(times) & (times > 0)):
        bad = times[~(np.isfinite(times) & (times > 0))][0]
        raise ValueError(f"observations['step_time_s'] must be finite and > 0 s, got {_show(float(bad))}")
    tp = check_real_array("observations['tensor_parallel']", observations["tensor_parallel"].to_numpy())
    bad_tp = ~((tp >= 1) & (tp <= MAX_TENSOR_PARALLEL) & (tp == np.floor(tp)))
    if bad_tp.any():
        raise ValueError(
            f"observations['tensor_parallel'] must be whole numbers in [1, {MAX_TENSOR_PARALLEL}], "
            f"got {_show(float(tp[bad_tp][0]))}"
        )
    tokens = observations["prefill_tokens"].to_numpy() + observations["decode_tokens"].to_numpy()
    if np.any(tokens <= 0):
        raise ValueError("observations: every step must hold tokens (prefill_tokens + decode_tokens > 0)")
    return observations


def _core_for(
    observations: pd.DataFrame, hardware: Hardware, models: Mapping[str, ModelSpec]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """The arrays ``_step_core_s`` needs for each row of ``observations``."""
    names = observations["model"].to_numpy()

    def per_row(attribute: str) -> np.ndarray:
        return np.array([float(getattr(models[name], attribute)) for name in names])

    specs = {
        "parameters": per_row("parameters"),
        "weight_bytes": per_row("weight_bytes"),
        "kv_bytes_per_token": per_row("kv_bytes_per_token"),
        "layers": per_row("layers"),
        "peak_flops_per_s": hardware.peak_flops_per_s,
        "bandwidth_bytes_per_s": hardware.memory_bandwidth_bytes_per_s,
        "tensor_parallel": observations["tensor_parallel"].to_numpy(dtype=float),
    }
    return (
        observations["prefill_tokens"].to_numpy(dtype=float),
        observations["decode_tokens"].to_numpy(dtype=float),
        observations["context_tokens"].to_numpy(dtype=float),
        specs,
    )


def fit_step_model(
    observations: pd.DataFrame,
    hardware: Hardware,
    models: Mapping[str, ModelSpec] | None = None,
) -> StepFit:
    """Fit ``StepTimeModel``'s six coefficients for ``hardware`` to measured steps.

    ``observations`` has one row per measured iteration: ``model`` (a key of ``models``),
    ``tensor_parallel``, ``prefill_tokens``, ``decode_tokens``, ``context_tokens`` and
    ``step_time_s`` (``splitwise_step_observations`` makes such a table). ``models`` maps each
    ``model`` to its ``ModelSpec`` (by default ``splitwise_models()``).

    Least squares on ``log(model) - log(measured)`` (``scipy.optimize.least_squares``, trust-region
    reflective, within the bounds: efficiencies in [1e-6, 1], times >= 0), started from four points
    (each efficiency 0.3 or 0.8, the times at typical sizes); the best of the four is kept. The same
    table gives the same numbers.
    """
    if not isinstance(hardware, Hardware):
        raise TypeError(f"hardware must be a Hardware, got {_kind(hardware)}")
    models = splitwise_models() if models is None else models
    if not isinstance(models, Mapping) or not all(isinstance(m, ModelSpec) for m in models.values()):
        raise TypeError(f"models must map names to ModelSpec, got {_kind(models)}")
    observations = _check_observations(observations, models)
    prefill, decode, context, specs = _core_for(observations, hardware, models)
    log_measured = np.log(observations["step_time_s"].to_numpy(dtype=float))

    def residuals(scaled: np.ndarray) -> np.ndarray:
        return np.log(_step_core_s(scaled * _SCALE, prefill, decode, context, **specs)) - log_measured

    low = np.array([_MIN_EFFICIENCY, _MIN_EFFICIENCY, 0.0, 0.0, 0.0, 0.0])
    high = np.array([1.0, 1.0, np.inf, np.inf, np.inf, np.inf])
    best = None
    for ce in (0.3, 0.8):
        for be in (0.3, 0.8):
            result = optimize.least_squares(
                residuals, np.array([ce, be, 1.0, 1.0, 1.0, 1.0]), bounds=(low, high),
                method="trf", x_scale=1.0, xtol=1e-12, ftol=1e-12, gtol=1e-12, max_nfev=5000,
            )  # fmt: skip
            if best is None or result.cost < best.cost:
                best = result
    scaled = best.x.copy()
    on_low, on_high = scaled <= low + 1e-9, scaled >= high - 1e-9
    scaled[on_low], scaled[on_high] = low[on_low], high[on_high]  # on a bound: exactly the bound
    coefficients = scaled * _SCALE
    ape = np.abs(np.expm1(residuals(scaled)))
    at_bound = tuple(name for name, hit in zip(FITTED_COEFFICIENTS, on_low | on_high, strict=True) if hit)
    return StepFit(
        hardware,
        *(float(c) for c in coefficients),
        points=len(observations),
        fit_mape=float(np.mean(ape)),
        fit_max_ape=float(np.max(ape)),
        at_bound=at_bound,
    )


def prediction_errors(
    fit: StepFit | Mapping[str, float],
    observations: pd.DataFrame,
    hardware: Hardware | None = None,
    models: Mapping[str, ModelSpec] | None = None,
) -> pd.DataFrame:
    """How far the model with ``fit``'s coefficients lands from each group of measured steps.

    ``fit`` is a ``StepFit`` or a mapping of the six coefficients (then ``hardware`` is needed).
    One row per ``model``, ``tensor_parallel`` and ``phase`` (and ``profile`` first, when
    ``observations`` has it; ``phase`` is ``"prefill"`` for a step with prefill tokens, else
    ``"decode"``): ``points``, ``mape`` (mean absolute percentage error, a fraction) and ``max_ape``.
    """
    if isinstance(fit, StepFit):
        hardware = fit.hardware
        coefficients = fit.coefficients
    elif isinstance(fit, Mapping):
        coefficients = dict(fit)
        if sorted(coefficients) != sorted(FITTED_COEFFICIENTS):
            raise ValueError(
                f"fit must hold the coefficients {FITTED_COEFFICIENTS}, got {_show(sorted(coefficients))}"
            )
        if not isinstance(hardware, Hardware):
            raise TypeError(f"hardware must be a Hardware when fit is a mapping, got {_kind(hardware)}")
    else:
        raise TypeError(f"fit must be a StepFit or a mapping of coefficients, got {_kind(fit)}")
    models = splitwise_models() if models is None else models
    observations = _check_observations(observations, models)
    prefill, decode, context, specs = _core_for(observations, hardware, models)
    predicted = _step_core_s(
        np.array([coefficients[n] for n in FITTED_COEFFICIENTS]), prefill, decode, context, **specs
    )
    table = observations.assign(
        phase=np.where(prefill > 0, "prefill", "decode"),
        ape=np.abs(predicted / observations["step_time_s"].to_numpy(dtype=float) - 1.0),
    )
    keys = [k for k in ("profile", "model", "tensor_parallel", "phase") if k in table.columns]
    return table.groupby(keys, sort=True)["ape"].agg(points="size", mape="mean", max_ape="max").reset_index()


# --------------------------------------------------------------------------------------------------
# The shipped measurements (SplitwiseSim) and the shipped profiles
# --------------------------------------------------------------------------------------------------


def load_splitwise_measurements() -> pd.DataFrame:
    """SplitwiseSim's measured prefill and decode times (``data/serving/splitwise_perf_model.csv``,
    MIT, see its README), one row per run, times converted to seconds.

    Columns: ``model``, ``hardware``, ``tensor_parallel``, ``prompt_tokens`` (per request),
    ``batch_size``, ``token_size`` (tokens asked for per request), ``prefill_time_s`` (the whole
    batch's prefill), ``decode_step_time_s`` (one decode step of the batch, the run's mean),
    ``e2e_time_s``, ``peak_power`` and ``average_power`` (fractions of the power limit).
    """
    with resources.files("scaleplay").joinpath(*_SPLITWISE_FILE).open(encoding="utf-8") as f:
        raw = pd.read_csv(f)
    return pd.DataFrame(
        {
            "model": raw["model"],
            "hardware": raw["hardware"],
            "tensor_parallel": raw["tensor_parallel"].astype(int),
            "prompt_tokens": raw["prompt_size"].astype(int),
            "batch_size": raw["batch_size"].astype(int),
            "token_size": raw["token_size"].astype(int),
            "prefill_time_s": raw["prompt_time"] / 1e3,
            "decode_step_time_s": raw["token_time"] / 1e3,
            "e2e_time_s": raw["e2e_time"] / 1e3,
            "peak_power": raw["peak_power"],
            "average_power": raw["average_power"],
        }
    )


def splitwise_step_observations(*, include_anomalies: bool = False) -> pd.DataFrame:
    """The SplitwiseSim measurements as steps ``fit_step_model`` reads.

    Repeats are reduced to their median. One **prefill** step per model, hardware, tensor_parallel,
    prompt and batch (the runs that differ only in ``token_size`` repeat the same prefill): it holds
    ``batch x prompt`` tokens and reads the prompts' KV cache (``context_tokens`` = the prompt
    tokens). One **decode** step per configuration (``token_size`` too): it holds ``batch`` tokens
    and reads ``batch x (prompt + generated / 2)`` tokens of context: the step time is the run's
    mean, and a request holds on average its prompt and half the tokens it generates. ``generated``
    is the smaller of ``token_size`` and the steps the run took, ``1 + (e2e - prefill) / decode
    step`` (the runs with ``token_size`` >= 1024 stopped early). The KV cache is under a tenth of a
    llama2-70b decode step's memory traffic (8 KV heads) and about 30% of a bloom-176b one at batch
    64 (112 KV heads), so the assumption matters most for bloom.

    The llama2-70b rows at tensor_parallel 2 and batch 64 contradict their neighbours (a prefill
    8 times faster than at batch 32, an end-to-end time 15 times the sum of its parts) and are left
    out unless ``include_anomalies``.

    Columns: ``profile`` (SplitwiseSim's hardware name), ``model``, ``tensor_parallel``, ``phase``,
    ``batch_size``, ``prompt_tokens`` (per request), ``generated_tokens`` (per request),
    ``prefill_tokens``, ``decode_tokens``, ``context_tokens``, ``step_time_s``, ``repeats`` (runs
    behind the median). ``generated_tokens`` is NaN on prefill rows.
    """
    runs = load_splitwise_measurements()
    setup = ["hardware", "model", "tensor_parallel", "prompt_tokens", "batch_size"]
    prefills = (
        runs.groupby(setup, sort=True)
        .agg(step_time_s=("prefill_time_s", "median"), repeats=("prefill_time_s", "size"))
        .reset_index()
    )
    decodes = (
        runs.groupby([*setup, "token_size"], sort=True)
        .agg(
            step_time_s=("decode_step_time_s", "median"),
            prefill_time_s=("prefill_time_s", "median"),
            e2e_time_s=("e2e_time_s", "median"),
            repeats=("decode_step_time_s", "size"),
        )
        .reset_index()
    )
    if not include_anomalies:
        prefills, decodes = (
            t[~((t["model"] == "llama2-70b") & (t["tensor_parallel"] == 2) & (t["batch_size"] == 64))]
            for t in (prefills, decodes)
        )
    steps_run = 1.0 + (decodes["e2e_time_s"] - decodes["prefill_time_s"]) / decodes["step_time_s"]
    generated = np.minimum(decodes["token_size"].to_numpy(dtype=float), np.maximum(steps_run.to_numpy(), 1.0))
    tokens = (prefills["batch_size"] * prefills["prompt_tokens"]).to_numpy(dtype=float)
    prefill = prefills.rename(columns={"hardware": "profile"}).assign(
        phase="prefill",
        generated_tokens=np.nan,
        prefill_tokens=tokens,
        decode_tokens=0.0,
        context_tokens=tokens,
    )
    batch = decodes["batch_size"].to_numpy(dtype=float)
    decode = decodes.rename(columns={"hardware": "profile"}).assign(
        phase="decode",
        generated_tokens=generated,
        prefill_tokens=0.0,
        decode_tokens=batch,
        context_tokens=batch * (decodes["prompt_tokens"].to_numpy(dtype=float) + generated / 2.0),
    )
    columns = [
        "profile", "model", "tensor_parallel", "phase", "batch_size", "prompt_tokens", "generated_tokens",
        "prefill_tokens", "decode_tokens", "context_tokens", "step_time_s", "repeats",
    ]  # fmt: skip
    return pd.concat([prefill, decode], ignore_index=True)[columns]


def splitwise_models() -> dict[str, ModelSpec]:
    """SplitwiseSim's models as ``ModelSpec`` (fp16 weights and KV cache), by SplitwiseSim's names."""
    return {name: load_model(row, "fp16", kv_dtype="fp16") for name, row in SPLITWISE_MODELS.items()}


def _in(observations: pd.DataFrame, pairs: tuple[tuple[str, int], ...]) -> np.ndarray:
    mask = np.zeros(len(observations), dtype=bool)
    for model, tp in pairs:
        mask |= (observations["model"] == model).to_numpy() & (
            observations["tensor_parallel"] == tp
        ).to_numpy()
    return mask


def _describe(pairs: tuple[tuple[str, int], ...]) -> str:
    return "; ".join(f"{model} TP{tp}" for model, tp in pairs)


def splitwise_holdout_errors() -> pd.DataFrame:
    """Each profile fitted on ``FIT_SUBSET``, scored on ``HELD_OUT``: ``prediction_errors`` per
    profile, model, tensor_parallel and phase (``mape`` and ``max_ape`` as fractions)."""
    return _fit_all()[1]


def fit_splitwise_profiles() -> pd.DataFrame:
    """Fit one profile per SplitwiseSim hardware on ``FIT_SUBSET``; score it on ``HELD_OUT``.

    One row per profile: ``profile``, ``hardware`` (the ``data/hardware.csv`` row), the six
    coefficients, ``fit_mape``, ``holdout_mape_prefill``, ``holdout_max_ape_prefill``,
    ``holdout_mape_decode``, ``holdout_max_ape_decode`` (fractions, over every held-out step of
    that phase) and ``at_bound``. ``data/step_profiles.csv`` holds these numbers (rounded to six
    significant digits); a test re-fits and compares.
    """
    return _fit_all()[0]


def _fit_all() -> tuple[pd.DataFrame, pd.DataFrame]:
    observations = splitwise_step_observations()
    models = splitwise_models()
    rows, errors = [], []
    for profile, hardware_name in SPLITWISE_HARDWARE.items():
        hardware = load_hardware(hardware_name)
        mine = observations[observations["profile"] == profile]
        fit = fit_step_model(mine[_in(mine, FIT_SUBSET)], hardware, models)
        held = mine[_in(mine, HELD_OUT)]
        per_group = prediction_errors(fit, held, models=models)
        errors.append(per_group)
        prefill, decode, context, specs = _core_for(held, hardware, models)
        coefficients = np.array([fit.coefficients[n] for n in FITTED_COEFFICIENTS])
        ape = np.abs(
            _step_core_s(coefficients, prefill, decode, context, **specs) / held["step_time_s"] - 1.0
        )
        is_prefill = prefill > 0
        rows.append(
            {
                "profile": profile,
                "hardware": hardware_name,
                **fit.coefficients,
                "fit_mape": fit.fit_mape,
                "holdout_mape_prefill": float(ape[is_prefill].mean()),
                "holdout_max_ape_prefill": float(ape[is_prefill].max()),
                "holdout_mape_decode": float(ape[~is_prefill].mean()),
                "holdout_max_ape_decode": float(ape[~is_prefill].max()),
                "at_bound": " ".join(fit.at_bound),
            }
        )
    return pd.DataFrame(rows), pd.concat(errors, ignore_index=True)


def _read_profiles() -> dict[str, dict[str, str]]:
    with resources.files("scaleplay").joinpath(*_PROFILES_FILE).open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        if not row.get("source") or not row.get("source_date"):
            raise ValueError(f"step_profiles.csv: row {row.get('profile')!r} lacks its source or source_date")
    return {row["profile"]: row for row in rows}


def step_profile_names() -> list[str]:
    """Profiles ``load_step_profile`` knows (rows of ``data/step_profiles.csv``)."""
    return list(_read_profiles())


def load_step_profile(
    profile: str,
    model: str | ModelSpec,
    tensor_parallel: int,
    *,
    dtype: str = "fp16",
    kv_dtype: str = "fp16",
    compute_precision: str = "bf16",
) -> StepTimeModel:
    """The ``StepTimeModel`` of ``model`` on ``tensor_parallel`` GPUs with the coefficients fitted for
    ``profile`` (a row of ``data/step_profiles.csv``: ``"a100-80gb"``, ``"h100-80gb"``,
    ``"h100-80gb-pcap"``).

    ``model`` is a ``ModelSpec`` or a name of ``data/models.csv`` (loaded with ``dtype`` weights and a
    ``kv_dtype`` cache). The coefficients were fitted on llama2-70b at TP 2 and 8; the row says how
    far they land on held-out steps. Outside TP 2 to 8 and those two models they are extrapolations.
    ``compute_precision="fp8"`` (with ``dtype="fp8"``) runs the multiplies at the FP8 peak with the
    efficiencies fitted on FP16 steps (``StepTimeModel``: assumed equal, not measured).

    >>> step = load_step_profile("h100-80gb", "Llama-2-70B", tensor_parallel=4)
    >>> 0.02 < step.decode_step_time_s(1, 600) < 0.04  # measured: 29.7 ms
    True
    """
    table = _read_profiles()
    if not isinstance(profile, str) or profile not in table:
        raise ValueError(f"unknown step profile {_show(profile)}; known: {', '.join(map(repr, table))}")
    row = table[profile]
    spec = model if isinstance(model, ModelSpec) else load_model(model, dtype, kv_dtype=kv_dtype)
    return StepTimeModel(
        load_hardware(row["hardware"]),
        spec,
        tensor_parallel,
        **{name: float(row[name]) for name in FITTED_COEFFICIENTS},
        compute_precision=compute_precision,
    )
