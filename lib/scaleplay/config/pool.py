"""A pool of identical model servers: how many, their service-time curve, their batcher, the balancer."""

from __future__ import annotations

from dataclasses import dataclass, field

from .._validate import MAX_REPLICAS, _kind, check_in, check_int, check_seconds
from ..profiles import MAX_BATCH_SIZE, ServiceTime
from ._fields import _set
from .autoscaler import AutoscalerConfig

__all__ = ["POLICIES", "RESERVED_NAMES", "BatcherConfig", "PoolConfig"]

#: Names a pool cannot take: the log's ``model`` column uses them for answers no pool gave.
RESERVED_NAMES: tuple[str, ...] = ("cache", "human")

#: How a pool hands requests to its replicas.
POLICIES: tuple[str, ...] = ("shared_queue", "round_robin", "join_shortest_queue", "power_of_two")


@dataclass(frozen=True)
class BatcherConfig:
    """The dynamic batcher of each replica: batch size cap, how long to wait for company, slots."""

    max_batch_size: int = 1
    max_wait_s: float = 0.0
    max_concurrent_batches: int = 1

    def __post_init__(self) -> None:
        _set(
            self,
            "max_batch_size",
            check_int("max_batch_size", self.max_batch_size, minimum=1, maximum=MAX_BATCH_SIZE),
        )
        _set(self, "max_wait_s", check_seconds("max_wait_s", self.max_wait_s))
        _set(
            self,
            "max_concurrent_batches",
            check_int("max_concurrent_batches", self.max_concurrent_batches, minimum=1, maximum=1024),
        )


@dataclass(frozen=True)
class PoolConfig:
    """``replicas`` identical model servers with one service-time curve, a batcher and a policy.

    With an ``autoscaler``, ``replicas`` is the count at the start, within its bounds.
    """

    replicas: int
    service: ServiceTime
    batcher: BatcherConfig = field(default_factory=BatcherConfig)
    policy: str = "shared_queue"
    name: str = "main"
    autoscaler: AutoscalerConfig | None = None

    def __post_init__(self) -> None:
        _set(self, "replicas", check_int("replicas", self.replicas, minimum=1, maximum=MAX_REPLICAS))
        if not isinstance(self.service, ServiceTime):
            raise TypeError(f"service must be a ServiceTime (with batch_time_s), got {_kind(self.service)}")
        if not isinstance(self.batcher, BatcherConfig):
            raise TypeError(f"batcher must be a BatcherConfig, got {_kind(self.batcher)}")
        check_in("policy", self.policy, POLICIES)
        if not isinstance(self.name, str) or not self.name or self.name in RESERVED_NAMES:
            raise ValueError(
                f"name must be a non-empty string other than {', '.join(map(repr, RESERVED_NAMES))}; "
                f"got {self.name!r}"
            )
        scaler = self.autoscaler
        if scaler is not None:
            if not isinstance(scaler, AutoscalerConfig):
                raise TypeError(f"autoscaler must be an AutoscalerConfig or None, got {_kind(scaler)}")
            low = max(scaler.min_replicas, 1)
            if not low <= self.replicas <= scaler.max_replicas:
                raise ValueError(
                    f"replicas (the replicas at the start) must lie in [{low}, {scaler.max_replicas}] "
                    f"with this autoscaler, got {self.replicas!r}"
                )

    @property
    def max_replicas(self) -> int:
        """The most replicas this pool can ever have (its autoscaler's ceiling, else ``replicas``)."""
        return self.replicas if self.autoscaler is None else self.autoscaler.max_replicas
