"""FP8 (W8A8) and weight-only INT8 in the hardware table, the roofline and the engine's step model."""

from __future__ import annotations

import csv
import math
from importlib import resources

import numpy as np
import pytest

from conftest import poisson_arrivals
from scaleplay.profiles import (
    COMPUTE_PRECISIONS,
    Hardware,
    RooflineServiceTime,
    hardware_names,
    load_hardware,
    load_model,
)
from scaleplay.sim import fastloop
from scaleplay.sim.continuous import StepCosts
from scaleplay.sim.fastloop import DISABLE_ENV, step_costs
from scaleplay.simulator import ContinuousBatcherConfig, PlatformConfig, PoolConfig, simulate
from scaleplay.steptime import StepTimeModel, load_step_profile

H100 = load_hardware("H100 SXM")
A100 = load_hardware("A100 80GB SXM")
#: (weights dtype, compute precision) of the three ways to serve: bf16, weight-only int8, fp8 W8A8.
MODES = {"bf16": ("bf16", "bf16"), "int8": ("int8", "bf16"), "fp8": ("fp8", "fp8")}


def step_for(mode: str, **kwargs: object) -> StepTimeModel:
    dtype, precision = MODES[mode]
    return StepTimeModel(H100, load_model("Llama-3.1-70B", dtype), 4, compute_precision=precision, **kwargs)


def test_the_table_gives_the_dense_fp8_peak_with_its_source():
    with resources.files("scaleplay").joinpath("data", "hardware.csv").open(newline="") as f:
        rows = {row["name"]: row for row in csv.DictReader(f)}
    assert set(rows) == set(hardware_names())
    for name in ("H100 SXM", "H200", "L4"):
        hw = load_hardware(name)
        # Dense FP8 is twice dense BF16 on Hopper and Ada (datasheets: both quoted with sparsity).
        assert hw.fp8_peak_flops_per_s == pytest.approx(2.0 * hw.peak_flops_per_s, rel=0.005)
        assert "FP8 Tensor Core" in rows[name]["notes"] and "dense is half" in rows[name]["notes"]
    assert load_hardware("H100 SXM").fp8_peak_flops_per_s == 1.979e15
    assert load_hardware("L4").fp8_peak_flops_per_s == 2.425e14
    assert rows["A100 80GB SXM"]["fp8_peak_flops_per_s"] == ""
    assert A100.fp8_peak_flops_per_s is None and "no FP8 tensor cores" in rows["A100 80GB SXM"]["notes"]


def test_at_precision_swaps_the_peak_and_back():
    fp8 = H100.at_precision("fp8")
    assert (fp8.precision, fp8.peak_flops_per_s) == ("fp8", 1.979e15)
    assert fp8.memory_bandwidth_bytes_per_s == H100.memory_bandwidth_bytes_per_s
    assert fp8.at_precision("bf16") == H100 and H100.at_precision("bf16") is H100
    assert H100.peak_flops_for("fp8") == 1.979e15 and fp8.peak_flops_for("bf16") == 9.89e14
    assert COMPUTE_PRECISIONS == ("bf16", "fp8")


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: A100.at_precision("fp8"), "precision='fp8' is not available on A100"),
        (lambda: H100.peak_flops_for("int4"), "precision"),
        (lambda: Hardware("x", 1.0, 2.0, 1.0, fp8_peak_flops_per_s=4.0, precision="fp8"), "peak_flops_per_s"),
        (lambda: Hardware("x", 1.0, 2.0, 1.0, precision="fp8"), "precision='fp8'"),
        (lambda: Hardware("x", 1.0, 2.0, 1.0, fp8_peak_flops_per_s=0.0), "fp8_peak_flops_per_s"),
    ],
)
def test_bad_hardware_precisions_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_a100_refuses_fp8_compute_naming_the_parameter():
    model = load_model("Llama-3.1-8B", "fp8")
    for make in (
        lambda: StepTimeModel(A100, model, compute_precision="fp8"),
        lambda: RooflineServiceTime(A100, model, compute_precision="fp8"),
        lambda: load_step_profile("a100-80gb", "Llama-3.1-8B", 1, dtype="fp8", compute_precision="fp8"),
    ):
        with pytest.raises(ValueError, match=r"compute_precision='fp8'.*A100.*no FP8 tensor cores"):
            make()
    # Weight-only int8 keeps bf16 compute, which the A100 has.
    assert StepTimeModel(A100, load_model("Llama-3.1-8B", "int8")).hardware.peak_flops_per_s == 3.12e14


def test_fp8_compute_needs_one_byte_weights_and_a_known_precision():
    with pytest.raises(ValueError, match=r"compute_precision='fp8'.*2 bytes per parameter.*dtype='fp8'"):
        StepTimeModel(H100, load_model("Llama-3.1-8B", "bf16"), compute_precision="fp8")
    with pytest.raises(ValueError, match="compute_precision"):
        StepTimeModel(H100, load_model("Llama-3.1-8B"), compute_precision="int8")


def test_fp8_halves_the_compute_term_and_the_weight_bytes():
    bf16, int8, fp8 = (step_for(mode) for mode in MODES)
    assert fp8.hardware.peak_flops_per_s == 1.979e15 and int8.hardware.peak_flops_per_s == 9.89e14
    ratio = H100.peak_flops_per_s / H100.fp8_peak_flops_per_s
    assert fp8.compute_time_s(2000) == pytest.approx(bf16.compute_time_s(2000) * ratio, rel=1e-12)
    assert int8.compute_time_s(2000) == bf16.compute_time_s(2000)
    for quantized in (int8, fp8):
        assert quantized.memory_time_s(0) == pytest.approx(bf16.memory_time_s(0) / 2, rel=1e-12)


