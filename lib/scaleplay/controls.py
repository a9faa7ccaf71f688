"""Reports on the platform's controls: autoscaling, the cascade, the overflow tier.

The configs live in ``scaleplay.config`` (and are re-exported here, where the chapters import them);
``scaleplay.sim.controllers`` does the mechanics. What each control means is in
``scaleplay.config.autoscaler`` and ``scaleplay.config.controls``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ._validate import check_probability
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
from .metrics import busy_intervals
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
]


def _widths(timeline: pd.DataFrame, horizon_s: float) -> np.ndarray:
    t = timeline["t_s"].to_numpy(dtype=np.float64)
    return np.diff(np.append(t, horizon_s))


def autoscale_efficiency(result: SimulationResult, target_utilization: float = 1.0) -> float:
    """Capacity needed over capacity provisioned, over the whole run.

    Needed capacity at a moment is the busy replicas divided by ``target_utilization`` (what the load
    in fact used, at the utilization one means to run at); provisioned capacity counts every replica
    billed, starting ones included. Both are integrated over the Timeline. 1 is a perfect fit; an
    efficiency above 1 means the pool ran hotter than the target. NaN if nothing was provisioned.
    """
    target_utilization = check_probability("target_utilization", target_utilization, open_low=True)
    widths = _widths(result.timeline, result.horizon_s)
    provisioned = float(np.dot(result.timeline["replicas"].to_numpy(dtype=np.float64), widths))
    busy = float(np.dot(result.timeline["busy_replicas"].to_numpy(dtype=np.float64), widths))
    return busy / target_utilization / provisioned if provisioned > 0 else math.nan


def autoscale_report(result: SimulationResult, pool: str | None = None) -> pd.Series:
    """Replica-seconds of one pool (default: all pools): billed, starting, serving, busy.

    ``provisioned_replica_s`` is what a per-replica (per-hour) bill counts; ``busy_replica_s``, the
    seconds replicas spent running batches, is what per-request (serverless) billing of model time
    counts. ``starting_replica_s`` is billed time spent in cold starts; ``cold_starts`` counts replicas
    asked for during the run that took time to start; ``efficiency`` is busy over provisioned.
    """
    prov, batches = result.provisioning, result.batches
    if pool is not None:
        if pool not in set(prov["pool"]):
            raise ValueError(f"pool must be one of {sorted(set(prov['pool']))}, got {pool!r}")
        prov, batches = prov[prov["pool"] == pool], batches[batches["pool"] == pool]
    end = prov["end_s"].to_numpy()
    ready = np.minimum(prov["ready_s"].fillna(np.inf).to_numpy(), end)
    requested = prov["requested_s"].to_numpy()
    provisioned_s = float(np.sum(end - requested))
    starting_s = float(np.sum(ready - requested))
    busy_s = _busy_seconds(batches, result.horizon_s)
    return pd.Series(
        {
            "provisioned_replica_s": provisioned_s,
            "starting_replica_s": starting_s,
            "busy_replica_s": busy_s,
            "cold_starts": float(np.sum((requested > 0) & (ready > requested))),
            "efficiency": busy_s / provisioned_s if provisioned_s > 0 else math.nan,
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
