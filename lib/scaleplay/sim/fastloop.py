"""The continuous-batching engine of a plain platform as one compiled event loop (numba).

A plain platform (``engine.is_plain``: one class, one line, no admission rule, fetch, region or
control) with one continuous-batching pool of ``StepTimeModel`` replicas makes the same few kinds of
event over and over: arrivals, ends of iterations or runs of decode iterations, and the zero-delay
wake-up of an idle replica. ``run`` plays them here instead of in simpy, and fills the same records
(the requests' columns, the batch record, the iteration record, the preemptions) with the same
numbers: the loop is ``continuous.Scheduler`` line by line (``plan``, ``admit``, ``plan_decode_run``,
``preempt_newest``, ``wake``, ``end``) with its state in arrays, ``StepCosts``' formulas in the same
order of floating-point operations, and simpy's order of events (by time, then the order they were
scheduled). ``tests/test_fastloop.py`` holds the two engines to the same tables.

What the loop keeps of simpy's machinery:

- each replica has at most one live event (the end of its plan, or its wake-up), so the event queue is
  a binary heap over the replicas plus the feed, keyed by (time, scheduling number); a plan superseded
  by a cut is replaced in the heap where simpy would leave it to be ignored;
- the feed (``gateway.DirectFeed``) handles the arrivals of one instant together, each waking the
  first replica listening, and schedules the next instant's arrivals as an event when it is done: so
  an event scheduled earlier for the same moment goes first, as in simpy;
- the line's listeners (``Line.idle_slots``) are a FIFO of replicas: a replica listens when idle, or in
  a decode run with room and an empty line, and stops when it plans again (simpy leaves its dead
  waker in the deque, which ``wake_one`` skips: the same order).

``eligible`` decides; ``SCALEPLAY_NO_FASTLOOP=1`` (or ``fastloop.enabled = False``) turns the loop off.
numba is imported, and the loop compiled, on the first run (cached in ``__pycache__`` after that).
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections import namedtuple
from typing import Any

import numpy as np
from tqdm import tqdm

from ..steptime import StepTimeModel
from .continuous import DECODE, IDLE, PREFILL, WAKING, WATERMARK, StepCosts
from .requests import IN_MODEL, REJECTED, TOO_LONG, filled
from .run import Run

#: Set to ``"1"`` to run plain continuous platforms in simpy too (to compare, or to debug).
DISABLE_ENV = "SCALEPLAY_NO_FASTLOOP"
#: False turns the loop off in this process (what the tests flip).
enabled = True

# What a replica's pending event is.
END, WOKEN = 0, 1
# Per-replica integers (``State.ri[r, field]``).
(
    STATE, VERSION, LISTENING, NEXT, PREV, PF_N, CH_N, PREFILL_BLOCKS, PE_START, PE_LEN, DC_N, OFFSETS,
    STEP, RUN_STEPS, PLAN_PREFILL, PLAN_DECODE,
) = range(16)  # fmt: skip
REPLICA_INTS = 16
# Per-replica floats (``State.rf``).
STARTED_S, RUN_CONTEXT = range(2)
# Per-replica sequence slots (``State.slots[field, r, k]``, k < max_num_seqs): the prefilling
# sequences in order (request, prompt tokens left, prompt tokens) and the chunk each has in the plan
# (the plan's chunks are always the first CH_N of them), the preempted requests (a ring) and the
# decoding sequences (request, offset, last step; in no order).
PF_REQ, PF_LEFT, PF_PROMPT, CH_AMT, PE_BUF, DC_REQ, DC_OFF, DC_LAST = range(8)
SLOT_FIELDS = 8
# Globals (``State.g``): the line [HEAD, FED), the records' lengths, the scheduling number, the
# listeners' FIFO (a linked list through NEXT and PREV), the heap's size, the replica in error.
HEAD, FED, BATCHES, ITERATIONS, PREEMPTIONS, EID, FIRST, LAST, HEAP_N, ERROR_REPLICA = range(10)
GLOBALS = 10
# The event heap (``State.hv``): the heap of slots, each slot's place in it, its scheduling number
# and kind; slot r < replicas is replica r's event, slot ``replicas`` the feed's.
HP, HPOS, EV_EID, EV_KIND = range(4)
# Parameters (``par``; MAX_PADDINGS is -1 when prompts are not padded).
(
    MAX_SEQS, BUDGET, BLOCK_TOKENS, PREFILL_FIRST, TOTAL_BLOCKS, WATERMARK_BLOCKS, MAX_SEQUENCE_TOKENS,
    MAX_PADDINGS, POOL, REPLICAS, N,
) = range(11)  # fmt: skip
# Step costs (``cost``), as ``StepCosts`` holds them.
COMPUTE_PER_TOKEN, WEIGHTS_S, PER_CONTEXT_S, FIXED_S, PER_TOKEN_S, PER_DECODE_S, PREFILL_FIXED_S = range(7)
# What the loop returns.
DONE, STOPPED, NEED_ROOM, STUCK = range(4)

State = namedtuple("State", "ri rf slots g hv ev_t clock fin")
Columns = namedtuple(
    "Columns", "t tokens_in tokens_out batch_of state reason first_token generated preemptions cached"
)
Records = namedtuple("Records", "batch_f batch_i iter_f iter_i pre_t pre_pool")


def eligible(platform: Run) -> bool:
    """The loop can play this platform: plain, one continuous pool of ``StepTimeModel`` replicas on one
    shared line, without prefix caching, no autoscaler or fault, numba installed, and not turned off."""
    if not enabled or os.environ.get(DISABLE_ENV, "") not in ("", "0"):
        return False
    if not platform.plain or platform.faulty or len(platform.pools) != 1 or len(platform.lines) != 1:
        return False
    pool = platform.pools[0]
    config = pool.config
    return (
        config.continuous
        and not config.batcher.prefix_caching  # the loop has no prefix cache (``sim.prefix``)
        and isinstance(config.service, StepTimeModel)
        and config.autoscaler is None
        and pool.size == config.replicas
        and len(pool.lines) == 1
        and importlib.util.find_spec("numba") is not None
    )


# -- step costs (StepCosts, the same operations in the same order) ---------------------------------------


def iteration_s(cost, prefill, decode, context):  # noqa: ANN001, ANN201 - compiled
    tokens = prefill + decode
    compute = cost[COMPUTE_PER_TOKEN] * tokens
    memory = cost[WEIGHTS_S] + cost[PER_CONTEXT_S] * context
    return (
        cost[FIXED_S] + (compute if compute > memory else memory) + cost[PER_TOKEN_S] * tokens
        + cost[PER_DECODE_S] * decode + (cost[PREFILL_FIXED_S] if prefill > 0 else 0.0)
    )  # fmt: skip


def decode_run_s(cost, batch, context, steps):  # noqa: ANN001, ANN201
    if steps <= 0:
        return 0.0
    compute = cost[COMPUTE_PER_TOKEN] * batch
    first_memory = cost[WEIGHTS_S] + cost[PER_CONTEXT_S] * context
    slope = cost[PER_CONTEXT_S] * batch
    if first_memory >= compute:
        switch = 0
    elif slope > 0.0:
        ratio = (compute - first_memory) / slope
        switch = steps if ratio >= steps else int(math.ceil(ratio))  # min(steps, ceil), no overflow
    else:
        switch = steps
    memory_steps = steps - switch
    memory = memory_steps * first_memory + slope * (steps * (steps - 1) - switch * (switch - 1)) / 2
    fixed = cost[FIXED_S] + (cost[PER_TOKEN_S] + cost[PER_DECODE_S]) * batch
    return steps * fixed + switch * compute + memory


def steps_within(cost, batch, context, steps, seconds):  # noqa: ANN001, ANN201
    low, high = 0, steps
    if decode_run_s(cost, batch, context, steps) <= seconds:
        return steps
    while high - low > 1:
        middle = (low + high) // 2
        if decode_run_s(cost, batch, context, middle) <= seconds:
            low = middle
        else:
            high = middle
    return low


# -- the KV cache ---------------------------------------------------------------------------------------


def decode_blocks(s, r, step, block_tokens):  # noqa: ANN001, ANN201
    total = 0
    for k in range(s.ri[r, DC_N]):
        total += -(-(s.slots[DC_OFF, r, k] + step) // block_tokens)
    return total


def room_for(s, par, r, blocks):  # noqa: ANN001, ANN201
    batch = s.ri[r, DC_N]
    free = par[TOTAL_BLOCKS] - par[WATERMARK_BLOCKS] - s.ri[r, PREFILL_BLOCKS] - blocks
    if (s.ri[r, OFFSETS] + batch * s.ri[r, STEP]) / par[BLOCK_TOKENS] + batch <= free:
        return True
    return decode_blocks(s, r, s.ri[r, STEP], par[BLOCK_TOKENS]) <= free


def fits_for(s, par, r, steps):  # noqa: ANN001, ANN201
    batch = s.ri[r, DC_N]
    end = s.ri[r, STEP] + steps - 1
    prefill_blocks = s.ri[r, PREFILL_BLOCKS]
    bound = (s.ri[r, OFFSETS] + batch * end) / par[BLOCK_TOKENS] + batch + prefill_blocks
    if bound <= par[TOTAL_BLOCKS]:
        return True
    return prefill_blocks + decode_blocks(s, r, end, par[BLOCK_TOKENS]) <= par[TOTAL_BLOCKS]


# -- the event heap -------------------------------------------------------------------------------------


def before(s, a, b):  # noqa: ANN001, ANN201
    ta, tb = s.ev_t[a], s.ev_t[b]
    return ta < tb or (ta == tb and s.hv[EV_EID, a] < s.hv[EV_EID, b])


def sift_up(s, p):  # noqa: ANN001, ANN201
    hv = s.hv
    slot = hv[HP, p]
    while p > 0:
        parent = (p - 1) >> 1
        other = hv[HP, parent]
        if not before(s, slot, other):
            break
        hv[HP, p] = other
        hv[HPOS, other] = p
        p = parent
    hv[HP, p] = slot
    hv[HPOS, slot] = p
    return p


def sift_down(s, p):  # noqa: ANN001, ANN201
    hv = s.hv
    size = s.g[HEAP_N]
    slot = hv[HP, p]
    while True:
        child = 2 * p + 1
        if child >= size:
            break
        if child + 1 < size and before(s, hv[HP, child + 1], hv[HP, child]):
            child += 1
        other = hv[HP, child]
        if not before(s, other, slot):
            break
        hv[HP, p] = other
        hv[HPOS, other] = p
        p = child
    hv[HP, p] = slot
    hv[HPOS, slot] = p


def schedule(s, slot, time, kind):  # noqa: ANN001, ANN201
    """Slot's event at ``time`` (replacing the one it had), after every event scheduled so far."""
    hv, g = s.hv, s.g
    s.ev_t[slot] = time
    hv[EV_EID, slot] = g[EID]
    g[EID] += 1
    hv[EV_KIND, slot] = kind
    p = hv[HPOS, slot]
    if p < 0:
        p = g[HEAP_N]
        g[HEAP_N] = p + 1
        hv[HP, p] = slot
        hv[HPOS, slot] = p
    sift_down(s, sift_up(s, p))


