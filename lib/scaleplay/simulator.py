"""The inference platform as a discrete-event model: gateway, feature fetch, and replicas that batch.

``simulate(arrivals, config, seed=...)`` plays an arrivals table through the platform and returns a
RequestLog (one row per request, ``schema.REQUEST_LOG_COLUMNS``) and a Timeline (``TIMELINE_COLUMNS``).
A request's life, with the log column stamped at each handoff:

1. ``arrived_s``: it reaches the gateway (the ``t_s`` of the arrivals table; the inbound network hop
   is folded into that time).
2. The gateway decides at once, checking in this order:

   - *rate limit*: a token bucket refilled at ``rate_limit_per_s`` up to ``rate_limit_burst`` tokens
     (full at the start); each admission spends a token, an empty bucket rejects as ``"rate_limited"``;
   - *load shedding*: while the backlog is at least ``shed_queue_length``, requests whose
     ``priority >= shed_min_priority`` are rejected as ``"shed"`` (the least important classes first);
   - *bounded queue*: a backlog of ``queue_capacity`` rejects as ``"queue_full"``.

   The *backlog* is the number of requests admitted and not yet started on a replica (those whose
   features are still being fetched included), so ``queue_capacity`` is a hard bound on it.
   An admitted request has ``admitted_s = arrived_s``; a rejected one ends there.
3. ``features_ready_s``: the ingestion stage fetches its features, a lognormal delay of mean
   ``fetch_mean_s`` and coefficient of variation ``fetch_cv``, or ``cache_latency_s`` on a cache hit
   (probability ``cache_hit_ratio``). Without an ingestion stage it equals ``admitted_s``.
4. It joins a waiting line. ``"shared_queue"`` keeps one line for the whole pool (the M/M/c system);
   the other policies send it at once to one replica's own line: ``"round_robin"``,
   ``"join_shortest_queue"`` (fewest requests waiting plus in service, lowest index on ties) or
   ``"power_of_two"`` (the shorter of two distinct replicas drawn from the ``"balancer"`` stream).
   A line serves lower ``priority`` numbers first, first come first served within a class, and never
   interrupts a running batch.
5. ``model_start_s``: a batch slot of a replica takes it. A replica runs up to
   ``max_concurrent_batches`` batches at once. A free slot takes up to ``max_batch_size`` waiting
   requests; with fewer waiting it holds off until the line fills up or its oldest request has waited
   ``max_wait_s`` (with ``max_wait_s = 0`` it takes whatever waits). The batch lasts
   ``service.batch_time_s(B, sum of tokens_in, max of tokens_out, rng)`` with the replica's own stream
   ``"service/replica-<r>"``; when ``max_batch_size == 1`` and the arrivals carry a ``service_s``
   column, the request's own ``service_s`` is used instead (the hook shared with ``fastpath``).
6. ``model_end_s`` when the batch ends, and ``responded_s = model_end_s + network_hop_s``: the hop is
   the answer's trip back to the client.

Deadlines: a request still waiting for a replica (in the fetch or in a line) ``timeout_s`` after it
arrived leaves as ``"timed_out"`` at that instant; it is removed from its line, so it never takes a
batch slot. A request that has started always finishes.

Horizon: with ``horizon_s`` the log holds the requests that arrived before it; those not answered by
then are ``"in_flight"`` (with ``model_end_s`` set if only the response hop was left). Without it
the run goes on until every request has its outcome, and ``horizon_s`` becomes the last response,
deadline or arrival. Either way every arrived request ends exactly one of ``completed``,
``rejected``, ``timed_out`` or ``in_flight``.

Timeline (one row per ``timeline_step_s``, the last one possibly shorter): ``queue_length`` is the
time-average number of requests in the lines (features ready, no replica yet), ``busy_replicas``
the time-average number of replicas running at least one batch; both are computed exactly from the
log and the record of batches. Counts go to the interval of the event: ``rejected`` at arrival,
``completed`` at ``responded_s``, ``timed_out`` at the deadline ``arrived_s + timeout_s``.

Controls (``scaleplay.controls``, each off unless set; their rules are documented there): an
``AutoscalerConfig`` on a ``PoolConfig`` adds and removes replicas with cold starts, scale-to-zero
included (the Timeline's ``replicas`` is then the time-average of replicas billed, starting ones
included, and ``SimulationResult.provisioning`` lists each replica's life); ``PlatformConfig.cascade``
puts a small model's pool in front of ``pool`` (requests enter the small model's line when their
features are ready and escalate to ``pool`` when it is not confident); ``timebox`` lets requests
waiting for ``pool`` fall back to the small model's answer or a cached one; ``modes`` runs the surge
controller, whose knobs change ``pool``'s batcher and the gateway's queue capacity and shedding;
``overflow`` sends what the bounded queue turns away to an offline tier (reason ``"overflow"``).
With a cascade an escalated request waits again in ``pool``'s line: it counts in the backlog again
(so the gateway's bound holds at admission only), it is exempt from the deadline (it has started),
and the log's extra columns (``schema.CONTROL_LOG_COLUMNS``) say what answered it. Every request
still ends ``completed``, ``rejected``, ``timed_out`` or ``in_flight``.

Regions and faults (``scaleplay.regions``, off unless ``PlatformConfig.regions`` is set; the rules are
documented there): each region runs its own pool (streams ``"service/<region>/replica-<r>"`` and
``"balancer/<region>"``), each request's origin comes from the stream ``"origin"`` (or the arrivals'
``origin_region``), the global gateway admits and the router picks the nearest healthy region at once,
and ``responded_s`` adds the round trip between the origin and the serving region. A fault stops
replicas at its time: their running batches are cut short (the batch record ends then) and their
requests retried at the front of a line, counting in the backlog again (so the gateway's bound holds
at admission only) and exempt from the deadline (they have started). The log's extra columns are
``schema.REGION_LOG_COLUMNS``. Regions do not combine with a cascade, a time-box or surge modes.

Speed: one simpy process per batch slot and one feeding the arrivals, with plain deques for the lines
and Python lists indexed by request for the per-request state. Feature fetches are bare timeouts with
a callback, not processes; deadlines are enforced lazily (a request whose deadline has passed is
dropped the next time anything looks at its line), which is exact because nothing can happen to a
waiting request between two such looks.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import simpy
from simpy.core import URGENT
from tqdm import tqdm

from ._validate import (
    check_in,
    check_int,
    check_non_negative,
    check_positive,
    check_probability,
)
from .controls import (
    MODES,
    AutoscalerConfig,
    CascadeConfig,
    ModeControllerConfig,
    OverflowConfig,
    TimeBoxConfig,
)
from .profiles import RandomServiceTime, ServiceTime
from .regions import RegionsConfig, _check_origin_names
from .rng import stream
from .schema import (
    ARRIVAL_COLUMNS,
    CONTROL_LOG_COLUMNS,
    CONTROL_TIMELINE_COLUMNS,
    OUTCOMES,
    REGION_LOG_COLUMNS,
    REJECT_REASONS,
    REQUEST_LOG_COLUMNS,
    TIMELINE_COLUMNS,
    check_columns,
)

__all__ = [
    "POLICIES",
    "BatcherConfig",
    "PoolConfig",
    "GatewayConfig",
    "IngestionConfig",
    "PlatformConfig",
    "SimulationResult",
    "simulate",
]

#: Names a pool cannot take: the log's ``model`` column uses them for answers no pool gave.
_RESERVED_NAMES: tuple[str, ...] = ("cache", "human")

#: How a pool hands requests to its replicas.
POLICIES: tuple[str, ...] = ("shared_queue", "round_robin", "join_shortest_queue", "power_of_two")


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)


def _optional(check: Callable[..., object], name: str, value: object, **kwargs: int) -> object:
    return None if value is None else check(name, value, **kwargs)


@dataclass(frozen=True)
class BatcherConfig:
    """The dynamic batcher of each replica: batch size cap, how long to wait for company, slots."""

    max_batch_size: int = 1
    max_wait_s: float = 0.0
    max_concurrent_batches: int = 1

    def __post_init__(self) -> None:
        _set(self, "max_batch_size", check_int("max_batch_size", self.max_batch_size, minimum=1))
        _set(self, "max_wait_s", check_non_negative("max_wait_s", self.max_wait_s))
        _set(
            self,
            "max_concurrent_batches",
            check_int("max_concurrent_batches", self.max_concurrent_batches, minimum=1),
        )


@dataclass(frozen=True)
class PoolConfig:
    """``replicas`` identical model servers with one service-time curve, a batcher and a policy."""

    replicas: int
    service: ServiceTime
    batcher: BatcherConfig = field(default_factory=BatcherConfig)
    policy: str = "shared_queue"
    name: str = "main"
    autoscaler: AutoscalerConfig | None = None

    def __post_init__(self) -> None:
        _set(self, "replicas", check_int("replicas", self.replicas, minimum=1))
        if not isinstance(self.service, ServiceTime):
            raise TypeError(
                f"service must be a ServiceTime (with batch_time_s), got {type(self.service).__name__}"
            )
        if not isinstance(self.batcher, BatcherConfig):
            raise TypeError(f"batcher must be a BatcherConfig, got {type(self.batcher).__name__}")
        check_in("policy", self.policy, POLICIES)
        if not isinstance(self.name, str) or not self.name or self.name in _RESERVED_NAMES:
            raise ValueError(
                f"name must be a non-empty string other than {', '.join(map(repr, _RESERVED_NAMES))}; "
                f"got {self.name!r}"
            )
        scaler = self.autoscaler
        if scaler is not None:
            if not isinstance(scaler, AutoscalerConfig):
                raise TypeError(
                    f"autoscaler must be an AutoscalerConfig or None, got {type(scaler).__name__}"
                )
            if self.policy != "shared_queue":
                raise ValueError(f"policy must be 'shared_queue' with an autoscaler, got {self.policy!r}")
            low = max(scaler.min_replicas, 1)
            if not low <= self.replicas <= scaler.max_replicas:
                raise ValueError(
                    f"replicas (the replicas at the start) must lie in [{low}, {scaler.max_replicas}] "
                    f"with this autoscaler, got {self.replicas!r}"
                )


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
        _set(self, "queue_capacity", _optional(check_int, "queue_capacity", self.queue_capacity, minimum=1))
        _set(self, "rate_limit_per_s", _optional(check_positive, "rate_limit_per_s", self.rate_limit_per_s))
        _set(self, "rate_limit_burst", check_int("rate_limit_burst", self.rate_limit_burst, minimum=1))
        _set(
            self,
            "shed_queue_length",
            _optional(check_int, "shed_queue_length", self.shed_queue_length, minimum=0),
        )
        _set(self, "shed_min_priority", check_int("shed_min_priority", self.shed_min_priority, minimum=0))
        _set(self, "timeout_s", _optional(check_positive, "timeout_s", self.timeout_s))


@dataclass(frozen=True)
class IngestionConfig:
    """The feature fetch after admission: lognormal (mean, cv) on a miss, a fixed latency on a hit."""

    fetch_mean_s: float
    fetch_cv: float = 1.0
    cache_hit_ratio: float = 0.0
    cache_latency_s: float = 0.0

    def __post_init__(self) -> None:
        _set(self, "fetch_mean_s", check_positive("fetch_mean_s", self.fetch_mean_s))
        _set(self, "fetch_cv", check_non_negative("fetch_cv", self.fetch_cv))
        _set(self, "cache_hit_ratio", check_probability("cache_hit_ratio", self.cache_hit_ratio))
        _set(self, "cache_latency_s", check_non_negative("cache_latency_s", self.cache_latency_s))

    def delays_s(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """``count`` fetch delays, one per request, drawn at once (request i always gets entry i)."""
        hit = rng.random(count) < self.cache_hit_ratio
        sigma2 = math.log1p(self.fetch_cv**2)
        miss_s = rng.lognormal(math.log(self.fetch_mean_s) - sigma2 / 2, math.sqrt(sigma2), count)
        return np.where(hit, self.cache_latency_s, miss_s)


@dataclass(frozen=True)
class PlatformConfig:
    """The whole platform: gateway, optional ingestion stage, pool, and the hop back to the client."""

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
            raise TypeError(f"pool must be a PoolConfig, got {type(self.pool).__name__}")
        if not isinstance(self.gateway, GatewayConfig):
            raise TypeError(f"gateway must be a GatewayConfig, got {type(self.gateway).__name__}")
        if self.ingestion is not None and not isinstance(self.ingestion, IngestionConfig):
            raise TypeError(
                f"ingestion must be an IngestionConfig or None, got {type(self.ingestion).__name__}"
            )
        _set(self, "network_hop_s", check_non_negative("network_hop_s", self.network_hop_s))
        for name, kind in (
            ("cascade", CascadeConfig),
            ("timebox", TimeBoxConfig),
            ("modes", ModeControllerConfig),
            ("overflow", OverflowConfig),
            ("regions", RegionsConfig),
        ):
            value = getattr(self, name)
            if value is not None and not isinstance(value, kind):
                raise TypeError(f"{name} must be a {kind.__name__} or None, got {type(value).__name__}")
        if self.cascade is not None and self.cascade.small.name == self.pool.name:
            raise ValueError(f"cascade.small.name must differ from pool.name; both are {self.pool.name!r}")
        if self.overflow is not None and self.gateway.queue_capacity is None:
            knobs = [] if self.modes is None else [m.knobs.queue_capacity for m in self.modes.levels]
            if all(k is None for k in knobs):
                raise ValueError(
                    "overflow needs a bounded queue: set gateway.queue_capacity (or a mode's queue_capacity)"
                )
        if self.regions is not None:
            self._check_regions(self.regions)

    def _check_regions(self, regions: RegionsConfig) -> None:
        for name in ("cascade", "timebox", "modes"):
            if getattr(self, name) is not None:
                raise ValueError(f"regions cannot be combined with {name} (yet); set one of them to None")
        for fault in regions.faults:
            k = regions.names.index(fault.region)
            pool = regions.pool_of(k, self.pool)
            if pool.policy != "shared_queue" or pool.autoscaler is not None:
                raise ValueError(
                    f"the pool of region {fault.region!r} has a fault, so it must use policy 'shared_queue' "
                    f"and no autoscaler; got policy {pool.policy!r}, autoscaler {pool.autoscaler!r}"
                )
            if fault.replicas != "all" and fault.replicas > pool.replicas:
                raise ValueError(
                    f"fault replicas must be 'all' or <= {pool.replicas} (the replicas of region "
                    f"{fault.region!r}), got {fault.replicas!r}"
                )

    @property
    def controlled(self) -> bool:
        """Whether any control is on (then the run keeps the extra bookkeeping they need)."""
        return (
            self.cascade is not None
            or self.timebox is not None
            or self.modes is not None
            or self.overflow is not None
            or self.pool.autoscaler is not None
            or self.regions is not None
        )


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


# ---------------------------------------------------------------------------------------------------
# The event loop

# Request states while the model runs; outcomes are read off them at the end.
_FETCHING, _IN_LINE, _IN_MODEL, _REJECTED, _TIMED_OUT, _ANSWERED = range(1, 7)
_QUEUE_FULL, _RATE_LIMITED, _SHED, _OVERFLOW = (
    REJECT_REASONS.index(r) for r in ("queue_full", "rate_limited", "shed", "overflow")
)
# Replica states under an autoscaler: billed from _STARTING until _OFF, serving only when _READY.
_OFF, _STARTING, _READY, _DRAINING = range(4)
# Slack against rounding when a refilled token bucket should hold exactly one token.
_TOKEN_SLACK = 1e-9


def _delay_until(now: float, target: float) -> float:
    """A delay ``d`` with ``now + d == target`` in floating point, so an event lands exactly on time."""
    d = target - now
    for _ in range(4):
        landed = now + d
        if landed == target:
            break
        d = math.nextafter(d, math.inf if landed < target else -math.inf)
    return max(d, 0.0)


def _succeed_if_pending(timer: simpy.Event) -> None:
    """A batcher's timer fired: wake its slot unless a new request already has."""
    slot_event = timer.value
    if not slot_event.triggered:
        slot_event.succeed()


