"""A replica's batch slots: the static batcher, today's baseline.

A replica runs up to ``max_concurrent_batches`` batches at once, one per slot. A free slot takes up to
``max_batch_size`` waiting requests; with fewer waiting it holds off until the line fills up or its
oldest request has waited ``max_wait_s`` (with ``max_wait_s = 0`` it takes whatever waits). The batch
lasts ``service.batch_time_s(B, sum of tokens_in, max of tokens_out, rng)`` with the replica's own
stream, and nobody joins or leaves it until it ends (when ``max_batch_size == 1`` and the arrivals
carry ``service_s``, the request's own time is used: the hook shared with ``fastpath``). A fault may
cut a batch short: its requests go back to a line (``sim.faults``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING

import numpy as np
import simpy

from ..profiles import RandomServiceTime, ServiceTime, raw_batch_time

if TYPE_CHECKING:
    from .pool import Pool, Replica


#: Unit exponentials drawn at a time for an exponential service.
_BLOCK = 4096


def batch_timer(service: ServiceTime, rng: np.random.Generator) -> Callable[[int, int, int], float]:
    """``(batch size, prompt tokens, longest output) -> seconds`` on a replica's own stream. An
    exponential service draws its unit exponentials a block at a time: the same numbers, in the same
    order, as one ``rng.exponential`` per batch, for a fraction of the calls."""
    if not (isinstance(service, RandomServiceTime) and service.distribution == "exponential"):
        raw = raw_batch_time(service)
        return lambda size, tokens_in, tokens_out: raw(size, tokens_in, tokens_out, rng)
    mean_s = raw_batch_time(service.base)
    block: list[float] = []

    def seconds(size: int, tokens_in: int, tokens_out: int) -> float:
        if not block:
            block.extend(rng.standard_exponential(_BLOCK)[::-1].tolist())
        return mean_s(size, tokens_in, tokens_out, rng) * block.pop()

    return seconds


class StaticBatcher:
    """The slots of every replica of a pool: form a batch, run it to its longest answer."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    def start(self) -> None:
        env = self.pool.platform.env
        slots = self.pool.config.batcher.max_concurrent_batches
        for replica in self.pool.replicas:
            replica.timer = batch_timer(self.pool.config.service, replica.rng)  # its slots share it
            for _ in range(slots):
                env.process(self.slot(replica))

    def slot(self, replica: Replica) -> Generator[simpy.Event, None, None]:
        pool = self.pool
        platform = pool.platform
        env, requests, recorder = platform.env, platform.requests, platform.batches
        state, batch_of, joined = requests.state, requests.batch_of, requests.joined
        tokens_in, tokens_out = requests.tokens_in, requests.tokens_out
        service_s = requests.service_s if pool.own_times else None
        batch_time_s, purge = replica.timer, platform.deadlines.purge
        gateway, site, line, r = platform.gateway, pool.site, replica.line, replica.index
        index, faulty = pool.index, platform.faulty
        on_end_scale, on_end_exit = pool.autoscaler.on_batch_end, pool.exit.on_batch_end
        while True:
            now = env.now
            if not replica.serving:  # off, starting or failed: wait until it serves
                wake = env.event()
                replica.parked.append(wake)
                yield wake
                continue
            purge(now)
            waiting = line.count
            max_size = pool.max_size
            due = now
            if 0 < waiting < max_size and pool.max_wait_s > 0:
                due = line.oldest_joined(state, joined) + pool.max_wait_s
            if waiting == 0 or due > now:
                wake = env.event()
                line.idle_slots.append(wake)
                if waiting:
                    line.arm(due, now)
                yield wake
                continue
            batch = line.take(state, max_size)
            size = len(batch)
            if size == 1:
                i = batch[0]
                if service_s is not None:
                    duration_s = service_s[i]
                else:
                    duration_s = batch_time_s(1, tokens_in[i], tokens_out[i])
            else:
                total_in, longest_out = line.tokens(batch, tokens_in, tokens_out)
                duration_s = batch_time_s(size, total_in, longest_out)
            if not 0.0 <= duration_s < math.inf:
                raise ValueError(
                    f"service.batch_time_s({size}, ...) returned {duration_s!r}; a batch time must be "
                    "finite and >= 0"
                )
            k = recorder.add(now, now + duration_s, r, size, index)
            line.stamp(batch, k, state, batch_of)
            gateway.backlog -= size
            site.backlog -= size
            replica.in_service += size
            if line.count and line.idle_slots:
                line.wake_one()
            if faulty:  # a fault may cut the batch short: it must find it
                me = env.active_process
                replica.running[me] = (batch, k)
                try:
                    yield env.timeout(duration_s)
                except simpy.Interrupt:  # sim.faults put its requests back already
                    continue
                del replica.running[me]
            else:
                yield env.timeout(duration_s)
            replica.in_service -= size
            now = env.now
            on_end_scale(pool, replica, now)
            on_end_exit(pool, batch, now)


