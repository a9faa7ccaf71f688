"""What a run means: latency percentiles, goodput at the SLO, drops, utilization, the latency budget.

Every function reads the two tables a run returns (``scaleplay.schema``): the RequestLog, one row per
request with its handoff timestamps and outcome, and the Timeline, the platform's state on a time grid.
Times are seconds; percentiles use numpy's default (linear interpolation between order statistics).

Latency counts only *completed* requests: a rejected or timed-out request has no latency, and its cost
shows up in the outcome shares and in goodput instead. Goodput is the rate of requests that completed
*within the SLO*, the number a product owner cares about; throughput that misses the SLO is not good.

With continuous batching (``sim.continuous``) a run also measures tokens: the RequestLog's
``ttft_s`` and ``tpot_s`` (``token_latency_percentiles``, ``token_goodput_per_s``), the record of
iterations (``inter_token_latency_percentiles``) and the engine's state per pool over time
(``engine_timeline``).

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
from .schema import (
    CONTROL_LOG_COLUMNS,
    ENGINE_LOG_COLUMNS,
    ENGINE_POOL_TIMELINE_COLUMNS,
    ITERATION_COLUMNS,
    OUTCOMES,
    REGION_LOG_COLUMNS,
    REQUEST_LOG_COLUMNS,
    TIMELINE_COLUMNS,
    check_columns,
)
from .sim.output import SimulationResult, engine_levels, interval_count, time_in_bins

__all__ = [
    "STAGES",
    "interval_widths",
    "busy_intervals",
    "latency_percentiles",
    "stage_breakdown",
    "TTFT_STAGES",
    "ttft_breakdown",
    "outcome_counts",
    "outcome_shares",
    "goodput_per_s",
    "token_latency_percentiles",
    "joint_slo_attainment",
    "token_slo_met",
    "token_goodput_per_s",
    "inter_token_latency_percentiles",
    "engine_timeline",
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
    _check_by(log, by, "log")
    rows = {
        key: _quantile_entries(done.loc[done[by] == key, "latency_s"].to_numpy(), qs)
        for key in sorted(log[by].unique())
    }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis(by)


def _check_by(frame: pd.DataFrame, by: object, name: str) -> None:
    if not isinstance(by, str):
        raise TypeError(f"by must be None or a column name (str), got {_show(by)} ({_kind(by)})")
    if by not in frame.columns:
        raise ValueError(
            f"by must be None or a column of {name}, got {_show(by)}; columns are {list(frame.columns)}"
        )


def stage_breakdown(log: pd.DataFrame, quantiles: Sequence[float] = (0.5, 0.99)) -> pd.DataFrame:
    """The latency budget of the completed requests, one row per stage in ``STAGES`` order.

    Columns: ``mean_s``, one column per quantile (``p50_s``, ``p99_s``...) and ``share_of_mean``, the
    stage's share of the mean latency. The stages tile each request's life from arrival to response,
    so the means add up to the mean latency and the shares to 1. (Quantiles do not add up: the slowest
    requests at one stage are rarely the slowest at the next.)
    """
    qs = _check_quantiles(quantiles)
    _need(log, "log", REQUEST_LOG_COLUMNS, ["outcome", *{c for pair in STAGES.values() for c in pair}])
    return _stage_table(_completed(log), STAGES, qs)


def _stage_table(log: pd.DataFrame, stages: dict[str, tuple[str, str]], qs: list[float]) -> pd.DataFrame:
    """Each stage's mean, quantiles and share of the summed means over the rows of ``log``."""
    rows = {}
    for stage, (start, end) in stages.items():
        durations = (log[end] - log[start]).to_numpy(dtype=np.float64)
        mean_s = float(durations.mean()) if len(durations) else math.nan
        rows[stage] = {"mean_s": mean_s, **_quantile_entries(durations, qs)}
    table = pd.DataFrame.from_dict(rows, orient="index").rename_axis("stage")
    table["share_of_mean"] = table["mean_s"] / table["mean_s"].sum()
    return table


#: The time to first token, stage by stage: name -> (from column, to column). The first token leaves
#: the model at ``first_token_s`` and takes the answer's way back (``model_end_s`` to ``responded_s``),
#: so the stages add up to ``ttft_s``; decoding (``first_token_s`` to ``model_end_s``) is not in it.
TTFT_STAGES: dict[str, tuple[str, str]] = {
    "gateway": ("arrived_s", "admitted_s"),
    "ingestion": ("admitted_s", "features_ready_s"),
    "queue": ("features_ready_s", "model_start_s"),
    "prefill": ("model_start_s", "first_token_s"),
    "return_hop": ("model_end_s", "responded_s"),
}


