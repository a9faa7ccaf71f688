"""What a run means: latency percentiles, goodput at the SLO, drops, utilization, the latency budget.

Every function reads the two tables a run returns (``scaleplay.schema``): the RequestLog, one row per
request with its handoff timestamps and outcome, and the Timeline, the platform's state on a time grid.
Times are seconds; percentiles use numpy's default (linear interpolation between order statistics).

Latency counts only *completed* requests: a rejected or timed-out request has no latency, and its cost
shows up in the outcome shares and in goodput instead. Goodput is the rate of requests that completed
*within the SLO*, the number a product owner cares about; throughput that misses the SLO is not good.

The confidence-interval helpers at the end are what the validation tests use to compare a simulation
with a formula: the mean of independent replications (or of batches of one long run) plus or minus a
Student t half-width.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from ._validate import (
    _kind,
    _show,
    check_finite,
    check_int,
    check_positive,
    check_probability,
    check_real_array,
    check_seconds,
)
from .schema import OUTCOMES, REQUEST_LOG_COLUMNS, TIMELINE_COLUMNS, check_columns

__all__ = [
    "STAGES",
    "interval_widths",
    "busy_intervals",
    "latency_percentiles",
    "stage_breakdown",
    "outcome_counts",
    "outcome_shares",
    "goodput_per_s",
    "utilization",
    "mean_batch_size",
    "peak_hour_successes",
    "littles_law",
    "summarize",
    "replication_ci",
    "batch_means_ci",
]

#: The latency budget, stage by stage: name -> (from column, to column) of the RequestLog.
STAGES: dict[str, tuple[str, str]] = {
    "gateway": ("arrived_s", "admitted_s"),
    "ingestion": ("admitted_s", "features_ready_s"),
    "model_queue": ("features_ready_s", "model_start_s"),
    "model": ("model_start_s", "model_end_s"),
    "response": ("model_end_s", "responded_s"),
}


def _need(frame: object, name: str, table: dict[str, tuple[str, str]], columns: Sequence[str]) -> None:
    check_columns(frame, {c: table[c] for c in columns}, name)  # type: ignore[arg-type]


def _check_quantiles(quantiles: Sequence[float]) -> list[float]:
    if isinstance(quantiles, str) or not isinstance(quantiles, Sequence) or len(quantiles) == 0:
        raise ValueError(f"quantiles must be a non-empty sequence of numbers in (0, 1), got {quantiles!r}")
    return [
        check_probability(f"quantiles[{i}]", q, open_low=True, open_high=True)
        for i, q in enumerate(quantiles)
    ]


def _label(q: float) -> str:
    return f"p{q * 100:.10g}_s"


def _completed(log: pd.DataFrame) -> pd.DataFrame:
    return log[log["outcome"] == "completed"]


def _quantile_entries(values: np.ndarray, quantiles: list[float]) -> dict[str, float]:
    if len(values) == 0:
        return {_label(q): math.nan for q in quantiles}
    return dict(zip(map(_label, quantiles), np.quantile(values, quantiles).tolist(), strict=True))


def latency_percentiles(
    log: pd.DataFrame, quantiles: Sequence[float] = (0.5, 0.95, 0.99), by: str | None = None
) -> pd.Series | pd.DataFrame:
    """Latency quantiles of the completed requests, labelled ``p50_s``, ``p95_s``, ... (seconds).

    With ``by=None`` a Series; with ``by`` a column of the log (``"class_name"``, ``"priority"``...) a
    DataFrame with one row per value found in the log (NaN where none of them completed).
    """
    qs = _check_quantiles(quantiles)
    _need(log, "log", REQUEST_LOG_COLUMNS, ["outcome", "latency_s"])
    done = _completed(log)
    if by is None:
        return pd.Series(_quantile_entries(done["latency_s"].to_numpy(), qs), name="latency_s")
    if not isinstance(by, str):
        raise TypeError(f"by must be None or a column name (str), got {_show(by)} ({_kind(by)})")
    if by not in log.columns:
        raise ValueError(
            f"by must be None or a column of log, got {_show(by)}; columns are {list(log.columns)}"
        )
    rows = {
        key: _quantile_entries(done.loc[done[by] == key, "latency_s"].to_numpy(), qs)
        for key in sorted(log[by].unique())
    }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis(by)


def stage_breakdown(log: pd.DataFrame, quantiles: Sequence[float] = (0.5, 0.99)) -> pd.DataFrame:
    """The latency budget of the completed requests, one row per stage in ``STAGES`` order.

    Columns: ``mean_s``, one column per quantile (``p50_s``, ``p99_s``...) and ``share_of_mean``, the
    stage's share of the mean latency. The stages tile each request's life from arrival to response,
    so the means add up to the mean latency and the shares to 1. (Quantiles do not add up: the slowest
    requests at one stage are rarely the slowest at the next.)
    """
    qs = _check_quantiles(quantiles)
    _need(log, "log", REQUEST_LOG_COLUMNS, ["outcome", *{c for pair in STAGES.values() for c in pair}])
    done = _completed(log)
    rows = {}
    for stage, (start, end) in STAGES.items():
        durations = (done[end] - done[start]).to_numpy(dtype=np.float64)
        mean_s = float(durations.mean()) if len(durations) else math.nan
        rows[stage] = {"mean_s": mean_s, **_quantile_entries(durations, qs)}
    table = pd.DataFrame.from_dict(rows, orient="index").rename_axis("stage")
    table["share_of_mean"] = table["mean_s"] / table["mean_s"].sum()
    return table


def outcome_counts(log: pd.DataFrame) -> pd.Series:
    """Requests per outcome, one entry for each of ``schema.OUTCOMES``; they add up to the log's rows.

    An outcome outside ``OUTCOMES`` (or a missing one) is an error, not a silently dropped row.
    """
    _need(log, "log", REQUEST_LOG_COLUMNS, ["outcome"])
    known = log["outcome"].isin(OUTCOMES)
    if not known.all():
        strays = sorted(map(repr, log.loc[~known, "outcome"].unique()))
        raise ValueError(f"log['outcome'] must be one of {OUTCOMES}; found {', '.join(strays)}")
    counts = log["outcome"].value_counts().reindex(list(OUTCOMES), fill_value=0).astype(np.int64)
    counts.index.name = "outcome"
    return counts.rename("requests")


def outcome_shares(log: pd.DataFrame) -> pd.Series:
    """The share of arrived requests per outcome (NaN for an empty log)."""
    counts = outcome_counts(log)
    total = int(counts.sum())
    return (counts / total if total else counts * math.nan).rename("share")


def goodput_per_s(log: pd.DataFrame, slo_s: float, start_s: float, end_s: float) -> float:
    """Requests that arrived in ``[start_s, end_s)`` and completed within ``slo_s``, per second.

    Requests are counted by their *arrival* time, so a window that covers the arrivals counts each
    request once, whatever happened to the backlog after it.
    """
    slo_s = check_positive("slo_s", slo_s)
    window_s = _window("start_s", start_s, "end_s", end_s)
    _need(log, "log", REQUEST_LOG_COLUMNS, ["arrived_s", "outcome", "latency_s"])
    inside = (log["arrived_s"] >= start_s) & (log["arrived_s"] < end_s)
    return int((inside & _good(log, slo_s)).sum()) / window_s


def _token_times(frame: object) -> tuple[np.ndarray, np.ndarray]:
    """The ``ttft_s`` and ``tpot_s`` columns of ``frame`` (a table with one row per answered request)."""
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"requests must be a DataFrame with ttft_s and tpot_s columns, got {_kind(frame)}")
    missing = [c for c in ("ttft_s", "tpot_s") if c not in frame.columns]
    if missing:
        raise ValueError(f"requests lacks the columns {missing}; it has {list(frame.columns)}")
    ttft, tpot = (check_real_array(name, frame[name].to_numpy()) for name in ("ttft_s", "tpot_s"))
    return ttft, tpot


def token_latency_percentiles(
    requests: pd.DataFrame, quantiles: Sequence[float] = (0.5, 0.9, 0.99)
) -> pd.DataFrame:
    """Percentiles of time to first token and time per output token (after the first), one row each.

    ``requests`` holds one row per answered request with ``ttft_s`` and ``tpot_s`` (as a serving
    engine's measurements do, ``measured.load_vllm_measurements``); the columns are ``p50_s``, ... .
    """
    qs = _check_quantiles(quantiles)
    ttft, tpot = _token_times(requests)
    return pd.DataFrame(
        {
            name: _quantile_entries(values[~np.isnan(values)], qs)
            for name, values in (("ttft", ttft), ("tpot", tpot))
        }
    ).T


def joint_slo_attainment(requests: pd.DataFrame, ttft_slo_s: float, tpot_slo_s: float) -> float:
    """The share of requests whose TTFT *and* TPOT both meet their SLO (DistServe's attainment); a
    request missing either measurement misses. NaN for no request."""
    ttft_slo_s = check_positive("ttft_slo_s", ttft_slo_s)
    tpot_slo_s = check_positive("tpot_slo_s", tpot_slo_s)
    ttft, tpot = _token_times(requests)
    return float(np.mean((ttft <= ttft_slo_s) & (tpot <= tpot_slo_s))) if len(ttft) else math.nan


def _window(start_name: str, start_s: float, end_name: str, end_s: float) -> float:
    start = check_finite(start_name, start_s)
    end = check_finite(end_name, end_s)
    if end <= start:
        raise ValueError(f"{end_name} must be > {start_name}={start_s!r}, got {end_s!r}")
    width = end - start
    # A rate per second of the window: the window must be long enough for counts over it to stay finite.
    if not (math.isfinite(width) and width >= 1e-9):
        raise ValueError(
            f"{end_name} - {start_name} must be finite and at least 1e-9 s, got {end_s!r} - {start_s!r}"
        )
    return width


def _good(log: pd.DataFrame, slo_s: float) -> pd.Series:
    return (log["outcome"] == "completed") & (log["latency_s"] <= slo_s)


def utilization(timeline: pd.DataFrame, *, horizon_s: float | None = None) -> float:
    """Busy replica-seconds over provisioned replica-seconds (NaN if nothing was provisioned).

    ``horizon_s`` is where the last interval ends (``SimulationResult.horizon_s``: the platform's last
    interval may be shorter than the others); without it the last interval is as long as the others.
    """
    _need(timeline, "timeline", TIMELINE_COLUMNS, ["busy_replicas", "replicas"])
    widths = interval_widths(timeline, horizon_s)
    provisioned = float(np.dot(timeline["replicas"].to_numpy(dtype=np.float64), widths))
    busy = float(np.dot(timeline["busy_replicas"].to_numpy(dtype=np.float64), widths))
    return busy / provisioned if provisioned > 0 else math.nan


def mean_batch_size(table: pd.DataFrame) -> float:
    """Mean size of the batches a run served, from a RequestLog or (approximately) a Timeline.

    From a log it is exact: a batch of ``b`` requests appears as ``b`` rows that each say ``b``, so the
    number of batches is the sum of ``1/b`` over the served rows. A timeline only holds each interval's
    mean, so the result is the plain mean over the intervals that started a batch. NaN if none did.
    """
    if isinstance(table, pd.DataFrame) and "batch_size" in table.columns:
        sizes = table["batch_size"].to_numpy(dtype=np.float64)
        sizes = sizes[sizes > 0]
        return float(len(sizes) / np.sum(1.0 / sizes)) if len(sizes) else math.nan
    if isinstance(table, pd.DataFrame) and "mean_batch_size" in table.columns:
        means = table["mean_batch_size"].dropna()
        return float(means.mean()) if len(means) else math.nan
    raise ValueError(
        "table must be a RequestLog (with a 'batch_size' column) or a Timeline (with 'mean_batch_size')"
    )


def peak_hour_successes(log: pd.DataFrame, slo_s: float, window_s: float = 3600.0) -> pd.Series:
    """Successful requests at the SLO during the busiest hour.

    The busiest hour is the ``window_s``-long window ``[start_s, start_s + window_s)`` holding the most
    arrivals (the earliest such window on ties). Among the requests that arrived in it, ``successes``
    counts those completed within ``slo_s``. In a run shorter than ``window_s`` the window holds every
    arrival: the figures are for the whole run, not scaled up to an hour.

    Returns ``start_s``, ``end_s``, ``arrivals`` and ``successes``.
    """
    slo_s = check_positive("slo_s", slo_s)
    window_s = check_positive("window_s", window_s)
    _need(log, "log", REQUEST_LOG_COLUMNS, ["arrived_s", "outcome", "latency_s"])
    order = np.argsort(log["arrived_s"].to_numpy(), kind="stable")
    arrived = log["arrived_s"].to_numpy()[order]
    if len(arrived) == 0:
        return pd.Series({"start_s": math.nan, "end_s": math.nan, "arrivals": 0.0, "successes": 0.0})
    # A busiest window can always be slid right until it starts at an arrival.
    ends = np.searchsorted(arrived, arrived + window_s, side="left")
    first = int(np.argmax(ends - np.arange(len(arrived))))
    good = _good(log, slo_s).to_numpy()[order]
    return pd.Series(
        {
            "start_s": float(arrived[first]),
            "end_s": float(arrived[first] + window_s),
            "arrivals": float(ends[first] - first),
            "successes": float(good[first : ends[first]].sum()),
        },
        name="peak_window",
    )


def interval_widths(timeline: pd.DataFrame, horizon_s: float | None) -> np.ndarray:
    """Length of each timeline interval: up to the next ``t_s``, the last one up to ``horizon_s``."""
    _need(timeline, "timeline", TIMELINE_COLUMNS, ["t_s"])
    t = timeline["t_s"].to_numpy(dtype=np.float64)
    if horizon_s is None:
        if len(t) < 2:
            raise ValueError(
                f"timeline needs at least 2 rows to know its interval, got {len(t)}; or pass horizon_s"
            )
        end_s = float(t[-1] + np.median(np.diff(t)))
    else:
        end_s = check_seconds("horizon_s", horizon_s)
        if len(t) == 0 or end_s <= t[-1]:
            raise ValueError(
                f"horizon_s must be after the timeline's last interval start "
                f"{float(t[-1]) if len(t) else None!r}, got {horizon_s!r}"
            )
    return np.diff(np.append(t, end_s))


def busy_intervals(batches: pd.DataFrame, horizon_s: float) -> pd.DataFrame:
    """When each replica was busy: its batches (``SimulationResult.batches``) merged, so that
    overlapping slots count once, and cut at ``horizon_s``. Columns ``pool``, ``replica``,
    ``start_s``, ``end_s``."""
    if not isinstance(batches, pd.DataFrame):
        raise TypeError(f"batches must be a DataFrame (SimulationResult.batches), got {_kind(batches)}")
    missing = [c for c in ("pool", "replica", "start_s", "end_s") if c not in batches.columns]
    if missing:
        raise ValueError(f"batches lacks the columns {missing}; it has {list(batches.columns)}")
    horizon_s = check_finite("horizon_s", horizon_s)
    parts = []
    for (pool, replica), group in batches.groupby(["pool", "replica"], sort=False):
        s = group["start_s"].to_numpy(dtype=np.float64)
        order = np.argsort(s, kind="stable")
        s = s[order]
        e = np.maximum.accumulate(np.minimum(group["end_s"].to_numpy(dtype=np.float64)[order], horizon_s))
        opens = np.concatenate(([True], s[1:] > e[:-1]))
        closes = np.concatenate((opens[1:], [True]))
        merged = {"start_s": s[opens], "end_s": e[closes]}
        parts.append(pd.DataFrame({"pool": pool, "replica": replica, **merged}))
    if not parts:
        return pd.DataFrame({"pool": [], "replica": [], "start_s": [], "end_s": []})
    return pd.concat(parts, ignore_index=True)


def littles_law(
    log: pd.DataFrame,
    timeline: pd.DataFrame,
    *,
    timeout_s: float | None = None,
    horizon_s: float | None = None,
) -> pd.Series:
    """Little's law on the lines for a replica: ``L`` from the timeline against ``lambda * W`` from the log.

    ``L`` is the time-average ``queue_length`` of the timeline; ``lambda`` the rate at which requests
    joined a line (``features_ready_s`` inside the timeline's window, which ends at ``horizon_s``, see
    ``utilization``); ``W`` their mean time in it: until ``model_start_s``, or until their deadline
    ``arrived_s + timeout_s`` for those that timed out waiting (the log does not hold the deadline, so
    ``timeout_s`` is required when there are any), or until the window's end for those still waiting.
    With a cascade an escalated request joins a second line, the large model's, at ``escalated_s``
    and leaves it at ``large_start_s``: that wait counts too, as the Timeline counts it. Over a run
    that ends with every request settled the two agree exactly; a large ``relative_gap`` flags a log
    and a timeline that disagree.
    """
    if timeout_s is not None:
        timeout_s = check_positive("timeout_s", timeout_s)
    _need(timeline, "timeline", TIMELINE_COLUMNS, ["t_s", "queue_length"])
    _need(log, "log", REQUEST_LOG_COLUMNS, ["arrived_s", "features_ready_s", "model_start_s", "outcome"])
    widths = interval_widths(timeline, horizon_s)
    start_s = float(timeline["t_s"].iloc[0])
    end_s = start_s + float(widths.sum())
    ready = log["features_ready_s"]
    entered = log[(ready >= start_s) & (ready < end_s)]
    left_s = entered["model_start_s"].to_numpy(dtype=np.float64).copy()
    timed_out = (entered["outcome"] == "timed_out").to_numpy()
    if timed_out.any():
        if timeout_s is None:
            raise ValueError(
                f"timeout_s is needed: {int(timed_out.sum())} requests timed out in a line, "
                "and the log does not say when"
            )
        left_s[timed_out] = entered["arrived_s"].to_numpy()[timed_out] + timeout_s
    left_s = np.where(np.isnan(left_s), end_s, left_s)
    waits = left_s - entered["features_ready_s"].to_numpy(dtype=np.float64)
    if "escalated_s" in log.columns and "large_start_s" in log.columns:
        # With a cascade an escalated request waits a second time, for the large model.
        escalated = log["escalated_s"].to_numpy(dtype=np.float64)
        again = (escalated >= start_s) & (escalated < end_s)
        second_left_s = log["large_start_s"].to_numpy(dtype=np.float64)[again]
        second_left_s = np.where(np.isnan(second_left_s), end_s, second_left_s)
        waits = np.concatenate((waits, second_left_s - escalated[again]))
    mean_queue = float(np.dot(timeline["queue_length"].to_numpy(dtype=np.float64), widths) / widths.sum())
    rate_per_s = len(waits) / (end_s - start_s)
    mean_wait_s = float(waits.mean()) if len(waits) else math.nan
    lambda_w = rate_per_s * mean_wait_s if len(waits) else 0.0
    return pd.Series(
        {
            "queue_length": mean_queue,
            "arrival_rate_per_s": rate_per_s,
            "mean_wait_s": mean_wait_s,
            "lambda_w": lambda_w,
            "relative_gap": (mean_queue - lambda_w) / lambda_w if lambda_w > 0 else math.nan,
        },
        name="littles_law",
    )


def summarize(
    log: pd.DataFrame, timeline: pd.DataFrame, slo_s: float, *, horizon_s: float | None = None
) -> pd.Series:
    """The headline numbers of one run, each named with its unit.

    ``requests``, ``completed``, ``p50_s``, ``p95_s``, ``p99_s``, ``mean_latency_s``,
    ``throughput_per_s`` (completions per second), ``goodput_per_s`` (arrivals completed within
    ``slo_s`` per second), ``slo_attainment`` (share of arrivals completed within ``slo_s``), the
    share of each outcome (``completed_share``, ``rejected_share``, ``timed_out_share``,
    ``in_flight_share``), ``utilization`` and ``mean_batch_size``. Rates are per second of the
    timeline's window, which ends at ``horizon_s`` (see ``utilization``).
    """
    slo_s = check_positive("slo_s", slo_s)
    widths = interval_widths(timeline, horizon_s)
    start_s = float(timeline["t_s"].iloc[0])
    end_s = start_s + float(widths.sum())
    counts = outcome_counts(log)
    shares = outcome_shares(log)
    done = _completed(log)
    requests = int(counts.sum())
    good = int(_good(log, slo_s).sum())
    out = {
        "requests": float(requests),
        "completed": float(counts["completed"]),
        **latency_percentiles(log).to_dict(),
        "mean_latency_s": float(done["latency_s"].mean()) if len(done) else math.nan,
        "throughput_per_s": float(counts["completed"]) / (end_s - start_s),
        "goodput_per_s": goodput_per_s(log, slo_s, start_s, end_s),
        "slo_attainment": good / requests if requests else math.nan,
        **{f"{outcome}_share": float(shares[outcome]) for outcome in OUTCOMES},
        "utilization": utilization(timeline, horizon_s=horizon_s),
        "mean_batch_size": mean_batch_size(log),
    }
    return pd.Series(out, name="summary")


# ---------------------------------------------------------------- confidence intervals


def _t_critical(confidence: float, df: int) -> float:
    """The ``t`` with ``P(|T| < t) = confidence`` for Student's t with ``df`` degrees of freedom."""
    return float(stats.t.isf((1.0 - confidence) / 2.0, df))


def _finite_vector(name: str, values: object) -> np.ndarray:
    """``values`` as a 1-D float array of finite real numbers (no strings, bools or ragged nests)."""
    out = check_real_array(name, values)
    if out.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {out.shape}")
    if not np.isfinite(out).all():
        raise ValueError(f"{name} must be finite; entry {int(np.argmin(np.isfinite(out)))} is not")
    return out


def replication_ci(values: object, confidence: float = 0.95) -> tuple[float, float]:
    """``(mean, half_width)`` of a Student t confidence interval from independent replications."""
    confidence = check_probability("confidence", confidence, open_low=True, open_high=True)
    x = _finite_vector("values", values)
    if len(x) < 2:
        raise ValueError(f"values needs at least 2 replications for a confidence interval, got {len(x)}")
    with np.errstate(over="ignore", invalid="ignore"):
        mean, spread = float(x.mean()), float(x.std(ddof=1))
    half_width = _t_critical(confidence, len(x) - 1) * spread / math.sqrt(len(x))
    if not (math.isfinite(mean) and math.isfinite(half_width)):
        raise ValueError(
            f"values are too large for their mean and spread to fit a float, got {_show(values)}"
        )
    return mean, half_width


def batch_means_ci(values: object, batches: int = 20, confidence: float = 0.95) -> tuple[float, float]:
    """``(mean, half_width)`` from one long run split into ``batches`` consecutive batches.

    The batch means are nearly independent when each batch is much longer than the run's memory (the
    relaxation time of the queue); ``values`` go in time order. When ``len(values)`` is not a multiple
    of ``batches`` the remainder is dropped from the *start*, the part nearest the warm-up.
    """
    batches = check_int("batches", batches, minimum=2)
    x = _finite_vector("values", values)
    if len(x) < batches:
        raise ValueError(f"values needs at least batches={batches} entries, got {len(x)}")
    size = len(x) // batches
    means = x[len(x) - size * batches :].reshape(batches, size).mean(axis=1)
    return replication_ci(means, confidence)
