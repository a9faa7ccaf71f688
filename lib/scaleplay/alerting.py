"""SLO alerting: error-budget burn rates and multiwindow, multi-burn-rate alerts.

An SLO such as "99.9% of requests are good over 30 days", where a *good* request is one completed
within the latency SLO, leaves an **error budget** of ``1 - target`` = 0.1% of the period's requests.
The **burn rate** over a window is how fast the budget goes: the window's error rate divided by
``1 - target``. Burning at 1 spends exactly the budget by the end of the period; at 14.4 a 30-day
budget is gone in 50 hours, and an hour at that pace spends 2% of it.

Alerting on the burn rate with one window is either slow (a long window) or noisy (a short one). The
Site Reliability Workbook's answer is to fire a rule when the burn rate exceeds its threshold over
*both* a long window (significant spend) and a short one (still happening, so the alert clears soon
after the incident ends). Its recommended rules for a 30-day SLO, ``DEFAULT_RULES`` here:

=========  ===========  ============  =========  =====================================
severity   long window  short window  burn rate  budget spent when it fires (30 days)
=========  ===========  ============  =========  =====================================
page       1 h          5 min         14.4       2%
page       6 h          30 min        6          5%
ticket     3 days       6 h           1          10%
=========  ===========  ============  =========  =====================================

Source: Beyer, Murphy, Rensin, Kawahara and Thorne (eds.), *The Site Reliability Workbook*, O'Reilly
2018, chapter 5, "Alerting on SLOs" (approach 6, multiwindow, multi-burn-rate alerts).

Here the alerts are evaluated on a RequestLog: each request is judged good or bad and counted in the
interval of its *arrival* on a grid of ``step_s``; at the end of each interval every window ending
there gets its burn rate, and a rule is firing while both its windows burn faster than its threshold
(strictly, as in the workbook's ``>`` expressions). Requests still in flight at the horizon are not
judged: their fate is unknown. Rejected and timed-out requests are bad, and so are completed ones
slower than the latency SLO. A generative product's SLO is on tokens (``TokenSLO``): a good request
completed with its time to first token within ``ttft_slo_s`` and its time per output token within
``tpot_slo_s`` (``metrics.token_slo_met``, the book's gate metric per request); the burn rates and
rules are the same.

A window that reaches back before the run needs an assumption about that past. ``before_run="clean"``
(the default) fills it with good requests at the run's mean rate: the service was healthy before the
simulated stretch, as a long-running service usually is. ``before_run="absent"`` uses only the run's
part of the window, as a monitoring system started with the run would; then the slow rules (6 h, 3
days) see a short, noisy window early on and fire far more readily than the workbook intends.

The time to detect a constant error rate ``e`` starting from a clean past is
``long_window x burn_rate x (1 - target) / e`` (``detection_time_s``): 0.864 minutes for the 1 h
page at a 100% error rate and a 99.9% target, as the workbook's table says.

Bounds, checked before any work: an SLO's period and a rule's windows at most ``MAX_SPAN_S`` (1e9 s,
some 32 years), the period at least a second and the windows at least ``MIN_STEP_S`` (1e-6 s); burn
rates at most ``MAX_BURN_RATE`` (1e16: beyond ``1 / (1 - target)`` for any target a float tells from
1, so no rule above it could fire); the evaluation grid at most ``MAX_SPAN_S`` long, ``step_s`` at
least ``MIN_STEP_S``, and at most ``MAX_STEPS`` (10**7) steps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Real

import numpy as np
import pandas as pd

from ._validate import _kind, _show, check_in, check_items, check_positive, check_probability, check_range
from .metrics import token_slo_met
from .schema import ENGINE_LOG_COLUMNS, REQUEST_LOG_COLUMNS, check_columns

__all__ = [
    "SECONDS_PER_DAY",
    "SEVERITIES",
    "MAX_SPAN_S",
    "MAX_STEPS",
    "MIN_STEP_S",
    "MAX_BURN_RATE",
    "MIN_REQUESTS_PER_PERIOD",
    "SLO",
    "TokenSLO",
    "BurnRateRule",
    "DEFAULT_RULES",
    "AlertReport",
    "window_label",
    "judge_requests",
    "detection_time_s",
    "evaluate_alerts",
    "QuantileAlert",
    "quantile_alert",
]

SECONDS_PER_DAY = 86_400.0
SEVERITIES: tuple[str, ...] = ("page", "ticket")
_BEFORE_RUN = ("clean", "absent")
# Windows must be whole multiples of the grid step, up to this relative rounding.
_MULTIPLE_TOLERANCE = 1e-9
#: The longest SLO period, alert window and evaluation grid, in seconds (some 32 years).
MAX_SPAN_S = 1e9
#: The most steps of an evaluation grid (each holds a few numbers per window).
MAX_STEPS = 10_000_000
#: The shortest grid step, in seconds: a window of ``MAX_SPAN_S`` is then at most 1e15 steps,
#: which a float counts exactly.
MIN_STEP_S = 1e-6
#: The largest burn rate a rule may have: beyond ``1 / (1 - target)`` for every target a float can
#: tell from 1, so a rule above it could never fire.
MAX_BURN_RATE = 1e16
#: The fewest requests per period that size a budget (so that bad requests over it stay finite).
MIN_REQUESTS_PER_PERIOD = 1e-6


class _RequestSLO:
    """What a request-based SLO shares: its ``target`` share of good requests over ``period_s``."""

    target: float
    period_s: float

    def _check_target_and_period(self) -> None:
        object.__setattr__(
            self, "target", check_probability("target", self.target, open_low=True, open_high=True)
        )
        object.__setattr__(self, "period_s", _check_period("period_s", self.period_s))

    @property
    def error_budget(self) -> float:
        """The share of requests allowed to be bad: ``1 - target``."""
        return 1.0 - self.target


@dataclass(frozen=True)
class SLO(_RequestSLO):
    """Request-based: a share ``target`` of requests completes within ``latency_s`` over ``period_s``."""

    latency_s: float
    target: float = 0.999
    period_s: float = 30 * SECONDS_PER_DAY

    def __post_init__(self) -> None:
        object.__setattr__(self, "latency_s", check_positive("latency_s", self.latency_s))
        self._check_target_and_period()


@dataclass(frozen=True)
class TokenSLO(_RequestSLO):
    """Token-based: a share ``target`` of requests completes with its time to first token within
    ``ttft_slo_s`` and its time per output token within ``tpot_slo_s``, over ``period_s``."""

    ttft_slo_s: float
    tpot_slo_s: float
    target: float = 0.99
    period_s: float = 30 * SECONDS_PER_DAY

    def __post_init__(self) -> None:
        object.__setattr__(self, "ttft_slo_s", check_positive("ttft_slo_s", self.ttft_slo_s))
        object.__setattr__(self, "tpot_slo_s", check_positive("tpot_slo_s", self.tpot_slo_s))
        self._check_target_and_period()


@dataclass(frozen=True)
class BurnRateRule:
    """Fire while the burn rate exceeds ``burn_rate`` over both ``long_window_s`` and ``short_window_s``."""

    name: str
    severity: str
    long_window_s: float
    short_window_s: float
    burn_rate: float

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise TypeError(
                f"rule name must be a str (an identifier: it names a column), got {_kind(self.name)}"
            )
        if not self.name.isidentifier():
            raise ValueError(f"rule name must be an identifier (it names a column), got {_show(self.name)}")
        check_in("severity", self.severity, SEVERITIES)
        long_s = check_range("long_window_s", self.long_window_s, MIN_STEP_S, MAX_SPAN_S, unit=" s")
        short_s = check_range("short_window_s", self.short_window_s, MIN_STEP_S, MAX_SPAN_S, unit=" s")
        if short_s > long_s:
            raise ValueError(
                f"short_window_s must be <= long_window_s={long_s!r} in rule {_show(self.name)}, "
                f"got {short_s!r}"
            )
        object.__setattr__(self, "long_window_s", long_s)
        object.__setattr__(self, "short_window_s", short_s)
        burn_rate = check_range("burn_rate", self.burn_rate, 0.0, MAX_BURN_RATE, open_low=True)
        object.__setattr__(self, "burn_rate", burn_rate)

    def budget_spent_when_firing(self, period_s: float = 30 * SECONDS_PER_DAY) -> float:
        """The share of a ``period_s`` budget the long window has spent when the rule starts firing
        (``period_s`` as an SLO's: from 1 s to ``MAX_SPAN_S``)."""
        return self.burn_rate * self.long_window_s / _check_period("period_s", period_s)


def _check_period(name: str, value: object) -> float:
    return check_range(name, value, 1.0, MAX_SPAN_S, unit=" s")


#: The Site Reliability Workbook's recommended rules for a 30-day SLO (chapter 5, table 5-8).
DEFAULT_RULES: tuple[BurnRateRule, ...] = (
    BurnRateRule("page_fast", "page", 3600.0, 300.0, 14.4),
    BurnRateRule("page_slow", "page", 6 * 3600.0, 1800.0, 6.0),
    BurnRateRule("ticket", "ticket", 3 * SECONDS_PER_DAY, 6 * 3600.0, 1.0),
)


@dataclass(frozen=True, eq=False)
class AlertReport:
    """What ``evaluate_alerts`` returns.

    ``timeline``: one row per grid interval, evaluated at its end ``t_s`` (the interval is
    ``[t_s - step_s, t_s)``): ``good`` and ``bad`` (requests that arrived in it), ``burn_rate_<w>``
    for every window ``w`` the rules use (``window_label``: ``5m``, ``1h``, ``3d``...), a boolean
    ``firing_<rule>`` per rule, and ``budget_consumed``, the share of the period's error budget the
    run has spent so far.

    ``alerts``: one row per firing episode: ``rule``, ``severity``, ``fired_s`` and ``cleared_s``
    (the first evaluation that fires and the first that no longer does; NaN if still firing at the
    end), ``duration_s`` and ``peak_burn_rate`` (the highest long-window burn rate while firing).

    ``budget_consumed``: bad requests over the period's budget ``(1 - target) x requests_per_period``.
    """

    timeline: pd.DataFrame
    alerts: pd.DataFrame
    budget_consumed: float
    requests_per_period: float
    slo: SLO | TokenSLO
    step_s: float


def window_label(window_s: float) -> str:
    """``300`` -> ``"5m"``, ``3600`` -> ``"1h"``, ``259200`` -> ``"3d"``, ``90`` -> ``"90s"``."""
    window_s = check_positive("window_s", window_s)
    for unit, size in (("d", SECONDS_PER_DAY), ("h", 3600.0), ("m", 60.0)):
        count = window_s / size
        if count >= 1 and count == round(count):
            return f"{round(count)}{unit}"
    return f"{window_s:g}s"


def _check_slo(slo: object) -> SLO:
    if not isinstance(slo, SLO):
        raise TypeError(f"slo must be an SLO, got {_kind(slo)}")
    return slo


def _check_any_slo(slo: object) -> SLO | TokenSLO:
    if not isinstance(slo, SLO | TokenSLO):
        raise TypeError(f"slo must be an SLO or a TokenSLO, got {_kind(slo)}")
    return slo


def _numbers(log: pd.DataFrame, column: str) -> np.ndarray:
    """A column of real numbers as float64 (missing values as NaN); bools, strings, complex numbers,
    dates and other objects are refused by name."""
    values = log[column]
    dtype = values.dtype
    real = pd.api.types.is_numeric_dtype(dtype) and not (
        pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_complex_dtype(dtype)
    )
    example = values.iloc[0] if len(values) else None
    if pd.api.types.is_object_dtype(dtype):  # numbers held as objects will do, one by one
        odd = (v for v in values if _odd(v))
        example = next(odd, _ALL_REAL)
        real = example is _ALL_REAL
    if not real:
        raise TypeError(
            f"log[{column!r}] must hold real numbers (seconds), got {dtype} values such as {_show(example)}"
        )
    try:
        return values.to_numpy(dtype=np.float64, na_value=np.nan)
    except OverflowError as err:  # an object column holding an int beyond a float
        raise ValueError(f"log[{column!r}] must hold numbers a float can hold (up to about 1.8e308)") from err


_ALL_REAL = object()  # _numbers' marker: no odd value found


def _odd(value: object) -> bool:
    """Not a real number nor a missing value (None, NA, NaN)."""
    if value is None or value is pd.NA:
        return False
    return isinstance(value, bool | np.bool_) or not isinstance(value, Real)


def judge_requests(log: pd.DataFrame, slo: SLO | TokenSLO) -> pd.Series:
    """Each request's verdict: ``True`` good, ``False`` bad, ``<NA>`` not judged (still in flight).

    With an ``SLO`` a good request completed within its latency; with a ``TokenSLO`` it completed with
    its TTFT and TPOT within theirs (``metrics.token_slo_met``; the log needs ``ttft_s`` and ``tpot_s``,
    as a continuous-batching platform's RequestLog has them)."""
    _check_any_slo(slo)
    if isinstance(slo, TokenSLO):
        check_columns(log, {c: REQUEST_LOG_COLUMNS[c] for c in ("arrived_s", "outcome", "tokens_out")}, "log")
        check_columns(log, {c: ENGINE_LOG_COLUMNS[c] for c in ("ttft_s", "tpot_s")}, "log")
        for column in ("ttft_s", "tpot_s"):
            _numbers(log, column)
        good = token_slo_met(log, slo.ttft_slo_s, slo.tpot_slo_s)
    else:
        check_columns(log, {c: REQUEST_LOG_COLUMNS[c] for c in ("arrived_s", "outcome", "latency_s")}, "log")
        completed = (log["outcome"] == "completed").to_numpy(dtype=bool)
        good = completed & (_numbers(log, "latency_s") <= slo.latency_s)
    outcome = log["outcome"]
    verdict = pd.Series(good, index=log.index, dtype="boolean", name="good")
    verdict[(outcome == "in_flight").to_numpy(dtype=bool)] = pd.NA
    return verdict


def detection_time_s(rule: BurnRateRule, slo: SLO | TokenSLO, error_rate: float) -> float:
    """Seconds from the start of a constant ``error_rate`` until ``rule``'s long window fires.

    With a clean past and steady traffic the long window's error rate after ``x`` seconds is
    ``error_rate x x / long_window_s``, which exceeds ``burn_rate x (1 - target)`` once
    ``x > long_window_s x burn_rate x (1 - target) / error_rate``. ``inf`` when the error rate can
    never reach the threshold. (The short window, and the grid the rule is evaluated on, can only
    add to this.)
    """
    if not isinstance(rule, BurnRateRule):
        raise TypeError(f"rule must be a BurnRateRule, got {_kind(rule)}")
    _check_any_slo(slo)
    error_rate = check_probability("error_rate", error_rate, open_low=True)
    threshold = rule.burn_rate * slo.error_budget
    if error_rate <= threshold:
        return math.inf
    return rule.long_window_s * threshold / error_rate


def _steps(name: str, window_s: float, step_s: float) -> int:
    count = window_s / step_s  # at most MAX_SPAN_S / MIN_STEP_S = 1e15: exact in a float
    if abs(count - round(count)) > _MULTIPLE_TOLERANCE * max(count, 1.0) or round(count) < 1:
        raise ValueError(f"{name}={window_s!r} must be a whole multiple of step_s={step_s!r}")
    return round(count)


def _check_step(step_s: object) -> float:
    return check_range("step_s", step_s, MIN_STEP_S, MAX_SPAN_S, unit=" s")


def _check_grid(step_s: float, count: float, what: str) -> None:
    """Refuse a grid of more than ``MAX_STEPS`` steps (``count``, from ``what``) before allocating it."""
    if count > MAX_STEPS:
        raise ValueError(
            f"step_s={step_s!r} cuts {what} into {count:.4g} steps; at most {MAX_STEPS:,} are allowed, "
            f"so use a longer step_s or a shorter horizon_s"
        )


def _check_evaluation(slo: object, step_s: object, span_s: float, what: str) -> float:
    """``slo`` and ``step_s`` checked as ``evaluate_alerts`` with ``DEFAULT_RULES`` over a grid of
    ``span_s`` (``what`` names it) checks them, before any work; returns ``step_s`` as a float."""
    _check_slo(slo)
    step = _check_step(step_s)
    _check_grid(step, span_s / step, what)
    for window_s in sorted({w for rule in DEFAULT_RULES for w in (rule.short_window_s, rule.long_window_s)}):
        _steps(f"window {window_label(window_s)}", window_s, step)
    return step


def _episodes(t_s: np.ndarray, firing: np.ndarray, burn: np.ndarray, rule: BurnRateRule) -> list[dict]:
    rows = []
    edges = np.diff(np.concatenate(([0], firing.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    for start, end in zip(starts, ends, strict=True):
        cleared = float(t_s[end]) if end < len(t_s) else math.nan
        rows.append(
            {
                "rule": rule.name,
                "severity": rule.severity,
                "fired_s": float(t_s[start]),
                "cleared_s": cleared,
                "duration_s": cleared - float(t_s[start]),
                "peak_burn_rate": float(burn[start:end].max()),
            }
        )
    return rows


def evaluate_alerts(
    log: pd.DataFrame,
    slo: SLO | TokenSLO,
    rules: Sequence[BurnRateRule] = DEFAULT_RULES,
    *,
    step_s: float = 60.0,
    horizon_s: float | None = None,
    before_run: str = "clean",
    requests_per_period: float | None = None,
) -> AlertReport:
    """Burn rates, alert episodes and budget spent of a run (see the module docstring).

    ``step_s`` is the evaluation grid (every window must be a whole multiple of it); the grid runs
    from 0 to ``horizon_s`` rounded up to a whole step (default: past the last arrival). Requests that
    arrived at or after ``horizon_s`` are left out. ``requests_per_period`` sizes the budget (default:
    the judged requests scaled from the grid's span to ``slo.period_s``, i.e. traffic goes on at the
    run's mean rate).

    Bounds, checked before any work: ``step_s`` in [``MIN_STEP_S``, ``MAX_SPAN_S``] = [1e-6, 1e9] s,
    ``horizon_s`` (or, without one, the last arrival) below ``MAX_SPAN_S`` = 1e9 s, at most
    ``MAX_STEPS`` (10**7) grid steps, ``rules`` a rule or a list or tuple of at most 1000, and
    ``requests_per_period`` at least ``MIN_REQUESTS_PER_PERIOD`` (1e-6).
    """
    _check_any_slo(slo)
    step_s = _check_step(step_s)
    if horizon_s is not None:
        horizon_s = check_range("horizon_s", horizon_s, 0.0, MAX_SPAN_S, open_low=True, unit=" s")
        _check_grid(step_s, horizon_s / step_s, f"horizon_s={horizon_s!r}")
    check_in("before_run", before_run, _BEFORE_RUN)
    rules = check_items("rules", rules, BurnRateRule, max_size=1000)
    if not rules:
        raise ValueError("rules must hold at least one BurnRateRule, got none")
    names = [rule.name for rule in rules]
    if len(set(names)) != len(names):
        raise ValueError(f"rules must have unique names, got {_show(names)}")
    windows = sorted({w for rule in rules for w in (rule.short_window_s, rule.long_window_s)})
    window_steps = {w: _steps(f"window {window_label(w)}", w, step_s) for w in windows}
    if requests_per_period is not None:
        requests_per_period = check_range(
            "requests_per_period", requests_per_period, MIN_REQUESTS_PER_PERIOD, math.inf
        )

    verdict = judge_requests(log, slo)
    arrived = _numbers(log, "arrived_s")
    judged = ~verdict.isna().to_numpy()
    wrong = ~(np.isfinite(arrived) & (arrived >= 0))
    if wrong.any():
        row = int(np.flatnonzero(wrong)[0])
        raise ValueError(f"log['arrived_s'] must be finite and >= 0; row {row} holds {float(arrived[row])!r}")
    if horizon_s is None:
        last = float(arrived.max()) if len(arrived) else 0.0
        if last >= MAX_SPAN_S:
            raise ValueError(
                f"log['arrived_s'] runs to {last!r} s, and the grid (up to past the last arrival) may "
                f"span at most {MAX_SPAN_S:g} s; pass horizon_s <= {MAX_SPAN_S:g} to cut it"
            )
        _check_grid(step_s, last / step_s + 1, f"the run up to its last arrival ({last!r} s)")
        bins = max(1, math.floor(last / step_s) + 1)
    else:
        bins = max(1, math.ceil(horizon_s / step_s - _MULTIPLE_TOLERANCE))
    end_s = bins * step_s

    inside = judged & (arrived < (end_s if horizon_s is None else horizon_s))
    where = np.minimum((arrived[inside] / step_s).astype(np.int64), bins - 1)
    good_flags = verdict.to_numpy(dtype=bool, na_value=False)[inside]
    good = np.bincount(where[good_flags], minlength=bins).astype(np.float64)
    bad = np.bincount(where[~good_flags], minlength=bins).astype(np.float64)
    total_judged = float(good.sum() + bad.sum())
    if requests_per_period is None and total_judged == 0:
        before = "" if horizon_s is None else f" before horizon_s={horizon_s!r}"
        raise ValueError(
            f"no request in the log{before} could be judged, so the budget is unknown; pass "
            f"requests_per_period{'' if horizon_s is None else ' or a later horizon_s'}"
        )
    clean_per_bin = total_judged / bins if before_run == "clean" else 0.0

    cum_good = np.concatenate(([0.0], np.cumsum(good)))
    cum_bad = np.concatenate(([0.0], np.cumsum(bad)))
    index = np.arange(1, bins + 1)  # evaluation k sums bins [k - w, k)

    def burn(window_s: float) -> np.ndarray:
        w = window_steps[window_s]
        lo = np.maximum(index - w, 0)
        missing = np.maximum(w - index, 0) * clean_per_bin  # the window's part before the run
        bad_w = cum_bad[index] - cum_bad[lo]
        total_w = cum_good[index] - cum_good[lo] + bad_w + missing
        rate = np.divide(bad_w, total_w, out=np.zeros(bins), where=total_w > 0)
        return rate / slo.error_budget

    t_s = index * step_s
    timeline = pd.DataFrame({"t_s": t_s, "good": good.astype(np.int64), "bad": bad.astype(np.int64)})
    for window_s in windows:
        timeline[f"burn_rate_{window_label(window_s)}"] = burn(window_s)

    if requests_per_period is None:
        requests_per_period = total_judged * slo.period_s / end_s
    budget = slo.error_budget * requests_per_period

    episodes: list[dict] = []
    for rule in rules:
        long_burn = timeline[f"burn_rate_{window_label(rule.long_window_s)}"].to_numpy()
        short_burn = timeline[f"burn_rate_{window_label(rule.short_window_s)}"].to_numpy()
        firing = (long_burn > rule.burn_rate) & (short_burn > rule.burn_rate)
        timeline[f"firing_{rule.name}"] = firing
        episodes.extend(_episodes(t_s, firing, long_burn, rule))
    timeline["budget_consumed"] = np.cumsum(bad) / budget
    alerts = pd.DataFrame(
        episodes, columns=["rule", "severity", "fired_s", "cleared_s", "duration_s", "peak_burn_rate"]
    )
    alerts = alerts.sort_values(["fired_s", "rule"], kind="stable").reset_index(drop=True)
    return AlertReport(
        timeline=timeline,
        alerts=alerts,
        budget_consumed=float(bad.sum()) / budget,
        requests_per_period=float(requests_per_period),
        slo=slo,
        step_s=step_s,
    )


@dataclass(frozen=True, eq=False)
class QuantileAlert:
    """What ``quantile_alert`` returns: ``timeline`` (one row per grid interval ending at ``t_s``:
    ``requests`` judged in it, their ``value`` (the quantile, NaN for none) and ``firing``) and
    ``alerts`` (one row per firing episode, as ``AlertReport.alerts``, with ``peak_value``)."""

    timeline: pd.DataFrame
    alerts: pd.DataFrame
    column: str
    threshold: float
    quantile: float
    step_s: float


def quantile_alert(
    log: pd.DataFrame,
    column: str,
    threshold: float,
    *,
    quantile: float = 0.99,
    step_s: float = 60.0,
    horizon_s: float | None = None,
) -> QuantileAlert:
    """The naive alert the burn-rate rules replace: fire while the ``quantile`` of ``log[column]`` (e.g.
    ``"ttft_s"``) over the completed requests that arrived in each ``step_s`` interval exceeds
    ``threshold``; an interval without one does not fire. The grid runs from 0 to ``horizon_s``
    (default: past the last arrival), evaluated at the end of each interval, as ``evaluate_alerts``."""
    if not isinstance(column, str) or column not in getattr(log, "columns", ()):
        found = list(log.columns) if isinstance(log, pd.DataFrame) else _kind(log)
        raise ValueError(f"column must name a column of log, got {_show(column)}; log has {found}")
    check_columns(log, {c: REQUEST_LOG_COLUMNS[c] for c in ("arrived_s", "outcome")}, "log")
    threshold = check_range("threshold", threshold, 0.0, math.inf)
    quantile = check_probability("quantile", quantile, open_low=True, open_high=True)
    step_s = _check_step(step_s)
    arrived = _numbers(log, "arrived_s")
    values = _numbers(log, column)
    if horizon_s is None:
        last = float(np.nanmax(arrived)) if len(arrived) else 0.0
        horizon_s = (math.floor(last / step_s) + 1) * step_s
    horizon_s = check_range("horizon_s", horizon_s, 0.0, MAX_SPAN_S, open_low=True, unit=" s")
    bins = max(1, math.ceil(horizon_s / step_s - _MULTIPLE_TOLERANCE))
    _check_grid(step_s, bins, f"horizon_s={horizon_s!r}")
    done = (log["outcome"] == "completed").to_numpy(dtype=bool) & np.isfinite(values) & (arrived < horizon_s)
    where = (arrived[done] / step_s).astype(np.int64)
    frame = pd.DataFrame({"bin": where, "value": values[done]})
    by_bin = frame.groupby("bin")["value"]
    level = by_bin.quantile(quantile).reindex(range(bins))
    counts = by_bin.size().reindex(range(bins), fill_value=0)
    t_s = (np.arange(bins) + 1.0) * step_s
    firing = (level > threshold).to_numpy(dtype=bool)
    timeline = pd.DataFrame(
        {"t_s": t_s, "requests": counts.to_numpy(dtype=np.int64), "value": level.to_numpy(), "firing": firing}
    )
    rule = BurnRateRule("naive", "page", step_s, step_s, 1.0)
    rows = _episodes(t_s, firing, np.nan_to_num(level.to_numpy(), nan=-np.inf), rule)
    alerts = pd.DataFrame(
        rows, columns=["rule", "severity", "fired_s", "cleared_s", "duration_s", "peak_burn_rate"]
    )
    alerts = alerts.rename(columns={"peak_burn_rate": "peak_value"}).drop(columns=["rule", "severity"])
    return QuantileAlert(timeline, alerts, column, threshold, quantile, step_s)