def ttft_breakdown(log: pd.DataFrame, quantiles: Sequence[float] = (0.5, 0.99)) -> pd.DataFrame:
    """The time to first token's budget, one row per stage in ``TTFT_STAGES`` order, over the requests
    with a TTFT of their own (``ttft_s`` not NaN: completed answers of a continuous-batching pool).

    Columns as ``stage_breakdown``'s: ``mean_s``, one per quantile (``p50_s``, ``p99_s``...) and
    ``share_of_mean``. The means add up to the mean TTFT; the quantiles do not (their sum overstates
    the TTFT's quantile: one request is rarely slowest at every stage).
    """
    qs = _check_quantiles(quantiles)
    columns = {c for pair in TTFT_STAGES.values() for c in pair if c in REQUEST_LOG_COLUMNS}
    _need(log, "log", REQUEST_LOG_COLUMNS, sorted(columns))
    _need(log, "log", ENGINE_LOG_COLUMNS, ["first_token_s", "ttft_s"])
    ttft = check_real_array("log['ttft_s']", log["ttft_s"].to_numpy())
    return _stage_table(log[~np.isnan(ttft)], TTFT_STAGES, qs)


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
    requests: pd.DataFrame, quantiles: Sequence[float] = (0.5, 0.9, 0.99), by: str | None = None
) -> pd.DataFrame:
    """Percentiles of time to first token and time per output token (after the first), one row each.

    ``requests`` holds one row per answered request with ``ttft_s`` and ``tpot_s`` (as a serving
    engine's measurements do, ``measured.load_vllm_measurements``), or is a RequestLog of a platform
    with continuous batching (``schema.ENGINE_LOG_COLUMNS``: NaN, so left out, unless completed); the
    columns are ``p50_s``, ... . With ``by`` a column (``"class_name"``, ``"priority"``...) the rows are
    indexed by (value, ``"ttft"`` or ``"tpot"``), one pair per value found (NaN where none has one).
    """
    qs = _check_quantiles(quantiles)
    ttft, tpot = _token_times(requests)

    def table(rows: np.ndarray | slice) -> pd.DataFrame:
        return pd.DataFrame(
            {
                name: _quantile_entries(values[rows][~np.isnan(values[rows])], qs)
                for name, values in (("ttft", ttft), ("tpot", tpot))
            }
        ).T

    if by is None:
        return table(slice(None))
    _check_by(requests, by, "requests")
    keys = requests[by].to_numpy()
    parts = {key: table(keys == key) for key in sorted(pd.unique(keys))}
    if not parts:
        index = pd.MultiIndex.from_arrays([[], []], names=[by, "measure"])
        return pd.DataFrame(columns=[_label(q) for q in qs], index=index, dtype=np.float64)
    return pd.concat(parts, names=[by, "measure"])


def joint_slo_attainment(requests: pd.DataFrame, ttft_slo_s: float, tpot_slo_s: float) -> float:
    """The share of requests whose TTFT *and* TPOT both meet their SLO (DistServe's attainment); a
    request missing either measurement misses. NaN for no request."""
    ttft_slo_s = check_positive("ttft_slo_s", ttft_slo_s)
    tpot_slo_s = check_positive("tpot_slo_s", tpot_slo_s)
    ttft, tpot = _token_times(requests)
    return float(np.mean((ttft <= ttft_slo_s) & (tpot <= tpot_slo_s))) if len(ttft) else math.nan


