"""The reference product and its phase ladder: gates where the largest fleet stops meeting the SLO,
cards sized with the fewest replicas, cells for the last phase."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from scaleplay.experiments import slo_attainment
from scaleplay.reference import (
    LADDER_COLUMNS,
    MIN_PEAK_REQUESTS,
    REFERENCE,
    Phase,
    Product,
    gate_users,
    ladder_card,
    phase_card,
    phase_cards,
    phase_ladder,
)
from scaleplay.simulator import simulate
from scaleplay.workload import TokenDistribution

#: A small product that sizes in seconds: the 8B model on one H100 a replica, short requests.
SMALL = Product(
    name="small",
    model="Llama-3.1-8B",
    tensor_parallel=1,
    tokens_in=TokenDistribution(400, 0.5, maximum=2000),
    tokens_out=TokenDistribution(100, 0.5, maximum=400),
    ttft_slo_s=0.5,
    tpot_slo_s=0.04,
    phases=(
        Phase("one", 20_000, "one replica", "BF16", 1),
        Phase("pool", 100_000, "a pool of four", "FP8", 4),
        Phase("cells", 400_000, "cells of the pool", "FP8", None),
    ),
)
WINDOW_S = 120.0


def test_the_reference_product_is_the_books():
    assert REFERENCE.model == "Llama-3.1-70B" and REFERENCE.tensor_parallel == 4
    assert [p.max_users for p in REFERENCE.phases] == [10_000, 100_000, 500_000, 10_000_000]
    # 10 requests a user a day, the busiest hour 1.5x the mean
    assert REFERENCE.peak_rate_per_s(86_400) == pytest.approx(10 * 1.5)


def test_the_gate_is_where_the_largest_fleet_stops_meeting_the_slo():
    phase = SMALL.phases[0]
    gate = gate_users(SMALL, phase, window_s=WINDOW_S, seed=3)

    def share(users: float) -> float:
        arrivals = SMALL.sizing_arrivals(users, WINDOW_S, 3)
        log = simulate(arrivals, SMALL.platform(phase, 1), seed=3).log
        return slo_attainment(log, SMALL.ttft_slo_s, SMALL.tpot_slo_s)

    assert share(gate) >= SMALL.slo_target
    assert share(gate * 1.03) < SMALL.slo_target or share(gate * 1.1) < SMALL.slo_target


def test_the_ladder_cards():
    ladder = phase_ladder(SMALL, window_s=WINDOW_S, seed=3)
    assert list(ladder.columns) == list(LADDER_COLUMNS)
    one, pool, cells = (ladder.iloc[k] for k in range(3))
    # a card sits at the phase's top or at its gate, whichever comes first, and meets the SLO there
    for row, phase in zip((one, pool), SMALL.phases[:2], strict=True):
        assert row.users == min(phase.max_users, row.gate_users)
        assert row.replicas <= phase.max_replicas and row.attainment >= SMALL.slo_target
    assert math.isnan(cells.gate_users)
    # the last phase is whole cells of the previous phase's largest fleet
    n_cells = math.ceil(SMALL.phases[2].max_users / pool.gate_users)
    assert cells.replicas % n_cells == 0 and cells.replicas / n_cells <= 4
    for row in (one, pool, cells):
        assert row.gpus == row.replicas * SMALL.tensor_parallel
        assert row.usd_per_user_month == pytest.approx(row.gpus * 6.88 * 730 / row.users)
        assert row.usd_per_1k_requests == pytest.approx(1000 * row.gpus * 6.88 / (row.peak_rate_per_s * 3600))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"ttft_slo_s": 0}, "ttft_slo_s"),
        ({"slo_target": 1.5}, "slo_target"),
        ({"phases": (Phase("b", 10, "x"), Phase("a", 5, "y"))}, "phases must grow"),
    ],
)
def test_bad_products_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Product(**kwargs)


def test_bad_phases_are_refused():
    with pytest.raises(ValueError, match="format"):
        Phase("p", 10, "x", "INT4")
    with pytest.raises(ValueError, match="max_users"):
        Phase("p", -1, "x")


def test_a_card_for_any_user_count():
    card = phase_card(SMALL, 60_000, window_s=WINDOW_S, seed=3)
    assert card.phase == "pool" and card.users == 60_000
    assert card.gate_users == gate_users(SMALL, SMALL.phases[1], window_s=WINDOW_S, seed=3)
    assert card.attainment >= SMALL.slo_target and card.replicas <= 4
    beyond = phase_card(SMALL, 1_000_000, window_s=WINDOW_S, seed=3)
    assert beyond.phase == "cells" and math.isnan(beyond.gate_users)
    with pytest.raises(ValueError, match="users"):
        phase_card(SMALL, 0)


def test_a_ladder_card_is_its_row_of_the_ladder():
    ladder = phase_ladder(SMALL, window_s=WINDOW_S, seed=3)
    for k in range(3):
        card = ladder_card(SMALL, k, window_s=WINDOW_S, seed=3)
        pd.testing.assert_series_equal(card, ladder.iloc[k], check_names=False)
    with pytest.raises(ValueError, match="phase"):
        ladder_card(SMALL, 3)


def test_the_workload_is_the_products_day_and_the_peak_window_straddles_its_busiest_hour():
    from scaleplay.workload import Burst, generate_arrivals

    workload = REFERENCE.workload(100_000)
    assert workload.peak_rate_per_s == pytest.approx(REFERENCE.peak_rate_per_s(100_000))
    assert workload.classes[0].tokens_in == REFERENCE.tokens_in
    start = REFERENCE.peak_start_s(600.0)
    assert start + 300.0 == pytest.approx(REFERENCE.diurnal.peak_hour * 3600.0)
    burst = REFERENCE.workload(100_000, bursts=(Burst(start, 60.0, 2.0),))
    plain = generate_arrivals(workload, 600.0, seed=1, start_s=start)
    doubled = generate_arrivals(burst, 600.0, seed=1, start_s=start)
    assert len(doubled) > len(plain)
    with pytest.raises(ValueError, match="users"):
        REFERENCE.workload(0)
    with pytest.raises(ValueError, match="window_s"):
        REFERENCE.peak_start_s(-1.0)


def test_the_envelope_uses_the_batchers_kv_cache_and_the_products_mean_request():
    step = REFERENCE.step("FP8")
    e = REFERENCE.envelope("FP8")
    assert e["kv_tokens"] == REFERENCE.batcher.kv_blocks(step) * REFERENCE.batcher.block_tokens
    assert e["tokens_per_sequence"] == pytest.approx(
        REFERENCE.tokens_in.mean_tokens + REFERENCE.tokens_out.mean_tokens / 2
    )
    assert e["slo_rate_per_s"] > REFERENCE.envelope("BF16")["slo_rate_per_s"]  # FP8 serves more


def test_cards_of_many_user_counts_agree_with_one_card_each_and_count_whole_nodes():
    cards = phase_cards(REFERENCE, [3_000, 30_000], window_s=60.0, seed=4)
    alone = phase_card(REFERENCE, 30_000, window_s=60.0, seed=4)
    pd.testing.assert_series_equal(cards.iloc[1], alone, check_names=False)
    per_node = REFERENCE.gpus_per_node // REFERENCE.tensor_parallel
    assert (cards["nodes"] == np.ceil(cards["replicas"] / per_node)).all()
    assert (cards["nodes"] * REFERENCE.gpus_per_node >= cards["gpus"]).all()
    with pytest.raises(TypeError, match="users must be a non-empty sequence"):
        phase_cards(REFERENCE, 3_000)
    with pytest.raises(ValueError, match=r"users\[1\]"):
        phase_cards(REFERENCE, [3_000, -1])
    with pytest.raises(ValueError, match="gpus_per_node"):
        Product(gpus_per_node=0)


def test_the_envelope_inputs_are_the_products_traffic_and_its_replica_at_the_tpot_slo():
    inputs = REFERENCE.envelope_inputs("FP8", target_utilization=0.8)
    replica = REFERENCE.envelope("FP8")
    assert inputs.slots_per_replica == math.floor(replica["slo_batch"])
    assert inputs.peak_to_mean == REFERENCE.diurnal.peak
    assert inputs.gpus_per_replica == REFERENCE.tensor_parallel
    assert inputs.gpu_hour_usd == REFERENCE.usd_per_gpu_hour
    assert inputs.target_utilization == 0.8
    # a request holds its slot for its prefill and an answer of the mean length at the SLO's pace
    assert REFERENCE.tokens_out.mean_tokens * REFERENCE.tpot_slo_s * 0.9 < inputs.service_s
    assert inputs.service_s < REFERENCE.tokens_out.mean_tokens * REFERENCE.tpot_slo_s + 1.0
    with pytest.raises(ValueError, match="target_utilization"):
        REFERENCE.envelope_inputs(target_utilization=1.5)


def test_a_slow_peak_is_sized_on_a_window_holding_enough_requests():
    slow, fast = 1_000, 1_000_000
    assert REFERENCE.sizing_window_s(fast, 300.0) == 300.0
    stretched = REFERENCE.sizing_window_s(slow, 300.0)
    assert stretched == pytest.approx(MIN_PEAK_REQUESTS / REFERENCE.peak_rate_per_s(slow))
    arrivals = REFERENCE.sizing_arrivals(slow, 300.0, seed=1)
    assert len(arrivals) == pytest.approx(MIN_PEAK_REQUESTS, rel=0.05)
    with pytest.raises(ValueError, match="window_s"):
        REFERENCE.sizing_window_s(slow, 0.0)


def test_users_past_a_phases_gate_get_the_next_phases_design():
    one, pool, cells = SMALL.phases
    early = replace(SMALL, phases=(replace(one, max_users=200_000), replace(pool, max_users=400_000), cells))
    gate = gate_users(early, early.phases[0], window_s=WINDOW_S, seed=3)
    assert gate < early.phases[0].max_users  # one replica gives out inside its phase's range
    card = phase_card(early, (gate + early.phases[0].max_users) / 2, window_s=WINDOW_S, seed=3)
    assert card.phase == pool.name and card.attainment >= SMALL.slo_target
    assert phase_card(early, 0.9 * gate, window_s=WINDOW_S, seed=3).phase == one.name
