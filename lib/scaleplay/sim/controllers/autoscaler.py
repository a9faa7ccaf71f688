"""A pool's autoscaler: every ``interval_s`` it measures the pool and asks for replicas.

The rules are ``config.autoscaler``'s. A new replica is billed from the moment it is asked for
(a row of the provisioning record) and serves after its cold start; scale-up is immediate (draining
replicas are kept first, then stopped ones start, lowest index first, healthy ones first); scale-down
stops idle replicas before busy ones (those drain), highest index first. A pool without an autoscaler
has ``NoAutoscaler``.

What it measures. ``"utilization"``: busy replica-seconds over the last interval. A static batcher's
batches give them (slot-seconds over the slots); a continuous-batching replica is busy while it runs
iterations, so its busy time is read off the iteration record (plus the run in progress), not off
the batch record, whose rows are requests that overlap on a replica. ``"saturation"``: at the
evaluation instant, each serving replica's KV-cache utilisation (``Scheduler.kv_tokens`` over the
cache's tokens) and its waiting requests: those in its line plus its preempted ones waiting to
recompute. A shared-queue pool has one line for all its replicas: each serving replica is counted
an equal share of it (the requests any of them could take next). The saturation signals are
instants, and noisy (a long prompt holding an iteration's token budget makes the lines jump for a
second), so with ``"saturation"`` a scale-up needs two evaluations in a row to ask for it, and a
scale-down every evaluation over the last ``cooldown_s``.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import TYPE_CHECKING

import simpy

from ..continuous import IDLE
from ..pool import DRAINING, OFF, READY, STARTING
from ..run import Run

if TYPE_CHECKING:
    from ..pool import Pool, Replica


class NoAutoscaler:
    """A fixed pool: nothing to do."""

    def on_join(self, pool: Pool, now: float) -> None:
        pass

    def on_batch_end(self, pool: Pool, replica: Replica, now: float) -> None:
        pass


class Autoscaler(NoAutoscaler):
    def __init__(self, platform: Run, pool: Pool) -> None:
        self.platform, self.pool, self.config = platform, pool, pool.config.autoscaler
        self.last_change_s = 0.0
        self.open_batches: list[int] = []  # batches still running at the last evaluation
        self.scan_from = 0
        self.lower_since = math.inf  # since when every evaluation has asked for fewer replicas
        self.higher_in_a_row = 0  # evaluations in a row that asked for more
        self.changes: list[tuple[float, int]] = []  # (t_s, replicas asked for): every decision taken
        self.iterations_from = 0  # the iteration record's rows read so far (continuous batching)
        pool.autoscaler = self

    def start(self) -> None:
        self.platform.env.process(self.run())

    def on_join(self, pool: Pool, now: float) -> None:
        if pool.active == 0:  # scaled to zero: the request asks for a replica
            self.scale_up(1, now)

    def on_batch_end(self, pool: Pool, replica: Replica, now: float) -> None:
        pool.last_busy_s = now
        if replica.status == DRAINING and replica.in_service == 0:
            self.off(replica, now)

    def scale_up(self, count: int, now: float) -> None:
        """Keep draining replicas (no cold start), then start stopped ones."""
        pool, platform = self.pool, self.platform
        cold_s = self.config.cold_start.seconds
        order = sorted(pool.replicas, key=lambda replica: replica.down > 0)  # healthy ones first
        for wanted in (DRAINING, OFF):
            for replica in order:
                if count == 0:
                    break
                if replica.status != wanted:
                    continue
                count -= 1
                pool.active += 1
                if wanted == DRAINING:
                    replica.status = READY
                    pool.serve(replica)
                    continue
                replica.status = STARTING
                replica.record = platform.provision(pool, replica, now)
                if cold_s > 0:
                    event = platform.env.timeout(cold_s, (replica, replica.record))
                    event.callbacks.append(self.on_started)
                else:
                    self.started(replica, now)
        pool.changed()
        self.last_change_s = now
        self.changes.append((now, pool.active))

    def on_started(self, event: simpy.Event) -> None:
        replica, row = event.value
        if replica.record == row and replica.status == STARTING:
            self.started(replica, self.platform.env.now)

    def started(self, replica: Replica, now: float) -> None:
        replica.status = READY
        self.platform.provisioning[replica.record][3] = now
        self.pool.changed()
        self.pool.serve(replica)

    def scale_down(self, count: int, now: float) -> None:
        """Stop idle replicas first, then busy ones (they drain), highest index first."""
        pool = self.pool
        ready = [replica for replica in reversed(pool.replicas) if replica.status == READY]
        idle_first = [x for x in ready if x.in_service == 0] + [x for x in ready if x.in_service > 0]
        for replica in idle_first[:count]:
            pool.stop_serving(replica)
            pool.active -= 1
            if replica.in_service > 0:
                replica.status = DRAINING
            else:
                self.off(replica, now)
        pool.changed()
        self.last_change_s = now
        self.changes.append((now, pool.active))
        for line in pool.lines:  # the stopped replicas' idle slots must notice and park
            line.wake_all()
        pool.rebalance(now)

    def off(self, replica: Replica, now: float) -> None:
        replica.status = OFF
        self.platform.provisioning[replica.record][4] = now

    def busy_seconds(self, low: float, now: float) -> float:
        """Busy slot-seconds of a static pool in ``[low, now]``, from the batches that overlap it."""
        pool, batches = self.pool, self.platform.batches
        record_pool, starts, ends = batches.pool, batches.start_s, batches.end_s
        fresh = [k for k in range(self.scan_from, len(batches)) if record_pool[k] == pool.index]
        self.scan_from = len(batches)
        busy_s, still = 0.0, []
        for k in self.open_batches + fresh:
            start_s, end_s = starts[k], ends[k]
            busy_s += max(0.0, min(end_s, now) - max(start_s, low))
            if end_s > now:
                still.append(k)
        self.open_batches = still
        return busy_s

    def iterating_seconds(self, low: float, now: float) -> float:
        """Replica-seconds a continuous pool ran iterations in ``[low, now]``. A run recorded since the
        last evaluation ended after ``low`` (one recorded before ended by then); the runs in progress
        count from their start."""
        pool, record = self.pool, self.platform.iterations
        record_pool, starts, ends = record.pool, record.start_s, record.end_s
        busy_s = 0.0
        for k in range(self.iterations_from, len(record)):
            if record_pool[k] == pool.index:
                busy_s += min(ends[k], now) - max(starts[k], low)
        self.iterations_from = len(record)
        for replica in pool.replicas:
            scheduler = replica.scheduler
            if scheduler.state != IDLE:
                busy_s += now - max(scheduler.started_s, low)
        return busy_s

    def saturation(self) -> tuple[list[float], list[float]]:
        """Each serving replica's KV-cache utilisation and waiting requests (module docstring)."""
        pool = self.pool
        serving = [replica for replica in pool.replicas if replica.serving]
        shared = pool.lines[0].count / len(serving) if len(pool.lines) == 1 and serving else 0.0
        kv, waiting = [], []
        for replica in serving:
            scheduler = replica.scheduler
            kv.append(scheduler.kv_tokens() / (scheduler.total_blocks * scheduler.block_tokens))
            line = shared if len(pool.lines) == 1 else replica.line.count
            waiting.append(line + len(scheduler.preempted))
        return kv, waiting

    def run(self) -> Generator[simpy.Event, None, None]:
        platform, pool, config = self.platform, self.pool, self.config
        env = platform.env
        continuous = pool.config.continuous
        # The saturation signals are instants: a change must be asked for more than once (module docstring).
        steady = config.metric == "saturation"
        slots = 1 if continuous else pool.config.batcher.max_concurrent_batches
        while True:
            yield env.timeout(config.interval_s)
            now = env.now
            platform.deadlines.purge(now)
            if platform.finished():
                return
            low = now - config.interval_s
            busy_s = self.iterating_seconds(low, now) if continuous else self.busy_seconds(low, now)
            in_system = pool.in_system()
            idle_s = 0.0 if in_system else now - max(pool.last_join_s, pool.last_busy_s)
            signals = {}
            if config.metric == "saturation":
                kv, waiting = self.saturation()
                starting = sum(replica.status == STARTING for replica in pool.replicas)
                signals = {
                    "replicas": pool.active,
                    "starting": starting,
                    "kv_utilization": kv,
                    "waiting": waiting,
                }
            desired = config.desired_replicas(
                now_s=now,
                busy_replicas=busy_s / (config.interval_s * slots),
                in_system=in_system,
                idle_s=idle_s,
                **signals,
            )
            self.lower_since = math.inf if desired >= pool.active else min(self.lower_since, now)
            self.higher_in_a_row = self.higher_in_a_row + 1 if desired > pool.active else 0
            if desired > pool.active and (not steady or self.higher_in_a_row >= 2):
                self.scale_up(desired - pool.active, now)
            elif (
                desired < pool.active
                and now - self.last_change_s >= config.cooldown_s
                and (not steady or now - self.lower_since >= config.cooldown_s)
                and not any(replica.status == STARTING for replica in pool.replicas)
            ):
                self.scale_down(pool.active - desired, now)
