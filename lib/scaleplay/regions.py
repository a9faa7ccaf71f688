"""Reports on regions and faults: each origin region's goodput, p99 and error budget; a fault's impact.

The configs (``Region``, ``Fault``, ``RegionsConfig``) live in ``scaleplay.config.regions``, which
documents the rules, and are re-exported here; ``scaleplay.sim.router`` and ``scaleplay.sim.faults``
do the mechanics. ``region_report`` gives each origin region's (and all users') goodput, p99 and the
share of the SLO's error budget the run spent; ``fault_impact`` sets a faulty run beside a no-fault
baseline run with the same seed.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ._validate import _kind, _show
from .alerting import MAX_SPAN_S, SLO, _check_evaluation, evaluate_alerts
from .config import Fault, Region, RegionsConfig
from .sim import SimulationResult

__all__ = [
    "Region",
    "Fault",
    "RegionsConfig",
    "region_report",
    "fault_impact",
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