def test_a_compute_bound_prefill_and_a_memory_bound_decode_get_about_twice_as_fast():
    bf16, int8, fp8 = (step_for(mode) for mode in MODES)
    # Ideal roofline: a 2,000-token prefill is compute-bound; a batch-64 decode reads the weights.
    assert fp8.prefill_time_s(1, 2000) / bf16.prefill_time_s(1, 2000) == pytest.approx(0.5, abs=0.01)
    assert int8.prefill_time_s(1, 2000) == bf16.prefill_time_s(1, 2000)
    assert int8.decode_step_time_s(64, 0) / bf16.decode_step_time_s(64, 0) == pytest.approx(0.5)
    assert fp8.decode_step_time_s(64, 0) == int8.decode_step_time_s(64, 0)


def test_the_roofline_takes_the_fp8_peak_too():
    model = load_model("Llama-3.1-8B", "fp8")
    bf16 = RooflineServiceTime(H100, load_model("Llama-3.1-8B"))
    fp8 = RooflineServiceTime(H100, model, compute_precision="fp8")
    assert fp8.flops_per_s == 1.979e15
    assert fp8.prefill_s(8000) / bf16.prefill_s(8000) == pytest.approx(0.5, abs=0.01)
    # Both halve: the ridge batch (FLOP/s x bytes per parameter / bandwidth) stays where it was.
    assert fp8.ridge_batch_size == pytest.approx(bf16.ridge_batch_size, rel=0.002)


def test_the_engine_folds_the_fp8_peak_into_its_step_costs():
    fp8 = load_step_profile("h100-80gb", "Llama-3.1-70B", 4, dtype="fp8", compute_precision="fp8")
    bf16 = load_step_profile("h100-80gb", "Llama-3.1-70B", 4, dtype="bf16")
    costs, base = StepCosts(fp8), StepCosts(bf16)
    assert costs.compute_per_token == pytest.approx(base.compute_per_token * 9.89e14 / 1.979e15, rel=1e-12)
    assert costs.weights_s == pytest.approx(base.weights_s / 2, rel=1e-12)
    assert np.array_equal(step_costs(fp8)[:2], [costs.compute_per_token, costs.weights_s])
    for prefill, decode, context in ((2000, 0, 2000), (0, 64, 64 * 2000), (1500, 30, 40000)):
        assert costs.iteration_s(prefill, decode, context) == pytest.approx(
            fp8.step_time_s(prefill, decode, context), rel=1e-12
        )


def ttft_s(step: StepTimeModel, fast: bool, monkeypatch: pytest.MonkeyPatch) -> np.ndarray:
    """TTFT of a prefill-heavy workload (long prompts, short answers) on one replica of ``step``."""
    if fast:
        monkeypatch.delenv(DISABLE_ENV, raising=False)
    else:
        monkeypatch.setenv(DISABLE_ENV, "1")
    picked, eligible = [], fastloop.eligible
    monkeypatch.setattr(
        fastloop, "eligible", lambda platform: picked.append(eligible(platform)) or picked[-1]
    )
    arrivals = poisson_arrivals(4.0, 120, seed=5, tokens_in=3000, tokens_out=16)
    batcher = ContinuousBatcherConfig(max_num_seqs=64, max_batched_tokens=4096)
    config = PlatformConfig(pool=PoolConfig(1, step, batcher), network_hop_s=0.0)
    log = simulate(arrivals, config, seed=1).log
    assert picked == [fast]  # the run took the engine asked for
    assert (log["outcome"] == "completed").all()
    return log["ttft_s"].to_numpy()


def test_fp8_lowers_the_ttft_of_a_prefill_heavy_workload_on_both_engines(monkeypatch):
    bf16 = load_step_profile("h100-80gb", "Llama-3.1-70B", 4, dtype="bf16", kv_dtype="bf16")
    fp8 = load_step_profile(
        "h100-80gb", "Llama-3.1-70B", 4, dtype="fp8", kv_dtype="fp8", compute_precision="fp8"
    )
    runs = {(name, fast): ttft_s(step, fast, monkeypatch) for name, step in (("bf16", bf16), ("fp8", fp8))
            for fast in (True, False)}  # fmt: skip
    for name in ("bf16", "fp8"):
        assert np.array_equal(runs[name, True], runs[name, False])  # the two engines agree to the bit
    for fast in (True, False):
        mean_bf16, mean_fp8 = np.mean(runs["bf16", fast]), np.mean(runs["fp8", fast])
        assert math.isfinite(mean_fp8) and mean_fp8 < 0.9 * mean_bf16


def test_the_planner_offers_fp8_compute_as_a_quantization_choice():
    from scaleplay.planner import roofline_option

    weight_only = roofline_option("Llama-3.1-70B", "fp8")
    w8a8 = roofline_option("Llama-3.1-70B", "fp8", compute_precision="fp8")
    assert (weight_only.quantization, w8a8.quantization) == ("fp8", "fp8/fp8 compute")
    # a compute-bound batch: the FP8 tensor peak makes the same weights faster
    prefill_heavy = (32, 32 * 4000, 50, None)
    assert w8a8.service.batch_time_s(*prefill_heavy) < weight_only.service.batch_time_s(*prefill_heavy)
    with pytest.raises(ValueError, match="compute_precision"):
        roofline_option("Llama-3.1-8B", "fp8", hardware="A100 80GB SXM", compute_precision="fp8")