class _Line:
    """One waiting line: a FIFO per priority level, served lowest level first."""

    __slots__ = ("by_priority", "count", "idle_slots")

    def __init__(self, levels: int) -> None:
        self.by_priority = [deque() for _ in range(levels)]
        self.count = 0  # live requests; the deques may still hold timed-out ones
        self.idle_slots: deque[simpy.Event] = deque()

    def wake_one(self) -> None:
        idle = self.idle_slots
        while idle:
            event = idle.popleft()
            if not event.triggered:
                event.succeed()
                return

    def wake_all(self) -> None:
        """Wake every idle slot so it looks again (after a knob or the replica set changed)."""
        idle, self.idle_slots = self.idle_slots, deque()
        for event in idle:
            if not event.triggered:
                event.succeed()


class _Pool:
    """One pool while the model runs: its lines, its knobs, and its replicas' states."""

    def __init__(
        self,
        index: int,
        config: PoolConfig,
        levels: int,
        line_offset: int,
        seed: int,
        region: str | None = None,
    ) -> None:
        self.index, self.config = index, config
        self.name = config.name if region is None else region
        self.regional = region is not None
        scaler = config.autoscaler
        self.scaler = scaler
        self.size = scaler.max_replicas if scaler is not None else config.replicas  # replicas built
        self.max_size = config.batcher.max_batch_size
        self.max_wait_s = config.batcher.max_wait_s
        self.dispatch = config.policy != "shared_queue" and config.replicas > 1  # a lone replica: no choice
        self.lines = [_Line(levels) for _ in range(config.replicas if self.dispatch else 1)]
        self.line_offset = line_offset
        self.in_service = [0] * self.size
        self.next_replica = 0
        self.balancer = stream(
            seed, "balancer" if index == 0 and not self.regional else f"balancer/{self.name}"
        )
        self.pairs: list[tuple[int, int]] = []
        self.after: Callable[[_Pool, int, list[int], float], None] | None = None  # batch-end hook
        self.timebox = False  # requests joining this pool's line run on a time budget
        self.last_join_s = 0.0
        self.last_busy_s = 0.0
        # Autoscaling: which replicas serve, their states, slots parked until their replica serves,
        # each replica's current row of the provisioning record, and the batches being measured.
        self.serving: list[bool] | None = None
        if scaler is not None:
            self.serving = [r < config.replicas for r in range(self.size)]
            self.status = [_READY if r < config.replicas else _OFF for r in range(self.size)]
            self.parked: list[list[simpy.Event]] = [[] for _ in range(self.size)]
        self.record = [-1] * self.size
        self.active = config.replicas  # starting or ready
        self.last_change_s = 0.0
        self.open_batches: list[int] = []
        self.scan_from = 0
        # Regions: requests routed here and not yet started; replicas not failed; under faults, each
        # replica's count of faults holding it down and the batches running on it (process -> batch).
        self.own_times = False  # batches of one use the arrivals' service_s
        self.backlog = 0
        self.up = self.size
        self.down: list[int] | None = None
        self.running: list[dict[simpy.Process, tuple[list[int], int]]] | None = None

    def slot_stream_name(self, r: int) -> str:
        if self.index == 0 and not self.regional:
            return f"service/replica-{r}"
        return f"service/{self.name}/replica-{r}"

    def expect_faults(self) -> None:
        """Keep the state that faults need: which replicas serve, parked slots, running batches."""
        self.serving = [True] * self.size
        self.parked = [[] for _ in range(self.size)]
        self.down = [0] * self.size
        self.running = [{} for _ in range(self.size)]