def pop(s):  # noqa: ANN001, ANN201
    hv, g = s.hv, s.g
    slot = hv[HP, 0]
    size = g[HEAP_N] - 1
    g[HEAP_N] = size
    hv[HPOS, slot] = -1
    if size > 0:
        last = hv[HP, size]
        hv[HP, 0] = last
        hv[HPOS, last] = 0
        sift_down(s, 0)
    return slot


# -- listening and waking (Line.idle_slots, Scheduler.listen / wake / woken) -------------------------------


def listen(s, r):  # noqa: ANN001, ANN201
    ri, g = s.ri, s.g
    if ri[r, LISTENING]:
        return
    ri[r, LISTENING] = 1
    ri[r, NEXT] = -1
    ri[r, PREV] = g[LAST]
    if g[LAST] >= 0:
        ri[g[LAST], NEXT] = r
    else:
        g[FIRST] = r
    g[LAST] = r


def stop_listening(s, r):  # noqa: ANN001, ANN201
    ri, g = s.ri, s.g
    if not ri[r, LISTENING]:
        return
    ri[r, LISTENING] = 0
    before_r, after_r = ri[r, PREV], ri[r, NEXT]
    if before_r >= 0:
        ri[before_r, NEXT] = after_r
    else:
        g[FIRST] = after_r
    if after_r >= 0:
        ri[after_r, PREV] = before_r
    else:
        g[LAST] = before_r


