"""Continuous batching: each replica schedules per iteration, with a paged KV cache, as vLLM does.

A replica runs iterations. Each one holds a decode token for every running sequence and prompt tokens
of admitted requests (``config.ContinuousBatcherConfig`` documents the two schedules), and lasts what
the pool's ``steptime.StepTimeModel`` says. A request's prefill ends with its first token
(``first_token_s``); it then decodes one token an iteration and leaves in the iteration that makes its
last. The KV cache is counted in blocks: a request is admitted when its prompt's blocks fit (keeping
vLLM's 1% watermark free); a decoding sequence takes a new block each ``block_tokens`` tokens, and
when none is left the newest running request is preempted: its blocks are freed and it waits, ahead
of the line, to recompute its prompt and the tokens it had made. A request whose prompt and answer
could never fit the cache alone (the watermark kept), or (``"prefill_first"``, where a recompute is
one iteration) the token budget, is rejected as ``"too_long"`` when a replica takes it. With
``max_paddings`` (vLLM V0), a prefill iteration computes its prompts padded to the longest, and takes a
prompt only while the padding stays within that limit. A plain platform of one such pool is played by
``sim.fastloop``, a compiled copy of this loop.

**Why it is fast.** Between two events (a sequence finishes, a request is admitted, the cache fills)
the decoding batch is fixed, so its iterations form a run whose length is known in advance, and the
time of the run is a closed form (``StepCosts.decode_run_s``: the context grows by the batch size
each step, so the memory term is an arithmetic series and the compute term a constant, with one
switch between them). A run is one simpy event, not one per token. When a request joins the line of
a replica in the middle of a run, the run is cut at the end of the iteration in progress
(``StepCosts.steps_within`` inverts the closed form), exactly where a per-iteration scheduler would
have taken the request.

Each request keeps one row of the batch record from its first iteration to its last token (``size``:
the sequences running when it was admitted), so the RequestLog's ``model_start_s`` and
``model_end_s`` are its first scheduled iteration and its last token. The iteration record
(``IterationRecord``) keeps each run: its replica, start and end, iterations, decoding sequences,
prompt tokens and the KV tokens written by its end (``Scheduler.kv_tokens``); preemptions are
recorded with their time.
"""

from __future__ import annotations

import heapq
import math
from array import array
from collections import deque
from typing import TYPE_CHECKING

import numpy as np

from ..config import ContinuousBatcherConfig
from ..speculative import SpeculativeStepTime
from ..steptime import ExponentialStepTime, StepTimeModel
from .prefix import prefix_cache
from .requests import IN_MODEL, REJECTED, TOO_LONG, filled
from .runs import DecodeRuns
from .speculative_costs import SpeculativeCosts

if TYPE_CHECKING:
    from .pool import Pool, Replica

#: Fraction of the KV blocks kept free when admitting (vLLM's ``watermark``).
WATERMARK = 0.01


