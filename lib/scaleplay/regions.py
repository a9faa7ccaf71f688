"""Regions and faults: regional pools, the network between users and regions, geo-routing, failover.

``PlatformConfig.regions`` (a ``RegionsConfig``, off unless set) spreads the platform over several
regions, each with its own pool of replicas. ``simulator.simulate`` does the mechanics; this module
holds the configs and the reports that read a run. What they mean:

- **Users and the network.** Each request comes from the users of one *origin* region: the
  arrivals' ``origin_region`` column when it is there, else a draw from the regions' ``share`` (the
  named stream ``"origin"``, so other components' draws do not move). ``rtt_s[a][b]`` is the round
  trip in seconds between users in region ``a`` and the servers of region ``b``. The whole round trip
  is added to ``responded_s`` (after ``model_end_s + network_hop_s``): the gateway's and the pool's
  timestamps keep the queueing clock, and ``latency_s`` carries the network exactly.
- **Gateway.** One global front door (think anycast) admits with ``PlatformConfig.gateway``'s rules
  on the whole platform's backlog; an admitted request is then routed at once to a region, where its
  features are fetched and it waits in that region's pool.
- **Geo-routing.** Each origin ranks the regions by round trip (the lower index first on ties).
  With ``failover=True`` a request goes to the nearest *healthy* region (one with a replica that has
  not failed); with ``spill_backlog`` set it skips a healthy region whose backlog (requests routed
  there and not yet started) is at least ``spill_backlog`` and takes the next one, or the nearest
  healthy region when all are that busy. With ``failover=False`` every origin is pinned to its
  nearest region whatever happens there (no failover, no spill).
- **Faults.** ``Fault(at_s, region, replicas, duration_s)`` takes ``replicas`` replicas of the
  region (the highest-numbered ones still up, or ``"all"``) out of service at ``at_s``, and brings
  them back after ``duration_s`` (never when ``None``). A batch running on a failed replica is lost:
  its requests are *retried* at once (the log's ``retries`` counts the lost attempts). A retried
  request rejoins the front of a line: its own region's if a replica there still serves or
  ``failover`` is off, else the nearest healthy region's (and it pays that region's round trip). It
  has started once, so like an escalation it has no deadline any more. When the last replica of a
  region fails and ``failover`` is on, the requests waiting in its line move to the nearest healthy
  region too, and requests still fetching features move when their features are ready. With no
  healthy region anywhere, requests wait where they are for a recovery. Failed replicas stay
  provisioned (the Timeline's ``replicas`` does not drop; ``busy_replicas`` does). A pool with
  faults must use the ``"shared_queue"`` policy and no autoscaler.
- **Reports.** ``region_report`` gives each origin region's (and all users') goodput, p99 and the
  share of the SLO's error budget the run spent; ``fault_impact`` sets a faulty run beside a
  no-fault baseline run with the same seed.

Every request still ends ``completed``, ``rejected``, ``timed_out`` or ``in_flight``: a request
waiting for a region that never recovers is ``in_flight`` at the end.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ._validate import check_int, check_non_negative, check_positive, check_probability
from .alerting import SLO, evaluate_alerts

if TYPE_CHECKING:
    from .simulator import PoolConfig, SimulationResult

__all__ = [
    "Region",
    "Fault",
    "RegionsConfig",
    "region_report",
    "fault_impact",
]

# Shares must sum to 1 up to this rounding.
_SHARE_TOLERANCE = 1e-9


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)


@dataclass(frozen=True)
class Region:
    """One region: its name, its users' share of the traffic, and its pool (default: the platform's)."""

    name: str
    share: float
    pool: PoolConfig | None = None

    def __post_init__(self) -> None:
        from .simulator import PoolConfig  # the simulator imports this module first

        if not isinstance(self.name, str) or not self.name or self.name in ("cache", "human"):
            raise ValueError(
                f"region name must be a non-empty string other than 'cache', 'human'; got {self.name!r}"
            )
        _set(self, "share", check_probability(f"share of region {self.name!r}", self.share))
        if self.pool is not None and not isinstance(self.pool, PoolConfig):
            raise TypeError(
                f"pool of region {self.name!r} must be a PoolConfig or None, got {type(self.pool).__name__}"
            )


@dataclass(frozen=True)
class Fault:
    """``replicas`` of ``region`` (a count or ``"all"``) fail at ``at_s``, back after ``duration_s``."""

    at_s: float
    region: str
    replicas: int | str = "all"
    duration_s: float | None = None

    def __post_init__(self) -> None:
        _set(self, "at_s", check_non_negative("at_s", self.at_s))
        if not isinstance(self.region, str) or not self.region:
            raise ValueError(f"region must be a region's name, got {self.region!r}")
        if self.replicas != "all":
            _set(self, "replicas", check_int("replicas", self.replicas, minimum=1))
        if self.duration_s is not None:
            _set(self, "duration_s", check_positive("duration_s", self.duration_s))

    @property
    def until_s(self) -> float:
        """When the replicas come back (``inf`` for a permanent fault)."""
        return math.inf if self.duration_s is None else self.at_s + self.duration_s


@dataclass(frozen=True)
class RegionsConfig:
    """The regions, the round trips between their users and their servers, routing and faults.

    ``rtt_s[a][b]`` (seconds, a square matrix in the order of ``regions``) is the round trip from
    users in region ``a`` to region ``b``; it need not be symmetric. See the module docstring.
    """

    regions: tuple[Region, ...]
    rtt_s: tuple[tuple[float, ...], ...]
    failover: bool = True
    spill_backlog: int | None = None
    faults: tuple[Fault, ...] = ()

    def __post_init__(self) -> None:
        regions = tuple(self.regions)
        if not regions:
            raise ValueError("regions must hold at least one Region, got none")
        for region in regions:
            if not isinstance(region, Region):
                raise TypeError(f"regions must hold Region objects, got {type(region).__name__}")
        names = [region.name for region in regions]
        if len(set(names)) != len(names):
            raise ValueError(f"region names must be unique, got {names}")
        total = math.fsum(region.share for region in regions)
        if abs(total - 1.0) > _SHARE_TOLERANCE:
            raise ValueError(f"the regions' shares must sum to 1, got {total!r} ({names})")
        _set(self, "regions", regions)

        k = len(regions)
        try:
            rows = [list(row) for row in self.rtt_s]
        except TypeError:
            raise TypeError(f"rtt_s must be a {k} x {k} matrix of seconds, got {self.rtt_s!r}") from None
        if len(rows) != k or any(len(row) != k for row in rows):
            shape = f"{len(rows)} rows of lengths {[len(row) for row in rows]}"
            raise ValueError(f"rtt_s must be a square {k} x {k} matrix (one row per region), got {shape}")
        _set(
            self,
            "rtt_s",
            tuple(
                tuple(check_non_negative(f"rtt_s[{a}][{b}]", value) for b, value in enumerate(row))
                for a, row in enumerate(rows)
            ),
        )
        if not isinstance(self.failover, bool):
            raise TypeError(f"failover must be True or False, got {self.failover!r}")
        if self.spill_backlog is not None:
            _set(self, "spill_backlog", check_int("spill_backlog", self.spill_backlog, minimum=0))
        faults = tuple(self.faults)
        for fault in faults:
            if not isinstance(fault, Fault):
                raise TypeError(f"faults must hold Fault objects, got {type(fault).__name__}")
            if fault.region not in names:
                raise ValueError(f"fault region must be one of {names}, got {fault.region!r}")
        _set(self, "faults", faults)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(region.name for region in self.regions)

    @property
    def shares(self) -> np.ndarray:
        return np.array([region.share for region in self.regions], dtype=np.float64)

    def rtt_matrix(self) -> np.ndarray:
        """``rtt_s`` as a float array."""
        return np.array(self.rtt_s, dtype=np.float64).reshape(len(self.regions), len(self.regions))

    def preference(self, origin: int) -> list[int]:
        """The regions by round trip from users of region ``origin``, nearest first (lower index on ties)."""
        row = self.rtt_s[origin]
        return sorted(range(len(row)), key=lambda b: (row[b], b))

    def pool_of(self, region: int, default: PoolConfig) -> PoolConfig:
        """The pool of region ``region``: its own, or ``default`` (the platform's ``pool``)."""
        pool = self.regions[region].pool
        return default if pool is None else pool

    def draw_origins(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """``count`` origin region indices from the shares (request i always gets draw i)."""
        cdf = np.cumsum(self.shares)
        return np.minimum(np.searchsorted(cdf, rng.random(count), side="right"), len(cdf) - 1)


# ---------------------------------------------------------------------------------------------------
# Reports

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


def region_report(result: SimulationResult, slo: SLO, *, step_s: float = 60.0) -> pd.DataFrame:
    """One row per origin region (what its users saw) and a last row ``"all"``.

    Columns: ``requests``, ``completed``, ``good`` (completed within ``slo.latency_s``),
    ``goodput_per_s`` (good requests over the run's horizon), ``good_share`` (good over the requests
    judged: all but those in flight), ``p99_s`` (of the completed), ``budget_consumed`` (the share of
    the SLO's period error budget the run spent, from ``alerting.evaluate_alerts`` on that region's
    requests, so each region's budget is sized by its own traffic), ``served_elsewhere`` (requests
    served outside their users' nearest region: failover or spill) and ``retried`` (requests that
    lost a batch to a fault).
    """
    config = result.config
    if config.regions is None:
        raise ValueError("result must come from a platform with regions (PlatformConfig.regions)")
    if not isinstance(slo, SLO):
        raise TypeError(f"slo must be an SLO, got {type(slo).__name__}")
    step_s = check_positive("step_s", step_s)
    regions = config.regions
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
    """
    hit, base = region_report(faulty, slo, step_s=step_s), region_report(baseline, slo, step_s=step_s)
    if list(hit.index) != list(base.index):
        raise ValueError(f"the runs have different regions: {list(hit.index)} and {list(base.index)}")
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


def _check_origin_names(values: Sequence[object], names: tuple[str, ...]) -> np.ndarray:
    """Map the arrivals' ``origin_region`` names to region indices, refusing unknown names."""
    index = {name: k for k, name in enumerate(names)}
    out = np.empty(len(values), dtype=np.int64)
    for row, value in enumerate(values):
        k = index.get(value)
        if k is None:
            raise ValueError(
                f"arrivals['origin_region'] must hold names of {list(names)}; row {row} holds {value!r}"
            )
        out[row] = k
    return out
