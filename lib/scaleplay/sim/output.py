"""What a run returns: the RequestLog, the Timeline and the records of batches, replica lives, the
offline tier and the surge modes, built at the end with numpy from the components' records.

RequestLog (``schema.REQUEST_LOG_COLUMNS``, plus ``CONTROL_LOG_COLUMNS`` with a cascade or time-box,
``ENGINE_LOG_COLUMNS`` with a continuous-batching pool and ``REGION_LOG_COLUMNS`` with regions): one
row per request. Timeline (one row per ``timeline_step_s``, the last one possibly shorter):
``queue_length`` is the time-average number of requests in the lines (features ready, no replica yet;
an escalated request's second wait included), ``busy_replicas`` the time-average number of replicas
running at least one batch; both are computed exactly from the log and the record of batches. Counts
go to the interval of the event: ``rejected`` at arrival, ``completed`` at ``responded_s``,
``timed_out`` at the deadline ``arrived_s + timeout_s``. With a continuous-batching pool the Timeline
adds ``ENGINE_TIMELINE_COLUMNS``, computed from the record of iterations; a request a continuous
replica rejects as ``"too_long"`` is counted out of the line at once (when the replica took it is not
recorded). With prefix caching the RequestLog adds ``PREFIX_LOG_COLUMNS`` after the engine's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..config import MODES, PlatformConfig
from ..schema import (
    CONTROL_LOG_COLUMNS,
    CONTROL_TIMELINE_COLUMNS,
    ENGINE_LOG_COLUMNS,
    ENGINE_TIMELINE_COLUMNS,
    ITERATION_COLUMNS,
    OUTCOMES,
    PREEMPTION_COLUMNS,
    PREFIX_LOG_COLUMNS,
    REGION_LOG_COLUMNS,
    REJECT_REASONS,
    REQUEST_LOG_COLUMNS,
    TIMELINE_COLUMNS,
)
from .requests import REJECTED, TIMED_OUT, TOO_LONG, as_numpy
from .run import Run

COMPLETED_CODE, REJECTED_CODE, TIMED_OUT_CODE = (
    OUTCOMES.index(x) for x in ("completed", "rejected", "timed_out")
)

#: What the narrow RequestLog adds with a continuous-batching pool.
NARROW_ENGINE_LOG_COLUMNS: tuple[str, ...] = ("ttft_s", "tpot_s")

#: The RequestLog's columns with ``log_columns="narrow"``: what a planner or a sweep reads.
NARROW_LOG_COLUMNS: dict[str, tuple[str, str]] = {
    name: REQUEST_LOG_COLUMNS[name]
    for name in (
        "request_id",
        "class_name",
        "arrived_s",
        "outcome",
        "reject_reason",
        "latency_s",
        "batch_size",
    )
}


@dataclass(frozen=True, eq=False)
class SimulationResult:
    """What a run returns: the RequestLog, the Timeline, the horizon they cover and the config."""

    log: pd.DataFrame
    timeline: pd.DataFrame
    horizon_s: float
    config: PlatformConfig
    #: One row per batch: pool (name), replica, start_s, end_s, size.
    batches: pd.DataFrame | None = None
    #: One row per replica life: pool, replica, requested_s, ready_s (NaN if it never served), end_s.
    provisioning: pd.DataFrame | None = None
    #: The overflow tier: request_id, queued_s, done_s, delay_s, cost_usd (empty without overflow).
    offline: pd.DataFrame | None = None
    #: The surge controller's mode changes: t_s, mode (empty without a controller).
    modes: pd.DataFrame | None = None
    #: Continuous batching's runs of iterations (``schema.ITERATION_COLUMNS``; empty without such a pool).
    iterations: pd.DataFrame | None = None
    #: Continuous batching's preemptions: t_s, pool (``schema.PREEMPTION_COLUMNS``; empty without).
    preemptions: pd.DataFrame | None = None
    #: Tokens one replica's KV cache holds, per continuous-batching pool (empty without such a pool).
    kv_capacity_tokens: dict[str, int] | None = None


MAX_INTERVALS = 10_000_000


def interval_count(horizon_s: float, step_s: float) -> int:
    """How many ``step_s`` intervals from 0 start below ``horizon_s`` (at most ``MAX_INTERVALS``)."""
    ratio = horizon_s / step_s
    if not ratio <= MAX_INTERVALS:  # inf and huge grids alike, before any count is made
        raise ValueError(
            f"timeline_step_s={step_s!r} cuts the run's {horizon_s!r} s into more than {MAX_INTERVALS:,} "
            "intervals; use a longer step"
        )
    count = math.ceil(ratio)
    while count > 1 and (count - 1) * step_s >= horizon_s:  # at most a step or two of rounding
        count -= 1
    return count


#: Requests handled at once when the Timeline sums their waits: bounds the memory of long runs.
CHUNK = 1 << 20


def time_in_bins(
    starts: np.ndarray,
    ends: np.ndarray,
    lows: np.ndarray,
    highs: np.ndarray,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Seconds the intervals ``[start, end)`` spend inside each bin ``[low, high)``, all summed (each
    interval's seconds times its weight, with ``weights``).

    An interval adds its partial pieces to its first and last bins and a whole bin width to every bin
    between (a difference array), so each bin sums only a few small numbers: exact to rounding.
    """
    if len(starts) > CHUNK:
        return sum(
            time_in_bins(
                starts[k : k + CHUNK],
                ends[k : k + CHUNK],
                lows,
                highs,
                None if weights is None else weights[k : k + CHUNK],
            )
            for k in range(0, len(starts), CHUNK)
        )
    if weights is not None:
        return _weighted_time_in_bins(starts, ends, lows, highs, np.asarray(weights, dtype=np.float64))
    keep = ends > starts
    starts, ends = starts[keep], ends[keep]
    last_bin = len(lows) - 1
    first = np.minimum(np.searchsorted(highs, starts, side="right"), last_bin)
    last = np.minimum(np.searchsorted(highs, ends, side="left"), last_bin)
    same = first == last
    seconds = np.zeros(len(lows))  # bincount of nothing is an int array: add into floats
    seconds += np.bincount(first[same], weights=ends[same] - starts[same], minlength=len(lows))
    first, last, starts, ends = first[~same], last[~same], starts[~same], ends[~same]
    seconds += np.bincount(first, weights=highs[first] - starts, minlength=len(lows))
    seconds += np.bincount(last, weights=ends - lows[last], minlength=len(lows))
    covered = np.cumsum(
        np.bincount(first + 1, minlength=len(lows) + 1) - np.bincount(last, minlength=len(lows) + 1)
    )[:-1]
    return seconds + covered * (highs - lows)


