"""Reports on the platform's controls: autoscaling, the cascade, the overflow tier.

The configs live in ``scaleplay.config`` (and are re-exported here, where the chapters import them);
``scaleplay.sim.controllers`` does the mechanics. What each control means is in
``scaleplay.config.autoscaler`` and ``scaleplay.config.controls``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ._validate import check_positive, check_probability
from .config import (
    AUTOSCALE_METRICS,
    MODES,
    AutoscalerConfig,
    CascadeConfig,
    ColdStart,
    ModeControllerConfig,
    ModeKnobs,
    ModeSettings,
    ModeSignals,
    OverflowConfig,
    PlatformConfig,
    TimeBoxConfig,
)
from .metrics import busy_intervals, token_slo_met
from .sim import SimulationResult

__all__ = [
    "AUTOSCALE_METRICS",
    "MODES",
    "ColdStart",
    "AutoscalerConfig",
    "CascadeConfig",
    "TimeBoxConfig",
    "ModeSignals",
    "ModeKnobs",
    "ModeSettings",
    "ModeControllerConfig",
    "OverflowConfig",
    "autoscale_efficiency",
    "autoscale_report",
    "cascade_report",
    "offline_report",
    "mode_switches",
    "PLAYBOOK_COLUMNS",
    "mode_playbook",
]


def _widths(timeline: pd.DataFrame, horizon_s: float) -> np.ndarray:
    t = timeline["t_s"].to_numpy(dtype=np.float64)
    return np.diff(np.append(t, horizon_s))


def autoscale_efficiency(
    result: SimulationResult, target_utilization: float = 1.0, *, replica_rate_per_s: float | None = None
) -> float:
    """Capacity needed over capacity provisioned, over the whole run (the book's secondary metric).

    1 is a pool always the size its load needs; below 1, the share of the bill that bought room the
    load did not use; above 1, the pool ran hotter than meant (read it beside the share at the SLO).
    Provisioned capacity counts every replica billed, starting ones included, over the Timeline.
    Needed capacity, in replica-seconds:

    - with ``replica_rate_per_s`` (the requests a second one replica serves within the SLO, as a sized
      fleet measures it: a peak's rate over ``experiments.fewest_replicas``' replicas): the requests
      that arrived over the run, at that rate. A continuous-batching pool needs it: a replica runs
      iterations whenever it holds one sequence, so it reads busy at a fraction of its capacity, and
      busy over provisioned would call any fleet, however oversized, efficient;
    - without it (static batching): the busy replicas divided by ``target_utilization`` (what the load
      in fact used, at the utilization one means to run at).

    NaN if nothing was provisioned.
    """
    if not isinstance(result, SimulationResult):
        raise TypeError(f"result must be a SimulationResult, got {type(result).__name__}")
    target_utilization = check_probability("target_utilization", target_utilization, open_low=True)
    widths = _widths(result.timeline, result.horizon_s)
    provisioned = float(np.dot(result.timeline["replicas"].to_numpy(dtype=np.float64), widths))
    if replica_rate_per_s is not None:
        replica_rate_per_s = check_positive("replica_rate_per_s", replica_rate_per_s)
        if target_utilization != 1.0:
            raise ValueError(
                "give target_utilization or replica_rate_per_s, not both: the rate is already what one "
                f"replica is meant to carry; got target_utilization={target_utilization!r}"
            )
        needed = len(result.log) / replica_rate_per_s
    elif result.kv_capacity_tokens:
        raise ValueError(
            "replica_rate_per_s is needed for a continuous-batching pool (its replicas read busy whenever "
            "they hold one sequence): pass the requests a second one replica serves within the SLO; got None"
        )
    else:
        busy = float(np.dot(result.timeline["busy_replicas"].to_numpy(dtype=np.float64), widths))
        needed = busy / target_utilization
    return needed / provisioned if provisioned > 0 else math.nan


def autoscale_report(
    result: SimulationResult, pool: str | None = None, *, replica_rate_per_s: float | None = None
) -> pd.Series:
    """Replica-seconds of one pool (default: all pools): billed, starting, serving, busy, needed.

    ``provisioned_replica_s`` is what a per-replica (per-hour) bill counts; ``busy_replica_s``, the
    seconds replicas spent running batches, is what per-request (serverless) billing of model time
    counts. ``starting_replica_s`` is billed time spent in cold starts; ``cold_starts`` counts replicas
    asked for during the run that took time to start. ``needed_replica_s`` is the requests the pool
    had to serve at ``replica_rate_per_s`` each replica (``autoscale_efficiency``; NaN without the
    rate): all that arrived, or with regions and ``pool`` a region's name, those routed there.
    ``efficiency`` is needed over provisioned with the rate; without it, busy over provisioned for a
    static pool and NaN for a continuous-batching one, whose busy time says little of its load.
    """
    prov, batches, log = result.provisioning, result.batches, result.log
    if pool is not None:
        if pool not in set(prov["pool"]):
            raise ValueError(f"pool must be one of {sorted(set(prov['pool']))}, got {pool!r}")
        prov, batches = prov[prov["pool"] == pool], batches[batches["pool"] == pool]
    continuous = bool(result.kv_capacity_tokens)
    needed_s = math.nan
    if replica_rate_per_s is not None:
        replica_rate_per_s = check_positive("replica_rate_per_s", replica_rate_per_s)
        pools = set(result.provisioning["pool"])
        if pool is not None and len(pools) > 1:
            if "region" not in log.columns or pool not in set(log["region"]):
                raise ValueError(
                    f"with replica_rate_per_s, pool must be None or a region's name (its requests are "
                    f"those routed there); got pool={pool!r} of {sorted(pools)}"
                )
            log = log[log["region"] == pool]
        needed_s = len(log) / replica_rate_per_s
    end = prov["end_s"].to_numpy()
    ready = np.minimum(prov["ready_s"].fillna(np.inf).to_numpy(), end)
    requested = prov["requested_s"].to_numpy()
    provisioned_s = float(np.sum(end - requested))
    starting_s = float(np.sum(ready - requested))
    busy_s = _busy_seconds(batches, result.horizon_s)
    if provisioned_s <= 0 or (continuous and replica_rate_per_s is None):
        efficiency = math.nan
    else:
        efficiency = (busy_s if replica_rate_per_s is None else needed_s) / provisioned_s
    return pd.Series(
        {
            "provisioned_replica_s": provisioned_s,
            "starting_replica_s": starting_s,
            "busy_replica_s": busy_s,
            "cold_starts": float(np.sum((requested > 0) & (ready > requested))),
            "needed_replica_s": needed_s,
            "efficiency": efficiency,
        },
        name="autoscale",
    )


def _busy_seconds(batches: pd.DataFrame, horizon_s: float) -> float:
    """Seconds some batch runs on a replica, per replica, summed (overlapping slots merged)."""
    busy = busy_intervals(batches, horizon_s)
    return float((busy["end_s"] - busy["start_s"]).sum())


def _model_of_pool(config: PlatformConfig) -> dict[str, str]:
    """The model each pool label of the batch table runs: with regions a large pool is labelled by its
    region and a small one ``region/small``."""
    small = [config.cascade.small.name] if config.cascade is not None else []
    if config.regions is None:
        return {name: name for name in [config.pool.name, *small]}
    out = {}
    for k, region in enumerate(config.regions.names):
        out[region] = config.regions.pool_of(k, config.pool).name
        out.update({f"{region}/{name}": name for name in small})
    return out


def cascade_report(
    result: SimulationResult, arrivals: pd.DataFrame, competence: dict[str, float] | None = None
) -> pd.Series:
    """Escalation rate, latency, model-seconds per model and the quality proxy of a run.

    Works on any run: a cascade, or one pool alone (always-small or always-large, as baselines).
    ``competence`` maps a model (pool) name to the highest difficulty it answers well; by default it
    comes from the run's ``CascadeConfig`` (small and large competence), and a pool alone counts as
    fully competent unless given. ``"human"`` answers are always good, ``"cache"`` answers never.
    ``quality`` is the share of completed requests answered well; ``model_s`` the batch seconds per
    model (the cost driver: one replica-second of each model at its price).
    """
    config, log = result.config, result.log
    cascade = config.cascade
    names = {config.pool.name: 1.0}
    if cascade is not None:
        names = {config.pool.name: cascade.large_competence, cascade.small.name: cascade.small_competence}
    names.update(competence or {})
    names.update({"human": 1.0, "cache": -1.0})
    difficulty = arrivals.set_index("request_id")["difficulty"].reindex(log["request_id"]).to_numpy()
    model = (
        log["model"].to_numpy()
        if "model" in log
        else np.where(log["outcome"].to_numpy() == "completed", config.pool.name, "")
    )
    done = log["outcome"].to_numpy() == "completed"
    limit = np.array([names.get(m, math.nan) for m in model[done]], dtype=np.float64)
    good = difficulty[done] <= limit
    escalated = log["escalated_s"].notna().to_numpy() if "escalated_s" in log else np.zeros(len(log), bool)
    admitted = log["admitted_s"].notna().to_numpy()
    latency = log["latency_s"].to_numpy()[done]
    durations = result.batches["end_s"] - result.batches["start_s"]
    per_model = durations.groupby(result.batches["pool"].map(_model_of_pool(config))).sum()
    out = {
        "requests": float(len(log)),
        "completed": float(done.sum()),
        "escalation_rate": float(escalated[admitted].mean()) if admitted.any() else math.nan,
        "degraded_share": float(log["degraded"].to_numpy()[done].mean())
        if "degraded" in log and done.any()
        else 0.0,
        "p50_s": float(np.percentile(latency, 50)) if done.any() else math.nan,
        "p99_s": float(np.percentile(latency, 99)) if done.any() else math.nan,
        "quality": float(good.mean()) if done.any() else math.nan,
        "model_s": float(per_model.sum()),
    }
    for name, seconds in per_model.items():
        out[f"model_s[{name}]"] = float(seconds)
    return pd.Series(out, name="cascade")


def offline_report(result: SimulationResult) -> pd.Series:
    """The overflow tier: requests sent offline, their delay (mean, p99, max) and what they cost."""
    offline = result.offline
    delay = offline["delay_s"].to_numpy()
    empty = len(delay) == 0
    return pd.Series(
        {
            "requests": float(len(delay)),
            "mean_delay_s": math.nan if empty else float(delay.mean()),
            "p99_delay_s": math.nan if empty else float(np.percentile(delay, 99)),
            "max_delay_s": math.nan if empty else float(delay.max()),
            "cost_usd": float(offline["cost_usd"].sum()),
        },
        name="offline",
    )


def mode_switches(result: SimulationResult) -> int:
    """How many times the surge controller changed mode in the run (a flapping controller's count)."""
    _modes_of(result)
    return max(len(result.modes) - 1, 0)  # the first row is the start, in normal


#: The rows of ``mode_playbook``'s table, one column per mode.
PLAYBOOK_COLUMNS: dict[str, str] = {
    "enter when": "the thresholds that step up into the mode (any one reached)",
    "leave when": "the thresholds that step down out of it (all below, after the dwell)",
    "switches flipped": "the knobs the mode sets",
    "time in mode (s)": "seconds the mode was in force",
    "times entered": "how often the controller stepped into it",
    "arrivals": "requests that arrived while it was in force",
    "refused share": "of those, the share rejected (shed, queue full, rate limited)",
    "offline share": "the share sent to the offline tier instead",
    "degraded share": "the share answered degraded (a time-box's fallback)",
    "p99 TTFT (s)": "p99 time to first token of those answered online",
    "online share at SLO": "of those answered online, the share within both token SLOs",
    "share at SLO": "of all its arrivals, the share answered online within both token SLOs",
    "USD per 1k answered": "GPU cost of the mode's seconds plus the offline tier's, per 1,000 answered",
}


def _thresholds(signals: ModeSignals | None, relation: str, joiner: str) -> str:
    if signals is None:
        return "-"
    names = {
        "queue_length": ("backlog", "{:.3g} requests"),
        "p99_s": ("p99 latency", "{:.3g} s"),
        "arrival_rate_per_s": ("arrivals", "{:.3g}/s"),
        "ttft_p99_s": ("p99 TTFT", "{:.3g} s"),
    }
    parts = [
        f"{label} {relation} {unit.format(getattr(signals, name))}"
        for name, (label, unit) in names.items()
        if getattr(signals, name) is not None
    ]
    return joiner.join(parts)


def _switches(knobs: ModeKnobs, overflow: bool) -> str:
    parts = []
    if knobs.shed_priority_from is not None:
        parts.append(f"shed priority >= {knobs.shed_priority_from}")
    if knobs.queue_capacity is not None:
        where = "the rest offline" if overflow else "the rest refused"
        parts.append(f"queue bounded at {knobs.queue_capacity} ({where})")
    if knobs.max_batch_size is not None:
        parts.append(f"batches of up to {knobs.max_batch_size}")
    if knobs.max_wait_s is not None:
        parts.append(f"batch wait {knobs.max_wait_s:g} s")
    return "; ".join(parts) or "none"


def mode_playbook(
    result: SimulationResult, *, ttft_slo_s: float, tpot_slo_s: float, usd_per_gpu_hour: float
) -> pd.DataFrame:
    """The surge controller's playbook as the run played it: one column per mode (``MODES``), one row
    per item of ``PLAYBOOK_COLUMNS``: its trigger and exit thresholds, the switches it flips, and what
    it cost, measured on the requests that *arrived* while it was in force. GPU cost counts the
    Timeline's replicas times the pool's tensor parallel at ``usd_per_gpu_hour``, over the mode's
    seconds, plus the offline tier's price of the requests it took."""
    modes_config = _modes_of(result)
    check_positive("ttft_slo_s", ttft_slo_s)
    check_positive("tpot_slo_s", tpot_slo_s)
    check_positive("usd_per_gpu_hour", usd_per_gpu_hour)
    log, changes = result.log, result.modes
    change_s = changes["t_s"].to_numpy(dtype=np.float64)
    level_of_change = changes["mode"].map({m: k for k, m in enumerate(MODES)}).to_numpy(dtype=np.int64)
    # The mode in force at each arrival, and the seconds of each mode up to the horizon.
    at_arrival = level_of_change[np.searchsorted(change_s, log["arrived_s"].to_numpy(), side="right") - 1]
    spans = np.diff(np.append(change_s, max(result.horizon_s, change_s[-1])))
    tensor_parallel = getattr(result.config.pool.service, "tensor_parallel", 1)
    timeline = result.timeline
    widths = _widths(timeline, result.horizon_s)
    bin_level = timeline["mode"].map({m: k for k, m in enumerate(MODES)}).to_numpy(dtype=np.int64)
    replica_s = timeline["replicas"].to_numpy(dtype=np.float64) * widths
    offline_cost = pd.Series(0.0, index=log.index)
    if result.offline is not None and len(result.offline):
        cost_of = result.offline.set_index("request_id")["cost_usd"]
        offline_cost = log["request_id"].map(cost_of).fillna(0.0)
    good = np.asarray(token_slo_met(log, ttft_slo_s, tpot_slo_s), dtype=bool)
    reason = log["reject_reason"].astype(str).to_numpy()
    rejected = (log["outcome"] == "rejected").to_numpy()
    completed = (log["outcome"] == "completed").to_numpy()
    degraded = np.zeros(len(log), bool)
    if "degraded" in log:
        degraded = log["degraded"].fillna(False).to_numpy(dtype=bool)
    overflow = result.config.overflow is not None
    columns = {}
    for level, mode in enumerate(MODES[: len(modes_config.levels) + 1]):
        mine = at_arrival == level
        settings = modes_config.levels[level - 1] if level else None
        offline = mine & (reason == "overflow")
        answered = (mine & completed).sum() + offline.sum()
        gpu_usd = replica_s[bin_level == level].sum() * tensor_parallel * usd_per_gpu_hour / 3600.0
        usd = gpu_usd + float(offline_cost[mine].sum())
        online = mine & completed
        ttft = log["ttft_s"].to_numpy()[online] if "ttft_s" in log else np.empty(0)
        arrivals = int(mine.sum())
        columns[mode] = {
            "enter when": _thresholds(settings and settings.enter, ">=", " or "),
            "leave when": _thresholds(settings and settings.exit, "<", " and ")
            + (f", after {modes_config.min_dwell_s:g} s" if settings else ""),
            "switches flipped": _switches(modes_config.knobs(level), overflow),
            "time in mode (s)": float(spans[level_of_change == level].sum()),
            "times entered": int(((level_of_change == level)[1:]).sum()),
            "arrivals": arrivals,
            "refused share": _share(mine & rejected & (reason != "overflow"), arrivals),
            "offline share": _share(offline, arrivals),
            "degraded share": _share(mine & degraded, arrivals),
            "p99 TTFT (s)": float(np.percentile(ttft, 99)) if len(ttft) else math.nan,
            "online share at SLO": _share(online & good, int(online.sum())),
            "share at SLO": _share(mine & good, arrivals),
            "USD per 1k answered": 1000.0 * usd / answered if answered else math.nan,
        }
    return pd.DataFrame(columns).loc[list(PLAYBOOK_COLUMNS)]


def _share(mask: np.ndarray, of: int) -> float:
    return float(mask.sum() / of) if of else math.nan


def _modes_of(result: SimulationResult) -> ModeControllerConfig:
    if not isinstance(result, SimulationResult):
        raise TypeError(f"result must be a SimulationResult, got {type(result).__name__}")
    if result.config.modes is None:
        raise ValueError("result has no surge controller: set PlatformConfig.modes to read its modes")
    return result.config.modes