class StepCosts(DecodeRuns):
    """A ``StepTimeModel``'s terms folded into a few numbers for the hot path (the config checked them):
    ``iteration_s(prefill, decode, context)`` equals ``StepTimeModel.step_time_s`` to rounding."""

    __slots__ = (
        "compute_per_token", "weights_s", "per_context_s", "fixed_s", "per_token_s", "per_decode_s",
        "prefill_fixed_s",
    )  # fmt: skip

    def __init__(self, step: StepTimeModel) -> None:
        model, hardware, tp = step.model, step.hardware, step.tensor_parallel
        self.compute_per_token = (
            2.0 * model.parameters / (hardware.peak_flops_per_s * step.compute_efficiency * tp)
        )
        bandwidth = hardware.memory_bandwidth_bytes_per_s * step.bandwidth_efficiency * tp
        self.weights_s = model.weight_bytes / bandwidth
        self.per_context_s = model.kv_bytes_per_token / bandwidth
        ring = tp - 1.0
        self.fixed_s = step.overhead_s + model.layers * step.comm_latency_s_per_layer * ring
        self.per_token_s = model.layers * step.comm_s_per_token_layer * ring / tp
        self.per_decode_s = step.decode_s_per_token
        self.prefill_fixed_s = step.prefill_overhead_s

    def iteration_s(self, prefill: int, decode: int, context: float) -> float:
        """One iteration: ``prefill`` prompt and ``decode`` decode tokens, reading ``context`` KV tokens."""
        tokens = prefill + decode
        compute = self.compute_per_token * tokens
        memory = self.weights_s + self.per_context_s * context
        return (
            self.fixed_s
            + (compute if compute > memory else memory)
            + self.per_token_s * tokens
            + self.per_decode_s * decode
            + (self.prefill_fixed_s if prefill else 0.0)
        )

    def decode_run_s(self, batch: int, context: float, steps: int) -> float:
        """``steps`` decode iterations of ``batch`` sequences holding ``context`` tokens at the first,
        the context growing by ``batch`` each: the sum of ``iteration_s(0, batch, context + batch j)``
        over ``j < steps``, in closed form. While memory reads take less than the multiplies the step
        is compute-bound and constant; from step ``switch`` on it is memory-bound and grows linearly."""
        if steps <= 0:
            return 0.0
        compute = self.compute_per_token * batch
        first_memory = self.weights_s + self.per_context_s * context
        slope = self.per_context_s * batch
        if first_memory >= compute:
            switch = 0
        elif slope > 0.0:
            switch = min(steps, math.ceil((compute - first_memory) / slope))
        else:
            switch = steps
        memory_steps = steps - switch
        memory = memory_steps * first_memory + slope * (steps * (steps - 1) - switch * (switch - 1)) / 2
        fixed = self.fixed_s + (self.per_token_s + self.per_decode_s) * batch
        return steps * fixed + switch * compute + memory



def alone_s(
    service: StepTimeModel | SpeculativeStepTime | ExponentialStepTime, tokens_in: int, tokens_out: int
) -> float:
    """Seconds a request takes alone on an idle replica: its prefill, then its other tokens one decode
    iteration each (the mean, for ``ExponentialStepTime``)."""
    if isinstance(service, ExponentialStepTime):
        return service.mean_s * max(tokens_out, 1)
    costs = costs_for(service)
    return costs.iteration_s(tokens_in, 0, tokens_in) + costs.decode_run_s(1, tokens_in + 1, tokens_out - 1)


def costs_for(service: StepTimeModel | SpeculativeStepTime) -> StepCosts | SpeculativeCosts:
    """The iteration costs of a step-time service (with a draft model: ``sim.speculative_costs``)."""
    if isinstance(service, SpeculativeStepTime):
        return SpeculativeCosts(service, StepCosts(service.draft), StepCosts(service.target))
    return StepCosts(service)


class IterationRecord:
    """Every run of iterations a replica made, one typed array per field, and every preemption."""

    __slots__ = (
        "pool", "replica", "start_s", "end_s", "steps", "decode_seqs", "prefill_tokens", "kv_tokens",
        "preempted_s", "preempted_pool",
    )  # fmt: skip

    def __init__(self) -> None:
        self.pool, self.replica = array("q"), array("q")
        self.start_s, self.end_s = array("d"), array("d")
        self.steps, self.decode_seqs, self.prefill_tokens, self.kv_tokens = (
            array("q"), array("q"), array("q"), array("q"),
        )  # fmt: skip
        self.preempted_s, self.preempted_pool = array("d"), array("q")

    def __len__(self) -> int:
        return len(self.start_s)

    def add(
        self, pool: int, replica: int, start_s: float, end_s: float, steps: int, decode_seqs: int,
        prefill_tokens: int, kv_tokens: int,
    ) -> None:  # fmt: skip
        self.pool.append(pool)
        self.replica.append(replica)
        self.start_s.append(start_s)
        self.end_s.append(end_s)
        self.steps.append(steps)
        self.decode_seqs.append(decode_seqs)
        self.prefill_tokens.append(prefill_tokens)
        self.kv_tokens.append(kv_tokens)


