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
on the logarithm with ``scipy.optimize.least_squares``, so a 10% miss costs the same at every batch
size). The fit's curve is piecewise
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
from scipy import optimize

from ._validate import _kind, _show, check_int, check_non_negative, check_positive, check_real_array
from .profiles import TabulatedServiceTime

__all__ = ["StepTraffic", "roofline_time_s", "RooflineFit", "fit_roofline"]


def _finite_out(name: str, value: float | np.ndarray, inputs: str) -> float | np.ndarray:
    if not np.all(np.isfinite(value)):
        raise ValueError(f"{name} overflows a float for {inputs}; use inputs of a sensible scale")
    return value


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
        with np.errstate(over="ignore"):
            out = self.bytes_fixed + self.bytes_per_item * _batch(batch_size)
        return _finite_out("bytes_moved", out, f"batch_size={_show(batch_size)}")

    def flops(self, batch_size: float | np.ndarray) -> float | np.ndarray:
        """FLOPs one step does at ``batch_size``."""
        with np.errstate(over="ignore"):
            out = self.flops_per_item * _batch(batch_size)
        return _finite_out("flops", out, f"batch_size={_show(batch_size)}")

    def intensity_flops_per_byte(self, batch_size: float | np.ndarray) -> float | np.ndarray:
        """Arithmetic intensity: FLOPs per byte moved (grows with the batch while weights dominate)."""
        with np.errstate(over="ignore"):
            out = self.flops(batch_size) / self.bytes_moved(batch_size)
        return _finite_out("intensity_flops_per_byte", out, f"batch_size={_show(batch_size)}")

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
    b = check_real_array("batch_size", batch_size)
    if not np.all(np.isfinite(b)) or np.any(b < 1):
        raise ValueError(f"batch_size must be >= 1 and finite, got {_show(batch_size)}")
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
        raise TypeError(f"traffic must be a StepTraffic, got {_kind(traffic)}")
    bandwidth = check_positive("bandwidth_bytes_per_s", bandwidth_bytes_per_s)
    peak = check_positive("peak_flops_per_s", peak_flops_per_s)
    overhead = check_non_negative("overhead_s", overhead_s)
    with np.errstate(over="ignore"):
        out = (
            np.maximum(traffic.bytes_moved(batch_size) / bandwidth, traffic.flops(batch_size) / peak)
            + overhead
        )
    _finite_out(
        "the step time",
        out,
        f"batch_size={_show(batch_size)}, bandwidth_bytes_per_s={bandwidth_bytes_per_s!r}, "
        f"peak_flops_per_s={peak_flops_per_s!r}, overhead_s={overhead_s!r}",
    )
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
            raise TypeError(f"traffic must be a StepTraffic, got {_kind(self.traffic)}")
        for name in ("bandwidth_bytes_per_s", "peak_flops_per_s"):
            object.__setattr__(self, name, check_positive(name, getattr(self, name)))
        for name in ("overhead_s", "rms_log_error"):
            object.__setattr__(self, name, check_non_negative(name, getattr(self, name)))
        for name in ("points_memory_bound", "points_compute_bound"):
            object.__setattr__(self, name, check_int(name, getattr(self, name), minimum=0))

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
        with np.errstate(over="ignore"):
            out = _batch(batch_size) / self.step_time_s(batch_size)
        return _finite_out("tokens_per_s", out, f"batch_size={_show(batch_size)}")

    def service_time(
        self, *, layers: float = 1.0, max_batch_size: int = 4096, prefill_s_per_token: float = 0.0
    ) -> TabulatedServiceTime:
        """The fitted curve as a ``ServiceTime`` for the simulator (one decode step per output token).

        ``layers`` scales the step: a model whose decode step is ``layers`` copies of the measured
        one (e.g. the measured layer's weight bytes divided into the model's). ``max_batch_size`` is
        at most 10**9. The table holds batch
        1, the ridge (when it falls inside) and ``max_batch_size``; since the fitted curve is linear
        on each side of the ridge, linear interpolation reproduces it exactly, and the table's
        extrapolation past ``max_batch_size`` continues the compute-bound line.
        """
        layers = check_positive("layers", layers)
        if not isinstance(max_batch_size, int) or isinstance(max_batch_size, bool) or max_batch_size < 2:
            raise ValueError(f"max_batch_size must be an integer >= 2, got {_show(max_batch_size)}")
        if max_batch_size > _MAX_BATCH:
            raise ValueError(f"max_batch_size must be <= {_MAX_BATCH}, got {_show(max_batch_size)}")
        sizes = [1.0, float(max_batch_size)]
        ridge = self.ridge_batch_size
        if 1 < ridge < max_batch_size:
            sizes.insert(1, ridge)
        with np.errstate(over="ignore", under="ignore"):
            seconds = layers * np.asarray(self.step_time_s(np.asarray(sizes)))
        if not (np.all(np.isfinite(seconds)) and np.all(seconds > 0)):
            raise ValueError(
                f"layers={layers!r} x the fitted step time must be a finite positive number of seconds, "
                f"got {seconds.tolist()}"
            )
        try:
            return TabulatedServiceTime(
                tuple(sizes),
                tuple(seconds.tolist()),
                per_decode_step=True,
                prefill_s_per_token=prefill_s_per_token,
            )
        except ValueError as error:
            if "prefill_s_per_token" in str(error):
                raise
            raise ValueError(
                f"layers={layers!r} x the fitted step times makes no valid service time: {error}"
            ) from error


