"""A pool: the replicas of one model in one region, their waiting lines, and the balancer.

``Pool`` keeps one line for every replica (``"shared_queue"``: the M/M/c system). Its subclasses give
each replica its own line and differ only in how they choose one (``choose``), as simpy's
``PriorityResource`` differs from ``Resource`` only in its queue: ``RoundRobinPool``,
``ShortestQueuePool`` (fewest waiting plus in service, lowest index on ties), ``PowerOfTwoPool``
(the shorter of two distinct replicas drawn from the pool's ``balancer`` stream),
``LeastOutstandingTokensPool``, and with continuous batching ``LeastKVCachePool`` and
``PrefixAffinityPool`` (the longest cached prefix, under a load cap). They choose among the replicas
that serve (or, when none does, those starting; else any), and when a replica stops serving its
waiting requests are dealt again to the others.

A line serves lower ``priority`` numbers first, first come first served within a class. The pool
owns its replicas' states; what happens around it is reached through the pool's hooks: ``admission``
(a time-box may answer a request instead of letting it join), ``autoscaler`` (a null object when
off) and ``exit`` (what follows a batch: the answer, or a cascade's escalation).
"""

from __future__ import annotations

import math
from array import array
from collections import deque

import numpy as np
import simpy

from ..config import PoolConfig
from .clock import delay_until
from .requests import IN_LINE, IN_MODEL
from .run import Run

# Replica states under an autoscaler: billed from STARTING until OFF, serving only when READY.
OFF, STARTING, READY, DRAINING = range(4)


class Line:
    """One waiting line: a FIFO per priority level, served lowest level first.

    It keeps the free slots waiting for work (``idle_slots``, woken first come first served) and one
    batching deadline (``armed_s``): the moment its oldest request will have waited ``max_wait_s``,
    when one idle slot wakes to take whatever waits. One timer per line, not one per idle slot.
    """

    __slots__ = ("index", "by_priority", "count", "idle_slots", "armed_s", "env")

    def __init__(self, index: int, levels: int, env: simpy.Environment) -> None:
        self.index = index
        self.by_priority = [deque() for _ in range(levels)]
        self.count = 0  # live requests; the deques may still hold timed-out ones
        self.idle_slots: deque[simpy.Event] = deque()
        self.armed_s = math.inf  # when the batching deadline fires (inf: none armed)
        self.env = env

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

    def arm(self, due_s: float, now: float) -> None:
        """Wake an idle slot at ``due_s`` unless the deadline already armed comes first."""
        if due_s < self.armed_s:
            self.armed_s = due_s
            self.env.timeout(delay_until(now, due_s), due_s).callbacks.append(self._on_deadline)

    def _on_deadline(self, event: simpy.Event) -> None:
        if event.value == self.armed_s:  # not superseded by an earlier deadline
            self.armed_s = math.inf
            self.wake_one()

    def joined(self, max_size: int, max_wait_s: float, now: float) -> None:
        """A request joined: wake a free slot if the batch is full, or it is the first and need not
        wait; else the first one arms the deadline."""
        if self.idle_slots:
            if self.count >= max_size or (self.count == 1 and max_wait_s == 0):
                self.wake_one()
            elif self.count == 1:
                self.arm(now + max_wait_s, now)

    def oldest_joined(self, state, joined) -> float:  # noqa: ANN001 - typed arrays
        oldest = float("inf")
        for queue in self.by_priority:
            while queue and state[queue[0]] != IN_LINE:
                queue.popleft()
            if queue and joined[queue[0]] < oldest:
                oldest = joined[queue[0]]
        return oldest

    def take(self, state, max_size: int) -> list[int]:  # noqa: ANN001
        """Up to ``max_size`` live requests, by priority then arrival."""
        batch: list[int] = []
        if max_size == 1:  # the unbatched common case, kept short
            for queue in self.by_priority:
                while queue:
                    i = queue.popleft()
                    if state[i] == IN_LINE:
                        self.count -= 1
                        return [i]
        for queue in self.by_priority:
            while queue and len(batch) < max_size:
                i = queue.popleft()
                if state[i] == IN_LINE:
                    batch.append(i)
            if len(batch) == max_size:
                break
        self.count -= len(batch)
        return batch

    def put_back(self, i: int, rank: int) -> None:
        """Request ``i``, just taken, goes back to the head of its line (a replica had no room)."""
        self.by_priority[rank].appendleft(i)
        self.count += 1

    def drain(self, state) -> list[int]:  # noqa: ANN001
        """Every live request, in the order the line would serve them; the line is left empty."""
        waiting = [i for queue in self.by_priority for i in queue if state[i] == IN_LINE]
        for queue in self.by_priority:
            queue.clear()
        self.count = 0
        return waiting

    @staticmethod
    def tokens(batch: list[int], tokens_in, tokens_out) -> tuple[int, int]:  # noqa: ANN001
        """The batch's prompt tokens in all and its longest answer."""
        return sum([tokens_in[i] for i in batch]), max([tokens_out[i] for i in batch])

    @staticmethod
    def stamp(batch: list[int], k: int, state, batch_of) -> None:  # noqa: ANN001
        """The batch's requests are in the model, in batch ``k``."""
        for i in batch:
            state[i] = IN_MODEL
            batch_of[i] = k


