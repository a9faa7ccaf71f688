"""The whole platform's config: gateway, ingestion, the large model's pool, controls and regions."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .._validate import (
    MAX_COUNT,
    MAX_PRIORITY,
    _kind,
    check_int,
    check_probability,
    check_range,
    check_seconds,
)
from ._fields import _optional, _set
from .controls import CascadeConfig, ModeControllerConfig, OverflowConfig, TimeBoxConfig
from .pool import PoolConfig
from .regions import RegionsConfig

__all__ = ["GatewayConfig", "IngestionConfig", "PlatformConfig"]


@dataclass(frozen=True)
class GatewayConfig:
    """Admission control; ``None`` switches a mechanism off."""

    queue_capacity: int | None = None
    rate_limit_per_s: float | None = None
    rate_limit_burst: int = 1
    shed_queue_length: int | None = None
    shed_min_priority: int = 1
    timeout_s: float | None = None

    def __post_init__(self) -> None:
        _set(
            self,
            "queue_capacity",
            _optional(check_int, "queue_capacity", self.queue_capacity, minimum=1, maximum=MAX_COUNT),
        )
        _set(
            self,
            "rate_limit_per_s",
            _optional(check_range, "rate_limit_per_s", self.rate_limit_per_s, 0.0, MAX_COUNT, open_low=True),
        )
        _set(
            self,
            "rate_limit_burst",
            check_int("rate_limit_burst", self.rate_limit_burst, minimum=1, maximum=MAX_COUNT),
        )
        _set(
            self,
            "shed_queue_length",
            _optional(check_int, "shed_queue_length", self.shed_queue_length, minimum=0, maximum=MAX_COUNT),
        )
        _set(
            self,
            "shed_min_priority",
            check_int("shed_min_priority", self.shed_min_priority, minimum=0, maximum=MAX_PRIORITY),
        )
        _set(self, "timeout_s", _optional(check_seconds, "timeout_s", self.timeout_s, positive=True))


@dataclass(frozen=True)
class IngestionConfig:
    """The feature fetch after admission: lognormal (mean, cv) on a miss, a fixed latency on a hit."""

    fetch_mean_s: float
    fetch_cv: float = 1.0
    cache_hit_ratio: float = 0.0
    cache_latency_s: float = 0.0

    def __post_init__(self) -> None:
        _set(self, "fetch_mean_s", check_seconds("fetch_mean_s", self.fetch_mean_s, positive=True))
        _set(self, "fetch_cv", check_range("fetch_cv", self.fetch_cv, 0.0, 100.0))
        _set(self, "cache_hit_ratio", check_probability("cache_hit_ratio", self.cache_hit_ratio))
        _set(self, "cache_latency_s", check_seconds("cache_latency_s", self.cache_latency_s))

    def delays_s(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """``count`` fetch delays, one per request, drawn at once (request i always gets entry i)."""
        hit = rng.random(count) < self.cache_hit_ratio
        sigma2 = math.log1p(self.fetch_cv**2)
        miss_s = rng.lognormal(math.log(self.fetch_mean_s) - sigma2 / 2, math.sqrt(sigma2), count)
        return np.where(hit, self.cache_latency_s, miss_s)


@dataclass(frozen=True)
class PlatformConfig:
    """The whole platform: gateway, optional ingestion stage, pool, and the hop back to the client.

    Every control (``cascade``, ``timebox``, ``modes``, ``overflow``) and ``regions`` is off when
    ``None``, and any set of them composes.
    """

    pool: PoolConfig
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    ingestion: IngestionConfig | None = None
    network_hop_s: float = 0.0
    cascade: CascadeConfig | None = None
    timebox: TimeBoxConfig | None = None
    modes: ModeControllerConfig | None = None
    overflow: OverflowConfig | None = None
    regions: RegionsConfig | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.pool, PoolConfig):
            raise TypeError(f"pool must be a PoolConfig, got {_kind(self.pool)}")
        if not isinstance(self.gateway, GatewayConfig):
            raise TypeError(f"gateway must be a GatewayConfig, got {_kind(self.gateway)}")
        if self.ingestion is not None and not isinstance(self.ingestion, IngestionConfig):
            raise TypeError(f"ingestion must be an IngestionConfig or None, got {_kind(self.ingestion)}")
        _set(self, "network_hop_s", check_seconds("network_hop_s", self.network_hop_s))
        for name, kind in (
            ("cascade", CascadeConfig),
            ("timebox", TimeBoxConfig),
            ("modes", ModeControllerConfig),
            ("overflow", OverflowConfig),
            ("regions", RegionsConfig),
        ):
            value = getattr(self, name)
            if value is not None and not isinstance(value, kind):
                raise TypeError(f"{name} must be a {kind.__name__} or None, got {_kind(value)}")
        if self.cascade is not None and self.cascade.small.name == self.pool.name:
            raise ValueError(f"cascade.small.name must differ from pool.name; both are {self.pool.name!r}")
        if self.overflow is not None and self.gateway.queue_capacity is None:
            knobs = [] if self.modes is None else [m.knobs.queue_capacity for m in self.modes.levels]
            if all(k is None for k in knobs):
                raise ValueError(
                    "overflow needs a bounded queue: set gateway.queue_capacity (or a mode's queue_capacity)"
                )
        if self.regions is not None:
            for fault in self.regions.faults:
                k = self.regions.names.index(fault.region)
                most = self.regions.pool_of(k, self.pool).max_replicas
                if fault.replicas != "all" and fault.replicas > most:
                    raise ValueError(
                        f"fault replicas must be 'all' or <= {most} (the replicas region {fault.region!r} "
                        f"can have), got {fault.replicas!r}"
                    )
