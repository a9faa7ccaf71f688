"""The cost model against hand computations: a small run, a monthly bill, the break-evens, the price
table's provenance, and bad input."""

from __future__ import annotations

import dataclasses
import math
import types

import numpy as np
import pandas as pd
import pytest

from conftest import make_arrivals
from scaleplay.capacity import HOURS_PER_MONTH
from scaleplay.controls import CascadeConfig
from scaleplay.cost import (
    BILL_COLUMNS,
    FLEET_PROFILE_COLUMNS,
    Prices,
    best_reserved_gpus,
    fleet_profile,
    gpu_profile,
    load_prices,
    monthly_bill,
    price_table,
    priced_hardware,
    reserved_break_even,
    run_cost,
    serverless_bill,
    serverless_break_even,
    unit_costs,
)
from scaleplay.profiles import AffineServiceTime, hardware_names
from scaleplay.simulator import PlatformConfig, PoolConfig, simulate

# $36 per GPU-hour is a cent per GPU-second: hand sums stay in round numbers.
TOY = Prices(
    "toy",
    on_demand_usd_per_gpu_hour=36.0,
    reserved_discount=0.25,
    spot_discount=0.5,
    spot_interruptions_per_hour=0.01,
    spot_replacement_s=360.0,
    serverless_usd_per_gpu_s=0.02,
    serverless_usd_per_request=0.0001,
    egress_usd_per_gb=0.09,
    storage_usd_per_gb_month=0.023,
)


def day_profile() -> pd.DataFrame:
    """12 hours at 10 GPUs (4 of them busy), then 12 hours at 4 GPUs (1 busy)."""
    return pd.DataFrame(
        {
            "t_s": [0.0, 43_200.0],
            "duration_s": [43_200.0, 43_200.0],
            "gpus": [10.0, 4.0],
            "busy_gpus": [4.0, 1.0],
        }
    )


# -- a simulated run ---------------------------------------------------------------------------------


def test_cost_of_a_small_run_equals_the_hand_computation():
    # Ten requests one second apart, each 1 s on the model, two replicas of two GPUs each. The run
    # lasts until the last answer at t = 10 s: 2 replicas x 2 GPUs x 10 s = 40 GPU-seconds at one
    # cent = $0.40; ten 1 s batches keep 20 GPU-seconds busy.
    arrivals = make_arrivals(np.arange(10.0))
    config = PlatformConfig(PoolConfig(2, AffineServiceTime(fixed_s=1.0)))
    result = simulate(arrivals, config, seed=0)
    assert result.horizon_s == pytest.approx(10.0)

    cost = run_cost(result, TOY, gpus_per_replica=2)
    assert cost["duration_s"] == pytest.approx(10.0)
    assert cost["gpu_hours"] == pytest.approx(40.0 / 3600.0)
    assert cost["busy_gpu_hours"] == pytest.approx(20.0 / 3600.0)
    assert cost["cost_usd"] == pytest.approx(0.40)
    assert cost["usd_per_hour"] == pytest.approx(144.0)  # 4 GPUs x $36
    assert cost["completed"] == 10
    assert cost["usd_per_1k_requests"] == pytest.approx(40.0)
    assert cost["busy_gpu_s_per_request"] == pytest.approx(2.0)
    # Reserved hours at 25% off, spot at half price times (1 + 0.01 x 360 / 3600) = 1.001.
    assert run_cost(result, TOY, gpus_per_replica=2, purchase="reserved")["cost_usd"] == pytest.approx(0.30)
    assert run_cost(result, TOY, gpus_per_replica=2, purchase="spot")["cost_usd"] == pytest.approx(0.2002)

    profile = fleet_profile(result.timeline, gpus_per_replica=2, horizon_s=result.horizon_s)
    assert list(profile.columns) == list(FLEET_PROFILE_COLUMNS)
    assert float(np.dot(profile["gpus"], profile["duration_s"])) == pytest.approx(40.0)


