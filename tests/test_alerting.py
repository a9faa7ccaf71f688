"""SLO alerting against hand computations: a synthetic incident of known error rate and duration fires
the fast page exactly when the workbook's detection time says and clears when the short window
empties; no incident, no alert; the budget spent; a token SLO (TTFT and TPOT) judged and paged as the
latency SLO is; the naive quantile alert; and bad input."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from conftest import poisson_arrivals
from scaleplay.alerting import (
    DEFAULT_RULES,
    SLO,
    BurnRateRule,
    TokenSLO,
    detection_time_s,
    evaluate_alerts,
    judge_requests,
    quantile_alert,
    window_label,
)
from scaleplay.profiles import AffineServiceTime, RandomServiceTime
from scaleplay.simulator import PlatformConfig, PoolConfig, simulate

SLO_1S = SLO(latency_s=1.0, target=0.999)  # budget 0.1%, period 30 days
RUN_S = 3 * 3600  # one request a second for three hours
INCIDENT_START_S, INCIDENT_S = 3600.0, 1200.0


def synthetic_log(incident: bool = True) -> pd.DataFrame:
    """A request every second, all answered in 0.1 s, except every 10th request during the incident
    (a 10% error rate for 20 minutes), answered in 5 s: 120 bad requests."""
    t = np.arange(float(RUN_S))
    latency = np.full(RUN_S, 0.1)
    if incident:
        bad = (t >= INCIDENT_START_S) & (t < INCIDENT_START_S + INCIDENT_S) & (np.arange(RUN_S) % 10 == 0)
        latency[bad] = 5.0
    return pd.DataFrame(
        {"arrived_s": t, "outcome": np.full(RUN_S, "completed", dtype=object), "latency_s": latency}
    )


def test_the_fast_page_fires_at_the_hand_computed_detection_time_and_not_before():
    report = evaluate_alerts(synthetic_log(), SLO_1S)
    fast = DEFAULT_RULES[0]
    # x seconds into the incident the 1 h window holds x / 10 bad of 3600 requests: burn x / 36,
    # above 14.4 once x > 518.4 s (the workbook's formula), first seen on the 60 s grid at x = 540.
    assert detection_time_s(fast, SLO_1S, 0.1) == pytest.approx(518.4)
    fired_s = INCIDENT_START_S + 540.0
    timeline = report.timeline.set_index("t_s")
    assert timeline.at[fired_s - 60, "burn_rate_1h"] == pytest.approx(480 / 36)
    assert timeline.at[fired_s, "burn_rate_1h"] == pytest.approx(540 / 36)
    assert not timeline.loc[: fired_s - 60, "firing_page_fast"].any()
    # It clears when the 5 min window has burned below 14.4: y seconds after the incident its
    # burn is (300 - y) / 3, below 14.4 once y > 256.8, first seen at y = 300.
    cleared_s = INCIDENT_START_S + INCIDENT_S + 300.0
    assert timeline.loc[fired_s : cleared_s - 60, "firing_page_fast"].all()
    assert not timeline.loc[cleared_s:, "firing_page_fast"].any()
    alerts = report.alerts
    assert alerts[["rule", "severity"]].values.tolist() == [["page_fast", "page"]]
    assert alerts.at[0, "fired_s"] == fired_s and alerts.at[0, "cleared_s"] == cleared_s
    assert alerts.at[0, "duration_s"] == cleared_s - fired_s
    assert alerts.at[0, "peak_burn_rate"] == pytest.approx(1200 / 36)  # 120 bad in the last hour
    # The slow rules never fire: 120 bad requests over 6 h of traffic burn at 5.6 < 6, and over
    # 3 days at 0.46 < 1 (the windows reach back into a clean past).
    assert not timeline["firing_page_slow"].any() and not timeline["firing_ticket"].any()


def test_the_budget_spent_matches_the_hand_computation():
    # 120 bad requests; the month holds 10 800 x 240 = 2 592 000 requests, whose budget is 2592.
    report = evaluate_alerts(synthetic_log(), SLO_1S)
    assert report.requests_per_period == pytest.approx(2_592_000)
    assert report.budget_consumed == pytest.approx(120 / 2592)
    assert report.timeline["budget_consumed"].iloc[-1] == pytest.approx(120 / 2592)
    assert report.timeline["budget_consumed"].is_monotonic_increasing
    explicit = evaluate_alerts(synthetic_log(), SLO_1S, requests_per_period=1_000_000)
    assert explicit.budget_consumed == pytest.approx(120 / 1000)
    assert [rule.budget_spent_when_firing() for rule in DEFAULT_RULES] == pytest.approx([0.02, 0.05, 0.10])


def test_no_incident_no_alert():
    report = evaluate_alerts(synthetic_log(incident=False), SLO_1S)
    assert report.alerts.empty
    assert report.budget_consumed == 0
    burn = report.timeline.filter(like="burn_rate_")
    assert list(burn.columns) == [
        "burn_rate_5m",
        "burn_rate_30m",
        "burn_rate_1h",
        "burn_rate_6h",
        "burn_rate_3d",
    ]
    assert (burn.to_numpy() == 0).all()


def test_without_a_clean_past_the_slow_rules_fire_early():
    # Windows hold only the run: at x s into the incident the 6 h window holds 3600 + x requests and
    # x / 10 bad, a burn of 100 x / (3600 + x), above 6 once x > 229.8 s: seen at x = 240.
    report = evaluate_alerts(synthetic_log(), SLO_1S, before_run="absent")
    fired = report.alerts.set_index("rule")["fired_s"]
    assert fired["page_slow"] == INCIDENT_START_S + 240
    assert fired["page_fast"] == INCIDENT_START_S + 540  # its 1 h window was full already
    assert "ticket" in fired.index


def test_requests_are_judged_by_outcome_and_latency():
    log = pd.DataFrame(
        {
            "arrived_s": [0.0, 1.0, 2.0, 3.0, 4.0],
            "outcome": ["completed", "completed", "rejected", "timed_out", "in_flight"],
            "latency_s": [0.5, 1.5, math.nan, math.nan, math.nan],
        }
    )
    verdict = judge_requests(log, SLO_1S)
    assert verdict.iloc[:4].tolist() == [True, False, False, False]
    assert pd.isna(verdict.iloc[4])
    report = evaluate_alerts(log, SLO_1S, step_s=1.0, rules=[BurnRateRule("fast", "page", 2.0, 1.0, 14.4)])
    assert report.timeline["good"].tolist() == [1, 0, 0, 0, 0]
    assert report.timeline["bad"].tolist() == [0, 1, 1, 1, 0]


def test_a_healthy_simulated_run_raises_no_alert():
    arrivals = poisson_arrivals(2.0, 2000, seed=4)
    result = simulate(arrivals, PlatformConfig(PoolConfig(4, AffineServiceTime(fixed_s=0.2))), seed=4)
    report = evaluate_alerts(result.log, SLO(latency_s=1.0))
    assert report.alerts.empty and report.budget_consumed == 0


def test_detection_time_matches_the_workbook_table():
    # 2% of a 30-day, 99.9% budget at a 100% error rate: 0.864 minutes.
    assert detection_time_s(DEFAULT_RULES[0], SLO_1S, 1.0) == pytest.approx(0.864 * 60)
    assert math.isinf(detection_time_s(DEFAULT_RULES[0], SLO_1S, 0.0144))
    assert [window_label(w) for w in (300, 1800, 3600, 21_600, 259_200, 90)] == [
        "5m",
        "30m",
        "1h",
        "6h",
        "3d",
        "90s",
    ]


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: SLO(latency_s=1.0, target=1.0), ValueError, "target"),
        (lambda: SLO(latency_s=0.0), ValueError, "latency_s"),
        (lambda: BurnRateRule("r", "email", 3600, 300, 14.4), ValueError, "severity"),
        (lambda: BurnRateRule("r", "page", 300, 3600, 14.4), ValueError, "short_window_s"),
        (lambda: BurnRateRule("r", "page", 3600, 300, -1), ValueError, "burn_rate"),
        (lambda: BurnRateRule("a rule", "page", 3600, 300, 1), ValueError, "identifier"),
        (lambda: evaluate_alerts(synthetic_log(), SLO_1S, step_s=7.0), ValueError, "whole multiple"),
        (lambda: evaluate_alerts(synthetic_log(), SLO_1S, before_run="never"), ValueError, "before_run"),
        (lambda: evaluate_alerts(synthetic_log(), SLO_1S, rules=[]), ValueError, "at least one"),
        (
            lambda: evaluate_alerts(synthetic_log(), SLO_1S, rules=[DEFAULT_RULES[0], DEFAULT_RULES[0]]),
            ValueError,
            "unique",
        ),
        (lambda: evaluate_alerts(synthetic_log()[["arrived_s"]], SLO_1S), ValueError, "lacks the columns"),
        (lambda: evaluate_alerts(synthetic_log(), 0.999), TypeError, "slo must be an SLO"),
        (lambda: detection_time_s(DEFAULT_RULES[0], SLO_1S, 1.5), ValueError, "error_rate"),
    ],
)
def test_bad_input_is_refused(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_a_simulated_flash_crowd_pages_during_it_and_clears_after():
    """A flash crowd of twice the traffic for 20 minutes overloads a fixed fleet sized for 70% load:
    requests queue past the latency SLO, the fast page fires inside the crowd (never before it) and
    clears once the backlog has drained, well before the run ends."""
    from scaleplay.workload import Burst, Workload, generate_arrivals  # noqa: PLC0415

    crowd = Burst(start_s=3600.0, duration_s=1200.0, multiplier=2.0)
    workload = Workload.from_rate(2.8, bursts=(crowd,))
    arrivals = generate_arrivals(workload, 3 * 3600.0, seed=11)
    pool = PoolConfig(4, RandomServiceTime(AffineServiceTime(fixed_s=1.0)))  # capacity 4/s, 70% at 2.8/s
    report = evaluate_alerts(simulate(arrivals, PlatformConfig(pool), seed=11).log, SLO(latency_s=10.0))
    pages = report.alerts[report.alerts["rule"] == "page_fast"]
    assert not pages.empty
    assert pages["fired_s"].min() > crowd.start_s
    assert pages["fired_s"].min() < crowd.end_s
    assert (pages["cleared_s"] < 3 * 3600.0).all()
    assert report.budget_consumed > 0


# -- hostile input: refused by name, before any work --------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        # regression: step_s=1e-300 raised OverflowError "Python int too large to convert to C long"
        (dict(step_s=1e-300), ValueError, r"step_s must lie in \[1e-06, 1e\+09\] s, got 1e-300"),
        # regression: horizon_s=10**30 raised the same OverflowError
        (dict(horizon_s=10**30), ValueError, r"horizon_s must be > 0 and <= 1e\+09 s, got 1000000000000"),
        # regression: horizon_s=1e-300 said only that no request could be judged
        (
            dict(horizon_s=1e-300),
            ValueError,
            r"no request in the log before horizon_s=1e-300 could be judged",
        ),
        (
            dict(step_s=1e-6),
            ValueError,
            r"step_s=1e-06 cuts the run .* into 1.08e\+10 steps; at most 10,000,000",
        ),
        (
            dict(step_s=1e-6, horizon_s=20.0),
            ValueError,
            r"step_s=1e-06 cuts horizon_s=20.0 into 2e\+07 steps",
        ),
        (dict(step_s=math.inf), ValueError, "step_s must be a finite number"),
        (dict(step_s=True), TypeError, r"step_s must be a real number, got True \(bool\)"),
        (dict(rules=None), TypeError, r"rules must be a BurnRateRule or a list of them, got None"),
        (dict(rules=5), TypeError, r"rules must be a BurnRateRule or a list of them, got 5 \(int\)"),
        (dict(rules=["page"]), TypeError, r"rules\[0\] must be a BurnRateRule"),
        # a budget of 1e-303 requests made every bad request an infinite share of it
        (dict(requests_per_period=1e-300), ValueError, r"requests_per_period must lie in \[1e-06, inf\]"),
        (dict(requests_per_period="many"), TypeError, "requests_per_period must be a real number"),
        (dict(before_run=None), ValueError, "before_run must be one of"),
    ],
)
def test_hostile_arguments_are_refused_by_name(kwargs, error, match):
    log = synthetic_log()
    log["arrived_s"] += 0.5  # no request at 0, so a horizon of 1e-300 s holds none
    with pytest.raises(error, match=match):
        evaluate_alerts(log, SLO_1S, **kwargs)


def test_a_single_rule_and_the_smallest_step_are_accepted():
    report = evaluate_alerts(synthetic_log(), SLO_1S, DEFAULT_RULES[0], horizon_s=3.0, step_s=1e-6)
    assert len(report.timeline) == 3_000_000 and np.isfinite(report.budget_consumed)
    assert list(report.alerts.columns)[:2] == ["rule", "severity"]


def test_a_log_past_the_longest_grid_needs_a_horizon():
    log = synthetic_log()
    log.loc[len(log) - 1, "arrived_s"] = 2e9
    with pytest.raises(
        ValueError, match=r"log\['arrived_s'\] runs to 2000000000.0 s.*pass horizon_s <= 1e\+09"
    ):
        evaluate_alerts(log, SLO_1S)
    report = evaluate_alerts(log, SLO_1S, horizon_s=float(RUN_S))  # the late request is left out
    assert report.timeline["good"].sum() + report.timeline["bad"].sum() == RUN_S - 1


@pytest.mark.parametrize(
    ("column", "values", "error", "match"),
    [
        (
            "latency_s",
            "slow",
            TypeError,
            r"log\['latency_s'\] must hold real numbers \(seconds\), got str values such as .slow.",
        ),
        (
            "arrived_s",
            True,
            TypeError,
            r"log\['arrived_s'\] must hold real numbers \(seconds\), got bool values",
        ),
        # these were read silently: strings as numbers, dates as nanoseconds since 1970 taken for seconds
        ("arrived_s", "1.5", TypeError, r"log\['arrived_s'\] must hold real numbers .* such as '1.5'"),
        ("arrived_s", pd.Timestamp("2020-01-01"), TypeError, r"log\['arrived_s'\] .* got datetime64"),
        ("latency_s", 1j, TypeError, r"log\['latency_s'\] must hold real numbers .* got complex128"),
        ("arrived_s", math.nan, ValueError, r"log\['arrived_s'\] must be finite and >= 0; row 0 holds nan"),
        ("arrived_s", -1.0, ValueError, r"log\['arrived_s'\] must be finite and >= 0; row 0 holds -1.0"),
    ],
)
def test_a_log_of_the_wrong_kind_is_refused_by_column(column, values, error, match):
    log = synthetic_log()
    log[column] = values
    with pytest.raises(error, match=match):
        evaluate_alerts(log, SLO_1S)


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        # each gave an infinite budget share, requests per period or burn rate somewhere downstream
        (lambda: SLO(1.0, period_s=1e308), ValueError, r"period_s must lie in \[1, 1e\+09\] s, got 1e\+308"),
        (lambda: SLO(1.0, period_s=1e-300), ValueError, r"period_s must lie in \[1, 1e\+09\] s"),
        (
            lambda: BurnRateRule("r", "page", 1e308, 300, 1.0),
            ValueError,
            r"long_window_s must lie in \[1e-06, 1e\+09\] s, got 1e\+308",
        ),
        (
            lambda: BurnRateRule("r", "page", 3600, 300, 1e308),
            ValueError,
            r"burn_rate must be > 0 and <= 1e\+16",
        ),
        (
            lambda: BurnRateRule("r", "page", 3600, 1e-300, 1.0),
            ValueError,
            r"short_window_s must lie in \[1e-06",
        ),
        (
            lambda: DEFAULT_RULES[0].budget_spent_when_firing(1e-300),
            ValueError,
            r"period_s must lie in \[1, 1e\+09\]",
        ),
        (
            lambda: BurnRateRule(None, "page", 3600, 300, 1.0),
            TypeError,
            r"rule name must be a str .* got None",
        ),
        (
            lambda: BurnRateRule("a b" * 10**5, "page", 3600, 300, 1.0),
            ValueError,
            r"rule name must be an identifier",
        ),
        (
            lambda: judge_requests(synthetic_log(), None),
            TypeError,
            r"slo must be an SLO or a TokenSLO, got None \(NoneType\)",
        ),
        (
            lambda: detection_time_s("page", SLO_1S, 0.5),
            TypeError,
            r"rule must be a BurnRateRule, got 'page'",
        ),
    ],
)
def test_configs_out_of_bounds_are_refused_by_name(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_the_extreme_allowed_values_give_finite_numbers():
    slo = SLO(latency_s=1e308, target=0.9999999999999999, period_s=1e9)
    rule = BurnRateRule("far", "ticket", 1e9, 1e9, 1e16)
    assert math.isfinite(rule.budget_spent_when_firing(1.0))
    assert detection_time_s(rule, slo, 1.0) == math.inf  # a threshold it can never cross
    report = evaluate_alerts(synthetic_log(), slo, [rule], step_s=1e9, requests_per_period=1e-6)
    assert math.isfinite(report.budget_consumed) and math.isfinite(report.requests_per_period)
    assert np.isfinite(report.timeline.drop(columns=["firing_far"]).to_numpy(dtype=float)).all()


# ---------------------------------------------------------------------------------------------------
# The token SLO (TTFT and TPOT) and the naive quantile alert


def token_log(incident: bool = True) -> pd.DataFrame:
    """``synthetic_log`` as a continuous-batching log: every request answers 100 tokens with a TTFT of
    0.2 s and a TPOT of 20 ms, except every 10th request of the incident, whose TTFT is 5 s."""
    log = synthetic_log(incident=False)
    ttft = np.full(len(log), 0.2)
    if incident:
        t = log["arrived_s"].to_numpy()
        bad = (t >= INCIDENT_START_S) & (t < INCIDENT_START_S + INCIDENT_S) & (np.arange(len(t)) % 10 == 0)
        ttft[bad] = 5.0
    return log.assign(tokens_out=100, ttft_s=ttft, tpot_s=0.02)


TOKEN_SLO = TokenSLO(ttft_slo_s=2.0, tpot_slo_s=0.1, target=0.999)


def test_a_token_slo_judges_ttft_and_tpot():
    log = token_log(incident=False).head(6).copy()
    log.loc[1, "ttft_s"] = 2.5  # first token late
    log.loc[2, "tpot_s"] = 0.2  # tokens too slow
    log.loc[3, ["tokens_out", "tpot_s"]] = [1, np.nan]  # a one-token answer has no TPOT and meets it
    log.loc[4, "outcome"] = "rejected"
    log.loc[5, "outcome"] = "in_flight"
    verdict = judge_requests(log, TOKEN_SLO)
    assert verdict.tolist()[:5] == [True, False, False, True, False]
    assert verdict.isna().tolist() == [False] * 5 + [True]
    # The latency SLO on the same log judges by latency_s alone (all 0.1 s): it would call 1 and 2 good.
    assert judge_requests(log, SLO_1S).tolist()[:3] == [True, True, True]


def test_a_token_incident_pages_as_the_latency_incident_does():
    # Same incident, same rates: the fast page fires and clears at the same evaluations.
    token = evaluate_alerts(token_log(), TOKEN_SLO).alerts
    latency = evaluate_alerts(synthetic_log(), SLO(latency_s=1.0, target=0.999)).alerts
    assert token[["rule", "fired_s", "cleared_s"]].values.tolist() == [["page_fast", 4140.0, 5100.0]]
    pd.testing.assert_frame_equal(token, latency)
    assert evaluate_alerts(token_log(incident=False), TOKEN_SLO).alerts.empty
    assert detection_time_s(DEFAULT_RULES[0], TOKEN_SLO, 0.1) == pytest.approx(518.4)


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: TokenSLO(ttft_slo_s=0.0, tpot_slo_s=0.1), ValueError, "ttft_slo_s"),
        (lambda: TokenSLO(ttft_slo_s=2.0, tpot_slo_s=-1.0), ValueError, "tpot_slo_s"),
        (lambda: TokenSLO(2.0, 0.1, target=1.0), ValueError, "target"),
        (lambda: TokenSLO(2.0, 0.1, period_s=0.5), ValueError, "period_s"),
        (
            lambda: judge_requests(synthetic_log(), TOKEN_SLO),
            ValueError,
            r"lacks the columns \['tokens_out'\]",
        ),
        (
            lambda: judge_requests(token_log().drop(columns="ttft_s"), TOKEN_SLO),
            ValueError,
            r"lacks the columns \['ttft_s'\]",
        ),
        (
            lambda: judge_requests(token_log().assign(ttft_s="late"), TOKEN_SLO),
            TypeError,
            r"log\['ttft_s'\] must hold real numbers",
        ),
        (lambda: evaluate_alerts(token_log(), "2 s"), TypeError, "slo must be an SLO or a TokenSLO"),
    ],
)
def test_bad_token_slo_input_is_refused_by_name(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_the_quantile_alert_fires_on_the_minutes_whose_quantile_exceeds_the_threshold():
    log = token_log()
    naive = quantile_alert(log, "ttft_s", 2.0, quantile=0.99, step_s=60.0)
    tl = naive.timeline
    assert len(tl) == RUN_S // 60 and (tl["requests"] == 60).all()
    # A minute of the incident holds 6 requests of 5 s among 60: its p99 is 5 s; every other minute's 0.2 s.
    inside = (tl["t_s"] > INCIDENT_START_S) & (tl["t_s"] <= INCIDENT_START_S + INCIDENT_S)
    assert tl.loc[inside, "value"].tolist() == pytest.approx([5.0] * 20)
    assert tl.loc[~inside, "value"].tolist() == pytest.approx([0.2] * (len(tl) - 20))
    assert tl["firing"].tolist() == inside.tolist()
    assert naive.alerts[["fired_s", "cleared_s", "peak_value"]].values.tolist() == [
        [INCIDENT_START_S + 60, INCIDENT_START_S + INCIDENT_S + 60, 5.0]
    ]
    # A quantile below the bad share sees nothing; an empty minute does not fire.
    assert not quantile_alert(log, "ttft_s", 2.0, quantile=0.5).timeline["firing"].any()
    gap = quantile_alert(log[(log["arrived_s"] < 600) | (log["arrived_s"] >= 660)], "ttft_s", 0.1)
    assert gap.timeline.loc[10, "requests"] == 0 and not gap.timeline.loc[10, "firing"]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"column": "ttfb_s"}, ValueError, r"column must name a column of log, got 'ttfb_s'"),
        ({"threshold": -1.0}, ValueError, "threshold"),
        ({"quantile": 1.0}, ValueError, "quantile"),
        ({"step_s": 0.0}, ValueError, "step_s"),
        ({"horizon_s": 1e300}, ValueError, "horizon_s"),
        ({"step_s": 1e-6, "horizon_s": 1e3}, ValueError, "steps"),
    ],
)
def test_bad_quantile_alert_input_is_refused_by_name(kwargs, error, match):
    arguments = {"column": "ttft_s", "threshold": 2.0, **kwargs}
    column, threshold = arguments.pop("column"), arguments.pop("threshold")
    with pytest.raises(error, match=match):
        quantile_alert(token_log(), column, threshold, **arguments)
