"""The measured vLLM results (``scaleplay.measured``): shipped unchanged, read with their documented
columns, summarized per experiment as their README states, and replayable through the simulator."""

from __future__ import annotations

import hashlib
from importlib import resources

import numpy as np
import pandas as pd
import pytest

from scaleplay.measured import VLLM_COLUMNS, load_vllm_measurements, replay_arrivals, vllm_experiments
from scaleplay.profiles import AffineServiceTime
from scaleplay.schema import ARRIVAL_COLUMNS
from scaleplay.simulator import PlatformConfig, PoolConfig, simulate

SHA256 = "b41b26352e643a8aa8f5f79c2cf082d12eef41f96fb0c10dbb27de8f17814490"


def test_the_shipped_file_is_the_source_unchanged():
    path = resources.files("scaleplay") / "data" / "serving" / "vllm_opt13b_a100_sharegpt.csv"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SHA256


def test_every_request_of_the_eight_experiments_with_its_columns():
    frame = load_vllm_measurements()
    assert list(frame.columns) == list(VLLM_COLUMNS)
    assert len(frame) == 1850
    assert (frame[["ttft_s", "tpot_s", "latency_s"]] > 0).all().all()
    assert (frame["ttft_s"] <= frame["latency_s"]).all()


def test_the_summary_shows_the_knee_the_readme_states():
    # README: mean TTFT 0.16-0.20 s up to 2.5 req/s (0.22 s in the short run at 2), 0.46 s at 3,
    # 2.9 s at 3.5 and 10.7 s at 4; mean TPOT from 34 ms at 1 req/s to 114 ms at 4.
    summary = vllm_experiments()
    assert len(summary) == 8 and (summary["requests"] == summary.index.get_level_values("requests")).all()
    ttft = summary["ttft_s"]
    assert ttft.loc[(300, 3.0)] == pytest.approx(0.46, abs=0.01)
    assert ttft.loc[(350, 3.5)] == pytest.approx(2.9, abs=0.05)
    assert ttft.loc[(400, 4.0)] == pytest.approx(10.7, abs=0.05)
    assert ttft[summary.index.get_level_values("rate_per_s") <= 2.5].max() < 0.25
    assert summary["tpot_s"].loc[(100, 1.0)] == pytest.approx(0.034, abs=0.001)
    assert summary["tpot_s"].loc[(400, 4.0)] == pytest.approx(0.114, abs=0.001)


def test_an_experiment_replays_through_the_simulator():
    arrivals = replay_arrivals(150, 1.5, seed=3)
    assert list(arrivals.columns) == list(ARRIVAL_COLUMNS) and len(arrivals) == 150
    measured = load_vllm_measurements().query("requests == 150")
    np.testing.assert_array_equal(arrivals["t_s"], measured["arrival_s"])
    np.testing.assert_array_equal(arrivals["tokens_out"], measured["tokens_out"])
    assert arrivals["difficulty"].equals(replay_arrivals(150, 1.5, seed=3)["difficulty"])
    result = simulate(arrivals, PlatformConfig(PoolConfig(1, AffineServiceTime(fixed_s=0.1))), seed=1)
    assert (result.log["outcome"] == "completed").all()


@pytest.mark.parametrize(
    ("requests", "rate", "error", "words"),
    [
        (100, 3.0, ValueError, ["measured experiment", "(100, 3.0)"]),
        (0, 1.0, ValueError, ["requests"]),
        ("100", 1.0, TypeError, ["requests"]),
        (100, "1", TypeError, ["rate_per_s"]),
    ],
)
def test_an_experiment_that_was_not_measured_is_refused(requests, rate, error, words):
    with pytest.raises(error) as caught:
        replay_arrivals(requests, rate)
    for word in words:
        assert word in str(caught.value)