def _weighted_time_in_bins(
    starts: np.ndarray, ends: np.ndarray, lows: np.ndarray, highs: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """``time_in_bins`` with each interval's seconds times its weight (kept apart: the unweighted sums
    stay bit for bit what they were)."""
    keep = ends > starts
    starts, ends, weights = starts[keep], ends[keep], weights[keep]
    bins = len(lows)
    first = np.minimum(np.searchsorted(highs, starts, side="right"), bins - 1)
    last = np.minimum(np.searchsorted(highs, ends, side="left"), bins - 1)
    same = first == last
    seconds = np.zeros(bins)
    seconds += np.bincount(first[same], weights=(ends[same] - starts[same]) * weights[same], minlength=bins)
    first, last, starts, ends, weights = first[~same], last[~same], starts[~same], ends[~same], weights[~same]
    seconds += np.bincount(first, weights=(highs[first] - starts) * weights, minlength=bins)
    seconds += np.bincount(last, weights=(ends - lows[last]) * weights, minlength=bins)
    covered = np.cumsum(
        np.bincount(first + 1, weights=weights, minlength=bins + 1)
        - np.bincount(last, weights=weights, minlength=bins + 1)
    )[:-1]
    return seconds + covered * (highs - lows)


def busy_periods(starts: np.ndarray, ends: np.ndarray, replicas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge each replica's overlapping batches (concurrent slots) into periods when it is busy."""
    merged_starts, merged_ends = [], []
    for r in np.unique(replicas):
        s, e = starts[replicas == r], ends[replicas == r]
        order = np.argsort(s, kind="stable")
        s, e = s[order], np.maximum.accumulate(e[order])
        opens = np.concatenate(([True], s[1:] > e[:-1]))
        closes = np.concatenate((opens[1:], [True]))
        merged_starts.append(s[opens])
        merged_ends.append(e[closes])
    if not merged_starts:
        return np.empty(0), np.empty(0)
    return np.concatenate(merged_starts), np.concatenate(merged_ends)


def continuous(model: Run) -> bool:
    """Some pool of the run batches continuously (``sim.continuous``)."""
    return any(pool.config.continuous for pool in model.pools)


def engine_levels(
    runs: pd.DataFrame,
    preempted_s: np.ndarray,
    lives: pd.DataFrame,
    capacity_tokens: np.ndarray,
    starts: np.ndarray,
    edges: np.ndarray,
) -> dict[str, np.ndarray]:
    """``ENGINE_TIMELINE_COLUMNS`` on the bins ``[starts, edges)`` from some replicas' runs of
    iterations (``ITERATION_COLUMNS``), their preemption times, and their lives (``ready_s``,
    ``end_s``; NaN ready: never served) each holding ``capacity_tokens`` of KV cache."""
    bins = len(starts)
    widths = edges - starts
    run_from = runs["start_s"].to_numpy(dtype=np.float64)
    run_to = np.minimum(runs["end_s"].to_numpy(dtype=np.float64), edges[-1])
    decode_seqs = runs["decode_seqs"].to_numpy(dtype=np.float64)
    kv_seconds = time_in_bins(run_from, run_to, starts, edges, runs["kv_tokens"].to_numpy(dtype=np.float64))
    ready_s = lives["ready_s"].to_numpy(dtype=np.float64)
    served = ~np.isnan(ready_s)
    capacity_seconds = time_in_bins(
        ready_s[served],
        np.minimum(lives["end_s"].to_numpy(dtype=np.float64)[served], edges[-1]),
        starts,
        edges,
        np.asarray(capacity_tokens, dtype=np.float64)[served],
    )
    running = time_in_bins(run_from, run_to, starts, edges, decode_seqs)
    where = np.minimum(np.searchsorted(edges, preempted_s, side="right"), bins - 1)
    return {
        "kv_cache_utilization": np.divide(
            kv_seconds, capacity_seconds, out=np.full(bins, np.nan), where=capacity_seconds > 0
        ),
        "running_seqs": np.divide(running, widths, out=np.zeros(bins), where=widths > 0),
        "preemptions": np.bincount(where, minlength=bins).astype(np.int64),
    }


def timeline(
    model: Run,
    log: dict[str, np.ndarray],
    batches: dict[str, np.ndarray],
    deadline_s: np.ndarray,
    horizon_s: float,
    step_s: float,
    provisioning: pd.DataFrame,
    second_wait: tuple[np.ndarray, np.ndarray],
    engine: tuple[pd.DataFrame, pd.DataFrame, dict[str, int]] | None = None,
) -> pd.DataFrame:
    """The Timeline; ``engine`` (the iterations, preemptions and KV capacities of continuous pools)
    adds ``ENGINE_TIMELINE_COLUMNS``."""
    config = model.config
    columns = dict(TIMELINE_COLUMNS)
    if config.modes is not None:
        columns.update(CONTROL_TIMELINE_COLUMNS)
    if engine is not None:
        columns.update(ENGINE_TIMELINE_COLUMNS)
    bins = max(interval_count(horizon_s, step_s), 1 if len(log["arrived_s"]) else 0)
    if bins == 0:
        return pd.DataFrame({name: np.empty(0, dtype=dtype) for name, (dtype, _) in columns.items()})
    starts = np.arange(bins) * step_s
    edges = np.minimum(np.append(starts[1:], horizon_s), horizon_s)
    widths = edges - starts

    def level(interval_starts: np.ndarray, interval_ends: np.ndarray) -> np.ndarray:
        seconds = time_in_bins(interval_starts, np.minimum(interval_ends, horizon_s), starts, edges)
        return per_second(seconds)

    def per_second(seconds: np.ndarray) -> np.ndarray:
        return np.divide(seconds, widths, out=np.zeros(bins), where=widths > 0)

    def count(times: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        where = np.minimum(np.searchsorted(edges, times, side="right"), bins - 1)
        return np.bincount(where, weights=weights, minlength=bins)

    outcome = log["outcome"].codes
    waiting_s = np.zeros(bins)  # request-seconds in the lines, a chunk of requests at a time
    for k in range(0, len(outcome), CHUNK):
        part = slice(k, k + CHUNK)
        ready = log["features_ready_s"][part]
        in_line = ~np.isnan(ready)
        left_line = log["model_start_s"][part]
        if deadline_s is not None:
            left_line = np.where(outcome[part] == TIMED_OUT_CODE, deadline_s[part], left_line)
        if engine is not None:  # when a replica took it is not recorded: out at once
            left_line = np.where(log["reject_reason"].codes[part] == TOO_LONG, ready, left_line)
        left_line = np.where(np.isnan(left_line), horizon_s, left_line)
        waits_from, waits_to = ready[in_line], left_line[in_line]
        if k == 0 and len(second_wait[0]):  # escalated requests wait a second time, for the large model
            waits_from = np.concatenate((waits_from, second_wait[0]))
            waits_to = np.concatenate((waits_to, second_wait[1]))
        waiting_s += time_in_bins(waits_from, np.minimum(waits_to, horizon_s), starts, edges)
    # Replicas of different pools are different machines: key them apart.
    machine = batches["pool"] * (1 + max(p.size for p in model.pools)) + batches["replica"]
    busy_starts, busy_ends = busy_periods(
        batches["start_s"], np.minimum(batches["end_s"], horizon_s), machine
    )
    if any(pool.config.autoscaler is not None for pool in model.pools):
        replicas = level(provisioning["requested_s"].to_numpy(), provisioning["end_s"].to_numpy())
    else:
        replicas = np.full(bins, float(sum(pool.config.replicas for pool in model.pools)))
    started = count(batches["start_s"])
    size_sum = count(batches["start_s"], batches["size"].astype(np.float64))
    timeline = pd.DataFrame(
        {
            "t_s": starts,
            "queue_length": per_second(waiting_s),
            "busy_replicas": level(busy_starts, busy_ends),
            "replicas": replicas,
            "mean_batch_size": np.divide(size_sum, started, out=np.full(bins, np.nan), where=started > 0),
        }
    )
    arrived = log["arrived_s"]
    for name, times in (
        ("arrived", arrived),
        ("admitted", arrived[outcome != REJECTED_CODE]),
        ("rejected", arrived[outcome == REJECTED_CODE]),
        ("completed", log["responded_s"][outcome == COMPLETED_CODE]),
        ("timed_out", deadline_s[outcome == TIMED_OUT_CODE] if deadline_s is not None else np.empty(0)),
    ):
        timeline[name] = count(times).astype(np.int64)
    if config.modes is not None:
        # Each bin shows the most severe mode in force at any moment of it.
        severity = np.zeros(bins, dtype=np.int64)
        changes = model.mode_changes
        for k, (since_s, mode) in enumerate(changes):
            until_s = changes[k + 1][0] if k + 1 < len(changes) else horizon_s
            if since_s >= horizon_s and k > 0:
                break
            first = min(int(np.searchsorted(edges, since_s, side="right")), bins - 1)
            last = min(int(np.searchsorted(edges, until_s, side="left")), bins - 1)
            if until_s > since_s or k + 1 == len(changes):
                severity[first : last + 1] = np.maximum(severity[first : last + 1], mode)
        timeline["mode"] = np.asarray(MODES, dtype=object)[severity]
    if engine is not None:
        runs, preemptions, capacity = engine
        lives = provisioning[provisioning["pool"].isin(list(capacity))]
        levels = engine_levels(
            runs,
            preemptions["t_s"].to_numpy(dtype=np.float64),
            lives,
            lives["pool"].map(capacity).to_numpy(dtype=np.float64),
            starts,
            edges,
        )
        for name, values in levels.items():
            timeline[name] = values
    return timeline[list(columns)]


def request_log(
    model: Run,
    columns: dict[str, np.ndarray],
    class_name: pd.Series,
    horizon_s: float | None,
    narrow: bool = False,
) -> tuple[pd.DataFrame, dict[str, np.ndarray], np.ndarray, float, tuple[np.ndarray, np.ndarray]]:
    """The RequestLog of a finished run, the batch record, each request's deadline, the horizon, and
    the second waits of escalated requests (joined the large model's line, left it)."""
    config, requests = model.config, model.requests
    n = requests.n
    cascade, timebox = config.cascade, config.timebox
    state = as_numpy(requests.state, np.int8)
    batch_of = as_numpy(requests.batch_of, np.int64)
    record = model.batches
    batches = {
        "start_s": as_numpy(record.start_s, np.float64),
        "end_s": as_numpy(record.end_s, np.float64),
        "replica": as_numpy(record.replica, np.int64),
        "size": as_numpy(record.size, np.int64),
        "pool": as_numpy(record.pool, np.int64),
    }
    served = batch_of >= 0

    def per_request(values: np.ndarray, fill: float, which: np.ndarray = batch_of) -> np.ndarray:
        return np.append(values, fill)[which]  # which == -1 picks ``fill``

    first = batch_of
    if cascade is not None:
        first = as_numpy(requests.first_batch, np.int64)
        first = np.where(first >= 0, first, batch_of)
    model_start = per_request(batches["start_s"], np.nan, first)
    model_end = per_request(batches["end_s"], np.nan)
    answered_by = per_request(batches["pool"], -1)
    by_large = np.array([pool is pool.site.large for pool in model.pools] + [False])[answered_by]
    answered_s = model.timebox.answered_s if timebox is not None else {}
    cached_s = model.timebox.cached_s if timebox is not None else {}
    if answered_s:  # escalations that ran out of budget: the small answer went out then
        rows = np.fromiter(answered_s, dtype=np.int64, count=len(answered_s))
        model_end[rows] = np.fromiter(answered_s.values(), dtype=np.float64, count=len(rows))
    cached = np.zeros(n, dtype=bool)
    if cached_s:
        rows = np.fromiter(cached_s, dtype=np.int64, count=len(cached_s))
        looked_up = np.fromiter(cached_s.values(), dtype=np.float64, count=len(rows))
        model_start[rows] = looked_up
        model_end[rows] = looked_up + timebox.cache_latency_s
        cached[rows] = True
        served = served | cached
    degraded = np.zeros(n, dtype=bool)
    if timebox is not None:
        degraded = np.frombuffer(requests.degraded, dtype=np.uint8).astype(bool)
    human = np.zeros(n, dtype=bool)
    if cascade is not None:
        human = by_large & ~degraded & cascade.to_human(columns["difficulty"])
    arrived = columns["t_s"]
    timeout_s = config.gateway.timeout_s
    deadline_s = arrived + timeout_s if timeout_s is not None else None
    responded = model_end + config.network_hop_s
    rtt_s = None
    if config.regions is not None:  # the whole round trip between the user and the serving region
        region_of = as_numpy(requests.region_of, np.int64)
        origin = columns["origin"]
        rtt_s = np.where(
            region_of >= 0, config.regions.rtt_matrix()[origin, np.maximum(region_of, 0)], np.nan
        )
        responded = responded + rtt_s
    if human.any():
        responded = responded + np.where(human, cascade.human_delay_s, 0.0)
    if horizon_s is None:
        finals = [arrived, responded[served]]
        finals += [deadline_s[state == TIMED_OUT]] if deadline_s is not None else []
        horizon_s = float(max((x.max() for x in finals if len(x)), default=0.0))
    else:
        model_end[model_end > horizon_s] = np.nan
    completed = served & (responded <= horizon_s)
    responded[~completed] = np.nan

    outcome = np.full(n, OUTCOMES.index("in_flight"), dtype=np.int8)
    outcome[completed] = OUTCOMES.index("completed")
    outcome[state == REJECTED] = OUTCOMES.index("rejected")
    outcome[state == TIMED_OUT] = OUTCOMES.index("timed_out")
    log = {
        "request_id": columns["request_id"],
        "class_name": class_name.iloc[:n].to_numpy(),
        "priority": columns["priority"],
        "tokens_in": columns["tokens_in"],
        "tokens_out": columns["tokens_out"],
        "arrived_s": arrived,
        "admitted_s": None if narrow else np.where(state == REJECTED, np.nan, arrived),
        "features_ready_s": as_numpy(requests.ready, np.float64),
        "model_start_s": model_start,
        "model_end_s": model_end,
        "responded_s": responded,
        "replica": None if narrow else np.where(cached, -1, per_request(batches["replica"], -1)),
        "batch_size": np.where(cached, 0, per_request(batches["size"], 0)),
        "outcome": pd.Categorical.from_codes(outcome, OUTCOMES),
        "reject_reason": pd.Categorical.from_codes(as_numpy(requests.reason, np.int8), REJECT_REASONS),
        "latency_s": responded - arrived,
    }

    second_wait = (np.empty(0), np.empty(0))
    if cascade is not None or timebox is not None:
        names = np.asarray([pool.model for pool in model.pools] + [""], dtype=object)
        answer = names[answered_by]  # -1 picks ""
        answer = np.where(cached, "cache", np.where(human, "human", answer))
        escalated_s = large_start_s = np.full(n, np.nan)
        if cascade is not None:
            escalated_s = as_numpy(requests.escalated_s, np.float64)
            joined = ~np.isnan(escalated_s)
            # It left the large model's line when a batch took it, when its budget ran out, or not yet.
            second_start = np.where(by_large, per_request(batches["start_s"], np.nan), np.nan)
            large_start_s = np.where(joined, np.where(degraded, model_end, second_start), np.nan)
            left = np.where(np.isnan(large_start_s), horizon_s, large_start_s)
            second_wait = (escalated_s[joined], left[joined])
        log["difficulty"] = columns["difficulty"] if "difficulty" in columns else np.full(n, np.nan)
        log["model"] = np.where(completed, answer, "").astype(object)
        log["escalated_s"] = escalated_s
        log["large_start_s"] = large_start_s
        log["degraded"] = degraded
    if continuous(model):
        log.update(engine_log(model, log, completed))
    if rtt_s is not None:
        names = np.asarray(list(config.regions.names) + [""], dtype=object)
        log["origin_region"] = names[columns["origin"]]
        log["region"] = names[region_of]  # -1 picks ""
        log["rtt_s"] = rtt_s
        log["retries"] = as_numpy(requests.retries, np.int64)
    return log, batches, deadline_s, horizon_s, second_wait


def engine_log(model: Run, log: dict[str, np.ndarray], completed: np.ndarray) -> dict[str, np.ndarray]:
    """``ENGINE_LOG_COLUMNS``: the first token the engine recorded and, where it is the answer's own
    (made within the answer's batch, by the large model after an escalation, not a fallback's), the
    client's TTFT and TPOT."""
    requests = model.requests
    first_token = as_numpy(requests.first_token, np.float64).copy()
    model_start, model_end = log["model_start_s"], log["model_end_s"]
    own = completed & (first_token >= model_start) & (first_token <= model_end)  # NaN fails
    if "escalated_s" in log:  # before the escalation it was the small model's; a fallback has none
        own &= ~(first_token < log["escalated_s"]) & ~log["degraded"]
    way_back_s = log["responded_s"] - model_end
    ttft = np.where(own, first_token + way_back_s - log["arrived_s"], np.nan)
    later_tokens = log["tokens_out"] - 1
    with np.errstate(divide="ignore", invalid="ignore"):
        tpot = np.where(own & (later_tokens >= 1), (model_end - first_token) / later_tokens, np.nan)
    columns = {
        "first_token_s": first_token,
        "ttft_s": ttft,
        "tpot_s": tpot,
        "preemptions": as_numpy(requests.preemptions, np.int32).astype(np.int64),
    }
    if hasattr(requests, "cached_hit"):  # a pool caches prefixes (``sim.prefix``)
        columns["cached_tokens"] = as_numpy(requests.cached_hit, np.int64).copy()
    return columns


def log_table(log: dict[str, np.ndarray], narrow: bool) -> pd.DataFrame:
    """The RequestLog in the documented column order (``NARROW_LOG_COLUMNS`` when ``narrow``)."""
    if narrow:
        names = list(NARROW_LOG_COLUMNS)
        names += list(NARROW_ENGINE_LOG_COLUMNS) if "ttft_s" in log else []
    else:
        names = list(REQUEST_LOG_COLUMNS)
        names += list(CONTROL_LOG_COLUMNS) if "model" in log else []
        names += list(ENGINE_LOG_COLUMNS) if "ttft_s" in log else []
        names += list(PREFIX_LOG_COLUMNS) if "cached_tokens" in log else []
        names += list(REGION_LOG_COLUMNS) if "region" in log else []
    return pd.DataFrame({name: log[name] for name in names}, copy=False)


def provisioning_table(model: Run, horizon_s: float) -> pd.DataFrame:
    table = np.asarray(model.provisioning, dtype=np.float64).reshape(-1, 5)
    names = np.asarray([pool.label for pool in model.pools], dtype=object)
    end_s = np.where(np.isnan(table[:, 4]), horizon_s, np.minimum(table[:, 4], horizon_s))
    ready_s = np.where(table[:, 3] <= horizon_s, table[:, 3], np.nan)
    return pd.DataFrame(
        {
            "pool": names[table[:, 0].astype(np.int64)],
            "replica": table[:, 1].astype(np.int64),
            "requested_s": np.minimum(table[:, 2], horizon_s),
            "ready_s": ready_s,
            "end_s": end_s,
        }
    )


def offline(log: dict[str, np.ndarray], config: PlatformConfig) -> pd.DataFrame:
    overflow = config.overflow
    sent = log["reject_reason"].codes == REJECT_REASONS.index("overflow")
    queued_s = log["arrived_s"][sent]
    done_s = overflow.schedule(queued_s) if overflow is not None else np.empty(0)
    price = overflow.price_per_request_usd if overflow is not None else 0.0
    return pd.DataFrame(
        {
            "request_id": log["request_id"][sent],
            "queued_s": queued_s,
            "done_s": done_s,
            "delay_s": done_s - queued_s,
            "cost_usd": np.full(len(queued_s), price),
        }
    )


def engine_tables(model: Run) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """The runs of iterations (``ITERATION_COLUMNS``), the preemptions (``PREEMPTION_COLUMNS``) and the
    tokens a replica's KV cache holds, per continuous pool (all empty without one)."""
    record = model.iterations
    names = np.asarray([pool.label for pool in model.pools], dtype=object)
    runs = {
        name: as_numpy(getattr(record, name), np.float64 if dtype == "float64" else np.int64)
        for name, (dtype, _) in ITERATION_COLUMNS.items()
    }
    runs["pool"] = names[runs["pool"]]
    preemptions = pd.DataFrame(
        {
            "t_s": as_numpy(record.preempted_s, np.float64),
            "pool": names[as_numpy(record.preempted_pool, np.int64)],
        },
        columns=list(PREEMPTION_COLUMNS),
    )
    capacity = {
        pool.label: pool.config.batcher.kv_blocks(pool.config.service) * pool.config.batcher.block_tokens
        for pool in model.pools
        if pool.config.continuous
    }
    return pd.DataFrame(runs, columns=list(ITERATION_COLUMNS)), preemptions, capacity


def result(
    model: Run, columns: dict[str, np.ndarray], class_name: pd.Series, step_s: float, narrow: bool
) -> SimulationResult:
    """The tables of a finished run (a narrow RequestLog when ``narrow``)."""
    log, batches, deadline_s, horizon_s, second_wait = request_log(
        model, columns, class_name, model.horizon_s, narrow
    )
    provisioning = provisioning_table(model, horizon_s)
    engine = engine_tables(model)
    timeline_table = timeline(
        model,
        log,
        batches,
        deadline_s,
        horizon_s,
        step_s,
        provisioning,
        second_wait,
        engine if engine[2] else None,
    )
    names = np.asarray([pool.label for pool in model.pools], dtype=object)
    batch_table = pd.DataFrame(
        {
            "pool": names[batches["pool"]],
            "replica": batches["replica"],
            "start_s": batches["start_s"],
            "end_s": batches["end_s"],
            "size": batches["size"],
        }
    )
    changes = [(t_s, MODES[level]) for t_s, level in model.mode_changes if t_s <= horizon_s]
    return SimulationResult(
        log=log_table(log, narrow),
        timeline=timeline_table,
        horizon_s=horizon_s,
        config=model.config,
        batches=batch_table,
        provisioning=provisioning,
        offline=offline(log, model.config),
        modes=pd.DataFrame(changes, columns=["t_s", "mode"]).astype({"t_s": np.float64, "mode": object}),
        iterations=engine[0],
        preemptions=engine[1],
        kv_capacity_tokens=engine[2],
    )
