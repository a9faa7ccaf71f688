"""The roofline of a decode step, and its fit to measured times.

A decode step moves bytes and does FLOPs. Both grow with the batch size ``B`` in a simple way:

- the **weights** are read once per step whatever the batch (``bytes_fixed``): this is what batching
  shares;
- each request adds its own activations and, above all, its own **KV cache** (``bytes_per_item``):
  nothing shares those;
- each request costs ``flops_per_item`` (2 FLOPs per weight, plus its attention).

A device streams ``bandwidth`` bytes per second and computes ``peak`` FLOP per second, so the step
takes

    t(B) = max(bytes(B) / bandwidth, flops(B) / peak) + overhead

At small batches the weight read dominates and a bigger batch is nearly free (memory-bound); past the
**ridge batch size** ``B*`` where the two terms meet, each extra request costs its FLOPs (compute-
bound) and tokens per second stop growing. A long context raises ``bytes_per_item`` and pushes ``B*``
out, or removes it: the KV cache keeps the step memory-bound however large the batch.

``fit_roofline`` recovers ``bandwidth``, ``peak`` and ``overhead`` from measured times (least squares
on the logarithm, so a 10% miss costs the same at every batch size). The fit's curve is piecewise
linear in ``B`` with one kink at the ridge, so ``RooflineFit.service_time`` hands the simulator a
``TabulatedServiceTime`` through the kink that reproduces it exactly.

>>> traffic = StepTraffic(bytes_fixed=16e6, bytes_per_item=2e4, flops_per_item=8e6)
>>> round(traffic.ridge_batch_size(bandwidth_bytes_per_s=20e9, peak_flops_per_s=200e9), 1)
20.5
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._validate import check_non_negative, check_positive
from .profiles import TabulatedServiceTime

__all__ = ["StepTraffic", "roofline_time_s", "RooflineFit", "fit_roofline"]


@dataclass(frozen=True)
class StepTraffic:
    """Bytes and FLOPs of one decode step as linear functions of the batch size ``B``.

    ``bytes(B) = bytes_fixed + bytes_per_item * B`` and ``flops(B) = flops_per_item * B``.
    """

    bytes_fixed: float
    bytes_per_item: float
    flops_per_item: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "bytes_fixed", check_non_negative("bytes_fixed", self.bytes_fixed))
        object.__setattr__(self, "bytes_per_item", check_non_negative("bytes_per_item", self.bytes_per_item))
        object.__setattr__(self, "flops_per_item", check_positive("flops_per_item", self.flops_per_item))
        if self.bytes_fixed + self.bytes_per_item == 0:
            raise ValueError("StepTraffic needs bytes_fixed or bytes_per_item > 0; both are 0")

    def bytes_moved(self, batch_size: float | np.ndarray) -> float | np.ndarray:
        """Bytes one step moves at ``batch_size``."""
        return self.bytes_fixed + self.bytes_per_item * _batch(batch_size)

    def flops(self, batch_size: float | np.ndarray) -> float | np.ndarray:
        """FLOPs one step does at ``batch_size``."""
        return self.flops_per_item * _batch(batch_size)

    def intensity_flops_per_byte(self, batch_size: float | np.ndarray) -> float | np.ndarray:
        """Arithmetic intensity: FLOPs per byte moved (grows with the batch while weights dominate)."""
        return self.flops(batch_size) / self.bytes_moved(batch_size)

    def ridge_batch_size(self, bandwidth_bytes_per_s: float, peak_flops_per_s: float) -> float:
        """Batch size where memory time equals compute time; ``inf`` if the step never turns compute-bound.

        ``(bytes_fixed + bytes_per_item B) / bandwidth = flops_per_item B / peak`` gives
        ``B* = (bytes_fixed / bandwidth) / (flops_per_item / peak - bytes_per_item / bandwidth)``.
        """
        bandwidth = check_positive("bandwidth_bytes_per_s", bandwidth_bytes_per_s)
        peak = check_positive("peak_flops_per_s", peak_flops_per_s)
        per_item_s = self.flops_per_item / peak - self.bytes_per_item / bandwidth
        if per_item_s <= 0:
            return math.inf
        return (self.bytes_fixed / bandwidth) / per_item_s


def _batch(batch_size: float | np.ndarray) -> float | np.ndarray:
    b = np.asarray(batch_size, dtype=float)
    if not np.all(np.isfinite(b)) or np.any(b < 1):
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    return float(b) if b.ndim == 0 else b


def roofline_time_s(
    batch_size: float | np.ndarray,
    traffic: StepTraffic,
    bandwidth_bytes_per_s: float,
    peak_flops_per_s: float,
    overhead_s: float = 0.0,
) -> float | np.ndarray:
    """``max(bytes(B) / bandwidth, flops(B) / peak) + overhead``: seconds of one step.

    >>> t = StepTraffic(bytes_fixed=1e9, bytes_per_item=0.0, flops_per_item=1e9)
    >>> roofline_time_s(1, t, 1e12, 1e14), roofline_time_s(1000, t, 1e12, 1e14)
    (0.001, 0.01)
    """
    if not isinstance(traffic, StepTraffic):
        raise TypeError(f"traffic must be a StepTraffic, got {type(traffic).__name__}")
    bandwidth = check_positive("bandwidth_bytes_per_s", bandwidth_bytes_per_s)
    peak = check_positive("peak_flops_per_s", peak_flops_per_s)
    overhead = check_non_negative("overhead_s", overhead_s)
    out = np.maximum(traffic.bytes_moved(batch_size) / bandwidth, traffic.flops(batch_size) / peak) + overhead
    return float(out) if np.ndim(out) == 0 else out


@dataclass(frozen=True)
class RooflineFit:
    """A roofline fitted to measured step times: the device as the measurements saw it.

    ``points_memory_bound`` and ``points_compute_bound`` count the measurements on each side of the
    fitted ridge. With none on one side, that side's figure is not identified by the data (e.g. if
    every batch was memory-bound, ``peak_flops_per_s`` only says the device is *at least* that fast).
    ``rms_log_error`` is the root mean square of ``log(fitted / measured)``: 0.05 means a typical
    miss of about 5%.
    """

    traffic: StepTraffic
    bandwidth_bytes_per_s: float
    peak_flops_per_s: float
    overhead_s: float
    rms_log_error: float
    points_memory_bound: int
    points_compute_bound: int

    def __post_init__(self) -> None:
        if not isinstance(self.traffic, StepTraffic):
            raise TypeError(f"traffic must be a StepTraffic, got {type(self.traffic).__name__}")
        for name in ("bandwidth_bytes_per_s", "peak_flops_per_s"):
            object.__setattr__(self, name, check_positive(name, getattr(self, name)))
        for name in ("overhead_s", "rms_log_error"):
            object.__setattr__(self, name, check_non_negative(name, getattr(self, name)))

    @property
    def ridge_batch_size(self) -> float:
        """Batch size where the fitted step turns compute-bound (``inf``: never)."""
        return self.traffic.ridge_batch_size(self.bandwidth_bytes_per_s, self.peak_flops_per_s)

    def step_time_s(self, batch_size: float | np.ndarray) -> float | np.ndarray:
        """Fitted seconds of one step at ``batch_size`` (scalar or array, each >= 1)."""
        return roofline_time_s(
            batch_size, self.traffic, self.bandwidth_bytes_per_s, self.peak_flops_per_s, self.overhead_s
        )

    def tokens_per_s(self, batch_size: float | np.ndarray) -> float | np.ndarray:
        """Fitted tokens per second: each request in the batch gets one token per step."""
        return _batch(batch_size) / self.step_time_s(batch_size)

    def service_time(
        self, *, layers: float = 1.0, max_batch_size: int = 4096, prefill_s_per_token: float = 0.0
    ) -> TabulatedServiceTime:
        """The fitted curve as a ``ServiceTime`` for the simulator (one decode step per output token).

        ``layers`` scales the step: a model whose decode step is ``layers`` copies of the measured
        one (e.g. the measured layer's weight bytes divided into the model's). The table holds batch
        1, the ridge (when it falls inside) and ``max_batch_size``; since the fitted curve is linear
        on each side of the ridge, linear interpolation reproduces it exactly, and the table's
        extrapolation past ``max_batch_size`` continues the compute-bound line.
        """
        layers = check_positive("layers", layers)
        if not isinstance(max_batch_size, int) or isinstance(max_batch_size, bool) or max_batch_size < 2:
            raise ValueError(f"max_batch_size must be an integer >= 2, got {max_batch_size!r}")
        sizes = [1.0, float(max_batch_size)]
        ridge = self.ridge_batch_size
        if 1 < ridge < max_batch_size:
            sizes.insert(1, ridge)
        seconds = layers * np.asarray(self.step_time_s(np.asarray(sizes)))
        return TabulatedServiceTime(
            tuple(sizes),
            tuple(seconds.tolist()),
            per_decode_step=True,
            prefill_s_per_token=prefill_s_per_token,
        )


def _model_and_jacobian(
    theta: np.ndarray, bytes_: np.ndarray, flops: np.ndarray, fixed_overhead_s: float | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """log t, its Jacobian and the memory-bound mask; theta = log(1/bandwidth, 1/peak[, overhead])."""
    inv_bw, inv_peak = np.exp(theta[:2])
    overhead = float(np.exp(theta[2])) if fixed_overhead_s is None else fixed_overhead_s
    memory_s, compute_s = bytes_ * inv_bw, flops * inv_peak
    memory_bound = memory_s >= compute_s
    total = np.maximum(memory_s, compute_s) + overhead
    columns = [np.where(memory_bound, memory_s, 0.0), np.where(memory_bound, 0.0, compute_s)]
    if fixed_overhead_s is None:
        columns.append(np.full_like(total, overhead))
    return np.log(total), np.column_stack(columns) / total[:, None], memory_bound


def _levenberg_marquardt(
    theta: np.ndarray,
    bytes_: np.ndarray,
    flops: np.ndarray,
    log_t: np.ndarray,
    fixed_overhead_s: float | None,
    iterations: int = 200,
) -> tuple[np.ndarray, float]:
    model, jac, _ = _model_and_jacobian(theta, bytes_, flops, fixed_overhead_s)
    loss = float(np.sum((model - log_t) ** 2))
    damping = 1e-2
    for _ in range(iterations):
        residual = model - log_t
        normal = jac.T @ jac
        gradient = jac.T @ residual
        step = np.linalg.solve(normal + damping * np.diag(np.diag(normal) + 1e-12), -gradient)
        step = np.clip(step, -3.0, 3.0)  # at most a factor e^3 per iteration: no overflow in exp
        trial = theta + step
        with np.errstate(all="ignore"):
            trial_model, trial_jac, _ = _model_and_jacobian(trial, bytes_, flops, fixed_overhead_s)
            trial_loss = float(np.sum((trial_model - log_t) ** 2))
        if np.isfinite(trial_loss) and trial_loss < loss:
            converged = loss - trial_loss < 1e-15 * max(loss, 1e-300) or np.max(np.abs(step)) < 1e-10
            theta, model, jac, loss = trial, trial_model, trial_jac, trial_loss
            damping = max(damping / 3.0, 1e-12)
            if converged:
                break
        else:
            damping *= 4.0
            if damping > 1e12:
                break
    return theta, loss


def fit_roofline(
    batch_sizes: object, seconds: object, traffic: StepTraffic, *, overhead_s: float | None = None
) -> RooflineFit:
    """Fit bandwidth, peak and overhead of ``t(B) = max(bytes(B)/bandwidth, flops(B)/peak) + overhead``.

    ``seconds[i]`` is the measured time of one step at ``batch_sizes[i]``; ``traffic`` says how many
    bytes and FLOPs that step moves (the shape of the kernel, known exactly). The fit minimizes
    ``sum(log(t_fit(B_i)) - log(seconds_i))^2`` over the positive figures with Levenberg-Marquardt,
    started from a small grid around the best bandwidth and FLOP rate the measurements achieved; the
    best start wins. ``overhead_s`` fixes the overhead (e.g. measured on a tiny step) instead of
    fitting it: useful when the kernel strays from the roofline at some batch sizes and a free
    overhead would soak up the misfit. As many measurements as unknowns are needed; both sides of the
    ridge are needed to pin both bandwidth and peak (``RooflineFit`` counts the points on each side).
    """
    if not isinstance(traffic, StepTraffic):
        raise TypeError(f"traffic must be a StepTraffic, got {type(traffic).__name__}")
    fixed = None if overhead_s is None else check_non_negative("overhead_s", overhead_s)
    unknowns = 3 if fixed is None else 2
    sizes = np.asarray(batch_sizes, dtype=float)
    times = np.asarray(seconds, dtype=float)
    if sizes.ndim != 1 or times.ndim != 1 or sizes.size != times.size:
        raise ValueError(
            "batch_sizes and seconds must be 1-D and of one length, "
            f"got shapes {sizes.shape} and {times.shape}"
        )
    if sizes.size < unknowns:
        raise ValueError(f"fit_roofline needs at least {unknowns} measurements, got {sizes.size}")
    if not np.all(np.isfinite(sizes)) or np.any(sizes < 1):
        raise ValueError(f"batch_sizes must be finite and >= 1, got {sizes.tolist()}")
    if not np.all(np.isfinite(times)) or np.any(times <= 0):
        raise ValueError(f"seconds must be finite and > 0, got {times.tolist()}")
    if fixed is not None and fixed >= times.min():
        raise ValueError(
            f"overhead_s must be below the fastest measured step ({times.min()!r} s), got {fixed!r}"
        )

    bytes_ = np.asarray(traffic.bytes_moved(sizes))
    flops = np.asarray(traffic.flops(sizes))
    log_t = np.log(times)
    # Starting points: the best rates achieved bound the device's from below.
    inv_bw0 = float(np.min(times / bytes_))
    inv_peak0 = float(np.min(times / flops))
    overhead_factors = (1e-3, 0.1, 0.5) if fixed is None else (None,)
    best_theta, best_loss = None, math.inf
    for bw_factor in (0.5, 1.0, 2.0):
        for peak_factor in (0.5, 1.0, 2.0):
            for overhead_factor in overhead_factors:
                start = [inv_bw0 * bw_factor, inv_peak0 * peak_factor]
                if overhead_factor is not None:
                    start.append(float(np.min(times)) * overhead_factor)
                theta, loss = _levenberg_marquardt(np.log(start), bytes_, flops, log_t, fixed)
                if loss < best_loss:
                    best_theta, best_loss = theta, loss
    assert best_theta is not None
    inv_bw, inv_peak = np.exp(best_theta[:2])
    overhead = float(np.exp(best_theta[2])) if fixed is None else fixed
    _, _, memory_bound = _model_and_jacobian(best_theta, bytes_, flops, fixed)
    return RooflineFit(
        traffic=traffic,
        bandwidth_bytes_per_s=float(1.0 / inv_bw),
        peak_flops_per_s=float(1.0 / inv_peak),
        overhead_s=overhead,
        rms_log_error=math.sqrt(best_loss / sizes.size),
        points_memory_bound=int(np.sum(memory_bound)),
        points_compute_bound=int(np.sum(~memory_bound)),
    )
