"""Workload: rates, thinning, renewal arrivals, classes, determinism and input checks."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pandas as pd
import pytest

from scaleplay import workload as workload_module
from scaleplay.schema import ARRIVAL_COLUMNS
from scaleplay.trace import interarrival_cv
from scaleplay.workload import (
    FLAT,
    SECONDS_PER_DAY,
    SECONDS_PER_HOUR,
    Burst,
    Difficulty,
    DiurnalCosine,
    DiurnalHourly,
    TokenDistribution,
    TrafficClass,
    Workload,
    generate_arrivals,
)

Z95 = 1.96
HOURLY = (1, 1, 1, 1, 1, 2, 3, 5, 8, 9, 9, 8, 7, 8, 9, 9, 8, 7, 6, 5, 4, 3, 2, 1)


def test_doctests() -> None:
    assert doctest.testmod(workload_module).failed == 0


# ---- rates ---------------------------------------------------------------------------------------


def test_mean_rate_from_users() -> None:
    w = Workload(daily_active_users=2_000_000, requests_per_user_per_day=10)
    assert w.requests_per_day == 20_000_000
    assert w.mean_rate_per_s == pytest.approx(20_000_000 / 86_400)
    s = w.summary()
    assert s["peak_rate_per_s"] == pytest.approx(1.5 * w.mean_rate_per_s)
    assert s["peak_to_mean"] == pytest.approx(1.5)
    assert w.rate_per_s(14 * SECONDS_PER_HOUR) == pytest.approx(1.5 * w.mean_rate_per_s)
    assert w.rate_per_s(2 * SECONDS_PER_HOUR) == pytest.approx(0.5 * w.mean_rate_per_s)


@pytest.mark.parametrize("diurnal", [DiurnalCosine(1.8, 9.5), DiurnalHourly(HOURLY), FLAT])
def test_diurnal_mean_one_and_exact_integral(diurnal) -> None:
    h = np.linspace(0, 24, 24 * 3600, endpoint=False)
    f = diurnal.factor(h)
    assert f.mean() == pytest.approx(1.0, abs=1e-9)
    assert f.min() >= 0
    assert f.max() <= diurnal.peak + 1e-12
    assert diurnal.cumulative(np.array(24.0)) == pytest.approx(24.0)
    assert diurnal.cumulative(np.array(48.0)) == pytest.approx(48.0)
    # cumulative is the integral of factor on arbitrary intervals
    for lo, hi in [(0.0, 7.3), (3.2, 17.9), (22.5, 30.25)]:
        x = np.linspace(lo, hi, 200_001)
        y = diurnal.factor(x)
        numeric = float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)))
        exact = float(diurnal.cumulative(np.array(hi)) - diurnal.cumulative(np.array(lo)))
        assert exact == pytest.approx(numeric, rel=1e-8)


def test_hourly_curve_passes_through_levels_and_never_overshoots() -> None:
    d = DiurnalHourly(HOURLY)
    levels = np.asarray(HOURLY) * 24 / sum(HOURLY)
    assert np.allclose(d.factor(np.arange(24) + 0.5), levels)
    assert np.allclose(d.values, levels)
    assert d.peak == pytest.approx(levels.max())
    # periodic: same at h and h + 24
    h = np.linspace(0, 24, 1000)
    assert np.allclose(d.factor(h), d.factor(h + 24))
    # zeros stay zero between zero knots (no overshoot below 0)
    night = DiurnalHourly((0,) * 6 + (1,) * 18)
    assert np.all(night.factor(np.linspace(0.5, 5.5, 100)) == 0)


def test_weekly_factor_normalised() -> None:
    w = Workload.from_rate(10.0, weekly=(2, 1, 1, 1, 1, 1, 0))
    assert sum(w.weekly) == pytest.approx(7.0)
    assert w.rate_per_s(0.5 * SECONDS_PER_DAY) / w.rate_per_s(1.5 * SECONDS_PER_DAY) == pytest.approx(2.0)
    assert w.rate_per_s(6.5 * SECONDS_PER_DAY) == 0
    assert w.rate_per_s(7.5 * SECONDS_PER_DAY) == pytest.approx(w.rate_per_s(0.5 * SECONDS_PER_DAY))
    assert w.peak_rate_per_s == pytest.approx(10.0 * 2 * 7 / 7)


def test_burst_multiplies_rate_and_peak() -> None:
    burst = Burst(start_s=3 * SECONDS_PER_HOUR, duration_s=600, multiplier=4)
    w = Workload.from_rate(10.0, bursts=(burst,))
    inside = w.rate_per_s(np.array([burst.start_s, burst.start_s + 599.0]))
    assert np.allclose(inside, 40.0)
    assert w.rate_per_s(burst.end_s) == pytest.approx(10.0)
    assert w.rate_per_s(burst.start_s - 1e-6) == pytest.approx(10.0)
    assert w.peak_rate_per_s == pytest.approx(40.0)
    assert w.expected_arrivals(0, 4 * SECONDS_PER_HOUR) == pytest.approx(10 * 4 * 3600 + 30 * 600)


def test_max_rate_bounds_the_rate() -> None:
    w = Workload(1e5, 3, diurnal=DiurnalHourly(HOURLY), weekly=(1, 2, 1, 1, 1, 1, 1))
    t = np.linspace(0, 2 * SECONDS_PER_DAY, 200_001)
    assert w.max_rate_per_s(0, 2 * SECONDS_PER_DAY) >= w.rate_per_s(t).max() * (1 - 1e-12)
    assert w.max_rate_per_s(0, 2 * SECONDS_PER_DAY) == pytest.approx(w.rate_per_s(t).max(), rel=1e-6)


# ---- thinning ------------------------------------------------------------------------------------


def test_thinning_count_matches_integral_of_rate() -> None:
    """Mean count over replications lies within a 95% CI of the integral of the rate."""
    w = Workload(
        daily_active_users=1e5,
        requests_per_user_per_day=4,
        diurnal=DiurnalCosine(1.8, 4.0),
        bursts=(Burst(3 * SECONDS_PER_HOUR, 1800, 3.0),),
    )
    start, duration = 2 * SECONDS_PER_HOUR, 2 * SECONDS_PER_HOUR
    expected = w.expected_arrivals(start, duration)
    counts = np.array(
        [len(generate_arrivals(w, duration, seed=11, start_s=start, replication=r)) for r in range(40)]
    )
    half = Z95 * counts.std(ddof=1) / math.sqrt(counts.size)
    assert abs(counts.mean() - expected) < half
    # Poisson: variance of the count equals its mean (within sampling error of a variance)
    assert counts.var(ddof=1) / expected == pytest.approx(1.0, abs=0.6)


def test_diurnal_shape_in_hourly_counts() -> None:
    w = Workload(2e4, 10, diurnal=DiurnalHourly(HOURLY))
    a = generate_arrivals(w, 2 * SECONDS_PER_DAY, seed=3)
    counts = np.bincount((a["t_s"] // SECONDS_PER_HOUR).astype(int), minlength=48)[:48]
    edges = np.arange(49) * SECONDS_PER_HOUR
    expected = np.array([w.expected_arrivals(lo, 3600) for lo in edges[:-1]])
    assert np.corrcoef(counts, expected)[0, 1] > 0.99
    z = (counts - expected) / np.sqrt(expected)
    assert np.abs(z).max() < 4.5


def test_burst_multiplies_counts() -> None:
    burst = Burst(start_s=5000, duration_s=1000, multiplier=5)
    w = Workload.from_rate(20.0, bursts=(burst,))
    a = generate_arrivals(w, 10_000, seed=5)
    t = a["t_s"].to_numpy()
    inside = np.sum((t >= 5000) & (t < 6000))
    before = np.sum((t >= 3000) & (t < 4000))
    assert abs(inside - 100_000) < 4 * math.sqrt(100_000)
    assert abs(before - 20_000) < 4 * math.sqrt(20_000)
    assert inside / before == pytest.approx(5.0, rel=0.05)


def test_outage_burst_has_no_arrivals() -> None:
    w = Workload.from_rate(50.0, bursts=(Burst(100, 50, 0.0),))
    t = generate_arrivals(w, 300, seed=1)["t_s"].to_numpy()
    assert not np.any((t >= 100) & (t < 150))
    assert np.any(t < 100) and np.any(t >= 150)


def test_start_s_picks_time_of_day() -> None:
    w = Workload(1e5, 10, diurnal=DiurnalCosine(2.0, 14.0))
    peak = generate_arrivals(w, 600, seed=2, start_s=14 * SECONDS_PER_HOUR)
    trough = generate_arrivals(w, 600, seed=2, start_s=2 * SECONDS_PER_HOUR)
    assert peak["t_s"].min() >= 0 and peak["t_s"].max() < 600
    assert peak.attrs["start_s"] == 14 * SECONDS_PER_HOUR
    expected = w.expected_arrivals(14 * SECONDS_PER_HOUR, 600)
    assert abs(len(peak) - expected) < 4 * math.sqrt(expected)
    assert len(trough) < 0.01 * len(peak)  # the trough of a 2x cosine is 0


def test_million_arrivals_quickly() -> None:
    w = Workload.from_rate(1000.0, diurnal=DiurnalCosine(1.5))
    a = generate_arrivals(w, 1000, seed=0)
    assert abs(len(a) - w.expected_arrivals(0, 1000)) < 5 * math.sqrt(1e6)


# ---- renewal -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cv", "renewal", "rel"),
    [
        (3.0, "gamma", 0.08),
        (5.0, "hyperexponential", 0.08),
        (0.5, "gamma", 0.03),
        (2.0, "hyperexponential", 0.05),
    ],
)
def test_renewal_cv(cv: float, renewal: str, rel: float) -> None:
    w = Workload.from_rate(100.0, interarrival_cv=cv, renewal=renewal)
    a = generate_arrivals(w, 2000, seed=9)
    assert interarrival_cv(a) == pytest.approx(cv, rel=rel)
    expected = w.expected_arrivals(0, 2000)
    assert abs(len(a) - expected) < 4 * cv * math.sqrt(expected)


@pytest.mark.parametrize("renewal", ["gamma", "hyperexponential"])
def test_renewal_count_is_unbiased_from_the_start(renewal: str) -> None:
    """Started in equilibrium: mean count = integral of the rate, even over short windows.

    An ordinary renewal process (first gap a full draw) would add (CV^2 - 1) / 2 = 12 arrivals.
    """
    w = Workload.from_rate(1.0, interarrival_cv=5.0, renewal=renewal)
    counts = np.array([len(generate_arrivals(w, 50, seed=17, replication=r)) for r in range(400)])
    half = Z95 * counts.std(ddof=1) / math.sqrt(counts.size)
    assert abs(counts.mean() - 50.0) < max(half, 1.0)


def test_renewal_follows_rate_profile() -> None:
    w = Workload(2e4, 10, diurnal=DiurnalHourly(HOURLY), interarrival_cv=2.0)
    a = generate_arrivals(w, SECONDS_PER_DAY, seed=4)
    assert a["t_s"].is_monotonic_increasing
    counts = np.bincount((a["t_s"] // SECONDS_PER_HOUR).astype(int), minlength=24)[:24]
    expected = np.array([w.expected_arrivals(h * 3600.0, 3600) for h in range(24)])
    assert np.corrcoef(counts, expected)[0, 1] > 0.98
    assert len(a) == pytest.approx(expected.sum(), rel=0.02)


def test_renewal_respects_bursts_and_outages() -> None:
    w = Workload.from_rate(20.0, interarrival_cv=2.0, bursts=(Burst(1000, 500, 4.0), Burst(2000, 200, 0.0)))
    t = generate_arrivals(w, 3000, seed=8)["t_s"].to_numpy()
    assert not np.any((t >= 2000) & (t < 2200))
    inside = np.sum((t >= 1000) & (t < 1500))
    assert inside == pytest.approx(80.0 * 500, rel=0.05)


# ---- classes and sizes ---------------------------------------------------------------------------


def _classes() -> tuple[TrafficClass, ...]:
    return (
        TrafficClass("paid", 0.5, priority=0, tokens_in=TokenDistribution(500, 0.5)),
        TrafficClass("free", 0.3, priority=2, tokens_out=TokenDistribution(50, 1.0, maximum=80)),
        TrafficClass("batch", 0.2, priority=5, difficulty=Difficulty(2.0, 5.0)),
    )


def test_class_shares_priorities_and_sizes() -> None:
    w = Workload.from_rate(200.0, classes=_classes())
    a = generate_arrivals(w, 500, seed=21)
    n = len(a)
    share = a["class_name"].value_counts(normalize=True)
    for c in w.classes:
        half = 2.576 * math.sqrt(c.share * (1 - c.share) / n)  # 99% CI
        assert abs(share[c.name] - c.share) < half
        rows = a[a["class_name"] == c.name]
        assert (rows["priority"] == c.priority).all()
    paid = a[a["class_name"] == "paid"]
    assert paid["tokens_in"].median() == pytest.approx(500, rel=0.05)
    free = a[a["class_name"] == "free"]
    assert free["tokens_out"].max() == 80
    assert (a["tokens_in"] >= 1).all() and (a["tokens_out"] >= 1).all()
    assert a["difficulty"].between(0, 1).all()
    batch = a[a["class_name"] == "batch"]
    assert batch["difficulty"].mean() == pytest.approx(2 / 7, abs=0.02)


def test_schema_and_order() -> None:
    w = Workload.from_rate(30.0, classes=_classes())
    a = generate_arrivals(w, 100, seed=1)
    assert list(a.columns) == list(ARRIVAL_COLUMNS)
    for name, (dtype, _) in ARRIVAL_COLUMNS.items():
        assert str(a[name].dtype) == dtype, name
    assert (a["request_id"].to_numpy() == np.arange(len(a))).all()
    assert a["t_s"].is_monotonic_increasing
    assert a["t_s"].min() >= 0 and a["t_s"].max() < 100
    assert a.attrs["duration_s"] == 100


def test_empty_window_gives_empty_frame() -> None:
    w = Workload.from_rate(1e-6)
    a = generate_arrivals(w, 1.0, seed=0)
    assert len(a) == 0
    assert list(a.columns) == list(ARRIVAL_COLUMNS)


def test_token_distribution_rounding_and_cap() -> None:
    rng = np.random.default_rng(0)
    x = TokenDistribution(3, 2.0, maximum=10).sample(rng, 10_000)
    assert x.dtype == np.int64
    assert x.min() == 1 and x.max() == 10
    assert TokenDistribution(100, 0.5).mean_tokens == pytest.approx(100 * math.exp(0.125))


# ---- determinism ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cv", [1.0, 3.0])
def test_same_seed_same_frame(cv: float) -> None:
    w = Workload.from_rate(50.0, classes=_classes(), interarrival_cv=cv)
    a = generate_arrivals(w, 200, seed=7)
    b = generate_arrivals(w, 200, seed=7)
    pd.testing.assert_frame_equal(a, b)
    c = generate_arrivals(w, 200, seed=8)
    assert len(a) != len(c) or not np.array_equal(a["t_s"], c["t_s"])
    d = generate_arrivals(w, 200, seed=7, replication=1)
    assert len(a) != len(d) or not np.array_equal(a["t_s"], d["t_s"])


def test_size_change_leaves_times_and_other_classes() -> None:
    base = _classes()
    w1 = Workload.from_rate(50.0, classes=base)
    bigger = (
        TrafficClass("paid", 0.5, priority=0, tokens_in=TokenDistribution(2000, 0.5)),
        *base[1:],
    )
    w2 = Workload.from_rate(50.0, classes=bigger)
    a = generate_arrivals(w1, 300, seed=13)
    b = generate_arrivals(w2, 300, seed=13)
    assert np.array_equal(a["t_s"], b["t_s"])
    assert np.array_equal(a["class_name"], b["class_name"])
    assert np.array_equal(a["tokens_out"], b["tokens_out"])
    assert np.array_equal(a["difficulty"], b["difficulty"])
    free = a["class_name"] != "paid"
    assert np.array_equal(a.loc[free, "tokens_in"], b.loc[free, "tokens_in"])
    paid = ~free
    assert (b.loc[paid, "tokens_in"].to_numpy() >= a.loc[paid, "tokens_in"].to_numpy()).all()
    assert not np.array_equal(a.loc[paid, "tokens_in"], b.loc[paid, "tokens_in"])


# ---- bad inputs ----------------------------------------------------------------------------------


def test_shares_must_sum_to_one_and_error_names_them() -> None:
    with pytest.raises(ValueError, match=r"paid=0\.5, free=0\.3.*sum 0\.8"):
        Workload.from_rate(1.0, classes=(TrafficClass("paid", 0.5), TrafficClass("free", 0.3)))
    # within tolerance is fine
    Workload.from_rate(1.0, classes=(TrafficClass("a", 1 / 3), TrafficClass("b", 2 / 3 + 1e-9)))


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: TrafficClass("x", 1.0, priority=-1), "priority"),
        (lambda: TrafficClass("x", 0.0), "share"),
        (lambda: TrafficClass("", 1.0), "name"),
        (lambda: TokenDistribution(0), "median"),
        (lambda: TokenDistribution(10, -1), "sigma"),
        (lambda: TokenDistribution(10, 1, maximum=0), "maximum"),
        (lambda: Difficulty(0, 1), "alpha"),
        (lambda: Burst(0, 0, 2), "duration_s"),
        (lambda: Burst(-1, 10, 2), "start_s"),
        (lambda: Burst(0, 10, -2), "multiplier"),
        (lambda: DiurnalCosine(3.0), "peak_to_mean"),
        (lambda: DiurnalCosine(0.5), "peak_to_mean"),
        (lambda: DiurnalHourly((1,) * 23), "values"),
        (lambda: DiurnalHourly((1,) * 23 + (-1,)), "values"),
        (lambda: Workload(0, 1), "daily_active_users"),
        (lambda: Workload(1, -1), "requests_per_user_per_day"),
        (lambda: Workload(1, 1, weekly=(1,) * 6), "weekly"),
        (lambda: Workload(1, 1, interarrival_cv=0), "interarrival_cv"),
        (lambda: Workload(1, 1, interarrival_cv=0.5, renewal="hyperexponential"), "interarrival_cv"),
        (lambda: Workload(1, 1, renewal="pareto"), "renewal"),
        (lambda: Workload(1, 1, classes=(TrafficClass("a", 0.5), TrafficClass("a", 0.5))), "unique"),
        (lambda: Workload.from_rate(-1.0), "rate_per_s"),
    ],
)
def test_bad_inputs_name_the_parameter(build, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        build()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"duration_s": 0, "seed": 1}, "duration_s"),
        ({"duration_s": 10, "seed": -1}, "seed"),
        ({"duration_s": 10, "seed": 1, "start_s": -5}, "start_s"),
        ({"duration_s": 10, "seed": 1.5}, "seed"),
    ],
)
def test_generate_arrivals_bad_inputs(kwargs: dict, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        generate_arrivals(Workload.from_rate(1.0), **kwargs)


# ---- hostile inputs: every one refused by name, with its value, before any work -------------------


def test_token_counts_stay_within_int64() -> None:
    # Regression: a median of 1e19 tokens wrapped to -9223372036854775808 in the int64 column.
    for bad in (1e19, 10**30, 1e308):
        with pytest.raises(ValueError, match="median") as caught:
            TokenDistribution(median=bad)
        assert "1e+" in str(caught.value) or "integer of about" in str(caught.value)
    with pytest.raises(ValueError, match=r"maximum must be <= 1,000,000,000"):
        TokenDistribution(100, maximum=2**63)
    with pytest.raises(ValueError, match="sigma"):
        TokenDistribution(100, sigma=1e308)
    # At the bounds every draw is a positive count no larger than MAX_TOKENS.
    draws = TokenDistribution(workload_module.MAX_TOKENS, sigma=workload_module.MAX_SIGMA).sample(
        np.random.default_rng(0), 10_000
    )
    assert draws.dtype == np.int64 and draws.min() >= 1 and draws.max() <= workload_module.MAX_TOKENS
    with pytest.raises(ValueError, match="priority"):
        TrafficClass("x", 1.0, priority=2**63)


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: Workload(1, 1, classes=None), "classes"),
        (lambda: Workload(1, 1, classes=[["a"]]), "classes[0]"),
        (lambda: Workload(1, 1, classes={"a": 1}), "classes"),
        (lambda: Workload(1, 1, weekly=None), "weekly"),
        (lambda: Workload(1, 1, weekly=[[1.0]] * 7), "weekly[0]"),
        (lambda: Workload(1, 1, weekly="1234567"), "weekly"),
        (lambda: Workload(1, 1, bursts=None), "bursts"),
        (lambda: Workload(1, 1, bursts=[[0, 1, 2]]), "bursts[0]"),
        (lambda: DiurnalHourly(None), "values"),
        (lambda: DiurnalHourly([[1.0] * 24]), "values"),
        (lambda: DiurnalHourly(["a"] * 24), "values[0]"),
        (lambda: TrafficClass("x", 1.0, tokens_in=[100]), "tokens_in"),
    ],
)
def test_containers_of_the_wrong_kind_name_the_field(build, field: str) -> None:
    # Regression: these gave "'NoneType' object is not iterable" or numpy's words, naming no field.
    with pytest.raises((TypeError, ValueError)) as caught:
        build()
    assert field in str(caught.value), str(caught.value)


def test_hourly_and_weekly_levels_near_the_float_limit_keep_mean_one() -> None:
    # Regression: 24 levels of 1e308 summed to inf and were silently normalised to 0.
    assert DiurnalHourly((1e308,) * 24).values == (1.0,) * 24
    assert Workload(1, 1, weekly=(1e308,) * 7).weekly == (1.0,) * 7


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: Burst(0, 10, 1e308), "multiplier"),
        (lambda: Burst(1e300, 10, 2), "start_s"),
        (lambda: Burst(0, 1e300, 2), "duration_s"),
        (lambda: Burst(9e8, 9e8, 2), "start_s + duration_s"),
        (lambda: Workload(1e308, 1e308), "daily_active_users"),
        (lambda: Workload(1, 1, interarrival_cv=1e-300), "interarrival_cv"),
        (lambda: Workload(1, 1, interarrival_cv=1e300), "interarrival_cv"),
        (lambda: Workload(1, None), "requests_per_user_per_day"),
        (lambda: Workload.from_rate(1e300), "rate_per_s"),
        (lambda: Workload(1e6, 1, bursts=(Burst(0, 10, 1e4),) * 100), "daily_active_users"),
        (lambda: Workload.from_rate(1.0).rate_per_s(1e300), "t_s"),
        (lambda: Workload.from_rate(1.0).rate_per_s(None), "t_s"),
        (lambda: Workload.from_rate(1.0).expected_arrivals(0, 1e300), "duration_s"),
        (lambda: generate_arrivals(Workload.from_rate(1.0), 1e300, seed=0), "duration_s"),
        (lambda: generate_arrivals(Workload.from_rate(1.0), 10, seed=10**30), "seed"),
        (lambda: generate_arrivals(Workload.from_rate(1.0), 10, seed=0, start_s=math.nan), "start_s"),
        (lambda: generate_arrivals(Workload.from_rate(1.0), 10, seed=0, replication=-1), "replication"),
        (lambda: generate_arrivals("w", 10, seed=0), "workload"),
    ],
)
def test_values_that_would_overflow_or_never_finish_are_refused(build, field: str) -> None:
    with pytest.raises((TypeError, ValueError)) as caught:
        build()
    assert field in str(caught.value), str(caught.value)


def test_a_window_with_too_many_arrivals_is_refused_at_once() -> None:
    # 1e6 requests/s for 1e3 s expects 1e9 arrivals: refused before any draw, naming duration_s.
    busy = Workload.from_rate(1e6)
    with pytest.raises(ValueError, match=r"duration_s=1000.0 would bring about 1e\+09 arrivals"):
        generate_arrivals(busy, 1000.0, seed=0)
    assert len(generate_arrivals(Workload.from_rate(1e-3), 1e8 - 1, seed=0)) > 0  # the clock's span is fine