class ArrivalLine(Line):
    """The one line of a plain platform (one class, no admission rule, no feature fetch, no control):
    every request joins it as it arrives, so the line is the run of arrivals ``[head, fed)`` and a
    batch is a slice of them. ``gateway.DirectFeed`` moves ``fed`` in bulk; nobody is stamped one by
    one (a request's state stays 0 and the log reads its outcome off its batch)."""

    __slots__ = ("t", "head", "fed")

    def __init__(self, index: int, t, env: simpy.Environment) -> None:  # noqa: ANN001
        super().__init__(index, 1, env)
        self.t, self.head, self.fed = t, 0, 0

    def oldest_joined(self, state, joined) -> float:  # noqa: ANN001
        return self.t[self.head]

    def take(self, state, max_size: int) -> range:  # noqa: ANN001
        head = self.head
        batch = range(head, head + min(max_size, self.count))
        self.head = batch.stop
        self.count -= len(batch)
        return batch

    def put_back(self, i: int, rank: int) -> None:
        self.head -= 1
        self.count += 1

    @staticmethod
    def tokens(batch: range, tokens_in, tokens_out) -> tuple[int, int]:  # noqa: ANN001
        return sum(tokens_in[batch.start : batch.stop]), max(tokens_out[batch.start : batch.stop])

    @staticmethod
    def stamp(batch: range, k: int, state, batch_of) -> None:  # noqa: ANN001
        batch_of[batch.start : batch.stop] = array(batch_of.format, [k]) * len(batch)


class Replica:
    """One model server of a pool: its line, its random stream, and its state."""

    __slots__ = (
        "index",
        "line",
        "rng",
        "timer",
        "in_service",
        "status",
        "serving",
        "down",
        "parked",
        "running",
        "record",
        "scheduler",
    )

    def __init__(self, index: int, line: Line, rng: np.random.Generator, provisioned: bool) -> None:
        self.index = index
        self.line = line
        self.rng = rng
        self.in_service = 0  # requests in its running batches
        self.status = READY if provisioned else OFF
        self.serving = provisioned  # takes batches: ready and not failed
        self.down = 0  # faults holding it down
        self.parked: list[simpy.Event] = []  # its slots, waiting until it serves
        self.running: dict[simpy.Process, tuple[list[int], int]] = {}  # batches a fault could cut
        self.record = -1  # its current row of the provisioning record
        self.scheduler = None  # with continuous batching: its iteration scheduler