_MAX_BATCH = 10**9


def _model_and_jacobian(
    theta: np.ndarray, log_bytes: np.ndarray, log_flops: np.ndarray, fixed_overhead_s: float | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """log t, its Jacobian and the memory-bound mask; theta = log(1/bandwidth, 1/peak[, overhead]).

    All in logs: log t = log(exp(max(log memory, log compute)) + overhead), by ``np.logaddexp``, so
    no figure over- or underflows whatever the scale of the measurements.
    """
    log_memory, log_compute = log_bytes + theta[0], log_flops + theta[1]
    memory_bound = log_memory >= log_compute
    log_roof = np.maximum(log_memory, log_compute)
    if fixed_overhead_s is None:
        log_overhead = theta[2]
    else:
        log_overhead = math.log(fixed_overhead_s) if fixed_overhead_s > 0 else -np.inf
    log_total = np.logaddexp(log_roof, log_overhead)
    roof_share = np.exp(log_roof - log_total)
    columns = [np.where(memory_bound, roof_share, 0.0), np.where(memory_bound, 0.0, roof_share)]
    if fixed_overhead_s is None:
        columns.append(np.exp(log_overhead - log_total))
    return log_total, np.column_stack(columns), memory_bound


def _least_squares(
    theta: np.ndarray,
    log_bytes: np.ndarray,
    log_flops: np.ndarray,
    log_t: np.ndarray,
    fixed_overhead_s: float | None,
) -> tuple[np.ndarray, float]:
    """``scipy.optimize.least_squares`` (Levenberg-Marquardt) from one start; the fit and its loss."""

    def residuals(x: np.ndarray) -> np.ndarray:
        return _model_and_jacobian(x, log_bytes, log_flops, fixed_overhead_s)[0] - log_t

    def jacobian(x: np.ndarray) -> np.ndarray:
        return _model_and_jacobian(x, log_bytes, log_flops, fixed_overhead_s)[1]

    result = optimize.least_squares(
        residuals, theta, jac=jacobian, method="lm", xtol=1e-15, ftol=1e-15, gtol=1e-15, max_nfev=2000
    )
    return result.x, float(np.sum(result.fun**2))


def _memory_points(
    theta: np.ndarray, log_bytes: np.ndarray, log_flops: np.ndarray, fixed: float | None
) -> tuple:
    """How memory-bound a fit reads the data: its memory-bound points, then its log ridge margin."""
    _, _, memory_bound = _model_and_jacobian(theta, log_bytes, log_flops, fixed)
    # theta holds log(1/bandwidth) and log(1/peak): the larger the first over the second, the later the ridge.
    return int(np.sum(memory_bound)), float(theta[0] - theta[1])


def fit_roofline(
    batch_sizes: object, seconds: object, traffic: StepTraffic, *, overhead_s: float | None = None
) -> RooflineFit:
    """Fit bandwidth, peak and overhead of ``t(B) = max(bytes(B)/bandwidth, flops(B)/peak) + overhead``.

    ``seconds[i]`` is the measured time of one step at ``batch_sizes[i]``; ``traffic`` says how many
    bytes and FLOPs that step moves (the shape of the kernel, known exactly). The fit minimizes
    ``sum(log(t_fit(B_i)) - log(seconds_i))^2`` over the positive figures with Levenberg-Marquardt
    (``scipy.optimize.least_squares``), started from a small grid around the best bandwidth and FLOP
    rate the measurements achieved; the best start wins. ``overhead_s`` fixes the overhead (e.g.
    measured on a tiny step) instead of fitting it: useful when the kernel strays from the roofline at
    some batch sizes and a free overhead would soak up the misfit. As many measurements as unknowns
    are needed; both sides of the ridge are needed to pin both bandwidth and peak (``RooflineFit``
    counts the points on each side).
    """
    if not isinstance(traffic, StepTraffic):
        raise TypeError(f"traffic must be a StepTraffic, got {_kind(traffic)}")
    fixed = None if overhead_s is None else check_non_negative("overhead_s", overhead_s)
    unknowns = 3 if fixed is None else 2
    sizes = check_real_array("batch_sizes", batch_sizes)
    times = check_real_array("seconds", seconds)
    if sizes.ndim != 1 or times.ndim != 1 or sizes.size != times.size:
        raise ValueError(
            "batch_sizes and seconds must be 1-D and of one length, "
            f"got shapes {sizes.shape} and {times.shape}"
        )
    if sizes.size < unknowns:
        raise ValueError(f"fit_roofline needs at least {unknowns} measurements, got {sizes.size}")
    if not np.all(np.isfinite(sizes)) or np.any(sizes < 1):
        raise ValueError(f"batch_sizes must be finite and >= 1, got {_show(sizes.tolist())}")
    if not np.all(np.isfinite(times)) or np.any(times <= 0):
        raise ValueError(f"seconds must be finite and > 0, got {_show(times.tolist())}")
    if fixed is not None and fixed >= times.min():
        raise ValueError(
            f"overhead_s must be below the fastest measured step ({times.min()!r} s), got {fixed!r}"
        )

    log_bytes = np.log(np.asarray(traffic.bytes_moved(sizes)))
    log_flops = np.log(np.asarray(traffic.flops(sizes)))
    log_t = np.log(times)
    # Starting points: the best rates achieved bound the device's from below.
    log_inv_bw0 = float(np.min(log_t - log_bytes))
    log_inv_peak0 = float(np.min(log_t - log_flops))
    overhead_factors = (1e-3, 0.1, 0.5) if fixed is None else (None,)
    fits = []
    for bw_factor in (0.5, 1.0, 2.0):
        for peak_factor in (0.5, 1.0, 2.0):
            for overhead_factor in overhead_factors:
                start = [log_inv_bw0 + math.log(bw_factor), log_inv_peak0 + math.log(peak_factor)]
                if overhead_factor is not None:
                    start.append(float(np.min(log_t)) + math.log(overhead_factor))
                theta, loss = _least_squares(np.array(start), log_bytes, log_flops, log_t, fixed)
                if theta is not None and math.isfinite(loss):
                    fits.append((loss, theta))
    best_theta, best_loss = None, math.inf
    if fits:
        # Starts that reach the same loss explain the data equally: a curve with no kink fits as all
        # memory-bound or all compute-bound alike. Keep the memory-bound reading (the larger ridge),
        # so a step never seen to turn compute-bound is not called compute-bound.
        best_loss = min(loss for loss, _ in fits)
        tied = [theta for loss, theta in fits if loss <= best_loss * (1 + 1e-9) + 1e-300]
        best_theta = max(tied, key=lambda theta: _memory_points(theta, log_bytes, log_flops, fixed))
    if best_theta is None:
        raise ValueError("fit_roofline found no finite fit to these seconds and batch_sizes")
    with np.errstate(over="ignore"):
        bandwidth, peak = np.exp(-best_theta[:2])
        overhead = float(np.exp(best_theta[2])) if fixed is None else fixed
    if not (np.isfinite(bandwidth) and np.isfinite(peak) and bandwidth > 0 and peak > 0):
        raise ValueError(
            "seconds and batch_sizes imply a bandwidth or FLOP rate beyond a float "
            f"(bandwidth {bandwidth!r} bytes/s, peak {peak!r} FLOP/s); check their units"
        )
    _, _, memory_bound = _model_and_jacobian(best_theta, log_bytes, log_flops, fixed)
    return RooflineFit(
        traffic=traffic,
        bandwidth_bytes_per_s=float(bandwidth),
        peak_flops_per_s=float(peak),
        overhead_s=overhead,
        rms_log_error=math.sqrt(best_loss / sizes.size),
        points_memory_bound=int(np.sum(memory_bound)),
        points_compute_bound=int(np.sum(~memory_bound)),
    )
