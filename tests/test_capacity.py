"""The users-to-GPUs chain, checked by hand on round numbers."""

import math

import numpy as np
import pytest

from conftest import finishes, make_arrivals
from scaleplay import queueing
from scaleplay.capacity import (
    HOURS_PER_MONTH,
    REPLICA_ENVELOPE_FIELDS,
    EnvelopeInputs,
    envelope,
    envelope_table,
    fleet_at_load,
    mean_tpot_s,
    prefill_s_per_request,
    replica_envelope,
    staffing_table,
)
from scaleplay.simulator import ContinuousBatcherConfig, PlatformConfig, PoolConfig, simulate
from scaleplay.steptime import load_step_profile


def test_envelope_by_hand():
    inputs = EnvelopeInputs(
        requests_per_user_per_day=8.64,  # 86,400 users x 8.64 / 86,400 s = 8.64 req/s mean
        peak_to_mean=2.5,
        service_s=2.0,
        slots_per_replica=10,
        target_utilization=0.5,
        gpus_per_replica=2,
        gpu_hour_usd=4.0,
    )
    row = envelope(86_400, inputs)
    assert row["mean_rps"] == pytest.approx(8.64)
    assert row["peak_rps"] == pytest.approx(21.6)
    assert row["in_flight_at_peak"] == pytest.approx(43.2)
    assert row["replicas"] == 9  # ceil(43.2 / (10 x 0.5))
    assert row["gpus"] == 18
    assert row["utilization_at_peak"] == pytest.approx(43.2 / 90)
    assert row["p_wait"] == pytest.approx(queueing.erlang_c(90, 43.2))
    assert row["monthly_gpu_usd"] == pytest.approx(18 * 4.0 * HOURS_PER_MONTH)
    requests_per_month = 86_400 * 8.64 * HOURS_PER_MONTH / 24
    assert row["usd_per_1k_requests"] == pytest.approx(row["monthly_gpu_usd"] / requests_per_month * 1000)
    servers = queueing.min_servers_for_wait_probability(43.2, inputs.wait_probability_target)
    assert row["replicas_at_wait_target"] == math.ceil(servers / 10)


def test_table_grows_with_users_and_big_fleets_run_hotter():
    table = envelope_table([1e4, 1e5, 1e6, 1e7])
    assert list(table.index) == [1e4, 1e5, 1e6, 1e7]
    assert table["replicas"].is_monotonic_increasing
    assert table["utilization_at_wait_target"].is_monotonic_increasing
    assert (table["replicas_at_wait_target"] <= table["replicas"]).all()