def test_gpu_profile_adds_the_pools_of_a_cascade_with_their_own_gpus():
    # Ten requests one second apart; a small pool (1 replica of 1 GPU, 0.5 s per request) escalates
    # the hard half (difficulty 0.9) to a large pool (2 replicas of 2 GPUs, 1 s per request). Held:
    # (1 x 1 + 2 x 2) GPUs for the whole run; busy: 10 x 0.5 s x 1 GPU + 5 x 1 s x 2 GPUs = 15 GPU-s.
    arrivals = make_arrivals(np.arange(10.0))
    arrivals["difficulty"] = np.where(np.arange(10) % 2 == 0, 0.1, 0.9)
    small = PoolConfig(1, AffineServiceTime(fixed_s=0.5), name="small")
    large = PoolConfig(2, AffineServiceTime(fixed_s=1.0), name="large")
    config = PlatformConfig(large, cascade=CascadeConfig(small))
    result = simulate(arrivals, config, seed=0)
    profile = gpu_profile(result, {"small": 1, "large": 2}, step_s=3.0)
    assert list(profile.columns) == list(FLEET_PROFILE_COLUMNS)
    assert profile["duration_s"].sum() == pytest.approx(result.horizon_s)
    assert np.allclose(profile["gpus"], 5.0)
    assert float(np.dot(profile["busy_gpus"], profile["duration_s"])) == pytest.approx(15.0)
    assert (profile["busy_gpus"] <= profile["gpus"] + 1e-12).all()
    # One pool, one GPU per replica: the same GPU-seconds as the Timeline's fleet_profile.
    single = simulate(arrivals, PlatformConfig(PoolConfig(2, AffineServiceTime(fixed_s=1.0))), seed=0)
    by_timeline = fleet_profile(single.timeline, horizon_s=single.horizon_s)
    by_lives = gpu_profile(single, step_s=0.7)
    for column in ("gpus", "busy_gpus"):
        assert float(np.dot(by_lives[column], by_lives["duration_s"])) == pytest.approx(
            float(np.dot(by_timeline[column], by_timeline["duration_s"]))
        )
    with pytest.raises(ValueError, match="gpus_per_replica lacks pools"):
        gpu_profile(result, {"small": 1})
    with pytest.raises(ValueError, match="step_s"):
        gpu_profile(result, step_s=0.0)
    with pytest.raises(TypeError, match="SimulationResult"):
        gpu_profile(pd.DataFrame())


# -- bills -------------------------------------------------------------------------------------------


def test_monthly_bill_of_a_day_profile_equals_the_hand_computation():
    # Per day the fleet holds 6 GPUs above the 4 reserved for 12 h: 72 GPU-hours, 2190 a month
    # (730 / 24 days). Half on demand at $36, half on spot at $18 with 0.1% of paid replacement time.
    bill = monthly_bill(
        day_profile(),
        TOY,
        requests_per_month=1e6,
        reserved_gpus=4,
        spot_share=0.5,
        egress_bytes_per_request=5000,
        storage_gb=100,
    )
    assert list(bill.columns) == list(BILL_COLUMNS)
    assert list(bill.index) == ["gpu_reserved", "gpu_on_demand", "gpu_spot", "egress", "storage"]
    expected = {
        "gpu_reserved": (4 * 730.0, 27.0),
        "gpu_on_demand": (1095.0, 36.0),
        "gpu_spot": (1095.0 * 1.001, 18.0),
        "egress": (5.0, 0.09),
        "storage": (100.0, 0.023),
    }
    for item, (quantity, unit_usd) in expected.items():
        assert bill.at[item, "quantity"] == pytest.approx(quantity)
        assert bill.at[item, "unit_usd"] == pytest.approx(unit_usd)
        assert bill.at[item, "cost_usd"] == pytest.approx(quantity * unit_usd)
    total = 2920 * 27.0 + 1095 * 36.0 + 1096.095 * 18.0 + 0.45 + 2.3
    summary = unit_costs(bill, requests_per_month=1e6, monthly_active_users=20_000)
    assert summary["monthly_usd"] == pytest.approx(total)
    assert summary["usd_per_1k_requests"] == pytest.approx(total / 1000.0)
    assert summary["usd_per_user_month"] == pytest.approx(total / 20_000)
    assert math.isnan(unit_costs(bill, requests_per_month=1e6)["usd_per_user_month"])


def test_a_constant_fleet_is_held_all_month():
    bill = monthly_bill(3, TOY, requests_per_month=0)
    assert bill.at["gpu_on_demand", "quantity"] == pytest.approx(3 * HOURS_PER_MONTH)
    assert bill["cost_usd"].sum() == pytest.approx(3 * 730 * 36.0)
    # Reserving more than the fleet needs still pays for every reserved hour.
    over = monthly_bill(3, TOY, requests_per_month=0, reserved_gpus=5)
    assert over.at["gpu_on_demand", "quantity"] == 0
    assert over["cost_usd"].sum() == pytest.approx(5 * 730 * 27.0)


def test_serverless_bill_pays_busy_seconds_and_requests():
    # Busy GPUs: 4 for 12 h and 1 for 12 h, i.e. 60 GPU-hours a day, stretched to 730 / 24 days.
    busy_s = (4 * 43_200 + 43_200) * 730 / 24
    bill = serverless_bill(day_profile(), TOY, requests_per_month=2e6, egress_bytes_per_request=1000)
    assert list(bill.index) == ["gpu_serverless", "requests", "egress", "storage"]
    assert bill.at["gpu_serverless", "quantity"] == pytest.approx(busy_s)
    assert bill.at["gpu_serverless", "cost_usd"] == pytest.approx(busy_s * 0.02)
    assert bill.at["requests", "cost_usd"] == pytest.approx(200.0)
    assert bill.at["egress", "cost_usd"] == pytest.approx(2.0 * 0.09)
    assert serverless_bill(busy_s, TOY, requests_per_month=2e6)["cost_usd"].sum() == pytest.approx(
        busy_s * 0.02 + 200.0
    )


