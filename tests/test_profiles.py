"""Service-time curves: roofline hand checks, tabulated interpolation, specs and their provenance."""

from __future__ import annotations

import csv
import doctest
from importlib import resources

import numpy as np
import pytest

from scaleplay import profiles
from scaleplay.profiles import (
    AffineServiceTime,
    Hardware,
    ModelSpec,
    RandomServiceTime,
    RooflineServiceTime,
    ServiceTime,
    TabulatedServiceTime,
    hardware_names,
    load_hardware,
    load_model,
    model_names,
)

H100_BW = 3.35e12
H100_FLOPS = 989e12
LLAMA8B_PARAMS = 8_030_261_248


def test_doctests() -> None:
    assert doctest.testmod(profiles).failed == 0


# ---- specs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("filename", ["hardware.csv", "models.csv"])
def test_every_row_has_provenance(filename: str) -> None:
    with resources.files("scaleplay").joinpath("data", filename).open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows
    for row in rows:
        assert row["source"].strip(), row["name"]
        assert len(row["source_date"]) == 10 and row["source_date"][4] == "-", row["name"]


def test_known_hardware_and_models() -> None:
    assert {"H100 SXM", "H200", "A100 80GB SXM", "L4"} <= set(hardware_names())
    assert {"Llama-3.1-8B", "Llama-3.1-70B"} <= set(model_names())
    h100 = load_hardware("H100 SXM")
    assert h100.memory_bandwidth_bytes_per_s == H100_BW
    assert h100.peak_flops_per_s == H100_FLOPS
    assert h100.ridge_flops_per_byte == pytest.approx(295.2, abs=0.1)
    assert load_hardware("H200").memory_bandwidth_bytes_per_s == 4.8e12
    assert load_hardware("L4").peak_flops_per_s == 121e12


def test_unknown_names_list_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown hardware name 'B200'; known: 'H100 SXM'"):
        load_hardware("B200")
    with pytest.raises(ValueError, match=r"unknown model name 'gpt-5'; known: .*'Llama-3.1-8B'"):
        load_model("gpt-5")
    with pytest.raises(ValueError, match="dtype"):
        load_model("Llama-3.1-8B", "int3")


def test_model_bytes() -> None:
    m = load_model("Llama-3.1-8B")
    assert m.parameters == LLAMA8B_PARAMS
    assert m.weight_bytes == 2 * LLAMA8B_PARAMS
    assert m.kv_bytes_per_token == 2 * 32 * 8 * 128 * 2  # 128 KiB
    assert load_model("Llama-3.1-8B", "int8").weight_bytes == LLAMA8B_PARAMS
    assert load_model("Llama-3.1-70B").kv_bytes_per_token == 2 * 80 * 8 * 128 * 2
    assert load_model("Llama-3.1-8B", kv_dtype="fp8").kv_bytes_per_token == 2 * 32 * 8 * 128


# ---- roofline ------------------------------------------------------------------------------------


def _roofline(dtype: str = "bf16", **kwargs) -> RooflineServiceTime:
    return RooflineServiceTime(load_hardware("H100 SXM"), load_model("Llama-3.1-8B", dtype), **kwargs)


def test_decode_step_at_batch_one_is_weight_read() -> None:
    r = _roofline()
    assert r.decode_step_s(1, 0) == pytest.approx(2 * LLAMA8B_PARAMS / H100_BW, rel=1e-12)  # ~4.8 ms
    assert r.decode_step_s(1, 0) == pytest.approx(4.794e-3, rel=1e-3)
    # KV cache adds its bytes: 1000 tokens of context = 131 MB more to read
    extra = r.decode_step_s(1, 1000) - r.decode_step_s(1, 0)
    assert extra == pytest.approx(1000 * 131072 / H100_BW)
    assert _roofline(overhead_s=0.001).decode_step_s(1, 0) == pytest.approx(r.decode_step_s(1, 0) + 0.001)