def wake(s, par, cost, r, now):  # noqa: ANN001, ANN201
    """A request joined: an idle replica plans once every arrival of this instant is in; one in a decode
    run cuts it after the iteration in progress."""
    ri, rf = s.ri, s.rf
    state = ri[r, STATE]
    if state == IDLE:
        ri[r, STATE] = WAKING
        ri[r, VERSION] += 1
        schedule(s, r, now + 0.0, WOKEN)
    elif state == DECODE and ri[r, RUN_STEPS] > 1:
        batch = ri[r, DC_N]
        context = rf[r, RUN_CONTEXT]
        started_s = rf[r, STARTED_S]
        done = steps_within(cost, batch, context, ri[r, RUN_STEPS], now - started_s)
        if done + 1 < ri[r, RUN_STEPS]:
            ri[r, RUN_STEPS] = done + 1
            end_s = started_s + decode_run_s(cost, batch, context, done + 1)
            ri[r, VERSION] += 1
            schedule(s, r, now + max(end_s - now, 0.0), END)


def wake_one(s, par, cost, now):  # noqa: ANN001, ANN201
    r = s.g[FIRST]
    if r >= 0:
        stop_listening(s, r)
        wake(s, par, cost, r, now)


def feed(s, q, par, cost, now):  # noqa: ANN001, ANN201
    """The arrivals of this instant join the line, each waking the first listener; then the next
    instant's are scheduled."""
    g, t, n = s.g, q.t, par[N]
    j = g[FED]
    while j < n and t[j] <= now:
        j += 1
        g[FED] = j
        if g[FIRST] >= 0:
            wake_one(s, par, cost, now)
    if j < n:
        schedule(s, par[REPLICAS], t[j], END)  # (the kind of the feed's event is never read)