def test_token_latency_percentiles_and_joint_slo_attainment_on_the_measurements():
    from scaleplay.metrics import joint_slo_attainment, token_latency_percentiles

    frame = load_vllm_measurements()
    by_rate = {
        rate: joint_slo_attainment(group, ttft_slo_s=1.0, tpot_slo_s=0.1)
        for rate, group in frame.groupby("rate_per_s")
    }
    # vLLM met both SLOs for most requests up to 2.5 req/s and lost them past its knee (3 to 4 req/s)
    assert min(by_rate[r] for r in (1.0, 1.5, 2.0, 2.5)) > 0.9
    assert by_rate[3.0] < 0.6 and by_rate[4.0] < 0.2
    assert list(by_rate.values())[3:] == sorted(list(by_rate.values())[3:], reverse=True)
    table = token_latency_percentiles(frame[frame["rate_per_s"] == 4.0], (0.5, 0.99))
    assert list(table.index) == ["ttft", "tpot"] and list(table.columns) == ["p50_s", "p99_s"]
    assert table.loc["ttft", "p50_s"] == pytest.approx(
        frame.loc[frame["rate_per_s"] == 4.0, "ttft_s"].median()
    )
    with pytest.raises(ValueError, match="ttft_slo_s"):
        joint_slo_attainment(frame, ttft_slo_s=0.0, tpot_slo_s=0.1)
    with pytest.raises(ValueError, match="lacks the columns"):
        joint_slo_attainment(frame.drop(columns="tpot_s"), 1.0, 0.1)


# -- which server was measured ---------------------------------------------------------------------


def test_prefill_groups_are_first_tokens_that_came_out_together():
    from scaleplay.measured import prefill_groups

    # first tokens at 3.0 and 3.001 (shuffled in), 1.0 and 1.0005, and 2.0 alone
    requests = pd.DataFrame(
        {
            "arrival_s": [2.9, 0.5, 1.8, 0.9, 2.95],
            "ttft_s": [0.1, 0.5005, 0.2, 0.1, 0.051],
            "tokens_in": [10, 300, 50, 100, 10],
        }
    )
    groups = prefill_groups(requests)
    assert list(groups.columns) == ["first_token_s", "prompts", "longest_prompt", "padding_tokens"]
    assert groups["first_token_s"].tolist() == pytest.approx([1.0, 3.0])
    assert groups["prompts"].tolist() == [2, 2]
    assert groups["longest_prompt"].tolist() == [300, 10]
    assert groups["padding_tokens"].tolist() == [2 * 300 - 400, 0]  # padded to the longest
    assert len(prefill_groups(requests, tolerance_s=1e-4)) == 0  # tighter: no two together
    assert prefill_groups(requests.iloc[:0]).empty


@pytest.mark.parametrize(
    ("requests", "tolerance_s", "error", "words"),
    [
        ([1, 2], 0.002, TypeError, ["requests", "DataFrame"]),
        (pd.DataFrame({"arrival_s": [0.0], "ttft_s": [0.1]}), 0.002, ValueError, ["tokens_in"]),
        (
            pd.DataFrame({"arrival_s": [0.0], "ttft_s": [0.1], "tokens_in": [5]}),
            0.0,
            ValueError,
            ["tolerance_s"],
        ),
    ],
)
def test_prefill_groups_refuse_bad_input(requests, tolerance_s, error, words):
    from scaleplay.measured import prefill_groups

    with pytest.raises(error) as caught:
        prefill_groups(requests, tolerance_s=tolerance_s)
    for word in words:
        assert word in str(caught.value)


def test_only_the_2_per_s_experiments_padded_past_v0s_default():
    # the trace that tells the launches apart (book/simulator.md, "Which server was measured")
    from scaleplay.measured import V0_MAX_PADDINGS, prefill_groups

    largest = {}
    for (requests, rate), group in load_vllm_measurements().groupby(["requests", "rate_per_s"]):
        groups = prefill_groups(group)
        largest[rate == 2.0] = max(largest.get(rate == 2.0, 0), groups["padding_tokens"].max())
        if rate == 2.0:
            assert groups["padding_tokens"].max() > V0_MAX_PADDINGS, requests
        else:
            assert groups["padding_tokens"].max() <= V0_MAX_PADDINGS, (requests, rate)
        if rate >= 2.5:
            assert len(groups) >= 10, (requests, rate)  # enough batches for the bound to say something
    assert largest == {True: 1405, False: 254}  # as data/serving/README.md states