def test_ridge_batch_size() -> None:
    r = _roofline()
    assert r.ridge_batch_size == pytest.approx(H100_FLOPS / (2 * H100_BW / 2), rel=1e-12)  # ~295
    assert r.ridge_batch_size == pytest.approx(295.2, abs=0.1)
    assert _roofline("int8").ridge_batch_size == pytest.approx(r.ridge_batch_size / 2)
    # memory-bound below the ridge (flat in B), compute-bound above (linear in B)
    assert r.decode_step_s(64, 0) == pytest.approx(r.decode_step_s(1, 0))
    assert r.decode_step_s(600, 0) == pytest.approx(2 * LLAMA8B_PARAMS * 600 / H100_FLOPS)
    b = int(r.ridge_batch_size)
    assert r.decode_step_s(b, 0) == pytest.approx(r.decode_step_s(b + 1, 0), rel=0.01)
    # with context, the ridge moves right, and past some context decode never turns compute-bound
    assert r.ridge_batch_size_with_context(0) == pytest.approx(r.ridge_batch_size)
    assert r.ridge_batch_size_with_context(50) > r.ridge_batch_size
    assert r.ridge_batch_size_with_context(2000) == float("inf")


def test_prefill_compute_bound() -> None:
    r = _roofline()
    assert r.prefill_s(4096) == pytest.approx(2 * LLAMA8B_PARAMS * 4096 / H100_FLOPS)
    assert r.prefill_s(1) == pytest.approx(r.decode_step_s(1, 0))  # never faster than one weight read


@pytest.mark.parametrize(
    ("batch", "tokens_in", "tokens_out"),
    [
        (1, 100, 50),
        (8, 8000, 200),
        (300, 3000, 100),
        (300, 30, 400),
        (400, 40, 50),
        (512, 51200, 30),
        (4, 10, 0),
    ],
)
def test_batch_time_closed_form_matches_step_sum(batch: int, tokens_in: int, tokens_out: int) -> None:
    r = _roofline(overhead_s=2e-4)
    brute = r.prefill_s(tokens_in) + sum(
        r.decode_step_s(batch, tokens_in + batch * j) for j in range(tokens_out)
    )
    assert r.batch_time_s(batch, tokens_in, tokens_out, None) == pytest.approx(brute, rel=1e-12)