# -- admitting ------------------------------------------------------------------------------------------


def admit(s, q, rec, par, r, budget, now):  # noqa: ANN001, ANN201
    """Scheduler.admit: preempted requests first, then the line's, while sequences, blocks and the
    budget allow. Returns the prompt tokens scheduled."""
    ri, slots, g = s.ri, s.slots, s.g
    max_seqs, block_tokens = par[MAX_SEQS], par[BLOCK_TOKENS]
    scheduled = 0
    padded = par[MAX_PADDINGS] >= 0
    prompts, longest, total = ri[r, CH_N], 0, 0
    if padded:  # the prompts this iteration holds already: their count, longest and sum
        for k in range(prompts):
            longest = max(longest, slots[CH_AMT, r, k])
            total += slots[CH_AMT, r, k]
    while budget > 0 and ri[r, DC_N] + ri[r, PF_N] < max_seqs:
        recompute = ri[r, PE_LEN] > 0
        if recompute:
            i = slots[PE_BUF, r, ri[r, PE_START]]
            ri[r, PE_START] = (ri[r, PE_START] + 1) % max_seqs
            ri[r, PE_LEN] -= 1
        else:
            if g[FED] == g[HEAD]:
                break
            i = g[HEAD]
            g[HEAD] = i + 1
        prompt = q.tokens_in[i] + q.generated[i]
        if not recompute and q.tokens_in[i] + max(q.tokens_out[i], 1) > par[MAX_SEQUENCE_TOKENS]:
            q.state[i] = REJECTED
            q.reason[i] = TOO_LONG
            continue
        compute = prompt if recompute else prompt - q.cached[i]
        need = -(-prompt // block_tokens)
        if padded:  # vLLM V0: the pass computes every prompt padded to the longest
            width = (prompts + 1) * max(longest, compute)
            too_big = width > par[BUDGET] or width - total - compute > par[MAX_PADDINGS]
        else:
            too_big = par[PREFILL_FIRST] != 0 and compute > budget
        if too_big or not room_for(s, par, r, need):
            if recompute:
                ri[r, PE_START] = (ri[r, PE_START] - 1) % max_seqs
                slots[PE_BUF, r, ri[r, PE_START]] = i
                ri[r, PE_LEN] += 1
            else:
                g[HEAD] -= 1
            break
        chunk = min(compute, budget)
        k = ri[r, PF_N]
        slots[PF_REQ, r, k] = i
        slots[PF_LEFT, r, k] = compute
        slots[PF_PROMPT, r, k] = prompt
        slots[CH_AMT, r, k] = chunk
        ri[r, PF_N] = k + 1
        ri[r, CH_N] += 1
        ri[r, PREFILL_BLOCKS] += need
        budget -= chunk
        scheduled += chunk
        if padded:
            prompts, longest, total = prompts + 1, max(longest, chunk), total + chunk
        if not recompute:  # Scheduler.start: its row of the batch record
            b = g[BATCHES]
            g[BATCHES] = b + 1
            rec.batch_f[0, b] = now
            rec.batch_f[1, b] = np.inf
            rec.batch_i[0, b] = r
            rec.batch_i[1, b] = ri[r, DC_N] + ri[r, PF_N]
            rec.batch_i[2, b] = par[POOL]
            q.batch_of[i] = b
            q.state[i] = IN_MODEL
            q.first_token[i] = np.nan
            q.generated[i] = 0
    return scheduled


def preempt_newest(s, q, rec, par, r, now):  # noqa: ANN001, ANN201
    ri, slots, g = s.ri, s.slots, s.g
    newest_k = 0
    for k in range(1, ri[r, DC_N]):
        if slots[DC_REQ, r, k] > slots[DC_REQ, r, newest_k]:
            newest_k = k
    newest = slots[DC_REQ, r, newest_k]
    offset, last = slots[DC_OFF, r, newest_k], slots[DC_LAST, r, newest_k]
    remove_decoding(s, r, newest_k)
    q.generated[newest] = q.tokens_out[newest] - (last - ri[r, STEP])
    q.preemptions[newest] += 1
    ri[r, OFFSETS] -= offset
    k = (ri[r, PE_START] + ri[r, PE_LEN]) % par[MAX_SEQS]
    slots[PE_BUF, r, k] = newest
    ri[r, PE_LEN] += 1
    p = g[PREEMPTIONS]
    g[PREEMPTIONS] = p + 1
    rec.pre_t[p] = now
    rec.pre_pool[p] = par[POOL]


def remove_decoding(s, r, k):  # noqa: ANN001, ANN201
    """Drop decoding slot ``k`` (the last slot moves into it: the slots keep no order)."""
    ri, slots = s.ri, s.slots
    last = ri[r, DC_N] - 1
    ri[r, DC_N] = last
    if k != last:
        slots[DC_REQ, r, k] = slots[DC_REQ, r, last]
        slots[DC_OFF, r, k] = slots[DC_OFF, r, last]
        slots[DC_LAST, r, k] = slots[DC_LAST, r, last]


# -- planning -------------------------------------------------------------------------------------------


def plan(s, q, rec, par, cost, r, now):  # noqa: ANN001, ANN201
    """Scheduler.plan; False when the replica holds requests no iteration can take (a bug)."""
    ri, rf, slots, g = s.ri, s.rf, s.slots, s.g
    stop_listening(s, r)
    ri[r, CH_N] = 0
    while ri[r, DC_N] and not fits_for(s, par, r, 1):
        preempt_newest(s, q, rec, par, r, now)
    batch = ri[r, DC_N]
    prefill = 0
    if par[PREFILL_FIRST]:
        budget = par[BUDGET]
        for k in range(ri[r, PF_N]):
            left = slots[PF_LEFT, r, k]
            slots[CH_AMT, r, k] = left
            budget -= left
            prefill += left
        ri[r, CH_N] = ri[r, PF_N]
        if g[FED] > g[HEAD] or ri[r, PE_LEN]:
            prefill += admit(s, q, rec, par, r, budget, now)
        decode = 0 if prefill else batch
    else:
        budget = par[BUDGET] - batch
        for k in range(ri[r, PF_N]):
            if budget <= 0:
                break
            chunk = min(slots[PF_LEFT, r, k], budget)
            slots[CH_AMT, r, k] = chunk
            ri[r, CH_N] = k + 1
            budget -= chunk
            prefill += chunk
        if budget > 0 and (g[FED] > g[HEAD] or ri[r, PE_LEN]):
            prefill += admit(s, q, rec, par, r, budget, now)
        decode = batch
    if g[FED] > g[HEAD] and g[FIRST] >= 0:  # more wait than this replica took: let another look
        wake_one(s, par, cost, now)
    if decode and not prefill:
        plan_decode_run(s, par, cost, r, now)
        return True
    if not prefill and not decode:
        if ri[r, PE_LEN] or ri[r, PF_N]:
            g[ERROR_REPLICA] = r
            return False
        ri[r, STATE] = IDLE
        listen(s, r)
        return True
    context = ri[r, OFFSETS] + batch * ri[r, STEP] if decode else 0
    longest = 0
    for k in range(ri[r, CH_N]):
        context += slots[PF_PROMPT, r, k] - slots[PF_LEFT, r, k] + slots[CH_AMT, r, k]
        longest = max(longest, slots[CH_AMT, r, k])
    computed = prefill
    if par[MAX_PADDINGS] >= 0 and prefill:  # the padding is computed too
        computed = ri[r, CH_N] * longest
        context += computed - prefill
    ri[r, STATE] = PREFILL
    rf[r, STARTED_S] = now
    ri[r, PLAN_PREFILL] = prefill
    ri[r, PLAN_DECODE] = decode
    ri[r, VERSION] += 1
    schedule(s, r, now + iteration_s(cost, computed, decode, float(context)), END)
    return True


def plan_decode_run(s, par, cost, r, now):  # noqa: ANN001, ANN201
    """A run of decode iterations up to the next finish, as long as the cache holds."""
    ri, rf, slots, g = s.ri, s.rf, s.slots, s.g
    batch = ri[r, DC_N]
    first_last = slots[DC_LAST, r, 0]
    for k in range(1, batch):
        if slots[DC_LAST, r, k] < first_last:
            first_last = slots[DC_LAST, r, k]
    steps = first_last - ri[r, STEP]
    if not fits_for(s, par, r, steps):
        low, high = 1, steps
        while high - low > 1:
            middle = (low + high) // 2
            if fits_for(s, par, r, middle):
                low = middle
            else:
                high = middle
        steps = low
    ri[r, STATE] = DECODE
    rf[r, STARTED_S] = now
    ri[r, RUN_STEPS] = steps
    context = float(ri[r, OFFSETS] + batch * ri[r, STEP])
    rf[r, RUN_CONTEXT] = context
    ri[r, PLAN_PREFILL] = 0
    ri[r, PLAN_DECODE] = batch
    ri[r, VERSION] += 1
    schedule(s, r, now + decode_run_s(cost, batch, context, steps), END)
    if batch + ri[r, PF_N] < par[MAX_SEQS] and g[FED] == g[HEAD]:
        listen(s, r)


# -- ending ---------------------------------------------------------------------------------------------


def end(s, q, rec, par, cost, r, now):  # noqa: ANN001, ANN201
    """Scheduler.end: record the run, advance the decoding sequences and the prompt chunks, finish
    what is done, plan the next."""
    ri, rf, slots, g, fin = s.ri, s.rf, s.slots, s.g, s.fin
    block_tokens = par[BLOCK_TOKENS]
    if ri[r, STATE] == DECODE:
        steps = ri[r, RUN_STEPS]
    else:
        steps = 1 if ri[r, PLAN_DECODE] else 0
    row = g[ITERATIONS]
    g[ITERATIONS] = row + 1
    rec.iter_f[0, row] = rf[r, STARTED_S]
    rec.iter_f[1, row] = now
    rec.iter_i[0, row] = par[POOL]
    rec.iter_i[1, row] = r
    rec.iter_i[2, row] = steps
    rec.iter_i[3, row] = ri[r, PLAN_DECODE]
    rec.iter_i[4, row] = ri[r, PLAN_PREFILL]
    finished = 0
    step = ri[r, STEP]
    if steps:
        step += steps
        ri[r, STEP] = step
        k = 0
        while k < ri[r, DC_N]:
            if slots[DC_LAST, r, k] <= step:
                fin[finished] = slots[DC_REQ, r, k]
                finished += 1
                ri[r, OFFSETS] -= slots[DC_OFF, r, k]
                remove_decoding(s, r, k)
            else:
                k += 1
    kept = 0
    chunks = ri[r, CH_N]
    for k in range(ri[r, PF_N]):
        if k < chunks:
            left = slots[PF_LEFT, r, k] - slots[CH_AMT, r, k]
            if left == 0:  # its prompt is in: the first token
                i, prompt = slots[PF_REQ, r, k], slots[PF_PROMPT, r, k]
                ri[r, PREFILL_BLOCKS] -= -(-prompt // block_tokens)
                if math.isnan(q.first_token[i]):
                    q.first_token[i] = now
                made = q.generated[i] + 1
                q.generated[i] = made
                rest = q.tokens_out[i] - made
                if rest <= 0:
                    fin[finished] = i
                    finished += 1
                    continue
                offset = prompt + 1 - step
                d = ri[r, DC_N]
                slots[DC_REQ, r, d] = i
                slots[DC_OFF, r, d] = offset
                slots[DC_LAST, r, d] = step + rest
                ri[r, DC_N] = d + 1
                ri[r, OFFSETS] += offset
                continue
            slots[PF_LEFT, r, k] = left
        if kept != k:
            slots[PF_REQ, r, kept] = slots[PF_REQ, r, k]
            slots[PF_LEFT, r, kept] = slots[PF_LEFT, r, k]
            slots[PF_PROMPT, r, kept] = slots[PF_PROMPT, r, k]
        kept += 1
    ri[r, PF_N] = kept
    ri[r, CH_N] = 0
    rec.iter_i[5, row] = ri[r, OFFSETS] + ri[r, DC_N] * (step - 1) + ri[r, PREFILL_BLOCKS] * block_tokens
    for k in range(finished):
        rec.batch_f[1, q.batch_of[fin[k]]] = now
    return plan(s, q, rec, par, cost, r, now)


# -- the loop -------------------------------------------------------------------------------------------


def play(s, q, rec, par, cost, stop_s):  # noqa: ANN001, ANN201
    """Play events due before ``stop_s``. Returns DONE (none left), STOPPED, NEED_ROOM (a record is
    full: grow it and call again) or STUCK (``g[ERROR_REPLICA]`` can schedule nothing)."""
    replicas, max_seqs = par[REPLICAS], par[MAX_SEQS]
    g = s.g
    while g[HEAP_N] > 0:
        slot = s.hv[HP, 0]
        now = s.ev_t[slot]
        if now >= stop_s:
            return STOPPED
        if g[ITERATIONS] >= rec.iter_f.shape[1] or g[PREEMPTIONS] + max_seqs > rec.pre_t.shape[0]:
            return NEED_ROOM
        pop(s)
        s.clock[0] = now
        if slot == replicas:
            feed(s, q, par, cost, now)
        elif s.hv[EV_KIND, slot] == END:
            if not end(s, q, rec, par, cost, slot, now):
                return STUCK
        elif not plan(s, q, rec, par, cost, slot, now):  # woken
            return STUCK
    return DONE


#: The loop's functions, compiled together on the first run.
_COMPILED = (
    "iteration_s", "decode_run_s", "steps_within", "decode_blocks", "room_for", "fits_for", "before",
    "sift_up", "sift_down", "schedule", "pop", "listen", "stop_listening", "wake", "wake_one", "feed",
    "admit", "preempt_newest", "remove_decoding", "plan", "plan_decode_run", "end", "play",
)  # fmt: skip
_compiled = False


def compile_loop() -> None:
    """Compile the loop (numba, cached in ``__pycache__``): each function's name is rebound to its
    compiled version, so that they call each other compiled. Importing the engine thus never imports
    numba (0.4 s); the first run does.

    The loop allocates nothing (every array comes from ``run``), so it is compiled without numba's
    reference counting (``_nrt=False``, an option numba keeps private): with it, every call between
    the loop's functions counts references to each array it passes, which made the loop 2-3x slower.
    A numba without the option compiles it with the counting."""
    global _compiled
    if _compiled:
        return
    import numba
    import numba.core.options

    options = {"_nrt": False} if hasattr(numba.core.options.DefaultOptions, "_nrt") else {}
    names = globals()
    for name in _COMPILED:
        names[name] = numba.njit(cache=True, **options)(names[name])
    _compiled = True


# -- the platform's side ---------------------------------------------------------------------------------


def _column(values: Any, dtype: type) -> np.ndarray:
    """A request column (a memoryview over a numpy buffer) as a numpy array over the same memory."""
    array = np.asarray(values)
    if array.dtype != dtype:
        raise TypeError(f"fast loop: a request column is {array.dtype}, expected {np.dtype(dtype)}")
    return array


def _grow(values: np.ndarray, length: int) -> np.ndarray:
    """The record ``values`` (columns on the last axis) with room for ``length`` rows."""
    grown = np.empty(values.shape[:-1] + (length,), dtype=values.dtype)
    grown[..., : values.shape[-1]] = values
    return grown


def step_costs(service: StepTimeModel) -> np.ndarray:
    """``StepCosts``' numbers as the loop reads them (``cost``)."""
    costs = StepCosts(service)
    return np.array(
        [
            costs.compute_per_token, costs.weights_s, costs.per_context_s, costs.fixed_s, costs.per_token_s,
            costs.per_decode_s, costs.prefill_fixed_s,
        ],
        dtype=np.float64,
    )  # fmt: skip


def _setup(platform: Run) -> tuple[State, Columns, Records, np.ndarray, np.ndarray]:
    pool = platform.pools[0]
    config, service = pool.config.batcher, pool.config.service
    requests = platform.requests
    n = requests.n
    if not hasattr(requests, "first_token"):  # as ContinuousBatcher.start makes them
        requests.first_token = filled(np.float64, math.nan, n)
        requests.generated = filled(np.int64, 0, n)
        requests.preemptions = filled(np.int32, 0, n)
    total_blocks = config.kv_blocks(service)
    watermark = int(WATERMARK * total_blocks)
    prefill_first = config.schedule == "prefill_first"
    max_sequence_tokens = (total_blocks - watermark) * config.block_tokens
    if prefill_first:
        max_sequence_tokens = min(max_sequence_tokens, config.max_batched_tokens)
    replicas, max_seqs = pool.config.replicas, config.max_num_seqs
    par = np.array(
        [
            max_seqs, config.max_batched_tokens, config.block_tokens, int(prefill_first), total_blocks,
            watermark, max_sequence_tokens, -1 if config.max_paddings is None else config.max_paddings,
            pool.index, replicas, n,
        ],
        dtype=np.int64,
    )  # fmt: skip
    cost = step_costs(service)
    ri = np.zeros((replicas, REPLICA_INTS), dtype=np.int64)
    ri[:, STATE] = IDLE
    # Every replica starts idle, listening in its order (ContinuousBatcher.start's first plans).
    ri[:, LISTENING] = 1
    ri[:, NEXT] = np.append(np.arange(1, replicas), -1)
    ri[:, PREV] = np.arange(-1, replicas - 1)
    g = np.zeros(GLOBALS, dtype=np.int64)
    g[FIRST], g[LAST], g[ERROR_REPLICA] = 0, replicas - 1, -1
    hv = np.zeros((4, replicas + 1), dtype=np.int64)
    hv[HPOS] = -1
    state = State(
        ri, np.zeros((replicas, 2)), np.zeros((SLOT_FIELDS, replicas, max_seqs), dtype=np.int64), g, hv,
        np.zeros(replicas + 1), np.zeros(1), np.zeros(max_seqs + 1, dtype=np.int64),
    )  # fmt: skip
    columns = Columns(
        _column(requests.t, np.float64), _column(requests.tokens_in, np.int64),
        _column(requests.tokens_out, np.int64), _column(requests.batch_of, np.int64),
        _column(requests.state, np.int8), _column(requests.reason, np.int8),
        _column(requests.first_token, np.float64), _column(requests.generated, np.int64),
        _column(requests.preemptions, np.int32),
        np.zeros(n, dtype=np.int64) if requests.cached is None else _column(requests.cached, np.int64),
    )  # fmt: skip
    rows = 3 * n + 16  # a run of iterations or two per request, usually: grown when full
    records = Records(
        np.empty((2, n)), np.empty((3, n), dtype=np.int64), np.empty((2, rows)),
        np.empty((6, rows), dtype=np.int64), np.empty(n // 4 + max_seqs + 16),
        np.empty(n // 4 + max_seqs + 16, dtype=np.int64),
    )  # fmt: skip
    if n:
        schedule(state, replicas, float(columns.t[0]), END)  # the feed's first arrivals
    return state, columns, records, par, cost


def _play_until(state: State, columns: Columns, records: Records, par: np.ndarray, cost: np.ndarray,
                stop_s: float, platform: Run) -> Records:  # fmt: skip
    """Play the events before ``stop_s``, growing the records as they fill."""
    while True:
        status = play(state, columns, records, par, cost, stop_s)
        if status == NEED_ROOM:
            records = records._replace(
                iter_f=_grow(records.iter_f, 2 * records.iter_f.shape[1]),
                iter_i=_grow(records.iter_i, 2 * records.iter_i.shape[1]),
                pre_t=_grow(records.pre_t, 2 * records.pre_t.shape[0]),
                pre_pool=_grow(records.pre_pool, 2 * records.pre_pool.shape[0]),
            )
            continue
        if status == STUCK:  # the message Scheduler.plan raises
            r = int(state.g[ERROR_REPLICA])
            raise RuntimeError(
                f"replica {r} of pool {platform.pools[0].label!r} can schedule nothing but holds "
                f"{state.ri[r, PE_LEN]} preempted and {state.ri[r, PF_N]} prefilling requests"
            )
        return records


def _store(platform: Run, state: State, records: Records) -> None:
    """The records into the platform's, and the line's state, as the simpy engine leaves them. A record's
    columns are numpy arrays here, not the ``array.array`` the engine appends to, so that they are not
    copied (a second or more and a gigabyte for a peak hour): the tables read either alike, and nothing
    appends to a record after its run."""
    g = state.g
    batches, iterations = platform.batches, platform.iterations
    k = int(g[BATCHES])
    batches.start_s, batches.end_s = records.batch_f[0, :k], records.batch_f[1, :k]
    batches.replica, batches.size, batches.pool = (records.batch_i[row, :k] for row in range(3))
    k = int(g[ITERATIONS])
    iterations.start_s, iterations.end_s = records.iter_f[0, :k], records.iter_f[1, :k]
    (
        iterations.pool, iterations.replica, iterations.steps, iterations.decode_seqs,
        iterations.prefill_tokens, iterations.kv_tokens,
    ) = (records.iter_i[row, :k] for row in range(6))  # fmt: skip
    k = int(g[PREEMPTIONS])
    iterations.preempted_s, iterations.preempted_pool = records.pre_t[:k], records.pre_pool[:k]
    line, pool = platform.lines[0], platform.pools[0]
    line.head, line.fed = int(g[HEAD]), int(g[FED])
    line.count = line.fed - line.head
    platform.gateway.backlog = pool.site.backlog = line.count
    platform.gateway.fed_all = line.fed == platform.requests.n
    ri = state.ri
    for r, replica in enumerate(pool.replicas):
        replica.in_service = int(ri[r, DC_N] + ri[r, PF_N] + ri[r, PE_LEN])
    platform.env._now = platform.horizon_s if platform.horizon_s is not None else float(state.clock[0])


def run(platform: Run, progress: bool) -> None:
    """Play the platform's arrivals to its horizon (or to the end), as ``Platform.run`` would in simpy.
    ``progress`` shows the same tqdm bar over simulated time."""
    compile_loop()
    state, columns, records, par, cost = _setup(platform)
    horizon_s = platform.horizon_s
    stop_s = horizon_s if horizon_s is not None else math.inf
    end_s = horizon_s if horizon_s is not None else (float(columns.t[-1]) if len(columns.t) else 0.0)
    if progress and end_s > 0:
        with tqdm(total=end_s, unit="sim s", desc="simulate") as bar:
            chunks = 100
            for k in range(1, chunks + 1):
                target = end_s if k == chunks else end_s * k / chunks
                records = _play_until(state, columns, records, par, cost, target, platform)
                bar.update(target - bar.n)
    records = _play_until(state, columns, records, par, cost, stop_s, platform)
    _store(platform, state, records)
