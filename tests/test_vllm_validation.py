"""The continuous-batching engine against a real vLLM server (issue 12, ``scaleplay.measured``):
calibrated on the 1 req/s experiment only, it must predict mean TTFT, TPOT and end-to-end latency within
25% at every rate up to 3 req/s, and the knee (the lowest rate whose mean TTFT passes 1 s) at 3.5."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from scipy import optimize

import scaleplay.measured as measured
from scaleplay.config import ContinuousBatcherConfig
from scaleplay.measured import (
    CALIBRATED,
    CALIBRATION_EXPERIMENT,
    CALIBRATION_TARGETS,
    VLLM_SERVER,
    calibrate_vllm_step,
    experiment_launches,
    knee_rate_per_s,
    kv_tokens_held,
    replay_arrivals,
    replay_experiment,
    static_platform,
    token_times,
    vllm_experiments,
    vllm_launches,
    vllm_platform,
    vllm_step_profile,
    vllm_validation,
)
from scaleplay.profiles import load_model
from scaleplay.sim import simulate
from scaleplay.steptime import FITTED_COEFFICIENTS

BOUND = 0.25  # the issue's: within 25% of measured
PREDICTED_UP_TO_PER_S = 3.0  # ... at every rate up to this
MEASURED_KNEE_PER_S = 3.5  # the lowest measured rate whose mean TTFT passes 1 s


@pytest.fixture(scope="module")
def calibration():
    return calibrate_vllm_step()


@pytest.fixture(scope="module")
def table(calibration):
    return vllm_validation(calibration.step)


def test_opt_13b_is_counted_from_its_config():
    vocab, hidden, ffn, layers, positions = 50272, 5120, 20480, 40, 2048 + 2  # OPT's position offset: 2
    per_layer = (
        4 * (hidden * hidden + hidden) + (hidden * ffn + ffn) + (ffn * hidden + hidden) + 2 * 2 * hidden
    )
    count = vocab * hidden + positions * hidden + layers * per_layer + 2 * hidden  # tied head, final norm
    spec = load_model("OPT-13B", "fp16", kv_dtype="fp16")
    assert spec.parameters == count == 12_853_473_280
    assert (spec.layers, spec.kv_heads, spec.head_dim) == (40, 40, 128)
    assert spec.kv_bytes_per_token == 2 * 40 * 40 * 128 * 2


def test_the_platform_is_the_measured_server_under_the_calibration_experiments_launch():
    config = vllm_platform(vllm_step_profile())
    pool = config.pool
    assert experiment_launches().loc[CALIBRATION_EXPERIMENT, "launch"] == "2024-04-17"
    assert pool.replicas == 1 and pool.continuous and config.network_hop_s == 0.0
    assert pool.batcher == ContinuousBatcherConfig(
        max_num_seqs=1024, max_batched_tokens=65536, block_tokens=16, schedule="prefill_first",
        max_paddings=256, kv_cache_blocks=54224 // 16,
    )  # fmt: skip
    assert pool.service.model.name == "OPT-13B" and pool.service.tensor_parallel == 1
    assert vllm_platform(vllm_step_profile(), kv_tokens=50_000).pool.batcher.kv_cache_blocks == 3125
    # every measured request fits a prefill and the longest sequence OPT-13B allows, under every launch
    frame = measured.load_vllm_measurements()
    assert frame["tokens_in"].max() <= vllm_launches()["max_batched_tokens"].min()
    assert (frame["tokens_in"] + frame["tokens_out"]).max() <= VLLM_SERVER["max_model_len_tokens"]


def test_each_experiment_is_replayed_under_its_launch(table):
    launches = vllm_launches()
    for key, row in table.iterrows():
        assert row["launch"] == experiment_launches().loc[key, "launch"]
        batcher = vllm_platform(vllm_step_profile(), launch=row["launch"]).pool.batcher
        assert batcher.max_paddings == launches.loc[row["launch"], "max_paddings"]
        assert batcher.kv_cache_blocks * 16 == launches.loc[row["launch"], "kv_tokens"]


def test_the_calibration_reads_the_1_req_per_s_experiment_only(monkeypatch):
    seen = []

    def spy(arrivals, config, **kwargs):
        seen.append(arrivals)
        return simulate(arrivals, config, **kwargs)

    monkeypatch.setattr(measured, "simulate", spy)
    result = calibrate_vllm_step()
    assert result.experiment == CALIBRATION_EXPERIMENT == (100, 1.0)
    fitted_on = replay_arrivals(*CALIBRATION_EXPERIMENT)
    assert len(seen) == result.simulations > 10
    for arrivals in seen:
        pd.testing.assert_frame_equal(arrivals, fitted_on)


def test_the_calibration_fits_two_efficiencies_and_a_prompt_pass_cost_and_nothing_else(calibration):
    start = vllm_step_profile()
    assert tuple(calibration.fitted) == CALIBRATED
    assert CALIBRATED == ("compute_efficiency", "bandwidth_efficiency", "prefill_overhead_s")
    assert CALIBRATION_TARGETS == ("ttft_s", "ttft_s_per_prompt_token", "tpot_pooled_s")
    assert calibration.start == {name: getattr(start, name) for name in CALIBRATED}
    for name in FITTED_COEFFICIENTS:
        if name not in CALIBRATED:
            assert getattr(calibration.step, name) == getattr(start, name), name
    assert 0 < calibration.fitted["compute_efficiency"] <= 1
    assert 0 < calibration.fitted["bandwidth_efficiency"] <= 1
    # a few tens of milliseconds, as the TTFT's floor says
    assert 0.005 < calibration.fitted["prefill_overhead_s"] < 0.05
    assert calibration.fitted != calibration.start  # the shipped profile is not vLLM's
    # the three fitted numbers are matched; the mean TPOT and the latency, not fitted, are checks
    for name in CALIBRATION_TARGETS:
        assert calibration.simulated[name] == pytest.approx(calibration.measured[name], rel=0.01), name
    for name in ("tpot_s", "latency_s"):
        assert calibration.simulated[name] == pytest.approx(calibration.measured[name], rel=0.05), name


def test_without_a_prompt_pass_cost_the_ttft_rises_too_steeply(calibration):
    # why the calibration fits prefill_overhead_s: with none, the compute efficiency that matches the mean
    # TTFT of 1 req/s makes each prompt token cost far more than the measured requests show
    measured_means = calibration.measured

    def replay(efficiency: float) -> pd.DataFrame:
        step = dataclasses.replace(calibration.step, compute_efficiency=efficiency, prefill_overhead_s=0.0)
        return replay_experiment(step, *CALIBRATION_EXPERIMENT)

    efficiency = optimize.brentq(
        lambda e: replay(e)["ttft_s"].mean() / measured_means["ttft_s"] - 1, 0.3, 0.9, xtol=1e-4
    )
    slope = measured.ttft_s_per_prompt_token(replay(efficiency))
    assert slope > 1.1 * measured_means["ttft_s_per_prompt_token"]
    assert efficiency < calibration.fitted["compute_efficiency"]


def test_ttft_s_per_prompt_token_is_the_least_squares_slope():
    times = pd.DataFrame({"tokens_in": [100, 300, 500], "ttft_s": [0.05, 0.09, 0.13]})
    assert measured.ttft_s_per_prompt_token(times) == pytest.approx(2e-4, rel=1e-9)
    with pytest.raises(ValueError, match=r"lacks the columns \['tokens_in'\]"):
        measured.ttft_s_per_prompt_token(pd.DataFrame({"ttft_s": [0.1]}))


def test_the_pooled_tpot_is_smooth_where_the_mean_tpot_jumps():
    # why the calibration matches the pooled TPOT (measured.CALIBRATION_TARGETS): across a 0.4-point
    # sweep of the bandwidth efficiency the mean TPOT of 1 req/s jumps; the pooled one falls steadily
    start = vllm_step_profile()
    means, pooled = [], []
    for efficiency in np.linspace(0.530, 0.538, 5):
        step = dataclasses.replace(start, compute_efficiency=0.55, bandwidth_efficiency=float(efficiency))
        times = replay_experiment(step, *CALIBRATION_EXPERIMENT)
        means.append(times["tpot_s"].mean())
        pooled.append((times["latency_s"] - times["ttft_s"]).sum() / (times["tokens_out"] - 1).sum())
        assert measured.pooled_tpot_s(times) == pytest.approx(pooled[-1], rel=1e-12)
    assert np.all(np.diff(pooled) < 0)
    assert np.max(np.abs(np.diff(means))) > 10 * np.max(np.abs(np.diff(pooled)))


def test_the_calibration_is_deterministic(calibration):
    again = calibrate_vllm_step()
    assert again.fitted == calibration.fitted and again.simulations == calibration.simulations


def test_the_table_has_every_experiment_in_rate_order(table):
    assert sorted(table.index) == sorted(vllm_experiments().index)
    assert table.index.get_level_values("rate_per_s").is_monotonic_increasing
    assert (table["completed"] == table.index.get_level_values("requests")).all()
    for name in ("ttft", "tpot", "latency"):
        ratio = table[f"simulated_{name}_s"] / table[f"measured_{name}_s"] - 1
        np.testing.assert_allclose(table[f"{name}_error"], ratio)


def _cases():
    for key in sorted(vllm_experiments().index, key=lambda k: (k[1], k[0])):
        if key[1] <= PREDICTED_UP_TO_PER_S:
            for name in ("ttft", "tpot", "latency"):
                yield pytest.param(key, name, id=f"{key[0]}@{key[1]:g}-{name}")


@pytest.mark.parametrize(("key", "name"), list(_cases()))
def test_means_within_25_percent_up_to_3_per_s(table, key, name):
    error = table.loc[key, f"{name}_error"]
    assert abs(error) <= BOUND, f"{name} at {key}: simulated {error:+.1%} off measured"


def test_the_knee_is_reproduced(table):
    assert knee_rate_per_s(table, "measured_ttft_s") == MEASURED_KNEE_PER_S
    assert knee_rate_per_s(table) == MEASURED_KNEE_PER_S
    below = table[table.index.get_level_values("rate_per_s") < MEASURED_KNEE_PER_S]
    assert (below["simulated_ttft_s"] < 1.0).all()


def test_the_static_batcher_is_far_off(table):
    # the contrast the chapter draws: batches that run to their longest answer miss by multiples
    assert (table["static_latency_error"] > 1.0).all()
    assert (table["latency_error"].abs() < table["static_latency_error"].abs()).all()


def test_a_smaller_cache_brings_the_knee_earlier(calibration):
    # the mean TTFT at 3 req/s grows as the KV cache shrinks
    at_3 = [
        replay_experiment(calibration.step, 300, 3.0, kv_tokens=kv)["ttft_s"].mean()
        for kv in (64_704, 54_224, 52_000)
    ]
    assert at_3 == sorted(at_3) and at_3[-1] > 2 * at_3[0]


def test_the_knees_onset_turns_on_a_percent_of_decode_speed(calibration, table):
    # At 3 req/s the measured server is at the onset of its knee: its mean TTFT is driven by its last
    # quarter of requests, when its KV cache is full. When the cache fills depends on how long requests
    # hold it, so on the decode speed to a percent (book/simulator.md, "Against a real vLLM server"):
    # a decode 1% slower or faster (the bandwidth efficiency, which times it, scaled) moves the mean TTFT
    # by a tenth of the measured one or more, and the TPOT and the latency by under 2%.
    measured_means = vllm_experiments().loc[(300, 3.0)]
    step = calibration.step
    errors = {}
    for factor in (0.99, 1.01):
        faster = dataclasses.replace(step, bandwidth_efficiency=factor * step.bandwidth_efficiency)
        times = replay_experiment(faster, 300, 3.0)
        errors[factor] = {
            n: times[f"{n}_s"].mean() / measured_means[f"{n}_s"] - 1 for n in ("ttft", "tpot", "latency")
        }
    now = table.loc[(300, 3.0)]
    assert errors[0.99]["ttft"] > now["ttft_error"] + 0.05 and errors[1.01]["ttft"] < now["ttft_error"] - 0.05
    for factor in errors:
        for name in ("tpot", "latency"):
            assert abs(errors[factor][name] - now[f"{name}_error"]) < 0.02, (factor, name)


def test_token_times_follow_distserve():
    config = vllm_platform(vllm_step_profile())
    log = simulate(replay_arrivals(100, 1.0), config, seed=0).log
    times = token_times(log)
    assert len(times) == 100
    assert list(times.columns) == ["ttft_s", "tpot_s", "latency_s", "tokens_in", "tokens_out"]
    expected = (log["latency_s"] - log["ttft_s"]) / (log["tokens_out"] - 1)
    np.testing.assert_allclose(times["tpot_s"], expected)
    np.testing.assert_allclose(times["tpot_s"], log["tpot_s"])  # the log's own, with no network hop


@pytest.mark.parametrize(
    ("call", "error", "words"),
    [
        (lambda: vllm_platform("A100"), TypeError, ["step", "StepTimeModel", "'A100'"]),
        (lambda: vllm_platform(vllm_step_profile(), launch="2024-05-01"), ValueError,
         ["launch", "2024-04-17", "'2024-05-01'"]),
        (lambda: vllm_platform(vllm_step_profile(), kv_tokens=8), ValueError, ["kv_tokens", "8"]),
        (lambda: replay_experiment(vllm_step_profile(), 300, 3.5), ValueError, ["(300, 3.5)"]),
        (lambda: replay_experiment("step", 300, 3.0), TypeError, ["step", "'step'"]),
        (lambda: static_platform(None), TypeError, ["step", "None"]),
        (lambda: static_platform(vllm_step_profile(), max_batch_size=0), ValueError, ["max_batch_size", "0"]),
        (lambda: calibrate_vllm_step(rate_per_s=3.0), ValueError, ["measured experiment", "(100, 3.0)"]),
        (lambda: calibrate_vllm_step(requests=0), ValueError, ["requests"]),
        (lambda: calibrate_vllm_step("profile"), TypeError, ["step", "'profile'"]),
        (lambda: vllm_validation(1.0), TypeError, ["step", "1.0"]),
        (lambda: token_times("log"), TypeError, ["log", "'log'"]),
        (lambda: measured.pooled_tpot_s([1.0]), TypeError, ["requests", "tokens_out"]),
        (lambda: measured.pooled_tpot_s(pd.DataFrame({"ttft_s": [1.0]})), ValueError, ["latency_s"]),
        (lambda: token_times(pd.DataFrame({"latency_s": [1.0]})), ValueError, ["ttft_s", "continuous"]),
        (lambda: knee_rate_per_s([1.0]), TypeError, ["table", "rate_per_s"]),
    ],
)  # fmt: skip
def test_bad_inputs_are_refused(call, error, words):
    with pytest.raises(error) as caught:
        call()
    for word in words:
        assert word in str(caught.value)


def test_knee_rate_checks_its_column_and_threshold():
    frame = pd.DataFrame(
        {"ttft_s": [0.2, 1.5, 0.5]},
        index=pd.MultiIndex.from_tuples([(1, 1.0), (1, 2.0), (1, 3.0)], names=["requests", "rate_per_s"]),
    )
    assert knee_rate_per_s(frame, "ttft_s") == 2.0
    assert np.isnan(knee_rate_per_s(frame, "ttft_s", threshold_s=2.0))
    with pytest.raises(ValueError, match="column must be one of"):
        knee_rate_per_s(frame, "latency")
    with pytest.raises(ValueError, match="threshold_s"):
        knee_rate_per_s(frame, "ttft_s", threshold_s=-1.0)


def test_kv_tokens_held_reconstructs_the_cache_from_request_times():
    requests = pd.DataFrame(
        {
            "arrival_s": [0.0, 1.0],
            "ttft_s": [1.0, 1.0],  # first tokens at 1 s and 2 s
            "latency_s": [5.0, 3.0],  # ends at 5 s and 4 s
            "tokens_in": [100, 50],
            "tokens_out": [41, 21],  # 40 more tokens over 4 s; 20 over 2 s: 10 a second each
        }
    )
    held = kv_tokens_held(requests, step_s=0.5)
    assert held.index[0] == 0.0 and held.index[-1] == pytest.approx(5.0)
    assert held.loc[0.5] == 0.0  # nobody has a first token yet
    assert held.loc[1.0] == pytest.approx(101)  # the first holds its prompt and one token
    assert held.loc[3.0] == pytest.approx((101 + 20) + (51 + 10))
    assert held.loc[5.0] == 0.0  # both ended
    frame = measured.load_vllm_measurements()
    step = vllm_step_profile()
    cache_tokens = vllm_platform(step).pool.batcher.kv_blocks(step) * VLLM_SERVER["block_tokens"]
    # the calibration run never comes near a full cache; from 3 req/s on the measured server's does
    assert kv_tokens_held(frame[frame["rate_per_s"] == 1.0]).max() < 0.5 * cache_tokens
    assert kv_tokens_held(frame[frame["rate_per_s"] == 4.0]).max() > 0.85 * cache_tokens


def test_kv_tokens_held_refuses_bad_input():
    with pytest.raises(TypeError, match="requests must be a DataFrame"):
        kv_tokens_held([1, 2])
    with pytest.raises(ValueError, match=r"lacks the columns \['ttft_s'"):
        kv_tokens_held(pd.DataFrame({"arrival_s": [0.0]}))
    frame = measured.load_vllm_measurements().head(3)
    with pytest.raises(ValueError, match="step_s"):
        kv_tokens_held(frame, step_s=0.0)
    with pytest.raises(ValueError, match="more than 10"):
        kv_tokens_held(frame, step_s=1e-9)