class ContinuousBatcher:
    """The iteration schedulers of every replica of a pool."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    def start(self) -> None:
        pool = self.pool
        requests = pool.platform.requests
        if not hasattr(requests, "first_token"):  # the columns only continuous batching writes
            requests.first_token = filled(np.float64, math.nan, requests.n)
            requests.generated = filled(np.int64, 0, requests.n)
            requests.preemptions = filled(np.int32, 0, requests.n)
        service = pool.config.service
        for replica in pool.replicas:
            if isinstance(service, ExponentialStepTime):
                replica.scheduler = MemorylessScheduler(
                    pool, replica, RandomCosts(service.mean_s, replica.rng)
                )
            else:
                replica.scheduler = Scheduler(pool, replica, costs_for(service))
            replica.scheduler.plan()


class _Waker:
    """What a scheduler leaves in its line's idle slots or its replica's parked list: it quacks like
    the simpy event a static slot waits on."""

    __slots__ = ("triggered", "scheduler")

    def __init__(self, scheduler: Scheduler) -> None:
        self.triggered = True
        self.scheduler = scheduler

    def succeed(self) -> None:
        self.triggered = True
        self.scheduler.wake()


class _Seq:
    """A request in service a fault may take: ``interrupt`` drops it from its scheduler."""

    __slots__ = ("scheduler", "i")

    def __init__(self, scheduler: Scheduler, i: int) -> None:
        self.scheduler, self.i = scheduler, i

    def interrupt(self) -> None:
        self.scheduler.drop(self.i)


# What a scheduler is doing.
IDLE, WAKING, PREFILL, DECODE = range(4)


class Scheduler:
    """One replica's iteration scheduler (vLLM's engine loop, with runs of decode steps skipped)."""

    late_entry = False  # a request joining mid-iteration waits for the next one

    def __init__(self, pool: Pool, replica: Replica, costs: StepCosts) -> None:
        platform = pool.platform
        config: ContinuousBatcherConfig = pool.config.batcher
        self.pool, self.replica, self.costs = pool, replica, costs
        self.env, self.line, self.requests = platform.env, replica.line, platform.requests
        self.record, self.iterations = platform.batches, platform.iterations
        self.max_seqs, self.budget = config.max_num_seqs, config.max_batched_tokens
        self.block_tokens = config.block_tokens
        self.prefill_first = config.schedule == "prefill_first"
        self.max_paddings = config.max_paddings  # None: prompts are not padded
        self.total_blocks = config.kv_blocks(pool.config.service)
        self.watermark = int(WATERMARK * self.total_blocks)
        # The most tokens one sequence may hold (alone, it must never need preempting); prefilling
        # first, a prompt is never split, and a preempted request recomputes its prompt and answer so
        # far in one iteration, so the whole sequence must fit the budget too (vLLM V0 asks
        # max_num_batched_tokens >= max_model_len for the same reason).
        self.max_sequence_tokens = (self.total_blocks - self.watermark) * self.block_tokens
        if self.prefill_first:
            self.max_sequence_tokens = min(self.max_sequence_tokens, self.budget)
        self.waker = _Waker(self)
        self.state = IDLE
        self.version = 0  # the current plan's number: a superseded end is ignored
        self.started_s = 0.0
        self.cached = self.requests.cached  # prompt tokens already in the KV cache, or None
        self.prefix = prefix_cache(self)  # the prompt blocks kept for reuse (a null object when off)
        # Sequences: admitted, prefill not done ([request, prompt tokens left, prompt tokens]).
        self.prefilling: deque[list[int]] = deque()
        self.prefill_blocks = 0
        self.preempted: deque[int] = deque()  # wait ahead of the line to recompute
        # Decoding: request -> (offset, last step); its context at step s is offset + s.
        self.decoding: dict[int, tuple[int, int]] = {}
        self.finishes: list[tuple[int, int]] = []  # heap of (last step, request)
        self.step = 0  # decode iterations so far
        self.offsets = 0  # sum of the decoding sequences' offsets: context = offsets + batch x step
        # The plan in flight.
        self.run_steps = 0
        self.run_context = 0.0
        self.chunks: list[tuple[list[int], int]] = []
        self.plan_prefill = 0
        self.plan_decode = 0

    # -- the KV cache ---------------------------------------------------------------------------------
    def blocks(self, tokens: int) -> int:
        return -(-tokens // self.block_tokens)

    def decode_blocks(self, step: int) -> int:
        """Blocks the decoding sequences hold at ``step``: each its own context, rounded up."""
        if not self.decoding:
            return 0
        offsets = np.fromiter(
            (o for o, _ in self.decoding.values()), dtype=np.int64, count=len(self.decoding)
        )
        return int((-(-(offsets + step) // self.block_tokens)).sum())

    def room_for(self, blocks: int) -> bool:
        """``blocks`` more fit and leave the watermark free (a cheap bound first, then exactly)."""
        batch = len(self.decoding)
        free = self.total_blocks - self.watermark - self.prefill_blocks - blocks
        if (self.offsets + batch * self.step) / self.block_tokens + batch <= free:
            return True
        return self.decode_blocks(self.step) <= free

    def cached_tokens(self, i: int) -> int:
        """Prompt tokens of request ``i`` whose KV this replica already holds: not prefilled again."""
        return self.prefix.lookup(i) if self.cached is None else self.cached[i]

    def kv_tokens(self) -> int:
        """Tokens the cache holds now (block rounding aside): what the decoding sequences have written
        (all but each one's latest token, written by its next iteration) and the blocks of the prompts
        admitted."""
        batch = len(self.decoding)
        return self.offsets + batch * (self.step - 1) + self.prefill_blocks * self.block_tokens

    def fits_for(self, steps: int) -> bool:
        """The cache holds every sequence through ``steps`` more decode iterations (a cheap bound first).
        The iteration at step ``s`` writes each sequence's latest token: it holds ``decode_blocks(s)``,
        the blocks ``room_for`` leaves to the decodes when it admits a prompt."""
        batch = len(self.decoding)
        end = self.step + steps - 1
        bound = (self.offsets + batch * end) / self.block_tokens + batch + self.prefill_blocks
        if bound <= self.total_blocks:
            return True
        return self.prefill_blocks + self.decode_blocks(end) <= self.total_blocks

    # -- waking ---------------------------------------------------------------------------------------
    def listen(self) -> None:
        """Be woken when a request joins the line (or, off duty, when the replica serves again)."""
        waker = self.waker
        if waker.triggered:  # not listening yet
            waker.triggered = False
            if self.replica.serving:
                self.line.idle_slots.append(waker)
            else:
                self.replica.parked.append(waker)

    def wake(self) -> None:
        """A request joined, or the replica serves again: take it at the next iteration boundary (when
        idle, once every request arriving at this instant has joined)."""
        if self.state == IDLE:
            self.state = WAKING
            self.version += 1
            self.env.timeout(0.0, self.version).callbacks.append(self.woken)
        elif self.state == DECODE and self.run_steps > 1:
            now = self.env.now
            done = self.costs.steps_within(
                len(self.decoding), self.run_context, self.run_steps, now - self.started_s
            )
            if done + 1 < self.run_steps:  # cut the run after the iteration in progress
                self.run_steps = done + 1
                end_s = self.started_s + self.costs.decode_run_s(
                    len(self.decoding), self.run_context, done + 1
                )
                self.version += 1
                self.env.timeout(max(end_s - now, 0.0), self.version).callbacks.append(self.end)

    def woken(self, event: object) -> None:
        if event.value == self.version:
            self.plan()

    # -- admitting ------------------------------------------------------------------------------------
    def next_request(self) -> int:
        """The next request to admit from the line, or -1."""
        line = self.line
        if not line.count:
            return -1
        self.pool.platform.deadlines.purge(self.env.now)
        if not line.count:
            return -1
        return line.take(self.requests.state, 1)[0]

    def admit(self, budget: int) -> int:
        """Admit waiting requests while sequences, blocks and ``budget`` prompt tokens allow; each gets
        its first chunk; a replica that no longer serves (draining) takes back only its own preempted
        requests. Returns the prompt tokens scheduled."""
        serving = self.replica.serving
        requests = self.requests
        tokens_in, tokens_out, generated = requests.tokens_in, requests.tokens_out, requests.generated
        scheduled = 0
        padded = self.max_paddings is not None
        if padded:  # the prompts this iteration holds already: their count, longest and sum
            prompts = len(self.chunks)
            longest = max((chunk for _, chunk in self.chunks), default=0)
            total = sum(chunk for _, chunk in self.chunks)
        while budget > 0 and len(self.decoding) + len(self.prefilling) < self.max_seqs:
            recompute = bool(self.preempted)
            if not recompute and not serving:
                break
            i = self.preempted.popleft() if recompute else self.next_request()
            if i < 0:
                break
            prompt = tokens_in[i] + generated[i]
            if not recompute and tokens_in[i] + max(tokens_out[i], 1) > self.max_sequence_tokens:
                self.reject(i)
                continue
            # A recompute starts over; a new request skips the prompt tokens whose KV is already here.
            compute = prompt if recompute else prompt - self.cached_tokens(i)
            need = self.blocks(prompt)
            if padded:  # vLLM V0: the pass computes every prompt padded to the longest
                width = (prompts + 1) * max(longest, compute)
                too_big = width > self.budget or width - total - compute > self.max_paddings
            else:
                too_big = self.prefill_first and compute > budget
            if too_big or not self.room_for(need):
                if recompute:
                    self.preempted.appendleft(i)
                else:
                    self.line.put_back(i, requests.rank[i])
                break
            chunk = min(compute, budget)
            entry = [i, compute, prompt]
            self.prefilling.append(entry)
            self.prefill_blocks += need
            self.chunks.append((entry, chunk))
            budget -= chunk
            scheduled += chunk
            if padded:
                prompts, longest, total = prompts + 1, max(longest, chunk), total + chunk
            if not recompute:
                self.start(i)
                self.prefix.admitted(i)
        return scheduled

    def start(self, i: int) -> None:
        """Request ``i`` enters the replica: its row of the batch record, the backlogs."""
        pool, replica = self.pool, self.replica
        platform = pool.platform
        running = len(self.decoding) + len(self.prefilling)
        k = self.record.add(self.env.now, math.inf, replica.index, running, pool.index)
        requests = self.requests
        requests.batch_of[i] = k
        requests.state[i] = IN_MODEL
        requests.first_token[i] = math.nan  # an escalated or retried request makes its own tokens here
        requests.generated[i] = 0
        platform.gateway.backlog -= 1
        pool.site.backlog -= 1
        replica.in_service += 1
        if platform.faulty:
            replica.running[_Seq(self, i)] = ([i], k)

    def reject(self, i: int) -> None:
        """It can never fit: rejected as ``"too_long"``, counted out of the backlogs."""
        requests = self.requests
        requests.state[i], requests.reason[i] = REJECTED, TOO_LONG
        self.pool.platform.gateway.backlog -= 1
        self.pool.site.backlog -= 1

    # -- planning -------------------------------------------------------------------------------------
    def plan(self) -> None:
        """Choose the next iteration (or run of decode iterations) and schedule its end."""
        now = self.env.now
        if not self.waker.triggered:  # still listening from the last run: no longer
            self.waker.triggered = True
            self.waker = _Waker(self)
        self.chunks = []
        decoding = self.decoding
        while decoding and not self.fits_for(1):
            self.preempt_newest()
        batch = len(decoding)
        prefill = 0
        if self.prefill_first:
            budget = self.budget
            for entry in self.prefilling:  # (only when a memoryless iteration restarts) whole prompts
                self.chunks.append((entry, entry[1]))
                budget -= entry[1]
                prefill += entry[1]
            if self.line.count or self.preempted:
                prefill += self.admit(budget)
            decode = 0 if prefill else batch
        else:
            budget = self.budget - batch
            for entry in self.prefilling:  # prompts already begun go on first
                if budget <= 0:
                    break
                chunk = min(entry[1], budget)
                self.chunks.append((entry, chunk))
                budget -= chunk
                prefill += chunk
            if budget > 0 and (self.line.count or self.preempted):
                prefill += self.admit(budget)
            decode = batch
        line = self.line
        if line.count and line.idle_slots:  # more wait than this replica took: let another look
            line.wake_one()
        if decode and not prefill:
            self.plan_decode_run(now)
            return
        if not prefill and not decode:
            if self.preempted or self.prefilling:  # a request no iteration can take: a bug, not a wait
                raise RuntimeError(
                    f"replica {self.replica.index} of pool {self.pool.label!r} can schedule nothing but "
                    "holds "
                    f"{len(self.preempted)} preempted and {len(self.prefilling)} prefilling requests"
                )
            self.state = IDLE
            self.listen()
            return
        context = self.offsets + batch * self.step if decode else 0
        context += sum(entry[2] - entry[1] + chunk for entry, chunk in self.chunks)
        computed = prefill
        if self.max_paddings is not None and prefill:  # the padding is computed too
            computed = len(self.chunks) * max(chunk for _, chunk in self.chunks)
            context += computed - prefill
        self.state, self.started_s = PREFILL, now
        self.plan_prefill, self.plan_decode = prefill, decode
        self.version += 1
        duration_s = self.costs.iteration_s(computed, decode, context)
        self.env.timeout(duration_s, self.version).callbacks.append(self.end)
        if self.late_entry and len(self.decoding) + len(self.prefilling) < self.max_seqs and not line.count:
            self.listen()

    def plan_decode_run(self, now: float) -> None:
        """A run of decode iterations up to the next finish, as long as the cache holds."""
        batch = len(self.decoding)
        steps = self.finishes[0][0] - self.step
        if not self.fits_for(steps):
            low, high = 1, steps  # fits for low, not for high
            while high - low > 1:
                middle = (low + high) // 2
                if self.fits_for(middle):
                    low = middle
                else:
                    high = middle
            steps = low
        self.state, self.started_s = DECODE, now
        self.run_steps, self.run_context = steps, float(self.offsets + batch * self.step)
        self.plan_prefill, self.plan_decode = 0, batch
        self.version += 1
        duration_s = self.costs.decode_run_s(batch, self.run_context, steps)
        self.env.timeout(duration_s, self.version).callbacks.append(self.end)
        if batch + len(self.prefilling) < self.max_seqs and not self.line.count:
            self.listen()

    def preempt_newest(self) -> None:
        """The cache is full: the newest running request gives its blocks back and waits to recompute."""
        newest = max(self.decoding)
        offset, last = self.decoding.pop(newest)
        requests = self.requests
        requests.generated[newest] = requests.tokens_out[newest] - (last - self.step)
        requests.preemptions[newest] += 1
        self.offsets -= offset
        self.preempted.append(newest)
        self.iterations.preempted_s.append(self.env.now)
        self.iterations.preempted_pool.append(self.pool.index)
        self.finishes = [(s, i) for s, i in self.finishes if i != newest]
        heapq.heapify(self.finishes)

    # -- ending ---------------------------------------------------------------------------------------
    def end(self, event: object) -> None:
        """The planned iteration (or run) ended: apply it, then plan the next."""
        if event.value != self.version:  # superseded by a cut or a fault
            return
        now = self.env.now
        requests = self.requests
        steps = self.run_steps if self.state == DECODE else (1 if self.plan_decode else 0)
        iterations = self.iterations
        iterations.add(
            self.pool.index, self.replica.index, self.started_s, now, steps, self.plan_decode,
            self.plan_prefill, 0,
        )  # fmt: skip
        finished: list[int] = []
        if steps:
            self.step += steps
            finishes, decoding = self.finishes, self.decoding
            while finishes and finishes[0][0] <= self.step:
                _, i = heapq.heappop(finishes)
                offset, _ = decoding.pop(i)
                self.offsets -= offset
                finished.append(i)
        for entry, chunk in self.chunks:
            entry[1] -= chunk
            if entry[1]:
                continue
            i, prompt = entry[0], entry[2]
            if self.prefilling[0] is entry:  # prompts end in the order they began, but for chunks
                self.prefilling.popleft()
            else:
                self.prefilling.remove(entry)
            self.prefill_blocks -= self.blocks(prompt)
            self.prefix.prefilled(i)
            if math.isnan(requests.first_token[i]):
                requests.first_token[i] = now
            made = requests.generated[i] + 1
            requests.generated[i] = made
            left = requests.tokens_out[i] - made
            if left <= 0:
                finished.append(i)
                continue
            offset = prompt + 1 - self.step
            self.decoding[i] = (offset, self.step + left)
            self.offsets += offset
            heapq.heappush(self.finishes, (self.step + left, i))
        self.chunks = []
        iterations.kv_tokens[-1] = self.kv_tokens()
        if finished:
            self.finish(finished, now)
        self.plan()

    def finish(self, finished: list[int], now: float) -> None:
        pool, replica = self.pool, self.replica
        end_s, batch_of = self.record.end_s, self.requests.batch_of
        for i in finished:
            end_s[batch_of[i]] = now
        replica.in_service -= len(finished)
        if replica.running:
            gone = set(finished)
            for seq in [seq for seq in replica.running if seq.i in gone]:
                del replica.running[seq]
        pool.autoscaler.on_batch_end(pool, replica, now)
        pool.exit.on_batch_end(pool, finished, now)

    def drop(self, i: int) -> None:
        """A fault took the replica: forget request ``i`` (``sim.faults`` retries it) and stop the plan."""
        self.version += 1
        self.state = IDLE
        if i in self.decoding:
            offset, _ = self.decoding.pop(i)
            self.offsets -= offset
            self.finishes = [(s, j) for s, j in self.finishes if j != i]
            heapq.heapify(self.finishes)
        for entry in list(self.prefilling):
            if entry[0] == i:
                self.prefilling.remove(entry)
                self.prefill_blocks -= self.blocks(entry[2])
        if i in self.preempted:
            self.preempted.remove(i)
        self.requests.generated[i] = 0
        self.requests.first_token[i] = math.nan  # the retry makes its own first token
        self.chunks = []
        self.listen()


class RandomCosts:
    """``ExponentialStepTime``'s iterations: each one exponential with mean ``mean_s``, drawn from the
    replica's stream a block at a time."""

    def __init__(self, mean_s: float, rng: np.random.Generator) -> None:
        self.mean_s, self.rng, self.block = mean_s, rng, []

    def iteration_s(self, prefill: int, decode: int, context: float) -> float:
        if not self.block:
            self.block = self.rng.standard_exponential(4096)[::-1].tolist()
        return self.mean_s * self.block.pop()

    def decode_run_s(self, batch: int, context: float, steps: int) -> float:
        return self.iteration_s(0, batch, context) if steps else 0.0


class MemorylessScheduler(Scheduler):
    """The scheduler of ``ExponentialStepTime`` iterations: one decode iteration at a time (a run's
    length is random), and a request that joins while an iteration runs joins it (late entry): the
    iteration starts again with it, which memoryless iterations make the same as going on."""

    late_entry = True

    def plan_decode_run(self, now: float) -> None:
        self.state, self.started_s = DECODE, now
        self.run_steps, self.run_context = 1, 0.0
        self.plan_prefill, self.plan_decode = 0, len(self.decoding)
        self.version += 1
        self.env.timeout(self.costs.iteration_s(0, len(self.decoding), 0.0), self.version).callbacks.append(
            self.end
        )
        if len(self.decoding) + len(self.prefilling) < self.max_seqs and not self.line.count:
            self.listen()

    def wake(self) -> None:
        if self.state in (IDLE, WAKING):
            Scheduler.wake(self)
            return
        if len(self.decoding) + len(self.prefilling) >= self.max_seqs:
            return
        started_s = self.started_s  # the record keeps the iteration from its first start
        self.version += 1  # the iteration in progress starts again, with the newcomer
        self.plan()
        self.started_s = started_s
