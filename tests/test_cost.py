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
    price_providers,
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
    # With spot above the reservation the replaced hour is cheaper: TOY's spot hour is $18 x 1.001
    # (0.01 replacements an hour of 360 s), so at spot_share 0.5 a reserved hour replaces a $27.009
    # hour. At 60% off ($14.40) a GPU must be needed 14.4 / 27.009 = 53% of the time: the half-day
    # GPUs no longer are, only the four always needed. At 25% off ($27) it must be needed 99.97%.
    assert best_reserved_gpus(day_profile(), deep, spot_share=0.5) == 4
    assert best_reserved_gpus(day_profile(), TOY, spot_share=0.5) == 4
    deeper = dataclasses.replace(TOY, reserved_discount=0.75)  # $9: needed 9 / 27.009 = 33%
    assert best_reserved_gpus(day_profile(), deeper, spot_share=0.5) == 10
    # All on spot, an hour costs $18.018 < $27 reserved: no GPU is worth reserving.
    assert best_reserved_gpus(day_profile(), TOY, spot_share=1.0) == 0
    costs = {
        k: monthly_bill(day_profile(), TOY, requests_per_month=0, reserved_gpus=k, spot_share=1.0)[
            "cost_usd"
        ].sum()
        for k in range(0, 11)
    }
    assert min(costs, key=costs.get) == 0
    with pytest.raises(ValueError, match="spot_share"):
        best_reserved_gpus(day_profile(), TOY, spot_share=1.5)
    with pytest.raises(TypeError, match="prices must be a Prices"):
        best_reserved_gpus(day_profile(), 36.0)


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
        assert prices.hardware == name and prices.provider == "AWS"
        assert prices.egress_usd_per_gb == h100.egress_usd_per_gb  # shared rows apply to every GPU
        # AWS lists no serverless GPUs; every AWS-priced GPU has a serverless price at Modal (a stated pair)
        paired = load_prices(name, serverless_provider="Modal")
        assert paired.serverless_usd_per_gpu_s > 0 and paired.provider == "AWS + Modal serverless"
    cheaper = dataclasses.replace(h100, on_demand_usd_per_gpu_hour=2.5)
    assert cheaper.reserved_usd_per_gpu_hour == pytest.approx(2.5 * (1 - h100.reserved_discount))


def test_every_price_row_names_its_provider_and_one_provider_loads_only_its_own_rows():
    table = price_table()
    assert {"AWS", "Modal", "RunPod"} <= set(table["provider"])
    runpod = load_prices("H100 SXM", "RunPod")
    assert runpod.provider == "RunPod"
    assert runpod.on_demand_usd_per_gpu_hour == pytest.approx(3.99)
    assert runpod.serverless_usd_per_gpu_s == pytest.approx(0.00116)
    # RunPod's own storage row wins; AWS's egress, discount and per-request fee do not leak in
    assert runpod.storage_usd_per_gb_month == pytest.approx(0.07)
    assert runpod.egress_usd_per_gb == 0.0 and runpod.reserved_discount == 0.0
    assert runpod.serverless_usd_per_request == 0.0
    # the book's assumptions (an empty provider) hold for every provider
    assert runpod.spot_replacement_s == load_prices("H100 SXM").spot_replacement_s == 300.0
    assert price_providers("serverless_usd_per_gpu_s", "H100 SXM") == ["Modal", "RunPod"]
    assert price_providers("on_demand_usd_per_gpu_hour", "H100 SXM") == ["AWS", "RunPod"]


def test_like_for_like_serverless_break_even_on_one_provider():
    # RunPod: a pod at $3.99 an hour against flex workers at $0.00116 a second ($4.176 an hour), no
    # per-request fee: a pod busy more than 3.99 / 4.176 of the time is cheaper.
    runpod = load_prices("H100 SXM", "RunPod")
    even = serverless_break_even(runpod, 1.0)
    assert even["break_even_utilization"] == pytest.approx(3.99 / (0.00116 * 3600))
    # AWS's list price against Modal's serverless (a stated pair): Modal's hour is cheaper than AWS's,
    # so no utilization makes the AWS GPU cheaper
    paired = load_prices("H100 SXM", serverless_provider="Modal")
    assert serverless_break_even(paired, 1.0)["break_even_utilization"] > 1


def test_serverless_bill_of_running_workers_counts_every_second_they_run():
    # day_profile: 10 GPUs running (4 busy) for 12 h, then 4 (1 busy) for 12 h, repeated over the month.
    month_days = HOURS_PER_MONTH / 24
    running = serverless_bill(day_profile(), TOY, requests_per_month=0, billed="running")
    busy = serverless_bill(day_profile(), TOY, requests_per_month=0)
    assert running.at["gpu_serverless", "quantity"] == pytest.approx((10 + 4) * 43_200 * month_days)
    assert busy.at["gpu_serverless", "quantity"] == pytest.approx((4 + 1) * 43_200 * month_days)
    with pytest.raises(ValueError, match="billed must be one of"):
        serverless_bill(day_profile(), TOY, requests_per_month=0, billed="idle")


def test_a_provider_without_serverless_gpus_is_refused_not_priced_free():
    aws = load_prices("H100 SXM")
    assert aws.serverless_usd_per_gpu_s == 0.0
    with pytest.raises(ValueError, match="'AWS' have no serverless GPU price"):
        serverless_break_even(aws, 1.0)
    with pytest.raises(ValueError, match="no serverless GPU price"):
        serverless_bill(1.0, aws, requests_per_month=1.0)


def test_bad_providers_are_refused():
    with pytest.raises(ValueError, match="provider must be one of .*'AWS'.*got 'Azure'"):
        load_prices("H100 SXM", "Azure")
    with pytest.raises(TypeError, match="provider must be"):
        load_prices("H100 SXM", 3)
    with pytest.raises(ValueError, match="no On-Demand price for hardware 'L4' at provider 'RunPod'"):
        load_prices("L4", "RunPod")
    with pytest.raises(ValueError, match="no On-Demand price .* at provider 'Modal'.*'AWS', 'RunPod'"):
        load_prices("H100 SXM", "Modal")
    with pytest.raises(ValueError, match="serverless_provider must be one listing"):
        load_prices("H100 SXM", serverless_provider="AWS")
    with pytest.raises(ValueError, match="item must be one of"):
        price_providers("gpu_usd")
    with pytest.raises(TypeError, match="provider must be a str"):
        dataclasses.replace(TOY, provider=None)


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
