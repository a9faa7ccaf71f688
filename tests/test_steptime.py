"""The step-time model of a serving engine: its physics, the fit recovering known coefficients, the
held-out error on the measured SplitwiseSim steps, bad input, and the shipped profiles."""

from __future__ import annotations

import csv
import dataclasses
import doctest
import hashlib
from importlib import resources

import numpy as np
import pandas as pd
import pytest

from scaleplay import steptime
from scaleplay.profiles import RooflineServiceTime, load_hardware, load_model
from scaleplay.steptime import (
    FITTED_COEFFICIENTS,
    StepTimeModel,
    fit_splitwise_profiles,
    fit_step_model,
    load_step_profile,
    prediction_errors,
    splitwise_holdout_errors,
    splitwise_models,
    splitwise_step_observations,
    step_profile_names,
)

H100 = load_hardware("H100 SXM")
A100 = load_hardware("A100 80GB SXM")
LLAMA2 = load_model("Llama-2-70B", "fp16", kv_dtype="fp16")
TRUE = {
    "compute_efficiency": 0.55,
    "bandwidth_efficiency": 0.7,
    "overhead_s": 0.006,
    "comm_latency_s_per_layer": 3e-5,
    "comm_s_per_token_layer": 8e-7,
    "decode_s_per_token": 2.5e-4,
}


def fitted(tensor_parallel: int = 4, profile: str = "h100-80gb") -> StepTimeModel:
    return load_step_profile(profile, "Llama-2-70B", tensor_parallel)


def test_doctests() -> None:
    assert doctest.testmod(steptime).failed == 0


def test_coefficients_are_the_last_fields_in_order() -> None:
    assert tuple(StepTimeModel(H100, LLAMA2, 2).coefficients) == FITTED_COEFFICIENTS


# ---- physics ---------------------------------------------------------------------------------------


def test_batch_one_decode_is_memory_bound() -> None:
    step = fitted()
    context = 600
    memory, compute = step.memory_time_s(context), step.compute_time_s(1)
    assert memory > 50 * compute  # one token for a full read of 138 GB of weights
    expected = step.overhead_s + memory + step.comm_time_s(1) + step.decode_s_per_token
    assert step.decode_step_time_s(1, context) == pytest.approx(expected, rel=1e-12)


def test_long_prefill_is_compute_bound() -> None:
    step = fitted()
    tokens = 8192
    assert step.compute_time_s(tokens) > 5 * step.memory_time_s(tokens)
    expected = step.overhead_s + step.compute_time_s(tokens) + step.comm_time_s(tokens)
    assert step.prefill_time_s(1, tokens) == pytest.approx(expected, rel=1e-12)
    assert step.prefill_time_s(4, 2048) == pytest.approx(step.prefill_time_s(1, 8192), rel=1e-12)


def test_prefill_overhead_is_paid_by_iterations_with_prompt_tokens_only() -> None:
    step = fitted()
    costly = dataclasses.replace(step, prefill_overhead_s=0.02)
    assert step.prefill_overhead_s == 0.0  # the fitted profiles have none
    assert costly.prefill_time_s(2, 500) == pytest.approx(step.prefill_time_s(2, 500) + 0.02, rel=1e-12)
    assert costly.step_time_s(64, 8, 9000) == pytest.approx(step.step_time_s(64, 8, 9000) + 0.02, rel=1e-12)
    assert costly.decode_step_time_s(8, 9000) == step.decode_step_time_s(8, 9000)
    assert costly.step_time_s(0, 0, 0) == 0.0  # no tokens, no iteration
    assert costly.coefficients == step.coefficients  # not one of the coefficients the fit fits


def test_ideal_model_is_the_roofline_ancestor() -> None:
    """With no overhead, communication or per-token cost, it is ``RooflineServiceTime``'s roofline."""
    ideal = StepTimeModel(H100, LLAMA2, 4, compute_efficiency=0.6, bandwidth_efficiency=0.8)
    ancestor = RooflineServiceTime(
        H100, LLAMA2, compute_efficiency=0.6, bandwidth_efficiency=0.8, tensor_parallel=4
    )
    for batch, context in [(1, 600), (64, 64 * 600), (512, 512 * 3000), (4096, 4096 * 100)]:
        assert ideal.decode_step_time_s(batch, context) == pytest.approx(
            ancestor.decode_step_s(batch, context)
        )
    assert ideal.prefill_time_s(1, 4096) == pytest.approx(ancestor.prefill_s(4096))
    # and it splits perfectly over the GPUs: half the time on twice as many
    assert StepTimeModel(H100, LLAMA2, 8, 0.6, 0.8).step_time_s(100, 7, 5000) == pytest.approx(
        ideal.step_time_s(100, 7, 5000) / 2
    )