# -- break-even --------------------------------------------------------------------------------------


def test_reserved_break_even_is_one_minus_the_discount_and_picks_the_cheapest_baseline():
    assert reserved_break_even(TOY) == pytest.approx(0.75)
    # Four GPUs are needed all day (share 1 > 0.75); the 5th to 10th only half the day (0.5 < 0.75).
    assert best_reserved_gpus(day_profile(), TOY) == 4
    costs = {
        k: monthly_bill(day_profile(), TOY, requests_per_month=0, reserved_gpus=k)["cost_usd"].sum()
        for k in range(0, 11)
    }
    assert min(costs, key=costs.get) == 4
    # At 60% off, half a day of use is worth a reservation: reserve all ten.
    deep = dataclasses.replace(TOY, reserved_discount=0.6)
    assert best_reserved_gpus(day_profile(), deep) == 10


def test_serverless_break_even_equals_the_hand_computation_and_the_two_bills_tie_there():
    # Provisioned: $36/h = $0.01/s. Serverless: 0.5 s x $0.02 + $0.0001 = $0.0101 per request.
    even = serverless_break_even(TOY, 0.5)
    assert even["serverless_usd_per_request"] == pytest.approx(0.0101)
    assert even["break_even_requests_per_s_per_gpu"] == pytest.approx(0.01 / 0.0101)
    assert even["break_even_utilization"] == pytest.approx(0.5 * 0.01 / 0.0101)
    month_s = HOURS_PER_MONTH * 3600
    requests = even["break_even_requests_per_s_per_gpu"] * month_s
    provisioned = monthly_bill(1, TOY, requests_per_month=requests)["cost_usd"].sum()
    serverless = serverless_bill(requests * 0.5, TOY, requests_per_month=requests)["cost_usd"].sum()
    assert provisioned == pytest.approx(serverless)
    # Against a reserved GPU serverless must be busier to lose: the break-even traffic is lower.
    reserved = serverless_break_even(TOY, 0.5, purchase="reserved")
    assert reserved["break_even_requests_per_s_per_gpu"] == pytest.approx(0.75 * 0.01 / 0.0101)
    free = dataclasses.replace(TOY, serverless_usd_per_gpu_s=0.0, serverless_usd_per_request=0.0)
    assert math.isinf(serverless_break_even(free, 0.5)["break_even_utilization"])


# -- the price table ---------------------------------------------------------------------------------


def test_every_price_has_a_source_and_a_date_and_loads_by_name():
    table = price_table()
    assert (table["source"].str.len() > 0).all() and (table["source_date"].str.len() > 0).all()
    assert set(priced_hardware()) <= set(hardware_names())
    h100 = load_prices("H100 SXM")
    assert h100.on_demand_usd_per_gpu_hour == pytest.approx(55.04 / 8, abs=1e-3)  # p5.48xlarge / 8
    for name in priced_hardware():
        prices = load_prices(name)
        assert prices.hardware == name and prices.serverless_usd_per_gpu_s > 0
        assert prices.egress_usd_per_gb == h100.egress_usd_per_gb  # shared rows apply to every GPU
    cheaper = dataclasses.replace(h100, on_demand_usd_per_gpu_hour=2.5)
    assert cheaper.reserved_usd_per_gpu_hour == pytest.approx(2.5 * (1 - h100.reserved_discount))


# -- bad input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"on_demand_usd_per_gpu_hour": 0.0}, ValueError, "on_demand_usd_per_gpu_hour"),
        ({"on_demand_usd_per_gpu_hour": "3"}, TypeError, "on_demand_usd_per_gpu_hour"),
        ({"reserved_discount": 1.0}, ValueError, "reserved_discount"),
        ({"spot_discount": -0.1}, ValueError, "spot_discount"),
        ({"spot_replacement_s": math.nan}, ValueError, "spot_replacement_s"),
        ({"egress_usd_per_gb": -1}, ValueError, "egress_usd_per_gb"),
        ({"hardware": ""}, ValueError, "hardware"),
    ],
)
def test_bad_prices_are_refused(kwargs, error, match):
    with pytest.raises(error, match=match):
        dataclasses.replace(TOY, **kwargs)


