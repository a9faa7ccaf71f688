"""The roofline of a decode step: hand checks, the fit recovering known devices, the service-time curve."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaleplay import roofline
from scaleplay.profiles import ServiceTime, TabulatedServiceTime
from scaleplay.rng import stream
from scaleplay.roofline import RooflineFit, StepTraffic, fit_roofline, roofline_time_s

# One layer of 1024 -> 4096 fp32 weights (16 MiB) and its activations: the CPU step the book measures.
CPU_STEP = StepTraffic(
    bytes_fixed=1024 * 4096 * 4, bytes_per_item=(1024 + 4096) * 4, flops_per_item=2 * 1024 * 4096
)
BATCHES = 2.0 ** np.arange(11)  # 1 ... 1024


def test_doctests() -> None:
    assert doctest.testmod(roofline).failed == 0


# ---- the model by hand ---------------------------------------------------------------------------


def test_traffic_is_linear_in_the_batch() -> None:
    t = StepTraffic(bytes_fixed=100.0, bytes_per_item=10.0, flops_per_item=7.0)
    assert t.bytes_moved(1) == 110.0
    np.testing.assert_array_equal(t.bytes_moved(np.array([1.0, 4.0])), [110.0, 140.0])
    assert t.flops(4) == 28.0
    assert t.intensity_flops_per_byte(4) == pytest.approx(28.0 / 140.0)


def test_ridge_by_hand() -> None:
    # Weights only: B* = (W / BW) / (F1 / P) = W P / (F1 BW).
    t = StepTraffic(bytes_fixed=2e9, bytes_per_item=0.0, flops_per_item=2e9)
    assert t.ridge_batch_size(3.35e12, 989e12) == pytest.approx(989e12 / 3.35e12)
    # Per-request bytes push the ridge out: (1 ms) / (2 us - 1 us) = 1000.
    t = StepTraffic(bytes_fixed=1e9, bytes_per_item=1e6, flops_per_item=2e8)
    assert t.ridge_batch_size(1e12, 1e14) == pytest.approx(1000.0)
    # ... and remove it when each request's bytes cost more time than its FLOPs.
    t = StepTraffic(bytes_fixed=1e9, bytes_per_item=1e9, flops_per_item=1e9)
    assert t.ridge_batch_size(1e12, 1e14) == math.inf


def test_roofline_time_on_both_sides_of_the_ridge() -> None:
    t = StepTraffic(bytes_fixed=1e9, bytes_per_item=0.0, flops_per_item=1e9)
    # Ridge at 100: below it the weights' read (1 ms), above it the FLOPs.
    assert roofline_time_s(1, t, 1e12, 1e14, 5e-6) == pytest.approx(1e-3 + 5e-6)
    assert roofline_time_s(100, t, 1e12, 1e14) == pytest.approx(1e-3)
    assert roofline_time_s(400, t, 1e12, 1e14) == pytest.approx(4e-3)
    np.testing.assert_allclose(roofline_time_s(np.array([1.0, 400.0]), t, 1e12, 1e14), [1e-3, 4e-3])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"bytes_fixed": -1.0, "bytes_per_item": 0.0, "flops_per_item": 1.0}, "bytes_fixed must be >= 0"),
        ({"bytes_fixed": 0.0, "bytes_per_item": 0.0, "flops_per_item": 1.0}, "bytes_fixed or bytes_per_item"),
        ({"bytes_fixed": 1.0, "bytes_per_item": 0.0, "flops_per_item": 0.0}, "flops_per_item must be > 0"),
        (
            {"bytes_fixed": float("nan"), "bytes_per_item": 0.0, "flops_per_item": 1.0},
            "bytes_fixed must be a finite",
        ),
    ],
)
def test_bad_traffic(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        StepTraffic(**kwargs)


def test_bad_model_inputs() -> None:
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        CPU_STEP.bytes_moved(0)
    with pytest.raises(ValueError, match="bandwidth_bytes_per_s must be > 0"):
        roofline_time_s(1, CPU_STEP, 0.0, 1e12)
    with pytest.raises(TypeError, match="traffic must be a StepTraffic"):
        roofline_time_s(1, "weights", 1e9, 1e12)  # type: ignore[arg-type]


# ---- the fit -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("traffic", "bandwidth", "peak", "overhead"),
    [
        (CPU_STEP, 25e9, 3e11, 5e-5),  # a 2-core CPU
        (StepTraffic(134e6, 40e3, 134e6), 3.0e12, 7e14, 8e-6),  # an H100-like GPU, 4096 x 16384 fp16
        (StepTraffic(16e6, 5e5, 8e6), 20e9, 2e11, 1e-5),  # a KV cache pushes the ridge from 20 to 53
    ],
)
def test_fit_recovers_known_devices_exactly(
    traffic: StepTraffic, bandwidth: float, peak: float, overhead: float
) -> None:
    seconds = roofline_time_s(BATCHES, traffic, bandwidth, peak, overhead)
    fit = fit_roofline(BATCHES, seconds, traffic)
    assert fit.bandwidth_bytes_per_s == pytest.approx(bandwidth, rel=1e-6)
    assert fit.overhead_s == pytest.approx(overhead, rel=1e-5)
    assert fit.rms_log_error < 1e-9
    ridge = traffic.ridge_batch_size(bandwidth, peak)
    if ridge < BATCHES[-1]:  # the peak shows only where some step is compute-bound
        assert fit.peak_flops_per_s == pytest.approx(peak, rel=1e-6)
        assert fit.ridge_batch_size == pytest.approx(ridge, rel=1e-5)
    assert fit.points_compute_bound == int(np.sum(BATCHES > ridge))
    assert fit.points_memory_bound + fit.points_compute_bound == BATCHES.size


def test_fit_through_measurement_noise() -> None:
    # 3% multiplicative noise, as repeated timings leave it. While the weights dominate, bandwidth and
    # overhead trade off (both are a constant time), so what must come back is their sum, the peak,
    # the ridge and the curve itself.
    bandwidth, peak, overhead = 25e9, 3e11, 5e-5
    exact = roofline_time_s(BATCHES, CPU_STEP, bandwidth, peak, overhead)
    for replication in range(5):
        noise = np.exp(stream(11, "roofline-noise", replication).normal(0.0, 0.03, BATCHES.size))
        fit = fit_roofline(BATCHES, exact * noise, CPU_STEP)
        assert fit.step_time_s(1) == pytest.approx(exact[0], rel=0.05)
        assert fit.peak_flops_per_s == pytest.approx(peak, rel=0.05)
        assert fit.ridge_batch_size == pytest.approx(CPU_STEP.ridge_batch_size(bandwidth, peak), rel=0.15)
        assert fit.bandwidth_bytes_per_s == pytest.approx(bandwidth, rel=0.15)
        np.testing.assert_allclose(fit.step_time_s(BATCHES), exact, rtol=0.05)
        assert 0.005 < fit.rms_log_error < 0.06


@settings(max_examples=25, deadline=None)
@given(
    log_bandwidth=st.floats(9.0, 13.0),
    log_ridge=st.floats(0.5, 2.7),  # ridges from ~3 to ~500: both sides of 1 ... 1024 are measured
    overhead_share=st.floats(0.01, 0.5),
)
def test_fit_recovers_random_devices(log_bandwidth: float, log_ridge: float, overhead_share: float) -> None:
    traffic = StepTraffic(bytes_fixed=1e8, bytes_per_item=0.0, flops_per_item=1e8)
    bandwidth = 10.0**log_bandwidth
    peak = bandwidth * 10.0**log_ridge  # ridge = peak / bandwidth for this traffic
    overhead = overhead_share * 1e8 / bandwidth
    seconds = roofline_time_s(BATCHES, traffic, bandwidth, peak, overhead)
    fit = fit_roofline(BATCHES, seconds, traffic)
    assert fit.bandwidth_bytes_per_s == pytest.approx(bandwidth, rel=1e-4)
    assert fit.peak_flops_per_s == pytest.approx(peak, rel=1e-4)
    assert fit.overhead_s == pytest.approx(overhead, rel=1e-3)


def test_fit_with_the_overhead_fixed() -> None:
    seconds = roofline_time_s(BATCHES, CPU_STEP, 25e9, 3e11, 5e-5)
    fit = fit_roofline(BATCHES, seconds, CPU_STEP, overhead_s=5e-5)
    assert fit.overhead_s == 5e-5
    assert fit.bandwidth_bytes_per_s == pytest.approx(25e9, rel=1e-6)
    assert fit.peak_flops_per_s == pytest.approx(3e11, rel=1e-6)
    # Two unknowns need two points.
    two = fit_roofline(BATCHES[[0, -1]], seconds[[0, -1]], CPU_STEP, overhead_s=5e-5)
    assert two.bandwidth_bytes_per_s == pytest.approx(25e9, rel=1e-6)
    with pytest.raises(ValueError, match="overhead_s must be below the fastest measured step"):
        fit_roofline(BATCHES, seconds, CPU_STEP, overhead_s=1.0)


@pytest.mark.parametrize(
    ("sizes", "seconds", "match"),
    [
        ([1, 2], [1.0, 2.0], "at least 3 measurements"),
        ([1, 2, 4], [1.0, 2.0], "of one length"),
        ([0, 2, 4], [1.0, 2.0, 3.0], "batch_sizes must be finite and >= 1"),
        ([1, 2, 4], [1.0, 0.0, 3.0], "seconds must be finite and > 0"),
        ([1, 2, 4], [1.0, float("nan"), 3.0], "seconds must be finite and > 0"),
        ([[1, 2, 4]], [[1.0, 2.0, 3.0]], "1-D"),
    ],
)
def test_fit_refuses_bad_measurements(sizes: object, seconds: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fit_roofline(sizes, seconds, CPU_STEP)


def test_fit_refuses_a_traffic_of_the_wrong_type() -> None:
    with pytest.raises(TypeError, match="traffic must be a StepTraffic"):
        fit_roofline([1, 2, 4], [1.0, 2.0, 3.0], {"bytes_fixed": 1.0})  # type: ignore[arg-type]


# ---- the curve the simulator uses ----------------------------------------------------------------


def _fit(overhead: float = 5e-5) -> RooflineFit:
    return fit_roofline(BATCHES, roofline_time_s(BATCHES, CPU_STEP, 25e9, 3e11, overhead), CPU_STEP)


def test_service_time_reproduces_the_fitted_curve_exactly() -> None:
    fit = _fit()
    curve = fit.service_time(max_batch_size=256)
    assert isinstance(curve, TabulatedServiceTime) and isinstance(curve, ServiceTime)
    assert curve.per_decode_step
    assert curve.batch_sizes[1] == pytest.approx(fit.ridge_batch_size)  # the kink is in the table
    batches = np.arange(1, 2000)  # past max_batch_size the table continues the compute-bound line
    np.testing.assert_allclose(curve.table_s(batches), fit.step_time_s(batches), rtol=1e-12)


def test_service_time_counts_steps_layers_and_prefill() -> None:
    fit = _fit()
    curve = fit.service_time(layers=32, prefill_s_per_token=1e-5)
    step_s = 32 * fit.step_time_s(16)
    assert curve.batch_time_s(16, 100, 50, None) == pytest.approx(50 * step_s + 100 * 1e-5)
    assert fit.tokens_per_s(64) == pytest.approx(64 / fit.step_time_s(64))


def test_a_curve_without_a_kink_needs_the_overhead_fixed() -> None:
    # Each request's KV bytes outweigh its FLOPs: the step never turns compute-bound and t(B) is one
    # straight line, which "compute-bound plus a large overhead" fits just as well. Fixing the
    # overhead (measured on a tiny step) pins the bandwidth, and the ridge is gone.
    traffic = StepTraffic(bytes_fixed=16e6, bytes_per_item=1e9, flops_per_item=8e6)
    seconds = roofline_time_s(BATCHES, traffic, 25e9, 3e11, 1e-5)
    assert fit_roofline(BATCHES, seconds, traffic).rms_log_error < 1e-9  # a perfect fit, whichever
    fit = fit_roofline(BATCHES, seconds, traffic, overhead_s=1e-5)
    assert fit.bandwidth_bytes_per_s == pytest.approx(25e9, rel=1e-6)
    assert fit.ridge_batch_size == math.inf
    assert fit.points_compute_bound == 0
    curve = fit.service_time(max_batch_size=64)
    assert curve.batch_sizes == (1.0, 64.0)
    np.testing.assert_allclose(
        curve.table_s(np.arange(1, 200)), fit.step_time_s(np.arange(1, 200)), rtol=1e-12
    )


def test_service_time_refuses_bad_arguments() -> None:
    fit = _fit()
    with pytest.raises(ValueError, match="layers must be > 0"):
        fit.service_time(layers=0)
    with pytest.raises(ValueError, match="max_batch_size must be an integer >= 2"):
        fit.service_time(max_batch_size=1)
    with pytest.raises(ValueError, match="bandwidth_bytes_per_s must be > 0"):
        RooflineFit(CPU_STEP, 0.0, 1.0, 0.0, 0.0, 1, 1)


# ---- bad and extreme input -----------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", ["4", True, [1, "2"], None])
def test_batch_size_must_be_numbers(batch_size: object) -> None:
    with pytest.raises(TypeError, match="batch_size"):
        CPU_STEP.bytes_moved(batch_size)
    with pytest.raises(TypeError, match="batch_size"):
        roofline_time_s(batch_size, CPU_STEP, 25e9, 3e11)


def test_a_step_time_that_overflows_is_refused() -> None:
    with pytest.raises(ValueError, match="overflows"):
        roofline_time_s(1e308, CPU_STEP, 25e9, 3e11)
    with pytest.raises(ValueError, match="overflows"):
        roofline_time_s(1.0, CPU_STEP, 5e-324, 3e11)
    with pytest.raises(ValueError, match="overflows"):
        CPU_STEP.intensity_flops_per_byte(1e308)


def test_fit_names_measurements_it_cannot_read() -> None:
    with pytest.raises(TypeError, match="batch_sizes"):
        fit_roofline(["a", "b", "c"], [1.0, 2.0, 3.0], CPU_STEP)
    with pytest.raises(TypeError, match="seconds"):
        fit_roofline([1, 2, 4], "1 2 3", CPU_STEP)
    with pytest.raises(TypeError, match="points_memory_bound"):
        RooflineFit(CPU_STEP, 1.0, 1.0, 0.0, 0.0, 1.5, 1)
    with pytest.raises(ValueError, match="layers"):
        _fit().service_time(layers=1e308)


def test_fit_at_extreme_scales_recovers_the_device() -> None:
    # Steps measured in units that make the times tiny: the fit works in logs and does not underflow.
    seconds = roofline_time_s(BATCHES, CPU_STEP, 25e9, 3e11, 5e-5) * 1e-290
    fit = fit_roofline(BATCHES, seconds, CPU_STEP)
    assert fit.bandwidth_bytes_per_s == pytest.approx(25e9 * 1e290, rel=1e-6)
    assert fit.overhead_s == pytest.approx(5e-5 * 1e-290, rel=1e-5)