class Pool:
    """The replicas of one model in one site, sharing one line."""

    def __init__(
        self,
        platform: Run,
        site: Site,
        config: PoolConfig,
        label: str,
        stream_prefix: str,
        balancer_name: str,
    ) -> None:
        self.platform, self.site, self.config = platform, site, config
        self.index = len(platform.pools)  # its rows in the batch and provisioning records
        self.label = label  # its name in the batch and provisioning tables
        self.model = config.name  # its name in the log's ``model`` column
        self.size = config.max_replicas  # replicas built
        # Knobs the surge controller may turn; a continuous batcher takes a request as soon as it joins.
        self.max_size = 1 if config.continuous else config.batcher.max_batch_size
        self.max_wait_s = 0.0 if config.continuous else config.batcher.max_wait_s
        self.balancer_name = balancer_name
        self.lines = [platform.new_line(arrivals=platform.plain) for _ in range(self.line_count())]
        self.replicas = [
            Replica(
                r,
                self.lines[r if len(self.lines) > 1 else 0],
                platform.stream(f"{stream_prefix}replica-{r}"),
                r < config.replicas,
            )
            for r in range(self.size)
        ]
        self.up = self.size  # replicas not failed
        self.active = config.replicas  # starting or ready (the autoscaler's count)
        self.last_join_s = 0.0
        self.last_busy_s = 0.0
        self.own_times = False  # batches of one use the arrivals' service_s
        self.answer_delay_s = platform.config.network_hop_s  # from a batch's end to the answer's arrival
        # Hooks, each a null object until a control attaches itself.
        self.admission = platform.open_admission
        self.autoscaler = platform.no_autoscaler
        self.exit = platform.answers

    def line_count(self) -> int:
        return 1

    # -- joining --------------------------------------------------------------------------------------
    def choose(self) -> Line:
        return self.lines[0]

    def join(self, i: int, now: float, front: bool = False) -> None:
        """Request ``i`` joins this pool's line (``front``: a retry goes first)."""
        platform = self.platform
        if not self.admission.admit(self, i, now):
            return
        requests = platform.requests
        line = self.choose()
        requests.joined[i] = now
        requests.line_of[i] = line.index
        requests.state[i] = IN_LINE
        if front:
            line.by_priority[requests.rank[i]].appendleft(i)
        else:
            line.by_priority[requests.rank[i]].append(i)
        line.count += 1
        self.last_join_s = now
        self.autoscaler.on_join(self, now)
        line.joined(self.max_size, self.max_wait_s, now)

    def rebalance(self, now: float) -> None:
        """Deal again the requests waiting for replicas that no longer serve (one line: nothing to do)."""

    # -- replica states -------------------------------------------------------------------------------
    def serve(self, replica: Replica) -> None:
        """The replica takes batches again, if it is ready and not failed."""
        if replica.status != READY or replica.down:
            return
        replica.serving = True
        self.changed()
        parked, replica.parked = replica.parked, []
        for event in parked:
            event.succeed()
        self.rebalance(self.platform.env.now)

    def stop_serving(self, replica: Replica) -> None:
        replica.serving = False
        self.changed()

    def changed(self) -> None:
        """A replica's state changed (the balancer's choices may too)."""

    def busy(self) -> bool:
        return any(replica.in_service for replica in self.replicas)

    def in_system(self) -> int:
        return sum(line.count for line in self.lines) + sum(r.in_service for r in self.replicas)