class _Model:
    """One run: the per-request state (lists indexed by row), the pools, and the simpy processes."""

    def __init__(
        self, arrivals: dict[str, np.ndarray], config: PlatformConfig, seed: int, horizon_s: float | None
    ) -> None:
        gateway, cascade = config.gateway, config.cascade
        n = len(arrivals["t_s"])
        self.n = n
        self.config = config
        self.horizon_s = horizon_s
        self.env = simpy.Environment()
        self.t = arrivals["t_s"].tolist()
        levels, rank = np.unique(arrivals["priority"], return_inverse=True)
        self.rank = rank.tolist()
        self.priority = arrivals["priority"].tolist()
        self.tokens_in = arrivals["tokens_in"].tolist()
        self.tokens_out = arrivals["tokens_out"].tolist()
        service_s = arrivals.get("service_s")
        regions = config.regions
        if regions is None:
            own_times = [config.pool.batcher.max_batch_size == 1]
        else:
            own_times = [
                regions.pool_of(k, config.pool).batcher.max_batch_size == 1
                for k in range(len(regions.regions))
            ]
        self.service_s = service_s.tolist() if service_s is not None and any(own_times) else None
        self.fetch_s = (
            config.ingestion.delays_s(n, stream(seed, "ingestion")).tolist() if config.ingestion else None
        )
        self.timeout_s = gateway.timeout_s
        self.capacity = gateway.queue_capacity  # knobs the surge controller may turn
        self.shed_from: int | None = None

        self.state = [0] * n
        self.reason = [0] * n
        self.ready = [math.nan] * n
        self.line_of = [0] * n
        self.batch_of = [-1] * n
        self.batches: list[tuple[float, float, int, int, int]] = []  # (start_s, end_s, replica, size, pool)
        self.provisioning: list[list[float]] = []  # [pool, replica, requested_s, ready_s, end_s]

        self.backlog = 0  # admitted, not yet started (the gateway's count)
        self.deadlines: deque[int] = deque()  # admitted requests in arrival order = deadline order
        self.fed_all = False

        depth = max(len(levels), 1)
        if regions is None:
            self.pools = [_Pool(0, config.pool, depth, 0, seed)]
        else:
            self.pools = []
            for k, region in enumerate(regions.regions):
                offset = sum(len(pool.lines) for pool in self.pools)
                self.pools.append(_Pool(k, regions.pool_of(k, config.pool), depth, offset, seed, region.name))
        if cascade is not None:
            self.pools.append(_Pool(1, cascade.small, depth, len(self.pools[0].lines), seed))
        for pool, own in zip(self.pools, own_times, strict=False):
            pool.own_times = own and self.service_s is not None
        self.lines = [line for pool in self.pools for line in pool.lines]
        # Regions: each request's origin and serving region (-1 until routed), its lost batches.
        self.origin: list[int] | None = None
        self.region_of: list[int] | None = None
        self.retries: list[int] | None = None
        if regions is not None:
            self.origin = arrivals["origin"].tolist()
            self.region_of = [-1] * n
            self.retries = [0] * n
            self.prefer = [regions.preference(a) for a in range(len(regions.regions))]
            self.failover, self.spill = regions.failover, regions.spill_backlog
            for fault in regions.faults:
                pool = self.pools[regions.names.index(fault.region)]
                if pool.down is None:
                    pool.expect_faults()
                self.env.timeout(fault.at_s, (pool, fault)).callbacks.append(self._on_fault)
        self.entry = self.pools[-1]  # where a request goes when its features are ready

        # Per-request state of the controls, kept only when they are on.
        self.joined = self.ready  # when a request joined its current line (the batcher's clock)
        self.first_batch: list[int] | None = None  # with a cascade: the small model's batch
        self.escalated_s: list[float] | None = None
        self.escalates: list[bool] | None = None
        if cascade is not None:
            self.joined = [math.nan] * n
            self.first_batch = [-1] * n
            self.escalated_s = [math.nan] * n
            self.escalates = cascade.escalates(arrivals["difficulty"]).tolist()
            self.pools[1].after = self._after_batch
        self.degraded: list[bool] | None = None
        self.answered_s: dict[int, float] = {}  # a degraded escalation: when the small answer went out
        self.cached_s: dict[int, float] = {}  # a cached answer: when it was looked up
        if config.timebox is not None:
            self.degraded = [False] * n
            self.pools[0].timebox = True
            base = config.pool.service
            self.expected_service = base.base if isinstance(base, RandomServiceTime) else base
            self.expected_rng = stream(seed, "timebox")
        self.recent: deque[tuple[float, float]] | None = None  # (answered_s, latency_s), for the p99
        self.mode_changes: list[tuple[float, int]] = []
        if config.modes is not None:
            self.recent = deque()
            self.mode_changes.append((0.0, 0))
            for pool in self.pools:
                pool.after = self._after_batch
        self.full_reason = _OVERFLOW if config.overflow is not None else _QUEUE_FULL

        for pool in self.pools:
            slots = pool.config.batcher.max_concurrent_batches
            for r in range(pool.config.replicas):
                self.provisioning.append([pool.index, r, 0.0, 0.0, math.nan])
                pool.record[r] = len(self.provisioning) - 1
            if pool.scaler is not None:
                pool.after = self._after_batch
                self.env.process(self._autoscaler(pool))
            for r in range(pool.size):
                line = pool.lines[r if pool.dispatch else 0]
                rng = stream(seed, pool.slot_stream_name(r))
                for _ in range(slots):
                    self.env.process(self._slot(pool, r, line, rng))
        if config.modes is not None:
            self.env.process(self._mode_controller())
        self.env.process(self._feeder())

    # -- gateway ------------------------------------------------------------------------------------
    def _feeder(self) -> Generator[simpy.Event, None, None]:
        env, t, state, reason, priority = self.env, self.t, self.state, self.reason, self.priority
        gateway = self.config.gateway
        rate, burst = gateway.rate_limit_per_s, float(gateway.rate_limit_burst)
        shed_length, shed_min = gateway.shed_queue_length, gateway.shed_min_priority
        timeout_s, full_reason = gateway.timeout_s, self.full_reason
        fetch_s, deadlines, to_pool, purge = self.fetch_s, self.deadlines, self._to_pool, self._purge
        region_of = self.region_of
        tokens, refilled = burst, 0.0
        now = 0.0
        for i in range(self.n):
            ti = t[i]
            if ti > now:
                d = ti - now
                yield env.timeout(d if now + d == ti else _delay_until(now, ti))
                now = ti
            if timeout_s is not None:
                purge(now)
            if rate is not None:
                tokens = min(burst, tokens + (now - refilled) * rate)
                refilled = now
                if tokens < 1.0 - _TOKEN_SLACK:
                    state[i], reason[i] = _REJECTED, _RATE_LIMITED
                    continue
                tokens = max(tokens - 1.0, 0.0)
            if shed_length is not None and self.backlog >= shed_length and priority[i] >= shed_min:
                state[i], reason[i] = _REJECTED, _SHED
                continue
            shed_from, capacity = self.shed_from, self.capacity
            if shed_from is not None and priority[i] >= shed_from:
                state[i], reason[i] = _REJECTED, _SHED
                continue
            if capacity is not None and self.backlog >= capacity:
                state[i], reason[i] = _REJECTED, full_reason
                continue
            self.backlog += 1
            if timeout_s is not None:
                deadlines.append(i)
            if region_of is not None:
                k = self._route(i)
                region_of[i] = k
                self.pools[k].backlog += 1
            if fetch_s is not None and fetch_s[i] > 0:
                state[i] = _FETCHING
                env.timeout(fetch_s[i], i).callbacks.append(self._on_features_ready)
            else:
                to_pool(i, now)
        self.fed_all = True

    def _purge(self, now: float) -> None:
        """Time out every waiting request whose deadline is ``now`` or earlier."""
        deadlines, t, state, timeout_s = self.deadlines, self.t, self.state, self.timeout_s
        escalated, retries, region_of = self.first_batch, self.retries, self.region_of
        while deadlines and t[deadlines[0]] + timeout_s <= now:
            i = deadlines.popleft()
            if state[i] == _IN_LINE:
                if escalated is not None and escalated[i] >= 0:
                    continue  # it has started on the small model: no deadline any more
                if retries is not None and retries[i]:
                    continue  # it started before its batch was lost: no deadline any more
                self.lines[self.line_of[i]].count -= 1
            elif state[i] != _FETCHING:
                continue
            state[i] = _TIMED_OUT
            self.backlog -= 1
            if region_of is not None:
                self.pools[region_of[i]].backlog -= 1

    def _finished(self) -> bool:
        """Nothing left to do in a run without a horizon: the controllers may stop."""
        return (
            self.horizon_s is None
            and self.fed_all
            and self.backlog == 0
            and not any(any(pool.in_service) for pool in self.pools)
        )

    # -- ingestion and the load balancer -------------------------------------------------------------
    def _on_features_ready(self, event: simpy.Event) -> None:
        i = event.value
        if self.timeout_s is not None:
            self._purge(self.env.now)
            if self.state[i] == _TIMED_OUT:
                return
        self._to_pool(i, self.env.now)

    def _to_pool(self, i: int, now: float) -> None:
        self.ready[i] = now
        if self.region_of is None:
            self._join(i, now, self.entry)
            return
        pool = self.pools[self.region_of[i]]
        if pool.up == 0 and self.failover:  # its region failed while the features were fetched
            pool = self._move(i, pool)
        self._join(i, now, pool)

    def _join(self, i: int, now: float, pool: _Pool, front: bool = False) -> None:
        if pool.timebox:
            need_s = self._expected_s(i)
            spare_s = self.t[i] + self.config.timebox.budget_s - now - need_s
            if spare_s < 0:  # the large model could not answer in time even if it started now
                self.backlog -= 1
                self._degrade(i, now)
                return
            self.env.timeout(spare_s, i).callbacks.append(self._on_budget_spent)
        k = pool.line_offset + (self._choose_line(pool) if pool.dispatch else 0)
        line = self.lines[k]
        self.joined[i] = now
        self.line_of[i] = k
        self.state[i] = _IN_LINE
        if front:
            line.by_priority[self.rank[i]].appendleft(i)
        else:
            line.by_priority[self.rank[i]].append(i)
        line.count += 1
        pool.last_join_s = now
        if pool.scaler is not None and pool.active == 0:  # scaled to zero: the request asks for one
            self._scale_up(pool, 1, now)
        # Wake a free slot when the line stops being empty or fills a batch; the rest is its timer's job.
        if line.idle_slots and (line.count == 1 or line.count >= pool.max_size):
            line.wake_one()

    def _choose_line(self, pool: _Pool) -> int:
        policy, lines, in_service = pool.config.policy, pool.lines, pool.in_service
        if policy == "round_robin":
            k = pool.next_replica
            pool.next_replica = (k + 1) % len(lines)
            return k
        if policy == "join_shortest_queue":
            loads = [line.count + busy for line, busy in zip(lines, in_service, strict=True)]
            return loads.index(min(loads))
        if not pool.pairs:  # power_of_two: draw pairs of distinct replicas in blocks
            r = len(lines)
            first = pool.balancer.integers(0, r, size=4096)
            second = pool.balancer.integers(0, r - 1, size=4096)
            second += second >= first
            pool.pairs = list(zip(first.tolist(), second.tolist(), strict=True))[::-1]
        a, b = pool.pairs.pop()
        return b if lines[b].count + in_service[b] < lines[a].count + in_service[a] else a

    # -- cascade and time-box -----------------------------------------------------------------------
    def _expected_s(self, i: int) -> float:
        """The large model's mean time for request ``i`` alone: what its budget must still hold."""
        return float(
            self.expected_service.batch_time_s(1, self.tokens_in[i], self.tokens_out[i], self.expected_rng)
        )

    def _on_budget_spent(self, event: simpy.Event) -> None:
        i, now = event.value, self.env.now
        if self.timeout_s is not None:
            self._purge(now)
        if self.state[i] != _IN_LINE:  # started, timed out or answered already
            return
        self.lines[self.line_of[i]].count -= 1
        self.backlog -= 1
        self._degrade(i, now)

    def _degrade(self, i: int, now: float) -> None:
        """Answer ``i`` now without the large model: the small model's answer it holds, or the cache."""
        self.state[i] = _ANSWERED
        self.degraded[i] = True
        first = self.first_batch
        if first is not None and first[i] >= 0:
            self.batch_of[i] = first[i]
            self.answered_s[i] = now
            done_s = now
        else:
            self.cached_s[i] = now
            done_s = now + self.config.timebox.cache_latency_s
        if self.recent is not None:
            self.recent.append((now, done_s + self.config.network_hop_s - self.t[i]))

    def _after_batch(self, pool: _Pool, r: int, batch: list[int], now: float) -> None:
        """A batch ended: retire a draining replica, escalate what the small model is unsure of."""
        if pool.scaler is not None:
            pool.last_busy_s = now
            if pool.status[r] == _DRAINING and pool.in_service[r] == 0:
                self._off(pool, r, now)
        answered = batch
        if pool.index == 1:  # the cascade's small model
            escalates = self.escalates
            answered = []
            for i in batch:
                if escalates[i]:
                    self.first_batch[i] = self.batch_of[i]
                    self.batch_of[i] = -1
                    self.escalated_s[i] = now
                    self.backlog += 1
                    self._join(i, now, self.pools[0])
                else:
                    answered.append(i)
        if self.recent is not None:
            done_s = now + self.config.network_hop_s
            cascade, t, recent = self.config.cascade, self.t, self.recent
            if pool.index == 0 and cascade is not None and cascade.human_min_confidence is not None:
                done_s += cascade.human_delay_s  # a bound: only some answers go to a human
            for i in answered:
                recent.append((now, done_s - t[i]))

    # -- replicas -----------------------------------------------------------------------------------
    def _oldest_ready(self, line: _Line) -> float:
        state, joined = self.state, self.joined
        oldest = math.inf
        for queue in line.by_priority:
            while queue and state[queue[0]] != _IN_LINE:
                queue.popleft()
            if queue and joined[queue[0]] < oldest:
                oldest = joined[queue[0]]
        return oldest

    def _take(self, line: _Line, max_size: int) -> list[int]:
        state, batch = self.state, []
        if max_size == 1:  # the unbatched common case, kept short
            for queue in line.by_priority:
                while queue:
                    i = queue.popleft()
                    if state[i] == _IN_LINE:
                        line.count -= 1
                        return [i]
        for queue in line.by_priority:
            while queue and len(batch) < max_size:
                i = queue.popleft()
                if state[i] == _IN_LINE:
                    batch.append(i)
            if len(batch) == max_size:
                break
        line.count -= len(batch)
        return batch

    def _slot(
        self, pool: _Pool, r: int, line: _Line, rng: np.random.Generator
    ) -> Generator[simpy.Event, None, None]:
        env, state, batch_of = self.env, self.state, self.batch_of
        tokens_in, tokens_out = self.tokens_in, self.tokens_out
        service_s = self.service_s if pool.own_times else None
        batches, batch_time_s, take = self.batches, pool.config.service.batch_time_s, self._take
        timeout_s, in_service, serving, index = self.timeout_s, pool.in_service, pool.serving, pool.index
        regional, running = pool.regional, pool.running
        while True:
            now = env.now
            if serving is not None and not serving[r]:  # the replica is off or starting: wait for it
                wake = env.event()
                pool.parked[r].append(wake)
                yield wake
                continue
            if timeout_s is not None:
                self._purge(now)
            waiting = line.count
            max_size = pool.max_size
            due = now
            if 0 < waiting < max_size and pool.max_wait_s > 0:
                due = self._oldest_ready(line) + pool.max_wait_s
            if waiting == 0 or due > now:
                wake = env.event()
                line.idle_slots.append(wake)
                if waiting:
                    env.timeout(_delay_until(now, due), wake).callbacks.append(_succeed_if_pending)
                yield wake
                continue
            batch = take(line, max_size)
            size = len(batch)
            if service_s is not None and size == 1:
                duration_s = service_s[batch[0]]
            else:
                if size == 1:
                    total_in, longest_out = tokens_in[batch[0]], tokens_out[batch[0]]
                else:
                    total_in = sum([tokens_in[i] for i in batch])
                    longest_out = max([tokens_out[i] for i in batch])
                duration_s = batch_time_s(size, total_in, longest_out, rng)
                if not 0.0 <= duration_s < math.inf:
                    raise ValueError(
                        f"service.batch_time_s({size}, {total_in}, {longest_out}) returned {duration_s!r}; "
                        "a batch time must be finite and >= 0"
                    )
            k = len(batches)
            for i in batch:
                state[i] = _IN_MODEL
                batch_of[i] = k
            batches.append((now, now + duration_s, r, size, index))
            self.backlog -= size
            if regional:
                pool.backlog -= size
            in_service[r] += size
            if line.count and line.idle_slots:
                line.wake_one()
            if running is None:
                yield env.timeout(duration_s)
            else:  # a fault may end the batch early: then _fail has put its requests back already
                me = env.active_process
                running[r][me] = (batch, k)
                try:
                    yield env.timeout(duration_s)
                except simpy.Interrupt:
                    continue
                del running[r][me]
            in_service[r] -= size
            if pool.after is not None:
                pool.after(pool, r, batch, env.now)

    # -- regions and faults -------------------------------------------------------------------------
    def _route(self, i: int) -> int:
        """The region for request ``i``: its nearest, or the nearest healthy one not over the spill bound."""
        prefer = self.prefer[self.origin[i]]
        if not self.failover:
            return prefer[0]
        pools, spill = self.pools, self.spill
        healthy = [k for k in prefer if pools[k].up > 0]
        if not healthy:  # nowhere to go: wait at the nearest region for a recovery
            return prefer[0]
        if spill is not None:
            for k in healthy:
                if pools[k].backlog < spill:
                    return k
        return healthy[0]

    def _move(self, i: int, pool: _Pool) -> _Pool:
        """Route ``i`` again (its region ``pool`` cannot serve); it stays counted in one region's backlog."""
        k = self._route(i)
        pool.backlog -= 1
        self.pools[k].backlog += 1
        self.region_of[i] = k
        return self.pools[k]

    def _on_fault(self, event: simpy.Event) -> None:
        pool, fault = event.value
        now = self.env.now
        if self.timeout_s is not None:
            self._purge(now)
        down = pool.down
        if fault.replicas == "all":
            taken = list(range(pool.size))
        else:  # the highest-numbered replicas still up
            taken = [r for r in range(pool.size - 1, -1, -1) if down[r] == 0][: fault.replicas]
        failed = []
        for r in taken:
            down[r] += 1
            if down[r] == 1:
                pool.serving[r] = False
                pool.up -= 1
                failed.append(r)
        for line in pool.lines:  # idle slots of the failed replicas must notice and park
            line.wake_all()
        for r in failed:
            lost, pool.running[r] = pool.running[r], {}
            for process, (batch, k) in lost.items():
                process.interrupt()
                self._lose(pool, r, batch, k, now)
        if pool.up == 0 and self.failover:
            self._evacuate(pool, now)
        if fault.duration_s is not None:
            self.env.timeout(fault.duration_s, (pool, taken)).callbacks.append(self._on_recovery)

    def _lose(self, pool: _Pool, r: int, batch: list[int], k: int, now: float) -> None:
        """A batch died with its replica: end its record now and retry its requests, oldest first."""
        start_s, _, replica, size, index = self.batches[k]
        self.batches[k] = (start_s, now, replica, size, index)
        pool.in_service[r] -= size
        self.backlog += size
        pool.backlog += size
        for i in reversed(batch):  # each goes to the front of its line: reversed keeps their order
            self.batch_of[i] = -1
            self.retries[i] += 1
            target = pool
            if pool.up == 0 and self.failover:
                target = self._move(i, pool)
            self._join(i, now, target, front=True)

    def _evacuate(self, pool: _Pool, now: float) -> None:
        """The region has no replica left: move its waiting requests to the nearest healthy regions."""
        if all(other.up == 0 for other in self.pools):
            return
        state = self.state
        for line in pool.lines:
            waiting = [i for queue in line.by_priority for i in queue if state[i] == _IN_LINE]
            for queue in line.by_priority:
                queue.clear()
            line.count = 0
            for i in waiting:
                self._join(i, now, self._move(i, pool))

    def _on_recovery(self, event: simpy.Event) -> None:
        pool, taken = event.value
        for r in taken:
            pool.down[r] -= 1
            if pool.down[r] == 0:
                pool.up += 1
                self._serve(pool, r)

    # -- autoscaler ---------------------------------------------------------------------------------
    def _scale_up(self, pool: _Pool, count: int, now: float) -> None:
        """Keep draining replicas (no cold start), then start stopped ones, lowest index first."""
        status, cold_s = pool.status, pool.scaler.cold_start.seconds
        for wanted in (_DRAINING, _OFF):
            for r in range(pool.size):
                if count == 0:
                    break
                if status[r] != wanted:
                    continue
                count -= 1
                pool.active += 1
                if wanted == _DRAINING:
                    status[r] = _READY
                    self._serve(pool, r)
                    continue
                status[r] = _STARTING
                self.provisioning.append([pool.index, r, now, math.nan, math.nan])
                pool.record[r] = len(self.provisioning) - 1
                if cold_s > 0:
                    self.env.timeout(cold_s, (pool, r, pool.record[r])).callbacks.append(self._on_started)
                else:
                    self._started(pool, r, now)
        pool.last_change_s = now

    def _on_started(self, event: simpy.Event) -> None:
        pool, r, row = event.value
        if pool.record[r] == row and pool.status[r] == _STARTING:
            self._started(pool, r, self.env.now)

    def _started(self, pool: _Pool, r: int, now: float) -> None:
        pool.status[r] = _READY
        self.provisioning[pool.record[r]][3] = now
        self._serve(pool, r)

    def _serve(self, pool: _Pool, r: int) -> None:
        pool.serving[r] = True
        parked, pool.parked[r] = pool.parked[r], []
        for event in parked:
            event.succeed()

    def _scale_down(self, pool: _Pool, count: int, now: float) -> None:
        """Stop idle replicas first, then busy ones (they drain), highest index first."""
        status, in_service = pool.status, pool.in_service
        ready = [r for r in range(pool.size - 1, -1, -1) if status[r] == _READY]
        victims = ([r for r in ready if in_service[r] == 0] + [r for r in ready if in_service[r] > 0])[:count]
        for r in victims:
            pool.serving[r] = False
            pool.active -= 1
            if in_service[r] > 0:
                status[r] = _DRAINING
            else:
                self._off(pool, r, now)
        pool.last_change_s = now
        for line in pool.lines:  # the stopped replicas' idle slots must notice and park
            line.wake_all()

    def _off(self, pool: _Pool, r: int, now: float) -> None:
        pool.status[r] = _OFF
        self.provisioning[pool.record[r]][4] = now

    def _autoscaler(self, pool: _Pool) -> Generator[simpy.Event, None, None]:
        env, scaler, batches = self.env, pool.scaler, self.batches
        slots = pool.config.batcher.max_concurrent_batches
        while True:
            yield env.timeout(scaler.interval_s)
            now = env.now
            if self.timeout_s is not None:
                self._purge(now)
            if self._finished():
                return
            # Busy slot-seconds over the last interval, from the batches that overlap it.
            low = now - scaler.interval_s
            fresh = [k for k in range(pool.scan_from, len(batches)) if batches[k][4] == pool.index]
            pool.scan_from = len(batches)
            busy_s, still = 0.0, []
            for k in pool.open_batches + fresh:
                start_s, end_s = batches[k][0], batches[k][1]
                busy_s += max(0.0, min(end_s, now) - max(start_s, low))
                if end_s > now:
                    still.append(k)
            pool.open_batches = still
            in_system = sum(line.count for line in pool.lines) + sum(pool.in_service)
            idle_s = 0.0 if in_system else now - max(pool.last_join_s, pool.last_busy_s)
            desired = scaler.desired_replicas(
                now_s=now,
                busy_replicas=busy_s / (scaler.interval_s * slots),
                in_system=in_system,
                idle_s=idle_s,
            )
            if desired > pool.active:
                self._scale_up(pool, desired - pool.active, now)
            elif (
                desired < pool.active
                and now - pool.last_change_s >= scaler.cooldown_s
                and _STARTING not in pool.status
            ):
                self._scale_down(pool, pool.active - desired, now)

    # -- surge modes --------------------------------------------------------------------------------
    def _mode_controller(self) -> Generator[simpy.Event, None, None]:
        env, modes, t, recent = self.env, self.config.modes, self.t, self.recent
        level, since = 0, 0.0
        while True:
            yield env.timeout(modes.interval_s)
            now = env.now
            if self.timeout_s is not None:
                self._purge(now)
            if self._finished():
                return
            low = now - modes.window_s
            while recent and recent[0][0] <= low:
                recent.popleft()
            signals = {
                "queue_length": float(self.backlog),
                "p99_s": float(np.percentile([x[1] for x in recent], 99)) if recent else math.nan,
                "arrival_rate_per_s": (bisect_right(t, now) - bisect_right(t, low)) / modes.window_s,
            }
            new = modes.next_mode(level, signals, now - since)
            if new != level:
                level, since = new, now
                self.mode_changes.append((now, level))
                self._apply_knobs(level)

    def _apply_knobs(self, level: int) -> None:
        knobs, main = self.config.modes.knobs(level), self.pools[0]
        batcher, gateway = self.config.pool.batcher, self.config.gateway
        main.max_size = knobs.max_batch_size if knobs.max_batch_size is not None else batcher.max_batch_size
        main.max_wait_s = knobs.max_wait_s if knobs.max_wait_s is not None else batcher.max_wait_s
        self.capacity = knobs.queue_capacity if knobs.queue_capacity is not None else gateway.queue_capacity
        self.shed_from = knobs.shed_priority_from
        for line in main.lines:
            line.wake_all()

    # -- running ------------------------------------------------------------------------------------
    def run(self, horizon_s: float | None, progress: bool) -> None:
        env = self.env
        end_s = horizon_s if horizon_s is not None else (self.t[-1] if self.n else 0.0)
        if progress and end_s > 0:
            with tqdm(total=end_s, unit="sim s", desc="simulate") as bar:
                chunks = 100
                for k in range(1, chunks + 1):
                    target = end_s if k == chunks else end_s * k / chunks
                    if target > env.now:
                        self._run_until(target)
                        bar.update(target - bar.n)
        elif horizon_s is not None:
            self._run_until(horizon_s)
        if horizon_s is None:
            env.run()
        if self.timeout_s is not None:
            self._purge(horizon_s if horizon_s is not None else env.now)

    def _run_until(self, target: float) -> None:
        """``env.run(until=target)``, stopping exactly at ``target`` (before the events due then)."""
        stop = simpy.Event(self.env)
        stop._ok, stop._value = True, None
        self.env.schedule(stop, URGENT, _delay_until(self.env.now, target))
        self.env.run(until=stop)