def test_monotone_in_tokens_and_context() -> None:
    step = fitted()
    tokens = np.arange(0, 20001, 250)
    for times in (
        step.step_time_s(tokens, 8, 8 * 1000),
        step.step_time_s(0, tokens, 1e6),
        step.step_time_s(512, 4, tokens * 100.0),
        step.prefill_time_s(1, tokens),
    ):
        assert np.all(np.diff(times) >= 0)
    assert np.all(np.diff(step.prefill_time_s(1, tokens)[1:]) > 0)
    assert np.all(np.diff(step.decode_step_time_s(tokens[1:], 1e6)) > 0)


def test_tensor_parallel_helps_but_not_linearly() -> None:
    for profile in step_profile_names():
        decode = [fitted(tp, profile).decode_step_time_s(1, 600) for tp in (2, 4)]
        prefill = [fitted(tp, profile).prefill_time_s(1, 8192) for tp in (2, 4, 8)]
        assert decode[1] < decode[0] and decode[1] > decode[0] / 2
        assert prefill[2] < prefill[1] < prefill[0]
        assert prefill[1] > prefill[0] / 2 and prefill[2] > prefill[1] / 2
    # one GPU pays no communication
    one = StepTimeModel(H100, load_model("Llama-3.1-8B"), 1, **TRUE)
    assert one.comm_time_s(4096) == 0.0


def test_vectorised_equals_one_at_a_time() -> None:
    step = fitted()
    prefill = np.array([0, 0, 512, 2048, 100])
    decode = np.array([1, 64, 0, 3, 50])
    context = np.array([600.0, 64 * 700.5, 512, 9000, 40000])
    together = step.step_time_s(prefill, decode, context)
    assert isinstance(together, np.ndarray) and together.shape == (5,)
    alone = [
        step.step_time_s(int(p), int(d), float(c)) for p, d, c in zip(prefill, decode, context, strict=True)
    ]
    assert together == pytest.approx(alone, rel=1e-14)
    assert isinstance(step.step_time_s(1, 1, 1), float)
    assert step.step_time_s(0, 0, 5000) == 0.0  # no tokens: no iteration