def token_goodput_per_s(
    log: pd.DataFrame, ttft_slo_s: float, tpot_slo_s: float, start_s: float, end_s: float
) -> float:
    """Requests that arrived in ``[start_s, end_s)`` and completed with their TTFT within
    ``ttft_slo_s`` and their TPOT within ``tpot_slo_s``, per second (DistServe's goodput).

    ``log`` is a RequestLog of a platform with continuous batching (``schema.ENGINE_LOG_COLUMNS``).
    Requests are counted by arrival, as ``goodput_per_s`` counts them. A request of one output token
    has no TPOT and meets that SLO; a completed request without its own TTFT (``ttft_s`` NaN: a static
    pool or the cache answered it) meets neither.
    """
    check_positive("ttft_slo_s", ttft_slo_s)
    check_positive("tpot_slo_s", tpot_slo_s)
    window_s = _window("start_s", start_s, "end_s", end_s)
    _need(log, "log", REQUEST_LOG_COLUMNS, ["arrived_s"])
    good = token_slo_met(log, ttft_slo_s, tpot_slo_s)
    arrived = log["arrived_s"].to_numpy(dtype=np.float64)
    return int((good & (arrived >= start_s) & (arrived < end_s)).sum()) / window_s


def token_slo_met(log: pd.DataFrame, ttft_slo_s: float, tpot_slo_s: float) -> np.ndarray:
    """Per request of ``log``: completed with its TTFT within ``ttft_slo_s`` and its TPOT within
    ``tpot_slo_s`` (a one-token answer has no TPOT and meets that SLO; a NaN TTFT meets neither)."""
    ttft_slo_s = check_positive("ttft_slo_s", ttft_slo_s)
    tpot_slo_s = check_positive("tpot_slo_s", tpot_slo_s)
    _need(log, "log", REQUEST_LOG_COLUMNS, ["outcome", "tokens_out"])
    _need(log, "log", ENGINE_LOG_COLUMNS, ["ttft_s", "tpot_s"])
    ttft = log["ttft_s"].to_numpy(dtype=np.float64)
    tpot = log["tpot_s"].to_numpy(dtype=np.float64)
    one_token = log["tokens_out"].to_numpy() <= 1
    completed = (log["outcome"] == "completed").to_numpy()
    return completed & (ttft <= ttft_slo_s) & ((tpot <= tpot_slo_s) | one_token)


def _weighted_quantiles(values: np.ndarray, counts: np.ndarray, quantiles: list[float]) -> dict[str, float]:
    """``np.quantile(np.repeat(values, counts), quantiles)`` (linear interpolation), without the repeat."""
    keep = counts > 0
    values, counts = values[keep], counts[keep]
    if len(values) == 0:
        return {_label(q): math.nan for q in quantiles}
    order = np.argsort(values, kind="stable")
    values, ends = values[order], np.cumsum(counts[order])  # order statistics ends[k-1] .. ends[k]-1
    total = int(ends[-1])
    out = {}
    for q in quantiles:
        position = (total - 1) * q
        low = math.floor(position)
        below = values[np.searchsorted(ends, low, side="right")]
        above = values[np.searchsorted(ends, min(low + 1, total - 1), side="right")]
        out[_label(q)] = float(below + (above - below) * (position - low))
    return out


