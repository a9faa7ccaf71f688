"""Reports on regions and faults: each origin region's goodput, p99 and error budget; a fault's impact.

The configs (``Region``, ``Fault``, ``RegionsConfig``) live in ``scaleplay.config.regions``, which
documents the rules, and are re-exported here; ``scaleplay.sim.router`` and ``scaleplay.sim.faults``
do the mechanics. ``region_report`` gives each origin region's (and all users') goodput, p99 and the
share of the SLO's error budget the run spent; ``fault_impact`` sets a faulty run beside a no-fault
baseline run with the same seed. On the token SLO: ``region_token_report`` gives each origin's share
of requests within TTFT and TPOT SLOs and its p99s, and ``served_from`` turns the log of a platform
without regions (one central pool) into what the users of every region see: their round trips added.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ._validate import _kind, _show
from .alerting import MAX_SPAN_S, SLO, _check_evaluation, evaluate_alerts
from .config import Fault, Region, RegionsConfig
from .config.regions import check_origin_names
from .metrics import token_latency_percentiles, token_slo_met
from .schema import REQUEST_LOG_COLUMNS, check_columns
from .sim import SimulationResult

__all__ = [
    "Region",
    "Fault",
    "RegionsConfig",
    "region_report",
    "fault_impact",
    "REGION_TOKEN_COLUMNS",
    "region_token_report",
    "served_from",
]

_REPORT_COLUMNS = (
    "requests",
    "completed",
    "good",
    "goodput_per_s",
    "good_share",
    "p99_s",
    "budget_consumed",
    "served_elsewhere",
    "retried",
)


def _summary(log: pd.DataFrame, slo: SLO, horizon_s: float, step_s: float) -> dict[str, float]:
    done = (log["outcome"] == "completed").to_numpy()
    latency = log["latency_s"].to_numpy()[done]
    good = int((latency <= slo.latency_s).sum())
    judged = int((log["outcome"] != "in_flight").sum())
    if judged:
        budget = evaluate_alerts(log, slo, step_s=step_s, horizon_s=horizon_s).budget_consumed
    else:
        budget = math.nan
    served_elsewhere = (log["region"] != "") & (log["region"] != log["nearest_region"])
    return {
        "requests": float(len(log)),
        "completed": float(done.sum()),
        "good": float(good),
        "goodput_per_s": good / horizon_s,
        "good_share": good / judged if judged else math.nan,
        "p99_s": float(np.percentile(latency, 99)) if done.any() else math.nan,
        "budget_consumed": budget,
        "served_elsewhere": float(served_elsewhere.sum()),
        "retried": float((log["retries"] > 0).sum()),
    }


def _check_result(name: str, result: object) -> SimulationResult:
    """A SimulationResult of a platform with regions, its horizon short enough for the alert grid."""
    if not isinstance(result, SimulationResult):
        raise TypeError(f"{name} must be a SimulationResult (what simulate returns), got {_kind(result)}")
    if result.config.regions is None:
        raise ValueError(f"{name} must come from a platform with regions (PlatformConfig.regions)")
    horizon_s = result.horizon_s
    if not (0 < horizon_s <= MAX_SPAN_S):
        raise ValueError(
            f"{name}.horizon_s must lie in (0, {MAX_SPAN_S:g}] s for the grid, got {horizon_s!r}"
        )
    return result


def _checked(name: str, result: object, slo: object, step_s: object) -> tuple[SimulationResult, float]:
    result = _check_result(name, result)
    step_s = _check_evaluation(slo, step_s, result.horizon_s, f"{name}.horizon_s={result.horizon_s!r}")
    return result, step_s


def region_report(result: SimulationResult, slo: SLO, *, step_s: float = 60.0) -> pd.DataFrame:
    """One row per origin region (what its users saw) and a last row ``"all"``.

    Columns: ``requests``, ``completed``, ``good`` (completed within ``slo.latency_s``),
    ``goodput_per_s`` (good requests over the run's horizon), ``good_share`` (good over the requests
    judged: all but those in flight), ``p99_s`` (of the completed), ``budget_consumed`` (the share of
    the SLO's period error budget the run spent, from ``alerting.evaluate_alerts`` on that region's
    requests, so each region's budget is sized by its own traffic), ``served_elsewhere`` (requests
    served outside their users' nearest region: failover or spill) and ``retried`` (requests that
    lost a batch to a fault). ``good_share`` and ``budget_consumed`` are NaN for a region with no
    judged request, ``p99_s`` for one with no completed request.

    ``result`` must be a ``SimulationResult`` of a platform with regions; ``step_s`` is the grid of
    ``alerting.evaluate_alerts`` (from 1e-6 s, every rule's window a whole multiple of it, at most
    10**7 steps over the run's horizon), checked before any work.
    """
    result, step_s = _checked("result", result, slo, step_s)
    regions = result.config.regions
    log = result.log
    nearest = np.array(
        [regions.names[regions.preference(a)[0]] for a in range(len(regions.names))], dtype=object
    )
    origin_index = pd.Categorical(log["origin_region"], categories=regions.names).codes
    log = log.assign(nearest_region=nearest[origin_index])
    rows = {
        name: _summary(log[log["origin_region"] == name], slo, result.horizon_s, step_s)
        for name in regions.names
    }
    rows["all"] = _summary(log, slo, result.horizon_s, step_s)
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(_REPORT_COLUMNS)).rename_axis(
        "origin_region"
    )


def fault_impact(
    faulty: SimulationResult, baseline: SimulationResult, slo: SLO, *, step_s: float = 60.0
) -> pd.DataFrame:
    """What a fault cost, per origin region and overall: ``faulty`` beside a no-fault ``baseline``.

    Columns: ``goodput_per_s`` and ``baseline_goodput_per_s``, their ratio ``goodput_ratio``,
    ``p99_s`` and ``baseline_p99_s``, ``budget_consumed`` and ``baseline_budget_consumed``, and
    ``budget_lost`` (the difference: the share of the period's error budget the fault spent).
    Run both with the same arrivals and seed so that the difference is the fault's alone.
    ``goodput_ratio`` is NaN where the baseline had no goodput. Both runs, ``slo`` and ``step_s`` are
    checked as ``region_report`` checks them, and the two runs must have the same regions, before any
    work.
    """
    faulty, step_s = _checked("faulty", faulty, slo, step_s)
    baseline, _ = _checked("baseline", baseline, slo, step_s)
    hit_names, base_names = faulty.config.regions.names, baseline.config.regions.names
    if list(hit_names) != list(base_names):
        raise ValueError(
            f"faulty and baseline must have the same regions, got {_show(list(hit_names))} and "
            f"{_show(list(base_names))}"
        )
    hit, base = region_report(faulty, slo, step_s=step_s), region_report(baseline, slo, step_s=step_s)
    out = pd.DataFrame(
        {
            "goodput_per_s": hit["goodput_per_s"],
            "baseline_goodput_per_s": base["goodput_per_s"],
            "goodput_ratio": hit["goodput_per_s"] / base["goodput_per_s"].where(base["goodput_per_s"] > 0),
            "p99_s": hit["p99_s"],
            "baseline_p99_s": base["p99_s"],
            "budget_consumed": hit["budget_consumed"],
            "baseline_budget_consumed": base["budget_consumed"],
        }
    )
    out["budget_lost"] = out["budget_consumed"] - out["baseline_budget_consumed"]
    return out


#: The columns of ``region_token_report``, one row per origin region and a last row ``"all"``.
REGION_TOKEN_COLUMNS: dict[str, str] = {
    "requests": "requests that arrived from the region's users",
    "attainment": "their share completed within both token SLOs (experiments.slo_attainment's rule)",
    "p99_ttft_s": "99th percentile time to first token of the completed ones, round trip included",
    "p99_tpot_s": "99th percentile time per output token of the completed ones",
    "served_elsewhere": "requests served outside the region nearest their users (failover, spill)",
}


def region_token_report(
    log: pd.DataFrame, regions: RegionsConfig, *, ttft_slo_s: float, tpot_slo_s: float
) -> pd.DataFrame:
    """The token SLO as each origin region's users saw it (``REGION_TOKEN_COLUMNS``), and for all.

    ``log`` is the RequestLog of a continuous-batching platform with ``regions`` (or ``served_from``'s
    log of a central pool): its ``ttft_s`` carries each request's round trip.
    """
    if not isinstance(regions, RegionsConfig):
        raise TypeError(f"regions must be a RegionsConfig, got {_kind(regions)}")
    check_columns(log, {"origin_region": ("object", "the region of the request's user")}, "log")
    check_columns(log, {"region": ("object", "the region that served it")}, "log")
    nearest = {a: regions.names[regions.preference(k)[0]] for k, a in enumerate(regions.names)}
    met = token_slo_met(log, ttft_slo_s, tpot_slo_s)
    origin = log["origin_region"].to_numpy()
    served = log["region"].to_numpy()
    elsewhere = (served != "") & (served != np.array([nearest.get(a, a) for a in origin], dtype=object))
    rows = {}
    for name, mask in [*((a, origin == a) for a in regions.names), ("all", np.ones(len(log), bool))]:
        tails = token_latency_percentiles(log[mask], quantiles=(0.99,))["p99_s"]
        rows[name] = {
            "requests": float(mask.sum()),
            "attainment": float(met[mask].mean()) if mask.any() else math.nan,
            "p99_ttft_s": float(tails["ttft"]),
            "p99_tpot_s": float(tails["tpot"]),
            "served_elsewhere": float(elsewhere[mask].sum()),
        }
    table = pd.DataFrame.from_dict(rows, orient="index")[list(REGION_TOKEN_COLUMNS)]
    return table.rename_axis("origin_region")


def served_from(log: pd.DataFrame, origins: object, regions: RegionsConfig, region: str) -> pd.DataFrame:
    """The log of a platform without regions, its one pool in ``region``, as every region's users see it.

    ``origins`` names the region of each request's user, one entry per request in ``request_id`` order
    (the arrivals' ``origin_region`` column). Each completed request's round trip from its origin to
    ``region`` (``regions.rtt_s``) is added to ``responded_s``, ``latency_s`` and, with continuous
    batching, ``ttft_s``, as a platform with regions adds it; the log gains ``origin_region``,
    ``region`` (``""`` if rejected), ``rtt_s`` (NaN if rejected) and ``retries`` (0), the columns of
    ``schema.REGION_LOG_COLUMNS``.
    """
    if not isinstance(regions, RegionsConfig):
        raise TypeError(f"regions must be a RegionsConfig, got {_kind(regions)}")
    if region not in regions.names:
        raise ValueError(f"region must be one of {list(regions.names)}, got {_show(region)}")
    check_columns(log, {c: REQUEST_LOG_COLUMNS[c] for c in ("request_id", "outcome", "reject_reason")}, "log")
    if "region" in log.columns:
        raise ValueError("log must come from a platform without regions; it already has a 'region' column")
    if isinstance(origins, (str, bytes)) or not hasattr(origins, "__len__"):
        raise TypeError(f"origins must be a sequence of region names, one per request, got {_kind(origins)}")
    names = check_origin_names(list(origins), regions.names)
    ids = log["request_id"].to_numpy()
    if len(ids) and (ids.min() < 0 or ids.max() >= len(names)):
        raise ValueError(
            f"origins must name a region for every request_id of log (0 to {ids.max()}), got {len(names)}"
        )
    origin = names[ids]
    home = regions.names.index(region)
    rtt = regions.rtt_matrix()[origin, home]
    rejected = (log["outcome"] == "rejected").to_numpy()
    out = log.copy()
    done = (out["outcome"] == "completed").to_numpy()
    for column in ("responded_s", "latency_s", "ttft_s"):
        if column in out.columns:
            out[column] = out[column].to_numpy(dtype=np.float64) + np.where(done, rtt, 0.0)
    out["origin_region"] = np.array(regions.names, dtype=object)[origin]
    out["region"] = np.where(rejected, "", region).astype(object)
    out["rtt_s"] = np.where(rejected, np.nan, rtt)
    out["retries"] = np.zeros(len(out), dtype=np.int64)
    return out
