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

Speed: one simpy process per batch slot and one feeding the arrivals, with plain deques for the lines
and Python lists indexed by request for the per-request state. Feature fetches are bare timeouts with
a callback, not processes; deadlines are enforced lazily (a request whose deadline has passed is
dropped the next time anything looks at its line), which is exact because nothing can happen to a
waiting request between two such looks.
"""

from __future__ import annotations

import math
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
from .profiles import ServiceTime
from .rng import stream
from .schema import (
    ARRIVAL_COLUMNS,
    OUTCOMES,
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

    def __post_init__(self) -> None:
        _set(self, "replicas", check_int("replicas", self.replicas, minimum=1))
        if not isinstance(self.service, ServiceTime):
            raise TypeError(
                f"service must be a ServiceTime (with batch_time_s), got {type(self.service).__name__}"
            )
        if not isinstance(self.batcher, BatcherConfig):
            raise TypeError(f"batcher must be a BatcherConfig, got {type(self.batcher).__name__}")
        check_in("policy", self.policy, POLICIES)


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


@dataclass(frozen=True, eq=False)
class SimulationResult:
    """What a run returns: the RequestLog, the Timeline, the horizon they cover and the config."""

    log: pd.DataFrame
    timeline: pd.DataFrame
    horizon_s: float
    config: PlatformConfig


# ---------------------------------------------------------------------------------------------------
# The event loop

# Request states while the model runs; outcomes are read off them at the end.
_FETCHING, _IN_LINE, _IN_MODEL, _REJECTED, _TIMED_OUT = range(1, 6)
_QUEUE_FULL, _RATE_LIMITED, _SHED = (REJECT_REASONS.index(r) for r in ("queue_full", "rate_limited", "shed"))
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


class _Model:
    """One run: the per-request state (lists indexed by row), the lines, and the simpy processes."""

    def __init__(self, arrivals: dict[str, np.ndarray], config: PlatformConfig, seed: int) -> None:
        pool, gateway = config.pool, config.gateway
        n = len(arrivals["t_s"])
        self.n = n
        self.config = config
        self.env = simpy.Environment()
        self.t = arrivals["t_s"].tolist()
        levels, rank = np.unique(arrivals["priority"], return_inverse=True)
        self.rank = rank.tolist()
        self.priority = arrivals["priority"].tolist()
        self.tokens_in = arrivals["tokens_in"].tolist()
        self.tokens_out = arrivals["tokens_out"].tolist()
        service_s = arrivals.get("service_s")
        own_times = service_s is not None and pool.batcher.max_batch_size == 1
        self.service_s = service_s.tolist() if own_times else None
        self.fetch_s = (
            config.ingestion.delays_s(n, stream(seed, "ingestion")).tolist() if config.ingestion else None
        )
        self.timeout_s = gateway.timeout_s

        self.state = [0] * n
        self.reason = [0] * n
        self.ready = [math.nan] * n
        self.line_of = [0] * n
        self.batch_of = [-1] * n
        self.batches: list[tuple[float, float, int, int]] = []  # (start_s, end_s, replica, size)

        self.backlog = 0  # admitted, not yet started (the gateway's count)
        self.deadlines: deque[int] = deque()  # admitted requests in arrival order = deadline order
        replicas = pool.replicas
        self.dispatch = pool.policy != "shared_queue" and replicas > 1  # a lone replica needs no choice
        self.lines = [_Line(max(len(levels), 1)) for _ in range(replicas if self.dispatch else 1)]
        self.max_batch_size = pool.batcher.max_batch_size
        self.in_service = [0] * replicas
        self.next_replica = 0
        self.balancer = stream(seed, "balancer")
        self.pairs: list[tuple[int, int]] = []

        for r in range(replicas):
            line = self.lines[r if self.dispatch else 0]
            rng = stream(seed, f"service/replica-{r}")
            for _ in range(pool.batcher.max_concurrent_batches):
                self.env.process(self._slot(r, line, rng))
        self.env.process(self._feeder())

    # -- gateway ------------------------------------------------------------------------------------
    def _feeder(self) -> Generator[simpy.Event, None, None]:
        env, t, state, reason, priority = self.env, self.t, self.state, self.reason, self.priority
        gateway = self.config.gateway
        rate, burst = gateway.rate_limit_per_s, float(gateway.rate_limit_burst)
        shed_length, shed_min = gateway.shed_queue_length, gateway.shed_min_priority
        capacity, timeout_s = gateway.queue_capacity, gateway.timeout_s
        fetch_s, deadlines, to_pool, purge = self.fetch_s, self.deadlines, self._to_pool, self._purge
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
            if capacity is not None and self.backlog >= capacity:
                state[i], reason[i] = _REJECTED, _QUEUE_FULL
                continue
            self.backlog += 1
            if timeout_s is not None:
                deadlines.append(i)
            if fetch_s is not None and fetch_s[i] > 0:
                state[i] = _FETCHING
                env.timeout(fetch_s[i], i).callbacks.append(self._on_features_ready)
            else:
                to_pool(i, now)

    def _purge(self, now: float) -> None:
        """Time out every waiting request whose deadline is ``now`` or earlier."""
        deadlines, t, state, timeout_s = self.deadlines, self.t, self.state, self.timeout_s
        while deadlines and t[deadlines[0]] + timeout_s <= now:
            i = deadlines.popleft()
            if state[i] == _IN_LINE:
                self.lines[self.line_of[i]].count -= 1
            elif state[i] != _FETCHING:
                continue
            state[i] = _TIMED_OUT
            self.backlog -= 1

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
        k = self._choose_line() if self.dispatch else 0
        line = self.lines[k]
        self.line_of[i] = k
        self.state[i] = _IN_LINE
        line.by_priority[self.rank[i]].append(i)
        line.count += 1
        # Wake a free slot when the line stops being empty or fills a batch; the rest is its timer's job.
        if line.idle_slots and (line.count == 1 or line.count >= self.max_batch_size):
            line.wake_one()

    def _choose_line(self) -> int:
        policy, lines, in_service = self.config.pool.policy, self.lines, self.in_service
        if policy == "round_robin":
            k = self.next_replica
            self.next_replica = (k + 1) % len(lines)
            return k
        if policy == "join_shortest_queue":
            loads = [line.count + busy for line, busy in zip(lines, in_service, strict=True)]
            return loads.index(min(loads))
        if not self.pairs:  # power_of_two: draw pairs of distinct replicas in blocks
            r = len(lines)
            first = self.balancer.integers(0, r, size=4096)
            second = self.balancer.integers(0, r - 1, size=4096)
            second += second >= first
            self.pairs = list(zip(first.tolist(), second.tolist(), strict=True))[::-1]
        a, b = self.pairs.pop()
        return b if lines[b].count + in_service[b] < lines[a].count + in_service[a] else a

    # -- replicas -----------------------------------------------------------------------------------
    def _oldest_ready(self, line: _Line) -> float:
        state, ready = self.state, self.ready
        oldest = math.inf
        for queue in line.by_priority:
            while queue and state[queue[0]] != _IN_LINE:
                queue.popleft()
            if queue and ready[queue[0]] < oldest:
                oldest = ready[queue[0]]
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

    def _slot(self, r: int, line: _Line, rng: np.random.Generator) -> Generator[simpy.Event, None, None]:
        env, state, batch_of = self.env, self.state, self.batch_of
        batcher, service = self.config.pool.batcher, self.config.pool.service
        max_size, max_wait_s = batcher.max_batch_size, batcher.max_wait_s
        tokens_in, tokens_out, service_s = self.tokens_in, self.tokens_out, self.service_s
        batches, batch_time_s, take = self.batches, service.batch_time_s, self._take
        timeout_s, in_service = self.timeout_s, self.in_service
        while True:
            now = env.now
            if timeout_s is not None:
                self._purge(now)
            waiting = line.count
            due = now
            if 0 < waiting < max_size and max_wait_s > 0:
                due = self._oldest_ready(line) + max_wait_s
            if waiting == 0 or due > now:
                wake = env.event()
                line.idle_slots.append(wake)
                if waiting:
                    env.timeout(_delay_until(now, due), wake).callbacks.append(_succeed_if_pending)
                yield wake
                continue
            batch = take(line, max_size)
            size = len(batch)
            if service_s is not None:
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
            batches.append((now, now + duration_s, r, size))
            self.backlog -= size
            in_service[r] += size
            if line.count and line.idle_slots:
                line.wake_one()
            yield env.timeout(duration_s)
            in_service[r] -= size

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


def _arrival_arrays(arrivals: pd.DataFrame) -> dict[str, np.ndarray]:
    """Check the arrivals table and return its columns as numpy arrays."""
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
    log: pd.DataFrame,
    batches: dict[str, np.ndarray],
    deadline_s: np.ndarray,
    horizon_s: float,
    step_s: float,
    replicas: int,
) -> pd.DataFrame:
    bins = max(_interval_count(horizon_s, step_s), 1 if len(log) else 0)
    if bins == 0:
        return pd.DataFrame({name: np.empty(0, dtype=dtype) for name, (dtype, _) in TIMELINE_COLUMNS.items()})
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
    busy_starts, busy_ends = _busy_periods(
        batches["start_s"], np.minimum(batches["end_s"], horizon_s), batches["replica"]
    )
    started = count(batches["start_s"])
    size_sum = count(batches["start_s"], batches["size"].astype(np.float64))
    timeline = pd.DataFrame(
        {
            "t_s": starts,
            "queue_length": level(ready[in_line], left_line[in_line]),
            "busy_replicas": level(busy_starts, busy_ends),
            "replicas": np.full(bins, float(replicas)),
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
    return timeline[list(TIMELINE_COLUMNS)]


def _request_log(
    model: _Model, columns: dict[str, np.ndarray], class_name: pd.Series, horizon_s: float | None
) -> tuple[pd.DataFrame, dict[str, np.ndarray], np.ndarray, float]:
    """The RequestLog of a finished run, the batch record, each request's deadline, and the horizon."""
    config, n = model.config, model.n
    state = np.asarray(model.state, dtype=np.int64)
    batch_of = np.asarray(model.batch_of, dtype=np.int64)
    table = np.asarray(model.batches, dtype=np.float64).reshape(-1, 4)
    batches = {
        "start_s": table[:, 0],
        "end_s": table[:, 1],
        "replica": table[:, 2].astype(np.int64),
        "size": table[:, 3].astype(np.int64),
    }
    served = batch_of >= 0

    def per_request(values: np.ndarray, fill: float) -> np.ndarray:  # batch_of == -1 picks ``fill``
        return np.append(values, fill)[batch_of]

    model_start = per_request(batches["start_s"], np.nan)
    model_end = per_request(batches["end_s"], np.nan)
    arrived = columns["t_s"]
    timeout_s = config.gateway.timeout_s
    deadline_s = arrived + (timeout_s if timeout_s is not None else np.inf)
    responded = model_end + config.network_hop_s
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
            "replica": per_request(batches["replica"], -1),
            "batch_size": per_request(batches["size"], 0),
            "outcome": np.asarray(OUTCOMES, dtype=object)[outcome],
            "reject_reason": reasons[np.asarray(model.reason, dtype=np.int64)],
            "latency_s": responded - arrived,
        }
    )[list(REQUEST_LOG_COLUMNS)]
    return log, batches, deadline_s, horizon_s


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
    times (``"service/replica-<r>"``) and the balancer's choices (``"balancer"``). ``horizon_s`` stops
    the run (default: run until every request has its outcome). ``progress`` shows a tqdm bar that
    advances with simulated time. See the module docstring for the model.
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
    columns = _arrival_arrays(arrivals)
    n = len(columns["t_s"]) if horizon_s is None else int(np.searchsorted(columns["t_s"], horizon_s, "left"))
    columns = {name: values[:n] for name, values in columns.items()}

    model = _Model(columns, config, seed)
    model.run(horizon_s, progress)

    log, batches, deadline_s, horizon_s = _request_log(model, columns, arrivals["class_name"], horizon_s)
    timeline = _timeline(log, batches, deadline_s, horizon_s, timeline_step_s, config.pool.replicas)
    return SimulationResult(log=log, timeline=timeline, horizon_s=horizon_s, config=config)