def test_efficiencies_and_tensor_parallel() -> None:
    r = _roofline(bandwidth_efficiency=0.5)
    assert r.decode_step_s(1, 0) == pytest.approx(2 * _roofline().decode_step_s(1, 0))
    with pytest.raises(ValueError, match="tensor_parallel"):
        RooflineServiceTime(load_hardware("H100 SXM"), load_model("Llama-3.1-70B"))
    tp = RooflineServiceTime(load_hardware("H100 SXM"), load_model("Llama-3.1-70B"), tensor_parallel=2)
    assert tp.decode_step_s(1, 0) == pytest.approx(2 * 70_553_706_496 / (2 * H100_BW))
    assert tp.kv_capacity_tokens == int((160e9 - 2 * 70_553_706_496) // (2 * 80 * 8 * 128 * 2))
    RooflineServiceTime(load_hardware("H100 SXM"), load_model("Llama-3.1-70B", "int8"))  # fits on one


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: _roofline(overhead_s=-1), "overhead_s"),
        (lambda: _roofline(compute_efficiency=1.5), "compute_efficiency"),
        (lambda: _roofline(bandwidth_efficiency=0), "bandwidth_efficiency"),
        (lambda: _roofline(tensor_parallel=0), "tensor_parallel"),
        (lambda: _roofline().decode_step_s(0, 0), "batch_size"),
        (lambda: _roofline().decode_step_s(1, -5), "context_tokens"),
        (lambda: _roofline().batch_time_s(0, 10, 10, None), "batch_size"),
        (lambda: _roofline().batch_time_s(1, -1, 10, None), "tokens_in"),
        (lambda: Hardware("x", 0, 1, 1), "memory_bandwidth_bytes_per_s"),
        (lambda: ModelSpec("m", 1e9, 2, 0, 8, 128), "layers"),
        (lambda: RooflineServiceTime("H100", load_model("Llama-3.1-8B")), "hardware"),
    ],
)
def test_roofline_bad_inputs(build, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        build()


# ---- tabulated -----------------------------------------------------------------------------------


def test_tabulated_interpolation_and_extrapolation() -> None:
    t = TabulatedServiceTime((1, 4, 16), (0.010, 0.013, 0.025))
    assert t.batch_time_s(1, 0, 0, None) == pytest.approx(0.010)
    assert t.batch_time_s(2, 0, 0, None) == pytest.approx(0.011)
    assert t.batch_time_s(10, 0, 0, None) == pytest.approx(0.019)
    assert t.batch_time_s(16, 0, 0, None) == pytest.approx(0.025)
    assert t.batch_time_s(32, 0, 0, None) == pytest.approx(0.025 + 16 * 0.001)  # slope of last two
    assert np.allclose(t.table_s(np.array([1.0, 2.5, 4.0])), [0.010, 0.0115, 0.013])
    flat_start = TabulatedServiceTime((4, 8), (0.02, 0.03))
    assert flat_start.batch_time_s(2, 0, 0, None) == pytest.approx(0.02)
    single = TabulatedServiceTime((8,), (0.05,))
    assert single.batch_time_s(64, 0, 0, None) == pytest.approx(0.05)


def test_tabulated_per_decode_step() -> None:
    t = TabulatedServiceTime((1, 64), (0.005, 0.008), per_decode_step=True, prefill_s_per_token=1e-5)
    assert t.batch_time_s(1, 1000, 100, None) == pytest.approx(0.005 * 100 + 0.01)
    assert t.batch_time_s(64, 0, 10, None) == pytest.approx(0.08)


@pytest.mark.parametrize(
    ("sizes", "times", "match"),
    [
        ((1, 4, 2), (0.1, 0.2, 0.3), "increase strictly"),
        ((1, 2, 2), (0.1, 0.2, 0.3), "increase strictly"),
        ((1, 2, 4), (0.1, 0.3, 0.2), "must not decrease"),
        ((1, 2), (0.1, float("nan")), "NaN"),
        ((0, 2), (0.1, 0.2), ">= 1"),
        ((1, 2), (0.1,), "same length"),
        ((), (), "at least one"),
        ((1, 2), (0.0, 0.1), "> 0"),
    ],
)
def test_tabulated_bad_tables(sizes, times, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TabulatedServiceTime(sizes, times)


def test_tabulated_batch_below_one() -> None:
    t = TabulatedServiceTime((1, 4), (0.01, 0.02))
    with pytest.raises(ValueError, match="batch_size"):
        t.batch_time_s(0, 0, 0, None)
    with pytest.raises(ValueError, match="batch_size"):
        t.table_s(0.5)


# ---- interchangeable -----------------------------------------------------------------------------


def test_all_curves_are_service_times() -> None:
    curves = [
        AffineServiceTime(fixed_s=0.01, per_item_s=0.001),
        _roofline(overhead_s=1e-4),
        TabulatedServiceTime((1, 8), (0.01, 0.02)),
    ]
    rng = np.random.default_rng(0)
    for curve in curves:
        assert isinstance(curve, ServiceTime)
        assert curve.batch_time_s(4, 400, 20, rng) > 0
        wrapped = RandomServiceTime(curve, "exponential")
        draws = [wrapped.batch_time_s(4, 400, 20, rng) for _ in range(4000)]
        assert np.mean(draws) == pytest.approx(curve.batch_time_s(4, 400, 20, rng), rel=0.08)


# ---- hostile inputs ------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [1e308, 10**400, 1e7, -1.0, float("inf")])
def test_affine_coefficients_are_bounded(bad: float) -> None:
    # Regression: fixed_s=10**400 raised OverflowError; 1e308 passed and later gave inf seconds.
    for field in ("fixed_s", "per_item_s", "per_token_in_s", "per_token_out_s"):
        with pytest.raises(ValueError, match=field):
            AffineServiceTime(**{field: bad})


def test_batch_times_at_every_bound_stay_finite() -> None:
    top = profiles.MAX_COEFFICIENT_S
    affine = AffineServiceTime(top, top, top, top)
    worst = (profiles.MAX_BATCH_SIZE, profiles.MAX_BATCH_TOKENS, profiles.MAX_TOKENS)
    assert np.isfinite(affine.batch_time_s(*worst))
    table = TabulatedServiceTime(
        (1.0, 1.0 + 1e-9), (1e-9, top), per_decode_step=True, prefill_s_per_token=top
    )
    assert np.isfinite(table.batch_time_s(*worst))
    hw = Hardware("tiny", memory_bandwidth_bytes_per_s=1.0, peak_flops_per_s=1.0, memory_bytes=1e30)
    model = ModelSpec("huge", 1e18, 64.0, 10**6, 10**6, 10**6, 64.0)
    roofline = RooflineServiceTime(
        hw, model, overhead_s=top, compute_efficiency=1e-6, bandwidth_efficiency=1e-6
    )
    assert np.isfinite(roofline.batch_time_s(*worst))


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: AffineServiceTime(0.1).batch_time_s(10**400, 0, 0), "batch_size"),
        (lambda: AffineServiceTime(0.1).batch_time_s(1, 10**30, 0), "tokens_in"),
        (lambda: AffineServiceTime(0.1).batch_time_s(1, 0, -1), "tokens_out"),
        (lambda: TabulatedServiceTime(None, (0.1,)), "batch_sizes"),  # regression: numpy's words
        (lambda: TabulatedServiceTime((1,), None), "seconds_per_batch"),
        (lambda: TabulatedServiceTime(["a"], [0.1]), "batch_sizes[0]"),
        (lambda: TabulatedServiceTime((1, 1e300), (0.1, 0.2)), "batch_sizes"),
        (lambda: TabulatedServiceTime((1,), (1e300,)), "seconds_per_batch"),
        (lambda: TabulatedServiceTime((1,), (0.1,)).table_s("x"), "batch_size"),
        (lambda: TabulatedServiceTime((1,), (0.1,)).table_s(1e300), "batch_size"),
        (lambda: Hardware("x", 1e308, 1.0, 1.0), "memory_bandwidth_bytes_per_s"),
        (lambda: Hardware("x", 1.0, 1e-300, 1.0), "peak_flops_per_s"),
        (lambda: ModelSpec("x", 1e300, 2.0, 1, 1, 1), "parameters"),
        (lambda: ModelSpec("x", 1e9, 2.0, 10**30, 1, 1), "layers"),
        (
            lambda: RooflineServiceTime(
                load_hardware("H100 SXM"), load_model("Llama-3.1-8B"), compute_efficiency=1e-300
            ),
            "compute_efficiency",
        ),
        (
            lambda: RooflineServiceTime(
                load_hardware("H100 SXM"), load_model("Llama-3.1-8B"), tensor_parallel=10**30
            ),
            "tensor_parallel",
        ),
        (lambda: load_hardware(["H100 SXM"]), "['H100 SXM']"),  # regression: "unhashable type: 'list'"
        (lambda: load_model({"a": 1}), "{'a': 1}"),
        (lambda: load_model("Llama-3.1-8B", ["bf16"]), "dtype"),
        (lambda: RandomServiceTime(None), "base"),
    ],
)
def test_hostile_arguments_name_the_argument(call, field: str) -> None:
    with pytest.raises((TypeError, ValueError)) as caught:
        call()
    assert field in str(caught.value), str(caught.value)