class DispatchPool(Pool):
    """A line per replica; a request joins the line ``choose`` picks, at once."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.choices: list[int] | None = None
        super().__init__(*args, **kwargs)

    def line_count(self) -> int:
        return self.size

    def changed(self) -> None:
        self.choices = None

    def candidates(self) -> list[int]:
        """The replicas a request may be sent to: those serving, else starting, else not failed."""
        if self.choices is None:
            self.choices = self._candidates()
        return self.choices

    def _candidates(self) -> list[int]:
        replicas = self.replicas
        serving = [r for r in range(self.size) if replicas[r].serving]
        if serving:
            return serving
        starting = [r for r in range(self.size) if replicas[r].status == STARTING and not replicas[r].down]
        return starting or [r for r in range(self.size) if not replicas[r].down] or list(range(self.size))

    def rebalance(self, now: float) -> None:
        serving = {r for r in range(self.size) if self.replicas[r].serving}
        if not serving:
            return
        state = self.platform.requests.state
        stranded = [i for r, line in enumerate(self.lines) if r not in serving for i in line.drain(state)]
        for i in stranded:
            self.join(i, now)


class RoundRobinPool(DispatchPool):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.next_replica = 0

    def choose(self) -> Line:
        choices = self.candidates()
        k = self.next_replica % len(choices)
        self.next_replica = (k + 1) % len(choices)
        return self.lines[choices[k]]


class ShortestQueuePool(DispatchPool):
    """The replica with the least ``loads`` (here requests waiting plus in service), lowest index on
    ties. Its subclasses differ only in the load they compare."""

    def loads(self, choices: list[int]) -> list[int]:
        lines, replicas = self.lines, self.replicas
        return [lines[r].count + replicas[r].in_service for r in choices]

    def choose(self) -> Line:
        choices = self.candidates()
        loads = self.loads(choices)
        self.chosen = choices[loads.index(min(loads))]
        return self.lines[self.chosen]


class LeastOutstandingTokensPool(ShortestQueuePool):
    """The replica with the fewest outstanding tokens: prompt plus answer tokens of the requests it
    was sent and has not finished (waiting or running), what a router can count from what it sends
    and what comes back.

    A counter per replica: a request adds its tokens when it joins a replica's line, and takes them
    back when its batch ends (the pool's exit hook passes through ``_Finished`` first) or when it
    joins again (a rebalance or a retry moves it). A request that leaves any other way (timed out in
    line, rejected as too long, answered by a time-box, moved to another region) is found when the
    replica's count of requests no longer matches its line plus its service, and only then are that
    replica's requests looked over: O(candidates) per request otherwise.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        self._finished = _Finished()
        super().__init__(*args, **kwargs)
        self.outstanding = [0] * self.size  # tokens per replica
        self.members: list[set[int]] = [set() for _ in range(self.size)]  # the requests counted there
        self.counted_on: dict[int, int] = {}  # request -> the replica it is counted on
        self.chosen = -1

    # The exit hook (the answer, or a cascade's escalation) is wrapped so that finished requests are
    # counted out before they go on.
    @property
    def exit(self) -> _Finished:
        return self._finished

    @exit.setter
    def exit(self, hook: object) -> None:
        self._finished.hook = hook

    def join(self, i: int, now: float, front: bool = False) -> None:
        if i in self.counted_on:  # rebalanced or retried: counted out of its old replica first
            self.count_out(i)
        self.chosen = -1
        super().join(i, now, front)
        r = self.chosen
        if r >= 0:  # admitted and sent to replica r
            requests = self.platform.requests
            self.outstanding[r] += requests.tokens_in[i] + requests.tokens_out[i]
            self.members[r].add(i)
            self.counted_on[i] = r

    def count_out(self, i: int) -> None:
        r = self.counted_on.pop(i)
        requests = self.platform.requests
        self.outstanding[r] -= requests.tokens_in[i] + requests.tokens_out[i]
        self.members[r].discard(i)

    def loads(self, choices: list[int]) -> list[int]:
        lines, replicas, members = self.lines, self.replicas, self.members
        for r in choices:
            if len(members[r]) != lines[r].count + replicas[r].in_service:
                self.settle(r)
        outstanding = self.outstanding
        return [outstanding[r] for r in choices]

    def settle(self, r: int) -> None:
        """Count out the requests of replica ``r`` that left it without finishing a batch."""
        requests, batches = self.platform.requests, self.platform.batches
        state, line_of, batch_of = requests.state, requests.line_of, requests.batch_of
        line = self.lines[r].index
        for i in list(self.members[r]):
            k = batch_of[i]
            here = (state[i] == IN_LINE and line_of[i] == line) or (
                state[i] == IN_MODEL and k >= 0 and batches.pool[k] == self.index and batches.replica[k] == r
            )
            if not here:
                self.count_out(i)


class _Finished:
    """A ``LeastOutstandingTokensPool``'s exit hook: count the batch's requests out, then pass it on."""

    __slots__ = ("hook",)

    def __init__(self) -> None:
        self.hook = None

    def on_batch_end(self, pool: LeastOutstandingTokensPool, batch: list[int], now: float) -> None:
        counted_on = pool.counted_on
        for i in batch:
            if i in counted_on:
                pool.count_out(i)
        self.hook.on_batch_end(pool, batch, now)


class LeastKVCachePool(ShortestQueuePool):
    """The replica whose KV cache holds the fewest tokens (``Scheduler.kv_tokens``: as of the start of
    its iteration, or run of decode iterations, in progress) plus the prompt tokens waiting for it
    (its line and its preempted requests, which will need the cache next). Continuous batching only
    (the config refuses it otherwise). O(candidates) per request while the lines are empty, as they
    are until a replica fills; then O(waiting requests) as well."""

    def loads(self, choices: list[int]) -> list[int]:
        lines, replicas = self.lines, self.replicas
        requests = self.platform.requests
        state, tokens_in = requests.state, requests.tokens_in
        loads = []
        for r in choices:
            scheduler = replicas[r].scheduler
            load = scheduler.kv_tokens()
            if lines[r].count:
                load += sum(tokens_in[i] for q in lines[r].by_priority for i in q if state[i] == IN_LINE)
            if scheduler.preempted:
                generated = requests.generated
                load += sum(tokens_in[i] + generated[i] for i in scheduler.preempted)
            loads.append(load)
        return loads


class PrefixAffinityPool(ShortestQueuePool):
    """Prefix affinity under a load cap (``"prefix_affinity"``; prefix caching only, ``sim.prefix``):
    among the replicas whose load (waiting plus in service, as ``ShortestQueuePool`` counts it) is at
    most ``(1 + affinity_slack) x`` the least load ``+ 1``, the one whose prefix cache holds the longest
    run of the request's leading blocks; ties go to the less loaded, then the lowest index. Without a
    hit anywhere it is ``ShortestQueuePool``. The ``+ 1`` lets an idle pool (least load 0) still follow
    a prefix to a replica running one request. O(candidates x hit blocks) per request."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.slack = self.config.affinity_slack
        self.joining = -1

    def join(self, i: int, now: float, front: bool = False) -> None:
        self.joining = i
        super().join(i, now, front)

    def choose(self) -> Line:
        choices = self.candidates()
        loads = self.loads(choices)
        cap = (1.0 + self.slack) * min(loads) + 1.0
        replicas, i = self.replicas, self.joining
        best, chosen = (-1, 0, 0), choices[0]
        for r, load in zip(choices, loads, strict=True):
            if load > cap:
                continue
            key = (replicas[r].scheduler.prefix.hit_blocks(i), -load, -r)
            if key > best:
                best, chosen = key, r
        self.chosen = chosen
        return self.lines[chosen]


class PowerOfTwoPool(DispatchPool):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.balancer = self.platform.stream(self.balancer_name)
        self.pairs: list[tuple[int, int]] = []
        self.pairs_of = 0  # how many candidates the drawn pairs are for

    def choose(self) -> Line:
        lines, replicas = self.lines, self.replicas
        choices = self.candidates()
        if len(choices) == 1:
            return lines[choices[0]]
        if not self.pairs or self.pairs_of != len(choices):  # draw pairs of distinct replicas in blocks
            r = len(choices)
            first = self.balancer.integers(0, r, size=4096)
            second = self.balancer.integers(0, r - 1, size=4096)
            second += second >= first
            self.pairs = list(zip(first.tolist(), second.tolist(), strict=True))[::-1]
            self.pairs_of = r
        a, b = self.pairs.pop()
        a, b = choices[a], choices[b]
        return (
            lines[b]
            if lines[b].count + replicas[b].in_service < lines[a].count + replicas[a].in_service
            else lines[a]
        )


def pool_class(config: PoolConfig) -> type[Pool]:
    """The pool variant of a config's policy (a lone replica has no choice to make)."""
    if config.policy == "shared_queue" or config.max_replicas == 1:
        return Pool
    return {
        "round_robin": RoundRobinPool,
        "join_shortest_queue": ShortestQueuePool,
        "power_of_two": PowerOfTwoPool,
        "least_outstanding_tokens": LeastOutstandingTokensPool,
        "least_kv_cache": LeastKVCachePool,
        "prefix_affinity": PrefixAffinityPool,
    }[config.policy]


class Site:
    """One region's pools and its backlog (requests routed here, not yet started)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.backlog = 0
        self.large: Pool | None = None
        self.small: Pool | None = None

    @property
    def entry(self) -> Pool:
        """The pool a request joins first."""
        return self.small if self.small is not None else self.large

    @property
    def pools(self) -> list[Pool]:
        return [self.large] if self.small is None else [self.large, self.small]

    def healthy(self) -> bool:
        return all(pool.up > 0 for pool in self.pools)