class OneAtATime(StaticBatcher):
    """The slots of a plain pool that serves one request at a time (``max_batch_size == 1``, one shared
    line, nothing that stops a replica): each slot is a callback rather than a simpy process. A free
    slot waits in the line's idle list; the arrival that finds it starts its request there and then;
    a request's end is a timeout whose callback takes the next one. The same policy as the static
    batcher with two events fewer per request; at one exact instant, an arrival and a batch end that
    could both claim a free replica go to the replica that was already free."""

    def start(self) -> None:
        pool = self.pool
        for replica in pool.replicas:
            replica.timer = batch_timer(pool.config.service, replica.rng)  # its slots share it
            for _ in range(pool.config.batcher.max_concurrent_batches):
                replica.line.idle_slots.append(_Slot(self, replica))


class _Slot:
    """One slot of ``OneAtATime``: it quacks like the simpy event an idle slot waits on."""

    __slots__ = (
        "triggered", "pool", "replica", "env", "line", "time_s", "requests", "service_s",
        "recorder", "gateway", "site", "index",
    )  # fmt: skip

    def __init__(self, batcher: OneAtATime, replica: Replica) -> None:
        pool = batcher.pool
        platform = pool.platform
        self.triggered = False
        self.pool, self.replica, self.env, self.line = pool, replica, platform.env, replica.line
        self.time_s = replica.timer
        self.requests, self.recorder = platform.requests, platform.batches
        self.service_s = platform.requests.service_s if pool.own_times else None
        self.gateway, self.site, self.index = platform.gateway, pool.site, pool.index

    def succeed(self) -> None:
        """Woken by an arrival: take the request now."""
        self.take(self.env.now)

    def take(self, now: float) -> None:
        line, requests = self.line, self.requests
        i = line.head  # the line is an ArrivalLine: the next request is the next arrival
        line.head = i + 1
        line.count -= 1
        if self.service_s is not None:
            duration_s = self.service_s[i]
        else:
            duration_s = self.time_s(1, requests.tokens_in[i], requests.tokens_out[i])
            if not 0.0 <= duration_s < math.inf:
                raise ValueError(
                    f"service.batch_time_s(1, ...) returned {duration_s!r}; a batch time must be finite "
                    "and >= 0"
                )
        requests.batch_of[i] = self.recorder.add(now, now + duration_s, self.replica.index, 1, self.index)
        self.gateway.backlog -= 1
        self.site.backlog -= 1
        self.replica.in_service += 1
        if line.count and line.idle_slots:
            line.wake_one()
        self.env.timeout(duration_s, i).callbacks.append(self.done)

    def done(self, event: simpy.Event) -> None:
        """The request's batch ended (a plain pool has no controller to tell): take the next or wait."""
        self.replica.in_service -= 1
        if self.line.count:
            self.take(self.env.now)
        else:
            self.line.idle_slots.append(self)