def inter_token_latency_percentiles(
    iterations: pd.DataFrame, batches: pd.DataFrame, quantiles: Sequence[float] = (0.5, 0.9, 0.99)
) -> pd.Series:
    """Percentiles of the time between two tokens of a sequence (after its first), from a run's record
    of iterations (``SimulationResult.iterations``) and of batches (``SimulationResult.batches``).

    Each decode iteration gives every decoding sequence one token: a run of ``steps`` iterations
    lasting ``d`` seconds gives ``steps x decode_seqs`` tokens, each taken as waiting ``d / steps``
    (the iterations of a run are taken as equally long; the context grows through it, so the later
    ones are a little longer). Prefill iterations without decodes (``"prefill_first"``) stall the
    sequences already decoding: their time is added to the first token of the next run for the
    sequences decoding before them that did not finish at the previous run's end (from the batch
    record), at most the next run's ``decode_seqs``. Not counted: a sequence prefilled in one of
    several such iterations in a row waits through the later ones, and a preempted sequence's wait
    to recompute. The percentiles weigh every token alike; labels ``p50_s``, ... .
    """
    qs = _check_quantiles(quantiles)
    _need(iterations, "iterations", ITERATION_COLUMNS, ["pool", "replica", "start_s", "end_s", "steps"])
    _need(iterations, "iterations", ITERATION_COLUMNS, ["decode_seqs"])
    if not isinstance(batches, pd.DataFrame):
        raise TypeError(f"batches must be a DataFrame (SimulationResult.batches), got {_kind(batches)}")
    missing = [c for c in ("pool", "replica", "end_s") if c not in batches.columns]
    if missing:
        raise ValueError(f"batches lacks the columns {missing}; it has {list(batches.columns)}")
    runs = iterations.sort_values(["pool", "replica", "start_s"], kind="stable").reset_index(drop=True)
    start = runs["start_s"].to_numpy(dtype=np.float64)
    end = runs["end_s"].to_numpy(dtype=np.float64)
    steps = runs["steps"].to_numpy(dtype=np.int64)
    decode = runs["decode_seqs"].to_numpy(dtype=np.int64)
    if (steps < 0).any() or (decode < 0).any() or not (end >= start).all():
        raise ValueError("iterations must hold steps >= 0, decode_seqs >= 0 and end_s >= start_s in each row")
    if len(runs) == 0:
        return pd.Series({_label(q): math.nan for q in qs}, name="inter_token_latency_s")
    # Sequences that left at each run's end: the batch rows of its replica ending then.
    ended = batches.groupby(["pool", "replica", "end_s"], sort=False).size().rename("ended")
    finished = runs.join(ended, on=["pool", "replica", "end_s"])["ended"].fillna(0).to_numpy(dtype=np.int64)
    n = len(runs)
    same_replica = np.zeros(n, dtype=bool)
    if n > 1:
        same_replica[1:] = (runs["pool"].to_numpy()[1:] == runs["pool"].to_numpy()[:-1]) & (
            runs["replica"].to_numpy()[1:] == runs["replica"].to_numpy()[:-1]
        )
    # A stretch: the replica's runs back to back (an idle gap means nothing was decoding).
    joined = same_replica & np.append(False, start[1:] <= end[:-1])
    stretch = np.cumsum(~joined)
    decoding = steps > 0
    previous = np.append(-1, np.maximum.accumulate(np.where(decoding, np.arange(n), -1))[:-1])
    block = np.cumsum(decoding)  # prefill-only runs after decode run k share its block number
    stall_s = np.bincount(block[~decoding], weights=(end - start)[~decoding], minlength=n + 1)
    carried = np.maximum(decode - finished, 0)
    stalled = np.where(
        decoding & (previous >= 0) & (stretch[np.maximum(previous, 0)] == stretch),
        np.minimum(carried[np.maximum(previous, 0)], decode),
        0,
    )
    stalled_extra = np.where(decoding, stall_s[np.maximum(block - 1, 0)], 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        each_s = np.where(decoding, (end - start) / steps, 0.0)
    values = np.concatenate((each_s, each_s + stalled_extra))
    counts = np.concatenate((np.where(decoding, steps * decode - stalled, 0), stalled))
    return pd.Series(_weighted_quantiles(values, counts, qs), name="inter_token_latency_s")


def engine_timeline(result: SimulationResult, step_s: float = 1.0) -> pd.DataFrame:
    """The continuous-batching engine per pool over time: one row per continuous pool and interval of
    ``step_s`` (``schema.ENGINE_POOL_TIMELINE_COLUMNS``; the last interval ends at the horizon).

    ``kv_cache_utilization``, ``running_seqs`` and ``preemptions`` are the Timeline's
    ``ENGINE_TIMELINE_COLUMNS`` computed for each pool's replicas alone. ``waiting_seqs`` is the
    Timeline's ``queue_length`` split by pool, from the RequestLog (so it needs the full log, not
    ``log_columns="narrow"``): a request waits in the line of the pool it first joins from
    ``features_ready_s`` until ``model_start_s`` (its deadline if it timed out, the horizon if it
    still waits; a ``"too_long"`` request not at all); with a cascade it first joins the small model's
    line, and an escalated request waits again in the large model's from ``escalated_s`` until
    ``large_start_s``; with regions the pools are those of the request's ``region``. When every pool
    batches continuously, ``waiting_seqs`` summed over the pools is the Timeline's ``queue_length``.
    """
    if not isinstance(result, SimulationResult):
        raise TypeError(f"result must be a SimulationResult (what simulate returns), got {_kind(result)}")
    step_s = check_seconds("step_s", step_s, positive=True)
    if result.iterations is None or result.kv_capacity_tokens is None:
        raise ValueError("result has no record of iterations; it must come from simulate")
    columns = list(ENGINE_POOL_TIMELINE_COLUMNS)
    capacity = result.kv_capacity_tokens
    log, horizon_s = result.log, result.horizon_s
    bins = max(interval_count(horizon_s, step_s), 1 if len(log) else 0)
    if not capacity or bins == 0:
        return pd.DataFrame(
            {name: np.empty(0, dtype=dtype) for name, (dtype, _) in ENGINE_POOL_TIMELINE_COLUMNS.items()}
        )
    needed = ["arrived_s", "features_ready_s", "model_start_s", "outcome", "reject_reason"]
    _need(log, "result.log", REQUEST_LOG_COLUMNS, needed)
    starts = np.arange(bins) * step_s
    edges = np.minimum(np.append(starts[1:], horizon_s), horizon_s)
    widths = edges - starts
    waits = _pool_waits(result)
    iterations, preemptions, provisioning = result.iterations, result.preemptions, result.provisioning
    parts = []
    for pool, tokens in capacity.items():
        lives = provisioning[provisioning["pool"] == pool]
        levels = engine_levels(
            iterations[iterations["pool"] == pool],
            preemptions.loc[preemptions["pool"] == pool, "t_s"].to_numpy(dtype=np.float64),
            lives,
            np.full(len(lives), float(tokens)),
            starts,
            edges,
        )
        waited_from, waited_to = waits.get(pool, (np.empty(0), np.empty(0)))
        waiting_s = time_in_bins(waited_from, np.minimum(waited_to, horizon_s), starts, edges)
        levels["waiting_seqs"] = np.divide(waiting_s, widths, out=np.zeros(bins), where=widths > 0)
        parts.append(pd.DataFrame({"pool": np.full(bins, pool, dtype=object), "t_s": starts, **levels}))
    return pd.concat(parts, ignore_index=True)[columns]


def _pool_waits(result: SimulationResult) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each pool's waits in its line (joined, left), read from the RequestLog as the Timeline does."""
    log, config, horizon_s = result.log, result.config, result.horizon_s
    ready = log["features_ready_s"].to_numpy(dtype=np.float64)
    left = log["model_start_s"].to_numpy(dtype=np.float64).copy()
    timeout_s = config.gateway.timeout_s
    timed_out = (log["outcome"] == "timed_out").to_numpy()
    if timeout_s is not None:
        left = np.where(timed_out, log["arrived_s"].to_numpy(dtype=np.float64) + timeout_s, left)
    left = np.where((log["reject_reason"] == "too_long").to_numpy(), ready, left)
    left = np.where(np.isnan(left), horizon_s, left)
    # The pools' names, as the engine gives them: the region's (or the pool's) and '<region>/<small>'.
    if config.regions is not None:
        _need(log, "result.log", REGION_LOG_COLUMNS, ["region"])
        large = log["region"].to_numpy(dtype=object)
    else:
        large = np.full(len(log), config.pool.name, dtype=object)
    first = large
    if config.cascade is not None:
        small = config.cascade.small.name
        first = np.full(len(log), small, dtype=object)
        if config.regions is not None:
            first = np.array([f"{region}/{small}" for region in large], dtype=object)
    waits: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    in_line = ~np.isnan(ready)
    for pool in pd.unique(first[in_line]):
        rows = in_line & (first == pool)
        waits.setdefault(pool, []).append((ready[rows], left[rows]))
    if config.cascade is not None:
        _need(log, "result.log", CONTROL_LOG_COLUMNS, ["escalated_s", "large_start_s"])
        escalated = log["escalated_s"].to_numpy(dtype=np.float64)
        again = ~np.isnan(escalated)
        second_left = log["large_start_s"].to_numpy(dtype=np.float64)
        second_left = np.where(np.isnan(second_left), horizon_s, second_left)
        for pool in pd.unique(large[again]):
            rows = again & (large == pool)
            waits.setdefault(pool, []).append((escalated[rows], second_left[rows]))
    return {
        pool: (np.concatenate([f for f, _ in parts]), np.concatenate([t for _, t in parts]))
        for pool, parts in waits.items()
    }


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
    and leaves it at ``large_start_s``: that wait counts too, as the Timeline counts it; a request a
    continuous-batching replica rejected as ``"too_long"`` counts with no wait, as there. Over a run
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
    if "reject_reason" in entered.columns:  # a continuous replica turned it away; when is not recorded
        too_long = (entered["reject_reason"] == "too_long").to_numpy()
        left_s[too_long] = entered["features_ready_s"].to_numpy(dtype=np.float64)[too_long]
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