def test_profiled_kv_tokens_is_vllm_v0s_arithmetic():
    from scaleplay.measured import A100_REPORTED_MEMORY_BYTES, profiled_kv_tokens

    weights = 12_853_473_280 * 2
    activations = 65536 * (4 * 5120 + 2 * 20480) * 2  # embeddings, input, residual; two MLP tensors
    block_bytes = 2 * 40 * 40 * 128 * 2 * 16
    blocks = (A100_REPORTED_MEMORY_BYTES * 0.92 - weights - activations) // block_bytes
    assert profiled_kv_tokens(0.92, 65536) == int(blocks) * 16 == 54_224
    assert profiled_kv_tokens(0.95, 65536) > profiled_kv_tokens(0.92, 65536)
    assert profiled_kv_tokens(0.95, 16384) > profiled_kv_tokens(0.95, 65536)
    assert profiled_kv_tokens(0.95, 16384, block_tokens=32) % 32 == 0


@pytest.mark.parametrize(
    ("args", "error", "words"),
    [
        ((1.5, 16384), ValueError, ["gpu_memory_utilization", "1.5"]),
        ((0.95, "16384"), TypeError, ["max_batched_tokens"]),
        ((0.95, 0), ValueError, ["max_batched_tokens"]),
        ((0.3, 16384), ValueError, ["no block for the KV cache", "0.3"]),
    ],
)
def test_profiled_kv_tokens_refuses_bad_flags(args, error, words):
    from scaleplay.measured import profiled_kv_tokens

    with pytest.raises(error) as caught:
        profiled_kv_tokens(*args)
    for word in words:
        assert word in str(caught.value)


def test_the_launches_of_that_week_end_with_the_published_script():
    from scaleplay.measured import profiled_kv_tokens, vllm_launches

    launches = vllm_launches()
    assert list(launches.index) == sorted(launches.index) and len(launches) == 3
    last = launches.iloc[-1]  # DistServe's published flags (evaluation/2-benchmark-serving)
    assert (last["gpu_memory_utilization"], last["max_batched_tokens"]) == (0.95, 16384)
    for row in launches.itertuples():
        assert row.kv_tokens == profiled_kv_tokens(row.gpu_memory_utilization, row.max_batched_tokens)
    # one launch lifted the padding limit, and only it
    assert (launches["max_paddings"] > 256).sum() == 1


def test_the_clocks_file_is_the_source_clocks():
    # read from the source .exp files' perf_counter stamps (data/serving/README.md)
    path = resources.files("scaleplay") / "data" / "serving" / "vllm_opt13b_a100_sharegpt_clocks.csv"
    clocks = pd.read_csv(path).set_index(["requests", "rate_per_s"])
    assert sorted(clocks.index) == sorted(vllm_experiments().index)
    durations = clocks["last_done_clock_s"] - clocks["first_sent_clock_s"]
    frame = load_vllm_measurements()
    for key, duration in durations.items():
        mine = frame[(frame["requests"] == key[0]) & (frame["rate_per_s"] == key[1])]
        # the file's times start at each experiment's first request: the same span
        assert duration == pytest.approx((mine["arrival_s"] + mine["latency_s"]).max(), abs=1e-3), key


def test_each_experiment_ran_on_the_launch_its_clock_and_padding_point_to():
    from scaleplay.measured import experiment_launches, vllm_launches

    runs = experiment_launches()
    assert sorted(runs.index) == sorted(vllm_experiments().index)
    assert runs["started_s"].is_monotonic_increasing and runs["started_s"].iloc[0] == 0.0
    sweep = runs[runs["server"] == 1]
    # 1, 1.5, 2.5, 3, 3.5 and 4 req/s back to back on one server: the calibration and the knee share it
    assert sorted(r for _, r in sweep.index) == [1.0, 1.5, 2.5, 3.0, 3.5, 4.0]
    assert (sweep["gap_s"].dropna() < 150).all()
    assert sweep["gap_s"].max() == pytest.approx(129.5, abs=0.1)  # where its own 2 req/s run was
    assert (runs["gap_s"].iloc[len(sweep)] / 60) == pytest.approx(77.2, abs=0.1)
    assert set(sweep["launch"]) == {"2024-04-17"}
    assert set(runs.loc[runs["server"] > 1, "launch"]) == {"2024-04-20"}
    limits = vllm_launches()["max_paddings"]
    assert (runs["largest_padding"] <= limits[runs["launch"]].to_numpy()).all()