def test_kv_capacity() -> None:
    step = fitted(4)
    assert step.kv_capacity_tokens == int((4 * 80e9 - LLAMA2.weight_bytes) // LLAMA2.kv_bytes_per_token)
    assert LLAMA2.kv_bytes_per_token == 2 * 80 * 8 * 128 * 2


# ---- the fit -------------------------------------------------------------------------------------


def synthetic(truth: dict[str, float], hardware=H100) -> tuple[pd.DataFrame, dict]:
    """Steps timed by the model itself, over prefills, decodes and mixed steps at TP 1 to 8."""
    models = {"llama2-70b": LLAMA2, "llama3-8b": load_model("Llama-3.1-8B", "fp16", kv_dtype="fp16")}
    rows = []
    for name, tps in (("llama2-70b", (2, 4, 8)), ("llama3-8b", (1, 2))):
        for tp in tps:
            step = StepTimeModel(hardware, models[name], tp, **truth)
            for prefill, decode, per_request in (
                [(p, 0, 0) for p in (64, 256, 1024, 4096, 16384)]
                + [(0, b, c) for b in (1, 8, 64, 256, 1024) for c in (200, 3000)]
                + [(512, 32, 1000), (2048, 128, 2000)]
            ):
                context = prefill + decode * per_request
                rows.append(
                    {
                        "model": name,
                        "tensor_parallel": tp,
                        "prefill_tokens": prefill,
                        "decode_tokens": decode,
                        "context_tokens": context,
                        "step_time_s": step.step_time_s(prefill, decode, context),
                    }
                )
    return pd.DataFrame(rows), models


def test_fit_recovers_known_coefficients() -> None:
    table, models = synthetic(TRUE)
    fit = fit_step_model(table, H100, models)
    for name, value in TRUE.items():
        assert getattr(fit, name) == pytest.approx(value, rel=1e-6), name
    assert fit.fit_max_ape < 1e-9 and fit.at_bound == ()
    errors = prediction_errors(fit, table, models=models)
    assert set(errors.columns) == {"model", "tensor_parallel", "phase", "points", "mape", "max_ape"}
    assert errors["max_ape"].max() < 1e-9


def test_fit_holds_an_efficiency_at_one_and_says_so() -> None:
    """Steps from a GPU twice as fast as the datasheet fitted against the datasheet: the compute
    efficiency wants 1.1, is held at 1, and the fit names it."""
    faster = type(H100)(
        "fast H100", H100.memory_bandwidth_bytes_per_s, 2 * H100.peak_flops_per_s, H100.memory_bytes
    )
    table, models = synthetic(TRUE, faster)
    fit = fit_step_model(table, H100, models)
    assert fit.compute_efficiency == 1.0 and "compute_efficiency" in fit.at_bound
    assert fit.fit_max_ape > 0.01  # the data cannot be matched within the bound


# ---- the measured steps --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def holdout() -> pd.DataFrame:
    return splitwise_holdout_errors()


def test_observations_cover_the_data() -> None:
    obs = splitwise_step_observations()
    assert set(obs["profile"]) == {"a100-80gb", "h100-80gb", "h100-80gb-pcap"}
    assert set(obs["tensor_parallel"]) == {2, 4, 8}
    # 228 configurations, 3 of them (llama2-70b TP2 batch 64, one per GPU) left out
    assert (obs["phase"] == "decode").sum() == 228 - 3
    assert obs.loc[obs["phase"] == "decode", "repeats"].sum() + 3 * 5 == 1260
    # prefills pooled over token_size: the same repeats, fewer rows
    assert obs.loc[obs["phase"] == "prefill", "repeats"].sum() + 3 * 5 == 1260
    assert len(splitwise_step_observations(include_anomalies=True)) == len(obs) + 6
    assert obs["step_time_s"].between(0.02, 12).all()  # seconds, not milliseconds


def test_held_out_error_is_bounded(holdout: pd.DataFrame) -> None:
    """Fitted on llama2-70b at TP 2 and 8; scored on llama2-70b at TP 4 and bloom-176b at TP 8.

    Measured (2026-11-29): per group, decode MAPE 3-8% on llama2-70b TP4 and 7-24% on bloom-176b
    (the A100 worst), prefill MAPE 11-16%; the largest misses, 32-41%, are under-predictions of
    128-token prefills and of bloom-176b's 8,192-token prefill.
    """
    assert len(holdout) == 3 * 2 * 2 and (holdout["points"] > 10).all()
    decode = holdout[holdout["phase"] == "decode"]
    prefill = holdout[holdout["phase"] == "prefill"]
    assert decode["mape"].max() < 0.30
    assert decode.loc[decode["model"] == "llama2-70b", "mape"].max() < 0.12
    assert prefill["mape"].max() < 0.20
    assert holdout["max_ape"].max() < 0.50


def test_efficiencies_fitted_within_bounds() -> None:
    table = pd.read_csv(resources.files("scaleplay").joinpath("data", "step_profiles.csv").open())
    for column in ("compute_efficiency", "bandwidth_efficiency"):
        assert table[column].between(0.3, 1.0).all()
    assert (table[list(FITTED_COEFFICIENTS[2:])] >= 0).all().all()


def test_shipped_profiles_reproduce() -> None:
    """Re-fitting from the shipped measurements gives the shipped numbers (to their 6 digits)."""
    with resources.files("scaleplay").joinpath("data", "step_profiles.csv").open(newline="") as f:
        shipped = {row["profile"]: row for row in csv.DictReader(f)}
    refit = fit_splitwise_profiles().set_index("profile")
    assert sorted(shipped) == sorted(refit.index)
    numbers = [*FITTED_COEFFICIENTS, "fit_mape", "holdout_mape_prefill", "holdout_max_ape_prefill",
               "holdout_mape_decode", "holdout_max_ape_decode"]  # fmt: skip
    for profile, row in shipped.items():
        assert row["hardware"] == refit.loc[profile, "hardware"]
        assert row["at_bound"] == refit.loc[profile, "at_bound"]
        for name in numbers:
            assert float(row[name]) == pytest.approx(refit.loc[profile, name], rel=2e-5, abs=1e-15), (
                profile,
                name,
            )
        assert row["source"] and row["source_date"]


def test_shipped_measurements_are_unchanged() -> None:
    folder = resources.files("scaleplay").joinpath("data", "serving")
    digest = hashlib.sha256(folder.joinpath("splitwise_perf_model.csv").read_bytes()).hexdigest()
    assert digest == "dbbe505d1d64fc4bd1ec03c50edf944643586de4f68a81e94cbd55dd5bdfbf41"
    assert "MIT License" in folder.joinpath("LICENSE-splitwise-sim-MIT.txt").read_text()
    readme = folder.joinpath("README.md").read_text()
    assert "8f99e7d" in readme and "unchanged" in readme and "ISCA 2024" in readme


def test_loaded_profile_lands_near_a_measured_step() -> None:
    """The H100 profile at TP 4 (held out) against two measured llama2-70b steps."""
    step = fitted(4)
    assert step.decode_step_time_s(1, 512 + 64) == pytest.approx(0.0297, rel=0.10)
    assert step.prefill_time_s(16, 512) == pytest.approx(0.874, rel=0.10)
    assert set(splitwise_models()) == {"llama2-70b", "bloom-176b"}


# ---- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, name, shown",
    [
        ((-1, 0, 0), "prefill_tokens", "-1.0"),
        ((0, float("nan"), 10), "decode_tokens", "nan"),
        ((0, 1, float("inf")), "context_tokens", "inf"),
        ((10**16, 0, 0), "prefill_tokens", "1e+16"),
        ((0, 1.5, 10), "decode_tokens", "1.5"),
        (([5, -3], 0, 10), "prefill_tokens", "-3.0"),
        ((0, 1, 10**40), "context_tokens", "1e+40"),
    ],
)
def test_bad_tokens_name_the_parameter(args, name: str, shown: str) -> None:
    with pytest.raises(ValueError, match=name) as error:
        fitted().step_time_s(*args)
    assert shown in str(error.value)