# ---------------------------------------------------------------------------------------------------
# Inputs and outputs


def _arrival_arrays(arrivals: pd.DataFrame, with_difficulty: bool = False) -> dict[str, np.ndarray]:
    """Check the arrivals table and return its columns as numpy arrays (``difficulty`` if asked)."""
    check_columns(arrivals, ARRIVAL_COLUMNS, "arrivals")
    out: dict[str, np.ndarray] = {}
    for name in ("request_id", "priority", "tokens_in", "tokens_out"):
        values = arrivals[name].to_numpy()
        if not np.issubdtype(values.dtype, np.integer):
            raise TypeError(f"arrivals['{name}'] must hold integers, got dtype {values.dtype}")
        out[name] = values.astype(np.int64)
    for name in ("priority", "tokens_in", "tokens_out"):
        if len(out[name]) and out[name].min() < 0:
            row = int(np.argmin(out[name]))
            raise ValueError(f"arrivals['{name}'] must be >= 0; row {row} holds {out[name][row]}")
    if len(np.unique(out["request_id"])) != len(out["request_id"]):
        raise ValueError("arrivals['request_id'] must be unique; it holds repeats")
    float_names = ["t_s"] + (["service_s"] if "service_s" in arrivals.columns else [])
    for name in float_names:
        values = arrivals[name].to_numpy()
        if not (np.issubdtype(values.dtype, np.floating) or np.issubdtype(values.dtype, np.integer)):
            raise TypeError(f"arrivals['{name}'] must hold numbers, got dtype {values.dtype}")
        values = values.astype(np.float64)
        bad = ~np.isfinite(values) | (values < 0)
        if bad.any():
            row = int(np.argmax(bad))
            raise ValueError(f"arrivals['{name}'] must be finite and >= 0; row {row} holds {values[row]!r}")
        out[name] = values
    if with_difficulty:
        values = arrivals["difficulty"].to_numpy()
        if not np.issubdtype(values.dtype, np.number):
            raise TypeError(f"arrivals['difficulty'] must hold numbers, got dtype {values.dtype}")
        values = values.astype(np.float64)
        bad = ~((values >= 0) & (values <= 1))
        if bad.any():
            row = int(np.argmax(bad))
            raise ValueError(f"arrivals['difficulty'] must lie in [0, 1]; row {row} holds {values[row]!r}")
        out["difficulty"] = values
    t = out["t_s"]
    if len(t) > 1 and (np.diff(t) < 0).any():
        row = int(np.argmax(np.diff(t) < 0))
        raise ValueError(
            f"arrivals must be sorted by t_s; row {row + 1} (t_s={t[row + 1]!r}) comes after "
            f"row {row} (t_s={t[row]!r})"
        )
    return out