def test_staffing_table_headroom_per_sqrt_load_settles_at_beta():
    table = staffing_table([100.0, 1000.0, 10000.0], 0.2)
    beta = queueing.halfin_whitt_beta(0.2)
    assert table["headroom_per_sqrt_load"].to_numpy() == pytest.approx([beta] * 3, rel=0.1)
    assert table["utilization"].is_monotonic_increasing


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"peak_to_mean": 0.5}, "peak_to_mean"),
        ({"service_s": 0.0}, "service_s"),
        ({"slots_per_replica": 0}, "slots_per_replica"),
        ({"target_utilization": 1.0}, "target_utilization"),
        ({"requests_per_user_per_day": float("nan")}, "requests_per_user_per_day"),
        ({"wait_probability_target": 0.0}, "wait_probability_target"),
    ],
)
def test_bad_inputs(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        EnvelopeInputs(**kwargs)


def test_bad_users():
    with pytest.raises(ValueError, match="daily_active_users"):
        envelope(0)
    with pytest.raises(ValueError, match="users"):
        envelope_table([])


def test_fleet_at_load_flags_an_overloaded_fleet():
    inputs = EnvelopeInputs(service_s=2.0, slots_per_replica=10)
    fine = fleet_at_load(3, 10.0, inputs)  # 20 in flight on 30 slots
    assert fine["stable"] == 1.0
    assert fine["utilization_at_peak"] == pytest.approx(20 / 30)
    over = fleet_at_load(3, 15.0, inputs)  # 30 in flight on 30 slots: no steady state
    assert over["stable"] == 0.0
    assert over["mean_wait_s"] == math.inf
    with pytest.raises(ValueError, match="replicas"):
        fleet_at_load(0, 1.0, inputs)


# ---- bad and extreme input: a clear error or a finite answer, in bounded time --------------------



def test_fleet_at_load_refuses_a_fleet_beyond_the_bound_and_foreign_inputs():
    with pytest.raises(ValueError, match="replicas"):
        finishes(lambda: fleet_at_load(10**12, 1.0))
    with pytest.raises(TypeError, match="inputs must be EnvelopeInputs"):
        fleet_at_load(3, 1.0, "fast")
    with pytest.raises(ValueError, match="peak_rps"):
        fleet_at_load(3, 1e308, EnvelopeInputs(service_s=10.0))
    idle = fleet_at_load(3, 0.0)
    assert idle["p_wait"] == 0.0 and idle["mean_wait_s"] == 0.0
    trickle = fleet_at_load(3, 5e-324)  # a load whose Poisson probabilities underflow
    assert trickle["p_wait"] == 0.0 and trickle["p99_wait_s"] == 0.0


def test_envelope_names_the_users_it_cannot_size():
    with pytest.raises(ValueError, match="daily_active_users"):
        finishes(lambda: envelope(1e308))
    with pytest.raises(ValueError, match="daily_active_users"):
        finishes(lambda: envelope(10**30))
    with pytest.raises(TypeError, match="users must be an iterable"):
        envelope_table(5)
    with pytest.raises(ValueError, match=r"users\[1\]"):
        envelope_table([1e4, -1.0])
    with pytest.raises(ValueError, match="service_s"):
        EnvelopeInputs(service_s=1e-320)
    with pytest.raises(ValueError, match="slots_per_replica"):
        EnvelopeInputs(slots_per_replica=10**30)


def test_staffing_table_names_its_loads():
    with pytest.raises(TypeError, match="offered_loads must be an iterable"):
        staffing_table(5.0, 0.2)
    with pytest.raises(TypeError, match=r"offered_loads\[0\]"):
        staffing_table(["100"], 0.2)
    with pytest.raises(ValueError, match=r"offered_loads\[0\] must be <"):
        finishes(lambda: staffing_table([1e308], 0.2))


# --- the continuous-batching replica's envelope -------------------------------------------------------

STEP_70B = load_step_profile("h100-80gb", "Llama-3.1-70B", 4)
KV_TOKENS = ContinuousBatcherConfig().kv_blocks(STEP_70B) * ContinuousBatcherConfig().block_tokens
SHAPE = {"tokens_in": 1500.0, "tokens_out": 200.0}


def envelope_of(**changes):
    return replica_envelope(STEP_70B, **{"kv_tokens": KV_TOKENS, "tpot_slo_s": 0.1, **SHAPE, **changes})


def tpot_at(rate, **changes):
    return mean_tpot_s(STEP_70B, rate, **{"kv_tokens": KV_TOKENS, **SHAPE, **changes})


def test_the_envelope_fields_and_the_load_at_the_tpot_slo():
    e = envelope_of()
    assert list(e.index) == list(REPLICA_ENVELOPE_FIELDS)
    assert e["kv_sequences"] == KV_TOKENS // 1600 and e["batch_limit"] == min(e["kv_sequences"], 256)
    assert 0 < e["slo_rate_per_s"] < e["max_rate_per_s"]
    assert tpot_at(e["slo_rate_per_s"]) == pytest.approx(0.1, rel=1e-4)  # the mean TPOT sits on the SLO
    assert e["slo_batch"] == pytest.approx(e["slo_rate_per_s"] * 200 * 0.1)  # Little's law
    assert e["slo_output_tokens_per_s"] == pytest.approx(200 * e["slo_rate_per_s"])
    assert e["lone_ttft_s"] == pytest.approx(STEP_70B.prefill_time_s(1, 1500))
    assert e["lone_tpot_s"] == pytest.approx(STEP_70B.decode_step_time_s(1, 1600.0))


def test_mean_tpot_grows_with_load_from_the_lone_step_until_the_replica_cannot_carry_it():
    tpots = [tpot_at(r) for r in (0.0, 0.5, 1.0, 2.0, 3.0)]
    assert tpots[0] == pytest.approx(envelope_of()["lone_tpot_s"])
    assert all(a < b for a, b in zip(tpots, tpots[1:], strict=False))
    too_many = 1.01 / prefill_s_per_request(STEP_70B, **SHAPE)  # more prefill than a second holds
    assert tpot_at(too_many) == math.inf
    assert tpot_at(1.01 * envelope_of()["max_rate_per_s"]) == math.inf  # more sequences than it holds


def test_max_num_seqs_and_the_kv_cache_bound_the_batch_and_the_load():
    capped = envelope_of(max_num_seqs=8)
    assert capped["batch_limit"] == 8 and capped["max_rate_per_s"] < envelope_of()["max_rate_per_s"]
    assert tpot_at(1.01 * capped["max_rate_per_s"], max_num_seqs=8) == math.inf
    assert envelope_of(kv_tokens=16_000)["kv_sequences"] == 10
    assert envelope_of(kv_tokens=500)["slo_rate_per_s"] == 0  # not even one sequence fits


def test_smaller_prompt_chunks_cost_less_per_prompt():
    small = prefill_s_per_request(STEP_70B, **SHAPE, max_batched_tokens=512)
    assert small < prefill_s_per_request(STEP_70B, **SHAPE)


def test_an_slo_below_a_lone_step_gives_no_load():
    assert envelope_of(tpot_slo_s=1e-4)["slo_rate_per_s"] == 0


@pytest.mark.parametrize(("budget", "rate", "seed"), [(8192, 1.5, 5), (512, 2.0, 6)])
def test_the_envelope_is_the_engines_mean_tpot(budget, rate, seed):
    rng = np.random.default_rng(seed)
    arrivals = make_arrivals(np.cumsum(rng.exponential(1 / rate, 1500)), tokens_in=1500, tokens_out=200)
    batcher = ContinuousBatcherConfig(max_batched_tokens=budget)
    log = simulate(arrivals, PlatformConfig(PoolConfig(1, STEP_70B, batcher)), seed=seed).log
    simulated = log.loc[log.outcome == "completed", "tpot_s"].mean()
    assert simulated == pytest.approx(tpot_at(rate, max_batched_tokens=budget), rel=0.05)


@pytest.mark.parametrize(
    ("changes", "error", "match"),
    [
        ({"kv_tokens": 0}, ValueError, "kv_tokens"),
        ({"kv_tokens": 1.5}, TypeError, "kv_tokens"),
        ({"tokens_in": -1.0}, ValueError, "tokens_in"),
        ({"tokens_out": 0.0}, ValueError, "tokens_out"),
        ({"tpot_slo_s": float("nan")}, ValueError, "tpot_slo_s"),
        ({"max_num_seqs": 0}, ValueError, "max_num_seqs"),
        ({"max_batched_tokens": 1}, ValueError, "max_batched_tokens"),
    ],
)
def test_bad_envelope_input_is_refused(changes, error, match):
    with pytest.raises(error, match=match):
        envelope_of(**changes)


@pytest.mark.parametrize("rate", [-1.0, float("inf"), "fast"])
def test_mean_tpot_refuses_a_bad_rate_and_a_foreign_step(rate):
    with pytest.raises((ValueError, TypeError), match="rate_per_s"):
        tpot_at(rate)
    with pytest.raises(TypeError, match="step must be a StepTimeModel"):
        replica_envelope("H100", kv_tokens=1, tokens_in=1.0, tokens_out=1.0, tpot_slo_s=1.0)