def test_bad_tokens_in_the_conveniences() -> None:
    with pytest.raises(ValueError, match=r"batch must .* got -2"):
        fitted().prefill_time_s(-2, 100)
    with pytest.raises(ValueError, match=r"prompt_tokens must .* got nan"):
        fitted().prefill_time_s(1, float("nan"))
    with pytest.raises(ValueError, match=r"batch x prompt_tokens .* got 1e\+18"):
        fitted().prefill_time_s(10**9, 10**9)
    with pytest.raises(TypeError, match="prefill_tokens"):
        fitted().step_time_s("many", 0, 0)
    with pytest.raises(ValueError, match="broadcast"):
        fitted().step_time_s([1, 2], [1, 2, 3], 10)


def test_unknown_names() -> None:
    with pytest.raises(ValueError, match=r"unknown step profile 'tpu-v5'"):
        load_step_profile("tpu-v5", "Llama-2-70B", 4)
    with pytest.raises(ValueError, match=r"unknown model name 'GPT-5'"):
        load_step_profile("h100-80gb", "GPT-5", 4)
    with pytest.raises(ValueError, match=r"unknown hardware name 'TPU'"):
        load_hardware("TPU")


@pytest.mark.parametrize(
    "tp, error", [(0, ValueError), (-2, ValueError), (5000, ValueError), (2.0, TypeError)]
)
def test_bad_tensor_parallel(tp, error) -> None:
    with pytest.raises(error, match="tensor_parallel"):
        StepTimeModel(H100, LLAMA2, tp)


def test_weights_that_do_not_fit_the_gpus() -> None:
    with pytest.raises(ValueError, match=r"tensor_parallel=1 is too few: Llama-2-70B needs 138.0 GB"):
        load_step_profile("a100-80gb", "Llama-2-70B", 1)
    bloom = load_model("BLOOM-176B", "fp16")
    with pytest.raises(ValueError, match=r"tensor_parallel=4 is too few: BLOOM-176B needs 352.5 GB"):
        StepTimeModel(A100, bloom, 4)
    assert StepTimeModel(A100, bloom, 8).kv_capacity_tokens > 0


@pytest.mark.parametrize(
    "field, value",
    [("compute_efficiency", 0.0), ("bandwidth_efficiency", 1.5), ("overhead_s", -0.001),
     ("comm_latency_s_per_layer", float("nan")), ("decode_s_per_token", 1e9),
     ("prefill_overhead_s", -0.01), ("prefill_overhead_s", float("inf"))],
)  # fmt: skip
def test_bad_coefficients(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field) as error:
        StepTimeModel(H100, LLAMA2, 2, **{field: value})
    assert repr(value) in str(error.value)


def test_bad_observations() -> None:
    table, models = synthetic(TRUE)
    with pytest.raises(ValueError, match=r"observations\['model'\] holds \['gpt'\]"):
        fit_step_model(table.assign(model="gpt"), H100, models)
    with pytest.raises(ValueError, match=r"observations\['step_time_s'\] must be finite and > 0 s, got -1.0"):
        fit_step_model(table.assign(step_time_s=-1.0), H100, models)
    with pytest.raises(ValueError, match=r"observations lacks the columns \['context_tokens'\]"):
        fit_step_model(table.drop(columns="context_tokens"), H100, models)
    with pytest.raises(ValueError, match=r"observations\['tensor_parallel'\] .* got 0.0"):
        fit_step_model(table.assign(tensor_parallel=0), H100, models)
    with pytest.raises(ValueError, match="empty"):
        fit_step_model(table.iloc[:0], H100, models)
    with pytest.raises(TypeError, match="hardware must be a Hardware"):
        fit_step_model(table, "H100", models)