_MAX_INTERVALS = 10_000_000


def _interval_count(horizon_s: float, step_s: float) -> int:
    """How many ``step_s`` intervals from 0 start below ``horizon_s`` (refusing absurd grids)."""
    count = math.ceil(horizon_s / step_s)
    while count > 1 and (count - 1) * step_s >= horizon_s:
        count -= 1
    if count > _MAX_INTERVALS:
        raise ValueError(
            f"timeline_step_s={step_s!r} cuts horizon_s={horizon_s!r} into {count} intervals; "
            f"at most {_MAX_INTERVALS} are allowed, so use a longer step"
        )
    return count


def _time_in_bins(starts: np.ndarray, ends: np.ndarray, lows: np.ndarray, highs: np.ndarray) -> np.ndarray:
    """Seconds the intervals ``[start, end)`` spend inside each bin ``[low, high)``, all summed.

    An interval adds its partial pieces to its first and last bins and a whole bin width to every bin
    between (a difference array), so each bin sums only a few small numbers: exact to rounding.
    """
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


def _busy_periods(
    starts: np.ndarray, ends: np.ndarray, replicas: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
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


def _timeline(
    model: _Model,
    log: pd.DataFrame,
    batches: dict[str, np.ndarray],
    deadline_s: np.ndarray,
    horizon_s: float,
    step_s: float,
    provisioning: pd.DataFrame,
    second_wait: tuple[np.ndarray, np.ndarray],
) -> pd.DataFrame:
    config = model.config
    columns = dict(TIMELINE_COLUMNS)
    if config.modes is not None:
        columns.update(CONTROL_TIMELINE_COLUMNS)
    bins = max(_interval_count(horizon_s, step_s), 1 if len(log) else 0)
    if bins == 0:
        return pd.DataFrame({name: np.empty(0, dtype=dtype) for name, (dtype, _) in columns.items()})
    starts = np.arange(bins) * step_s
    edges = np.minimum(np.append(starts[1:], horizon_s), horizon_s)
    widths = edges - starts

    def level(interval_starts: np.ndarray, interval_ends: np.ndarray) -> np.ndarray:
        seconds = _time_in_bins(interval_starts, np.minimum(interval_ends, horizon_s), starts, edges)
        return np.divide(seconds, widths, out=np.zeros(bins), where=widths > 0)

    def count(times: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        where = np.minimum(np.searchsorted(edges, times, side="right"), bins - 1)
        return np.bincount(where, weights=weights, minlength=bins)

    outcome = log["outcome"].to_numpy()
    ready = log["features_ready_s"].to_numpy()
    in_line = ~np.isnan(ready)
    left_line = np.where(outcome == "timed_out", deadline_s, log["model_start_s"].to_numpy())
    left_line = np.where(np.isnan(left_line), horizon_s, left_line)
    waits_from, waits_to = ready[in_line], left_line[in_line]
    if len(second_wait[0]):  # escalated requests wait a second time, for the large model
        waits_from = np.concatenate((waits_from, second_wait[0]))
        waits_to = np.concatenate((waits_to, second_wait[1]))
    # Replicas of different pools are different machines: key them apart.
    machine = batches["pool"] * (1 + max(p.size for p in model.pools)) + batches["replica"]
    busy_starts, busy_ends = _busy_periods(
        batches["start_s"], np.minimum(batches["end_s"], horizon_s), machine
    )
    if any(pool.scaler is not None for pool in model.pools):
        replicas = level(provisioning["requested_s"].to_numpy(), provisioning["end_s"].to_numpy())
    else:
        replicas = np.full(bins, float(sum(pool.config.replicas for pool in model.pools)))
    started = count(batches["start_s"])
    size_sum = count(batches["start_s"], batches["size"].astype(np.float64))
    timeline = pd.DataFrame(
        {
            "t_s": starts,
            "queue_length": level(waits_from, waits_to),
            "busy_replicas": level(busy_starts, busy_ends),
            "replicas": replicas,
            "mean_batch_size": np.divide(size_sum, started, out=np.full(bins, np.nan), where=started > 0),
        }
    )
    arrived = log["arrived_s"].to_numpy()
    for name, times in (
        ("arrived", arrived),
        ("admitted", log["admitted_s"].dropna().to_numpy()),
        ("rejected", arrived[outcome == "rejected"]),
        ("completed", log["responded_s"].to_numpy()[outcome == "completed"]),
        ("timed_out", deadline_s[outcome == "timed_out"]),
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
    return timeline[list(columns)]


def _request_log(
    model: _Model, columns: dict[str, np.ndarray], class_name: pd.Series, horizon_s: float | None
) -> tuple[pd.DataFrame, dict[str, np.ndarray], np.ndarray, float, tuple[np.ndarray, np.ndarray]]:
    """The RequestLog of a finished run, the batch record, each request's deadline, the horizon, and
    the second waits of escalated requests (joined the large model's line, left it)."""
    config, n = model.config, model.n
    cascade, timebox = config.cascade, config.timebox
    state = np.asarray(model.state, dtype=np.int64)
    batch_of = np.asarray(model.batch_of, dtype=np.int64)
    table = np.asarray(model.batches, dtype=np.float64).reshape(-1, 5)
    batches = {
        "start_s": table[:, 0],
        "end_s": table[:, 1],
        "replica": table[:, 2].astype(np.int64),
        "size": table[:, 3].astype(np.int64),
        "pool": table[:, 4].astype(np.int64),
    }
    served = batch_of >= 0

    def per_request(values: np.ndarray, fill: float, which: np.ndarray = batch_of) -> np.ndarray:
        return np.append(values, fill)[which]  # which == -1 picks ``fill``

    first = batch_of
    if model.first_batch is not None:
        first = np.asarray(model.first_batch, dtype=np.int64)
        first = np.where(first >= 0, first, batch_of)
    model_start = per_request(batches["start_s"], np.nan, first)
    model_end = per_request(batches["end_s"], np.nan)
    answered_by = per_request(batches["pool"], -1)
    if model.answered_s:  # escalations that ran out of budget: the small answer went out then
        rows = np.fromiter(model.answered_s, dtype=np.int64, count=len(model.answered_s))
        model_end[rows] = np.fromiter(model.answered_s.values(), dtype=np.float64, count=len(rows))
    cached = np.zeros(n, dtype=bool)
    if model.cached_s:
        rows = np.fromiter(model.cached_s, dtype=np.int64, count=len(model.cached_s))
        looked_up = np.fromiter(model.cached_s.values(), dtype=np.float64, count=len(rows))
        model_start[rows] = looked_up
        model_end[rows] = looked_up + timebox.cache_latency_s
        cached[rows] = True
        served = served | cached
    degraded = np.zeros(n, dtype=bool) if model.degraded is None else np.asarray(model.degraded, dtype=bool)
    human = np.zeros(n, dtype=bool)
    if cascade is not None:
        human = (answered_by == 0) & ~degraded & cascade.to_human(columns["difficulty"])
    arrived = columns["t_s"]
    timeout_s = config.gateway.timeout_s
    deadline_s = arrived + (timeout_s if timeout_s is not None else np.inf)
    responded = model_end + config.network_hop_s
    rtt_s = None
    if config.regions is not None:  # the whole round trip between the user and the serving region
        region_of = np.asarray(model.region_of, dtype=np.int64)
        origin = columns["origin"]
        rtt_s = np.where(
            region_of >= 0, config.regions.rtt_matrix()[origin, np.maximum(region_of, 0)], np.nan
        )
        responded = responded + rtt_s
    if human.any():
        responded = responded + np.where(human, cascade.human_delay_s, 0.0)
    if horizon_s is None:
        finals = [arrived, responded[served], deadline_s[state == _TIMED_OUT]]
        horizon_s = float(max((x.max() for x in finals if len(x)), default=0.0))
    else:
        model_end[model_end > horizon_s] = np.nan
    completed = served & (responded <= horizon_s)
    responded[~completed] = np.nan

    outcome = np.full(n, OUTCOMES.index("in_flight"), dtype=np.int64)
    outcome[completed] = OUTCOMES.index("completed")
    outcome[state == _REJECTED] = OUTCOMES.index("rejected")
    outcome[state == _TIMED_OUT] = OUTCOMES.index("timed_out")
    reasons = np.asarray(REJECT_REASONS, dtype=object)
    log = pd.DataFrame(
        {
            "request_id": columns["request_id"],
            "class_name": class_name.iloc[:n].to_numpy(),
            "priority": columns["priority"],
            "tokens_in": columns["tokens_in"],
            "tokens_out": columns["tokens_out"],
            "arrived_s": arrived,
            "admitted_s": np.where(state == _REJECTED, np.nan, arrived),
            "features_ready_s": np.asarray(model.ready, dtype=np.float64),
            "model_start_s": model_start,
            "model_end_s": model_end,
            "responded_s": responded,
            "replica": np.where(cached, -1, per_request(batches["replica"], -1)),
            "batch_size": np.where(cached, 0, per_request(batches["size"], 0)),
            "outcome": np.asarray(OUTCOMES, dtype=object)[outcome],
            "reject_reason": reasons[np.asarray(model.reason, dtype=np.int64)],
            "latency_s": responded - arrived,
        }
    )[list(REQUEST_LOG_COLUMNS)]

    second_wait = (np.empty(0), np.empty(0))
    if cascade is not None or timebox is not None:
        names = np.asarray([pool.name for pool in model.pools] + [""], dtype=object)
        answer = names[answered_by]  # -1 picks ""
        answer = np.where(cached, "cache", np.where(human, "human", answer))
        escalated_s = np.full(n, np.nan)
        if model.escalated_s is not None:
            escalated_s = np.asarray(model.escalated_s, dtype=np.float64)
            joined = ~np.isnan(escalated_s)
            # It left the large model's line when a batch took it, when its budget ran out, or not yet.
            second_start = np.where(answered_by == 0, per_request(batches["start_s"], np.nan), np.nan)
            left = np.where(degraded, model_end, second_start)
            left = np.where(np.isnan(left), horizon_s, left)
            second_wait = (escalated_s[joined], left[joined])
        log["difficulty"] = columns["difficulty"] if "difficulty" in columns else np.nan
        log["model"] = np.where(completed, answer, "").astype(object)
        log["escalated_s"] = escalated_s
        log["degraded"] = degraded
        log = log[list(REQUEST_LOG_COLUMNS) + list(CONTROL_LOG_COLUMNS)]
    if rtt_s is not None:
        names = np.asarray(list(config.regions.names) + [""], dtype=object)
        log["origin_region"] = names[columns["origin"]]
        log["region"] = names[region_of]  # -1 picks ""
        log["rtt_s"] = rtt_s
        log["retries"] = np.asarray(model.retries, dtype=np.int64)
        log = log[[c for c in log.columns if c not in REGION_LOG_COLUMNS] + list(REGION_LOG_COLUMNS)]
    return log, batches, deadline_s, horizon_s, second_wait


def _provisioning(model: _Model, horizon_s: float) -> pd.DataFrame:
    table = np.asarray(model.provisioning, dtype=np.float64).reshape(-1, 5)
    names = np.asarray([pool.name for pool in model.pools], dtype=object)
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


def _offline(log: pd.DataFrame, config: PlatformConfig) -> pd.DataFrame:
    overflow = config.overflow
    sent = (log["reject_reason"] == "overflow").to_numpy()
    queued_s = log["arrived_s"].to_numpy()[sent]
    done_s = overflow.schedule(queued_s) if overflow is not None else np.empty(0)
    price = overflow.price_per_request_usd if overflow is not None else 0.0
    return pd.DataFrame(
        {
            "request_id": log["request_id"].to_numpy()[sent],
            "queued_s": queued_s,
            "done_s": done_s,
            "delay_s": done_s - queued_s,
            "cost_usd": np.full(len(queued_s), price),
        }
    )


def simulate(
    arrivals: pd.DataFrame,
    config: PlatformConfig,
    *,
    seed: int,
    horizon_s: float | None = None,
    timeline_step_s: float = 1.0,
    progress: bool = False,
) -> SimulationResult:
    """Play ``arrivals`` (``schema.ARRIVAL_COLUMNS``, sorted by ``t_s``) through the platform.

    ``seed`` fixes every random draw: the fetch delays (stream ``"ingestion"``), each replica's batch
    times (``"service/replica-<r>"``, ``"service/<pool name>/replica-<r>"`` for a cascade's small
    model and ``"service/<region>/replica-<r>"`` with regions), the balancer's choices
    (``"balancer"``) and, with regions, the requests' origins (``"origin"``). ``horizon_s`` stops the
    run (default: run until every request has its outcome). ``progress`` shows a tqdm bar that
    advances with simulated time. See the module docstring for the model, ``scaleplay.controls`` for
    the controls and ``scaleplay.regions`` for regions and faults.
    """
    if not isinstance(config, PlatformConfig):
        raise TypeError(f"config must be a PlatformConfig, got {type(config).__name__}")
    seed = check_int("seed", seed, minimum=0)
    horizon_s = None if horizon_s is None else check_positive("horizon_s", horizon_s)
    timeline_step_s = check_positive("timeline_step_s", timeline_step_s)
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be True or False, got {progress!r}")
    if horizon_s is not None:
        _interval_count(horizon_s, timeline_step_s)
    columns = _arrival_arrays(arrivals, with_difficulty=config.cascade is not None)
    n = len(columns["t_s"]) if horizon_s is None else int(np.searchsorted(columns["t_s"], horizon_s, "left"))
    columns = {name: values[:n] for name, values in columns.items()}
    regions = config.regions
    if regions is not None:
        scaled = any(regions.pool_of(k, config.pool).autoscaler for k in range(len(regions.regions)))
        if scaled and horizon_s is None and any(f.duration_s is None for f in regions.faults):
            # requests stuck behind a permanent fault would keep the autoscalers polling for ever
            raise ValueError("horizon_s must be set when a region has an autoscaler and a fault is permanent")
        if "origin_region" in arrivals.columns:
            columns["origin"] = _check_origin_names(
                arrivals["origin_region"].iloc[:n].tolist(), regions.names
            )
        else:
            columns["origin"] = regions.draw_origins(n, stream(seed, "origin"))

    model = _Model(columns, config, seed, horizon_s)
    model.run(horizon_s, progress)

    log, batches, deadline_s, horizon_s, second_wait = _request_log(
        model, columns, arrivals["class_name"], horizon_s
    )
    provisioning = _provisioning(model, horizon_s)
    timeline = _timeline(
        model, log, batches, deadline_s, horizon_s, timeline_step_s, provisioning, second_wait
    )
    names = np.asarray([pool.name for pool in model.pools], dtype=object)
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
        log=log,
        timeline=timeline,
        horizon_s=horizon_s,
        config=config,
        batches=batch_table,
        provisioning=provisioning,
        offline=_offline(log, config),
        modes=pd.DataFrame(changes, columns=["t_s", "mode"]).astype({"t_s": np.float64, "mode": object}),
    )