def test_bad_bill_and_lookup_inputs_are_refused():
    with pytest.raises(ValueError, match="no On-Demand price for hardware 'TPU'"):
        load_prices("TPU")
    with pytest.raises(ValueError, match="requests_per_month"):
        monthly_bill(1, TOY, requests_per_month=-1)
    with pytest.raises(ValueError, match="spot_share"):
        monthly_bill(1, TOY, requests_per_month=1, spot_share=1.5)
    with pytest.raises(TypeError, match="reserved_gpus"):
        monthly_bill(1, TOY, requests_per_month=1, reserved_gpus=1.5)
    with pytest.raises(ValueError, match="fleet"):
        monthly_bill(-2, TOY, requests_per_month=1)
    with pytest.raises(ValueError, match="lacks the columns"):
        monthly_bill(pd.DataFrame({"gpus": [1.0]}), TOY, requests_per_month=1)
    with pytest.raises(ValueError, match="gpus"):
        monthly_bill(pd.DataFrame({"duration_s": [1.0], "gpus": [-1.0]}), TOY, requests_per_month=1)
    with pytest.raises(TypeError, match="prices"):
        monthly_bill(1, {"on_demand": 1}, requests_per_month=1)
    with pytest.raises(ValueError, match="purchase"):
        TOY.usd_per_gpu_hour("lease")
    with pytest.raises(TypeError, match="SimulationResult"):
        run_cost(pd.DataFrame(), TOY)
    with pytest.raises(ValueError, match="busy_gpu_s_per_request"):
        serverless_break_even(TOY, 0.0)
    with pytest.raises(ValueError, match="requests_per_month"):
        unit_costs(monthly_bill(1, TOY, requests_per_month=0), requests_per_month=0)


# -- bad and extreme input ---------------------------------------------------------------------------


def _fake_run(horizon_s: float = 100.0):
    return types.SimpleNamespace(
        provisioning=pd.DataFrame({"pool": ["a", "a"], "requested_s": [0.0, 10.0], "end_s": [np.nan, 50.0]}),
        batches=pd.DataFrame({"pool": ["a"], "replica": [0], "start_s": [1.0], "end_s": [5.0]}),
        horizon_s=horizon_s,
    )


def test_gpu_profile_refuses_a_grid_too_fine_before_building_it():
    with pytest.raises(ValueError, match="step_s must be >="):
        gpu_profile(_fake_run(), step_s=1e-10)  # 10**12 intervals: 16 GiB per column
    profile = gpu_profile(_fake_run(), step_s=1e-5)  # 10**7 intervals: the most allowed
    assert len(profile) == 10_000_000
    assert float(np.dot(profile["gpus"], profile["duration_s"])) == pytest.approx(140.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fleet": 1e308}, "fleet"),
        ({"requests_per_month": 1e308, "egress_bytes_per_request": 1e300}, "requests_per_month"),
        ({"reserved_gpus": 10**30}, "reserved_gpus"),
    ],
)
def test_a_bill_that_overflows_is_refused(kwargs, match):
    args = {"fleet": 4.0, "requests_per_month": 1e6} | kwargs
    with pytest.raises(ValueError, match=match):
        monthly_bill(args.pop("fleet"), TOY, **args)


def test_unit_costs_and_prices_that_overflow_are_refused():
    bill = monthly_bill(4.0, TOY, requests_per_month=1e6)
    with pytest.raises(ValueError, match="requests_per_month"):
        unit_costs(bill, requests_per_month=5e-324)
    with pytest.raises(ValueError, match="spot_replacement_s"):
        dataclasses.replace(TOY, spot_interruptions_per_hour=1e308, spot_replacement_s=1e308)
    with pytest.raises(ValueError, match="busy"):
        serverless_bill(1e308, dataclasses.replace(TOY, serverless_usd_per_gpu_s=2.0), requests_per_month=1.0)
    with pytest.raises(TypeError, match="hardware"):
        load_prices(["H100 SXM"])


def _best_reserved_by_scan(gpus, durations, needed):
    best = 0
    for k in range(1, math.ceil(max(gpus)) + 1):
        used = float(np.dot(np.clip(np.asarray(gpus) - (k - 1), 0.0, 1.0), durations)) / sum(durations)
        if used > needed:
            best = k
    return best


def test_best_reserved_gpus_of_any_fleet_size():
    rng = np.random.default_rng(5)
    for _ in range(20):
        gpus = rng.uniform(0, 30, size=7).round(rng.integers(0, 2))
        durations = rng.uniform(1, 10, size=7)
        fleet = pd.DataFrame({"t_s": np.cumsum(durations), "duration_s": durations, "gpus": gpus})
        assert best_reserved_gpus(fleet, TOY) == _best_reserved_by_scan(gpus, durations, 0.75)
    # A fleet of 10**12 GPUs held all the time: every one of them is worth reserving (the old scan
    # over k never ended).
    huge = pd.DataFrame({"t_s": [0.0], "duration_s": [3600.0], "gpus": [1e12]})
    assert best_reserved_gpus(huge, TOY) == 10**12
