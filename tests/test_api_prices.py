"""Buy instead of build: the hosted API price table's provenance, the API bill by hand, the
buy-or-build break-even by hand and its properties under whole replicas, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaleplay.capacity import HOURS_PER_MONTH
from scaleplay.cost import (
    API_PRICE_COLUMNS,
    BUY_VS_BUILD_COLUMNS,
    ENGINEER_USD_PER_MONTH,
    Prices,
    api_bill,
    buy_vs_build,
    buy_vs_build_break_even,
    load_api_prices,
)
from scaleplay.profiles import model_names

MONTH_S = HOURS_PER_MONTH * 3600.0
# One GPU at $1 an hour: a replica-month is $730.
ONE_DOLLAR = Prices("toy", on_demand_usd_per_gpu_hour=1.0, reserved_discount=0.5)
# $1 per million output tokens, prompts free: a request of 1000 generated tokens costs $0.001.
PER_OUTPUT = {"input_usd_per_million_tokens": 0.0, "output_usd_per_million_tokens": 1.0}
# A throughput per GPU at which one replica carries exactly 1,000,000 requests of 1000 tokens a month.
MILLION_A_MONTH = 1e9 / MONTH_S


def hand_case(**overrides):
    """a = $0.001 a request, c = $730 a replica-month, k = 1e6 requests a replica-month, E = $2000."""
    args = dict(
        tokens_in=0,
        tokens_out=1000,
        engineers=1,
        engineer_usd_per_month=2000.0,
        prices=ONE_DOLLAR,
        tokens_per_s_per_gpu=MILLION_A_MONTH,
        utilization=1.0,
    )
    return args | overrides


# -- the table ---------------------------------------------------------------------------------------


def test_every_api_price_has_a_source_a_date_and_a_comparable_model():
    table = load_api_prices()
    assert tuple(table.columns) == API_PRICE_COLUMNS
    assert (table["source"].str.len() > 0).all() and (table["source_date"].str.len() > 0).all()
    assert (table["input_usd_per_million_tokens"] > 0).all()
    assert (table["output_usd_per_million_tokens"] > 0).all()
    assert set(table["comparable_to"]) <= set(model_names())
    assert {"Llama-3.1-8B", "Llama-3.1-70B"} <= set(table["comparable_to"])
    assert not table.duplicated(["provider", "model"]).any()
    turbo = table[table["model"] == "meta-llama/Meta-Llama-3.1-70B-Instruct-Turbo"].iloc[0]
    assert (turbo["input_usd_per_million_tokens"], turbo["output_usd_per_million_tokens"]) == (0.13, 0.40)


def test_the_default_engineer_month_is_the_median_wage_grossed_up_by_benefits():
    assert ENGINEER_USD_PER_MONTH == pytest.approx(132_270 / 0.683 / 12)


# -- the API bill ------------------------------------------------------------------------------------


def test_api_bill_equals_the_hand_computation():
    # A million requests of 1000 prompt and 200 generated tokens on Groq's 8B ($0.05 and $0.08 per
    # million): 1e9 x 0.05e-6 + 2e8 x 0.08e-6 = $50 + $16.
    assert api_bill(1e6, 1000, 200, ("Groq", "llama-3.1-8b-instant")) == pytest.approx(66.0)
    row = load_api_prices().iloc[0]
    expected = 2e6 * (500 * row["input_usd_per_million_tokens"] + 100 * row["output_usd_per_million_tokens"])
    assert api_bill(2e6, 500, 100, row) == pytest.approx(expected / 1e6)
    assert api_bill(0, 500, 100, row) == 0.0
    assert api_bill(1e6, 123, 1000, PER_OUTPUT) == pytest.approx(1000.0)


# -- the break-even ----------------------------------------------------------------------------------


def test_break_even_equals_the_hand_computation():
    # a k = $1000 a full replica-month against c = $730: each full replica saves $270, so the $2000 of
    # engineering and the first replica are paid off at n* = ceil(3000 / 270) - 1 = 11 replicas; on
    # that step self-hosting costs 11 x 730 + 2000 = $10,030, which the API reaches at 10.03 M requests.
    even = buy_vs_build_break_even(PER_OUTPUT, **hand_case())
    assert even["api_usd_per_request"] == pytest.approx(0.001)
    assert even["replica_usd_per_month"] == pytest.approx(730.0)
    assert even["requests_per_month_per_replica"] == pytest.approx(1e6)
    assert even["engineering_usd_per_month"] == pytest.approx(2000.0)
    assert even["break_even_requests_per_month"] == pytest.approx(10.03e6)
    assert even["break_even_tokens_per_month"] == pytest.approx(10.03e9)
    assert even["break_even_gpus"] == 11
    assert even["self_hosted_usd_per_million_tokens_at_scale"] == pytest.approx(0.73)

    grid = buy_vs_build(
        PER_OUTPUT, requests_per_month=[0, 5e6, 9.5e6, 10.02e6, 10.5e6, 11.5e6, 1e9], **hand_case()
    )
    assert list(grid.columns) == list(BUY_VS_BUILD_COLUMNS)
    assert grid["gpus"].tolist() == [1, 5, 10, 11, 11, 12, 1000]
    assert grid["self_hosted_usd"].tolist() == pytest.approx([2730, 5650, 9300, 10030, 10030, 10760, 732_000])
    assert grid["api_usd"].tolist() == pytest.approx([0, 5000, 9500, 10020, 10500, 11500, 1e6])
    # Below the break-even the API is cheaper (5 M, and 10.02 M on the last step it wins) -- except on
    # stretches just after a replica fills (9.5 M: ten full replicas beat the API), which do not last;
    # above it self-hosting is cheaper.
    cheaper_api = (grid["api_usd"] < grid["self_hosted_usd"]).tolist()
    assert cheaper_api == [True, True, False, True, False, False, False]
    assert grid["api_over_self_hosted"].iloc[-1] == pytest.approx(1e6 / 732_000)


def test_a_given_self_hosted_cost_breaks_even_where_the_api_bill_reaches_it():
    even = buy_vs_build_break_even(
        PER_OUTPUT, tokens_in=0, tokens_out=1000, engineers=2, engineer_usd_per_month=500.0,
        self_hosted_usd_per_month=5000.0,
    )  # fmt: skip
    assert even["break_even_requests_per_month"] == pytest.approx(6e6)
    assert math.isnan(even["break_even_gpus"])
    grid = buy_vs_build(
        PER_OUTPUT, requests_per_month=[5e6, 7e6], tokens_in=0, tokens_out=1000, engineers=2,
        engineer_usd_per_month=500.0, self_hosted_usd_per_month=5000.0,
    )  # fmt: skip
    assert grid["self_hosted_usd"].tolist() == [6000.0, 6000.0]
    assert grid["api_over_self_hosted"].tolist() == pytest.approx([5 / 6, 7 / 6])


def test_self_hosting_never_wins_when_a_full_replica_costs_more_than_its_traffic_on_the_api():
    # Half the throughput: a full replica's 500,000 requests cost $500 on the API, the replica $730.
    args = hand_case(tokens_per_s_per_gpu=MILLION_A_MONTH / 2, engineers=0)
    assert math.isinf(buy_vs_build_break_even(PER_OUTPUT, **args)["break_even_requests_per_month"])
    grid = buy_vs_build(PER_OUTPUT, requests_per_month=np.geomspace(1, 1e12, 50), **args)
    assert (grid["api_over_self_hosted"] < 1).all()
    # Reserved at half price ($365 a replica-month, $500 of API traffic when full) each full replica
    # saves $135: n* = ceil(500 / 135) - 1 = 3, and the API still wins up to 3 x 365 / 0.001.
    reserved = buy_vs_build_break_even(PER_OUTPUT, **args, purchase="reserved")
    assert reserved["break_even_requests_per_month"] == pytest.approx(1_095_000.0)


def test_throughput_counted_over_all_tokens_carries_fewer_requests_per_replica():
    # 3000 prompt + 1000 generated tokens: a throughput of all tokens carries a quarter of the requests.
    output = buy_vs_build_break_even(PER_OUTPUT, **hand_case(tokens_in=3000))
    total = buy_vs_build_break_even(PER_OUTPUT, **hand_case(tokens_in=3000), throughput_tokens="total")
    assert total["requests_per_month_per_replica"] == pytest.approx(
        output["requests_per_month_per_replica"] / 4
    )
    gpus = buy_vs_build(PER_OUTPUT, requests_per_month=2.5e6, **hand_case(gpus_per_replica=4))["gpus"]
    assert gpus.tolist() == [4]  # a replica of 4 GPUs carries 4 M requests


# -- properties --------------------------------------------------------------------------------------

terms = st.fixed_dictionaries(
    {
        "price": st.fixed_dictionaries(
            {
                "input_usd_per_million_tokens": st.floats(0.0, 5.0),
                "output_usd_per_million_tokens": st.floats(0.01, 20.0),
            }
        ),
        "tokens_in": st.floats(0.0, 8000.0),
        "tokens_out": st.floats(1.0, 2000.0),
        "engineers": st.floats(0.0, 5.0),
        "usd_per_gpu_hour": st.floats(0.3, 12.0),
        "tokens_per_s_per_gpu": st.floats(10.0, 20_000.0),
        "utilization": st.floats(0.05, 1.0),
        "gpus_per_replica": st.integers(1, 8),
    }
)


def _args(t: dict) -> dict:
    return {
        "tokens_in": t["tokens_in"],
        "tokens_out": t["tokens_out"],
        "engineers": t["engineers"],
        "prices": Prices("toy", on_demand_usd_per_gpu_hour=t["usd_per_gpu_hour"]),
        "tokens_per_s_per_gpu": t["tokens_per_s_per_gpu"],
        "utilization": t["utilization"],
        "gpus_per_replica": t["gpus_per_replica"],
    }


@settings(max_examples=200, deadline=None)
@given(terms, st.lists(st.floats(0.0, 1e12), min_size=2, max_size=30))
def test_more_traffic_never_buys_fewer_gpus_and_the_regime_never_flips_back(t, traffic):
    """What holds with whole replicas: GPUs and self-hosting's cost never fall as traffic grows; above
    the break-even self-hosting never costs more than the API; below it, on the break-even's own step,
    the API is cheaper. The ratio api/self-hosted is *not* monotone (it drops each time a replica is
    added), but it rises along each step and from the middle of one step to the middle of the next,
    and never falls below the envelope a R / (c (R / k + 1) + E)."""
    args = _args(t)
    grid = buy_vs_build(t["price"], requests_per_month=sorted(traffic), **args)
    assert (np.diff(grid["gpus"]) >= 0).all()
    assert (np.diff(grid["self_hosted_usd"]) >= 0).all()

    even = buy_vs_build_break_even(t["price"], **args)
    a, c = even["api_usd_per_request"], even["replica_usd_per_month"]
    k, e = even["requests_per_month_per_replica"], even["engineering_usd_per_month"]
    r = grid["requests_per_month"].to_numpy()
    envelope = a * r / (c * (r / k + 1) + e)
    assert (grid["api_over_self_hosted"].to_numpy() >= envelope * (1 - 1e-9)).all()

    steps = np.arange(1, 40)
    middles = buy_vs_build(t["price"], requests_per_month=(steps - 0.5) * k, **args)
    assert (np.diff(middles["api_over_self_hosted"]) >= -1e-12 * middles["api_over_self_hosted"][1:]).all()

    r_even = even["break_even_requests_per_month"]
    if math.isinf(r_even):
        assert a * k <= c * (1 + 1e-12)
        return
    above = grid[grid["requests_per_month"] > r_even * (1 + 1e-9)]
    assert (above["self_hosted_usd"] <= above["api_usd"] * (1 + 1e-9)).all()
    last_step = even["break_even_gpus"] / t["gpus_per_replica"]
    # Where the API has its best chance on each later step, just after a replica is added, it loses.
    later = buy_vs_build(t["price"], requests_per_month=(last_step + np.arange(5)) * k * (1 + 1e-9), **args)
    assert (later["self_hosted_usd"] <= later["api_usd"] * (1 + 1e-9)).all()
    start = (last_step - 1) * k
    if r_even - start > 1e-6 * r_even:
        below = buy_vs_build(t["price"], requests_per_month=(start + r_even) / 2, **args).iloc[0]
        assert below["api_usd"] < below["self_hosted_usd"]


# -- bad input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        ({"utilization": 0.0}, ValueError, "utilization"),
        ({"utilization": 1.5}, ValueError, "utilization"),
        ({"tokens_per_s_per_gpu": 0.0}, ValueError, "tokens_per_s_per_gpu"),
        ({"tokens_per_s_per_gpu": math.nan}, ValueError, "tokens_per_s_per_gpu"),
        ({"tokens_out": 0}, ValueError, "tokens_out"),
        ({"tokens_in": -1}, ValueError, "tokens_in"),
        ({"engineers": -1}, ValueError, "engineers"),
        ({"engineer_usd_per_month": -5.0}, ValueError, "engineer_usd_per_month"),
        ({"gpus_per_replica": 0}, ValueError, "gpus_per_replica"),
        ({"gpus_per_replica": 1.5}, TypeError, "gpus_per_replica"),
        ({"prices": {"on_demand": 1.0}}, TypeError, "prices"),
        ({"prices": None}, ValueError, "needs prices"),
        ({"self_hosted_usd_per_month": 100.0}, ValueError, "not both"),
        ({"throughput_tokens": "input"}, ValueError, "throughput_tokens"),
        ({"purchase": "lease"}, ValueError, "purchase"),
    ],
)
def test_bad_buy_vs_build_inputs_are_refused(overrides, error, match):
    with pytest.raises(error, match=match):
        buy_vs_build_break_even(PER_OUTPUT, **hand_case(**overrides))
    with pytest.raises(error, match=match):
        buy_vs_build(PER_OUTPUT, requests_per_month=1e6, **hand_case(**overrides))


def test_bad_prices_and_traffic_are_refused():
    with pytest.raises(ValueError, match="not a \\(provider, model\\)"):
        api_bill(1, 1, 1, ("Groq", "gpt-5"))
    with pytest.raises(TypeError, match="price must be"):
        api_bill(1, 1, 1, "Groq")
    with pytest.raises(ValueError, match="lacks 'output_usd_per_million_tokens'"):
        api_bill(1, 1, 1, {"input_usd_per_million_tokens": 1.0})
    with pytest.raises(ValueError, match="input_usd_per_million_tokens"):
        api_bill(1, 1, 1, PER_OUTPUT | {"input_usd_per_million_tokens": -1.0})
    with pytest.raises(ValueError, match="requests_per_month"):
        api_bill(-1, 1, 1, PER_OUTPUT)
    with pytest.raises(ValueError, match="overflow"):
        api_bill(1e300, 1, 1e300, PER_OUTPUT)
    with pytest.raises(ValueError, match="requests_per_month"):
        buy_vs_build(PER_OUTPUT, requests_per_month=[1.0, math.nan], **hand_case())
    with pytest.raises(ValueError, match="requests_per_month"):
        buy_vs_build(PER_OUTPUT, requests_per_month=-1.0, **hand_case())
    with pytest.raises(TypeError, match="requests_per_month"):
        buy_vs_build(PER_OUTPUT, requests_per_month="lots", **hand_case())
    with pytest.raises(TypeError, match="engineers"):
        buy_vs_build_break_even(PER_OUTPUT, **hand_case(engineers=None))
