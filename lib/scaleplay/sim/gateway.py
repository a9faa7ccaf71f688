"""The gateway: arrivals in, admission decided at once, deadlines kept.

Checks, in this order: *rate limit* (a token bucket refilled at ``rate_limit_per_s`` up to
``rate_limit_burst`` tokens, full at the start; an empty bucket rejects as ``"rate_limited"``),
*load shedding* (while the backlog is at least ``shed_queue_length``, requests whose ``priority >=
shed_min_priority`` are rejected as ``"shed"``; a surge mode may shed whole classes), and the
*bounded queue* (a backlog of ``queue_capacity`` rejects as ``"queue_full"``, or ``"overflow"`` when an
offline tier takes them). The *backlog* is the number of requests admitted and not yet started on a
replica. An admitted request goes to the router, then to ingestion.

Arrivals are fed from the sorted array. The feeder handles an arrival in place, moving the clock to
its time, whenever nothing else is due before it; it yields a timeout only when another event comes
first. Simultaneous arrivals are handled together. Either way the order of events is the one a
timeout per arrival would give.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Generator

import simpy
from simpy.core import URGENT

from ..config import GatewayConfig, OverflowConfig
from .clock import delay_until
from .requests import FETCHING, IN_LINE, OVERFLOW, QUEUE_FULL, RATE_LIMITED, REJECTED, SHED, TIMED_OUT
from .run import Run

# Slack against rounding when a refilled token bucket should hold exactly one token.
_TOKEN_SLACK = 1e-9


class Gateway:
    """Admission control and the platform's backlog; the surge controller turns ``capacity`` and
    ``shed_from``."""

    def __init__(self, platform: Run, config: GatewayConfig, overflow: OverflowConfig | None) -> None:
        self.platform, self.config = platform, config
        self.backlog = 0  # admitted, not yet started
        self.capacity = config.queue_capacity
        self.shed_from: int | None = None
        self.full_reason = OVERFLOW if overflow is not None else QUEUE_FULL
        self.fed_all = False

    def start(self) -> None:
        self.platform.env.process(self.feed())

    def feed(self) -> Generator[simpy.Event, None, None]:
        platform = self.platform
        env, requests = platform.env, platform.requests
        t, state, reason, priority = requests.t, requests.state, requests.reason, requests.priority
        config = self.config
        rate, burst = config.rate_limit_per_s, float(config.rate_limit_burst)
        shed_length, shed_min = config.shed_queue_length, config.shed_min_priority
        full_reason = self.full_reason
        deadlines, router, ingestion = platform.deadlines, platform.router, platform.ingestion
        purge, remember = deadlines.purge, deadlines.append
        queue = env._queue  # simpy's heap of (time, priority, id, event)
        tokens, refilled = burst, 0.0
        now = 0.0
        for i in range(requests.n):
            ti = t[i]
            if ti > now:
                if queue and queue[0][0] <= ti:  # something is due first: let it happen
                    d = ti - now
                    yield env.timeout(d if now + d == ti else delay_until(now, ti))
                else:
                    env._now = ti  # nothing is due before this arrival: move the clock in place
                now = ti
            purge(now)
            if rate is not None:
                tokens = min(burst, tokens + (now - refilled) * rate)
                refilled = now
                if tokens < 1.0 - _TOKEN_SLACK:
                    state[i], reason[i] = REJECTED, RATE_LIMITED
                    continue
                tokens = max(tokens - 1.0, 0.0)
            if shed_length is not None and self.backlog >= shed_length and priority[i] >= shed_min:
                state[i], reason[i] = REJECTED, SHED
                continue
            shed_from, capacity = self.shed_from, self.capacity
            if shed_from is not None and priority[i] >= shed_from:
                state[i], reason[i] = REJECTED, SHED
                continue
            if capacity is not None and self.backlog >= capacity:
                state[i], reason[i] = REJECTED, full_reason
                continue
            self.backlog += 1
            remember(i)
            router.assign(i)
            ingestion.fetch(i, now)
        self.fed_all = True


class DirectFeed(Gateway):
    """The gateway of a plain platform: no admission rule, so every arrival joins the one line
    (``pool.ArrivalLine``) as it comes. Arrivals between two events are fed in one step; the one that
    fills the line enough to wake an idle slot (the first into an empty line, or the one that makes a
    full batch) is fed alone, at its time, as a timeout per arrival would."""

    def start(self) -> None:
        """Feed in steps: each handles arrivals until another event is due, then waits for it as a
        callback (no process: the first step takes the place the feeding process would start in)."""
        platform = self.platform
        self.env, self.t, self.n = platform.env, platform.requests.t, platform.requests.n
        self.site = platform.sites[0]
        self.pool = self.site.large
        self.line = self.pool.lines[0]
        self.j, self.now = 0, 0.0
        first = simpy.Event(self.env)
        first._ok, first._value = True, None
        first.callbacks.append(self.step)
        self.env.schedule(first, URGENT)

    def step(self, event: simpy.Event | None = None) -> None:
        env, t, n, site, pool, line = self.env, self.t, self.n, self.site, self.pool, self.line
        queue = env._queue
        j, now = self.j, self.now
        while j < n:
            tj = t[j]
            if tj > now:
                if queue and queue[0][0] <= tj:  # something is due first: let it happen
                    d = tj - now
                    self.j, self.now = j, tj
                    env.timeout(d if now + d == tj else delay_until(now, tj)).callbacks.append(self.step)
                    return
                env._now = tj
                now = tj
            # Arrival j joins: it may wake an idle slot or arm the batching deadline.
            line.count += 1
            line.fed = j = j + 1
            self.backlog += 1
            site.backlog += 1
            max_size = pool.max_size
            line.joined(max_size, pool.max_wait_s, now)
            # The arrivals before the next event and before the next wake join in one step.
            last = bisect_left(t, queue[0][0], j, n) if queue else n
            if line.idle_slots:
                last = min(last, j + max(max_size - 1 - line.count, 0))
            if last > j:
                added = last - j
                line.count += added
                line.fed = j = last
                self.backlog += added
                site.backlog += added
                env._now = now = t[j - 1]
        self.j, self.now = j, now
        self.fed_all = True


class NoDeadlines:
    """No ``timeout_s``: nothing ever times out."""

    def append(self, i: int) -> None:
        pass

    def purge(self, now: float) -> None:
        pass


class Deadlines(NoDeadlines):
    """A request still waiting for a replica ``timeout_s`` after it arrived leaves as ``"timed_out"``.

    Enforced lazily: whoever looks at a line first drops what has expired, which is exact because
    nothing can happen to a waiting request between two such looks. A request that has started once
    (escalated, or retried after a fault) has no deadline any more.
    """

    def __init__(self, platform: Run, timeout_s: float) -> None:
        self.platform, self.timeout_s = platform, timeout_s
        self.queue: deque[int] = deque()  # admitted requests in arrival order = deadline order

    def append(self, i: int) -> None:
        self.queue.append(i)

    def purge(self, now: float) -> None:
        """Time out every waiting request whose deadline is ``now`` or earlier."""
        platform, queue, timeout_s = self.platform, self.queue, self.timeout_s
        requests = platform.requests
        t, state, exempt = requests.t, requests.state, requests.exempt
        while queue and t[queue[0]] + timeout_s <= now:
            i = queue.popleft()
            if state[i] == IN_LINE:
                if exempt[i]:
                    continue
                platform.lines[requests.line_of[i]].count -= 1
            elif state[i] != FETCHING:
                continue
            state[i] = TIMED_OUT
            platform.gateway.backlog -= 1
            platform.router.site_of(i).backlog -= 1
