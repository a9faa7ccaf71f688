"""Regions and faults: regional pools, the network between users and regions, geo-routing, failover.

``PlatformConfig.regions`` (a ``RegionsConfig``, off unless set) spreads the platform over several
regions, each with its own pool of replicas (and its own small model's pool with a cascade).
``sim.router`` and ``sim.faults`` do the mechanics; ``scaleplay.regions`` holds the reports. What the
configs mean:

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
  provisioned (the Timeline's ``replicas`` does not drop; ``busy_replicas`` does). Under an autoscaler
  a fault takes the highest-numbered replicas that are provisioned and up; ``"all"`` takes every
  replica of the region, those of its small model's pool included. With a balancing policy other
  than ``"shared_queue"``, the requests waiting in a failed replica's own line are dealt again to the
  replicas still serving.

Every request still ends ``completed``, ``rejected``, ``timed_out`` or ``in_flight``: a request
waiting for a region that never recovers is ``in_flight`` at the end.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .._validate import (
    MAX_COUNT,
    MAX_REPLICAS,
    _kind,
    check_int,
    check_items,
    check_probability,
    check_seconds,
)
from ._fields import _set
from .pool import RESERVED_NAMES, PoolConfig

__all__ = ["Region", "Fault", "RegionsConfig", "check_origin_names"]

# Shares must sum to 1 up to this rounding.
_SHARE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Region:
    """One region: its name, its users' share of the traffic, and its pool (default: the platform's)."""

    name: str
    share: float
    pool: PoolConfig | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or self.name in RESERVED_NAMES:
            raise ValueError(
                f"region name must be a non-empty string other than 'cache', 'human'; got {self.name!r}"
            )
        _set(self, "share", check_probability(f"share of region {self.name!r}", self.share))
        if self.pool is not None and not isinstance(self.pool, PoolConfig):
            raise TypeError(
                f"pool of region {self.name!r} must be a PoolConfig or None, got {_kind(self.pool)}"
            )


@dataclass(frozen=True)
class Fault:
    """``replicas`` of ``region`` (a count or ``"all"``) fail at ``at_s``, back after ``duration_s``."""

    at_s: float
    region: str
    replicas: int | str = "all"
    duration_s: float | None = None

    def __post_init__(self) -> None:
        _set(self, "at_s", check_seconds("at_s", self.at_s))
        if not isinstance(self.region, str) or not self.region:
            raise ValueError(f"region must be a region's name, got {self.region!r}")
        if self.replicas != "all":
            _set(self, "replicas", check_int("replicas", self.replicas, minimum=1, maximum=MAX_REPLICAS))
        if self.duration_s is not None:
            _set(self, "duration_s", check_seconds("duration_s", self.duration_s, positive=True))

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
        regions = check_items("regions", self.regions, Region, max_size=1000)
        if not regions:
            raise ValueError("regions must hold at least one Region, got none")
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
                tuple(check_seconds(f"rtt_s[{a}][{b}]", value) for b, value in enumerate(row))
                for a, row in enumerate(rows)
            ),
        )
        if not isinstance(self.failover, bool):
            raise TypeError(f"failover must be True or False, got {self.failover!r}")
        if self.spill_backlog is not None:
            _set(
                self,
                "spill_backlog",
                check_int("spill_backlog", self.spill_backlog, minimum=0, maximum=MAX_COUNT),
            )
        faults = check_items("faults", self.faults, Fault)
        for fault in faults:
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


def check_origin_names(values: Sequence[object], names: tuple[str, ...]) -> np.ndarray:
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
