"""Prefix caching (vLLM's automatic prefix caching): each replica keeps the prompt blocks it computed.

With ``ContinuousBatcherConfig(prefix_caching=True)`` every replica's scheduler owns a ``PrefixCache``:
an LRU of prompt blocks of ``P = prefix_block_tokens`` tokens, each named by its hash in the arrivals'
``prefix_blocks`` (the i-th covers prompt tokens ``[i P, (i + 1) P)``; a hash names the block and
everything before it, as vLLM's chained block hashes and the Mooncake trace's ``hash_ids`` do). Off,
the scheduler holds ``NO_PREFIX_CACHE``, which finds nothing and records nothing.

- **Lookup** (a new request admitted; a recompute after a preemption finds nothing and starts over):
  the hit is the number of the request's leading full blocks (those wholly inside its prompt, as vLLM
  caches only full blocks) the LRU holds, a miss ending the run; the scheduler prefills all but
  ``min(hit P, tokens_in - 1)`` prompt tokens (the last prompt token is always computed, to make the
  first output token) and still allocates KV blocks for the whole prompt. On admission the hit blocks
  become the most recently used, and the request's ``cached_hit`` (the RequestLog's ``cached_tokens``)
  is written.
- **Insertion** (a prompt's prefill ends, a recompute's too): its full blocks enter the LRU as the
  most recently used, its first block most of all (as vLLM's free queue takes a request's blocks tail
  first), so under pressure a shared prefix's tail is evicted before its root.
- **Capacity**: cached blocks live in KV memory the running sequences do not use. Before every lookup
  and after every insertion the LRU is cut, least recently used first, to the cache's free tokens at
  that moment (the total less ``Scheduler.kv_tokens()``) in whole blocks (at an insertion the prompt
  just computed is not yet counted as decoding, so its own blocks count once). This is conservative:
  vLLM also shares the blocks a running request holds, while here a block both cached and in use by a
  running sequence counts twice, so a loaded replica caches a little less than vLLM would.

A request with no ``prefix_blocks`` (an empty tuple) never hits. Not modelled: losing the cache (a
replica keeps its LRU through a fault or while scaled down), and cache-aware admission (a hit still
allocates the whole prompt's blocks, as ``arrivals['cached_tokens']`` does).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol

import numpy as np

from .requests import Requests, filled


class Scheduler(Protocol):
    """What a prefix cache reads of its replica's scheduler (``continuous.Scheduler``)."""

    pool: object
    requests: Requests
    total_blocks: int
    block_tokens: int

    def kv_tokens(self) -> int: ...


class NoPrefixCache:
    """Prefix caching off: nothing is ever cached (the scheduler's null object)."""

    __slots__ = ()

    def lookup(self, i: int) -> int:
        return 0

    def hit_blocks(self, i: int) -> int:
        return 0

    def admitted(self, i: int) -> None:
        pass

    def prefilled(self, i: int) -> None:
        pass


NO_PREFIX_CACHE = NoPrefixCache()


def prefix_cache(scheduler: Scheduler) -> PrefixCache | NoPrefixCache:
    """The prefix cache of ``scheduler``'s replica: a ``PrefixCache`` when its pool's batcher has
    ``prefix_caching``, else ``NO_PREFIX_CACHE``."""
    config = scheduler.pool.config.batcher
    if not config.prefix_caching:
        return NO_PREFIX_CACHE
    return PrefixCache(scheduler, config.prefix_block_tokens)


def check_prefix_column(requests: Requests, block_tokens: int) -> None:
    """The arrivals suit prefix caching at ``block_tokens`` tokens a block: they carry ``prefix_blocks``,
    no explicit ``cached_tokens`` (the two would both claim the prompt's cached part), and no prompt
    more blocks than ``ceil(tokens_in / block_tokens)``."""
    if requests.prefix is None:
        raise ValueError(
            "ContinuousBatcherConfig(prefix_caching=True) reads each request's prompt block hashes from "
            "arrivals['prefix_blocks'], which these arrivals lack: add the column (trace.load_mooncake_trace "
            "gives it) or set prefix_caching=False"
        )
    if requests.cached is not None:
        raise ValueError(
            "arrivals['cached_tokens'] and ContinuousBatcherConfig(prefix_caching=True) both say which "
            "prompt tokens a replica holds; use one: drop the column or set prefix_caching=False"
        )
    lengths = getattr(requests, "prefix_lengths", None)
    if lengths is None:
        lengths = np.fromiter(map(len, requests.prefix), dtype=np.int64, count=requests.n)
        requests.prefix_lengths = lengths
    tokens_in = np.frombuffer(requests.tokens_in, dtype=np.int64) if requests.n else np.empty(0, np.int64)
    most = -(-tokens_in // block_tokens)
    bad = lengths > most
    if bad.any():
        row = int(np.argmax(bad))
        raise ValueError(
            f"arrivals['prefix_blocks'] row {row} holds {int(lengths[row])} blocks for tokens_in="
            f"{int(tokens_in[row])}; at prefix_block_tokens={block_tokens} a prompt has at most "
            f"{int(most[row])} (is prefix_block_tokens the size the hashes were made with?)"
        )


class PrefixCache:
    """One replica's LRU of prompt blocks (hash -> None, oldest first)."""

    __slots__ = (
        "scheduler", "block_tokens", "total_tokens", "lru", "prefix", "tokens_in", "record", "pending",
    )  # fmt: skip

    def __init__(self, scheduler: Scheduler, block_tokens: int) -> None:
        requests = scheduler.requests
        check_prefix_column(requests, block_tokens)
        if not hasattr(requests, "cached_hit"):  # the column only prefix caching writes
            requests.cached_hit = filled(np.int64, 0, requests.n)
        self.scheduler = scheduler
        self.block_tokens = block_tokens
        self.total_tokens = scheduler.total_blocks * scheduler.block_tokens
        self.lru: OrderedDict[int, None] = OrderedDict()
        self.prefix, self.tokens_in, self.record = requests.prefix, requests.tokens_in, requests.cached_hit
        self.pending = (-1, 0)  # the last lookup: (request, hit blocks), committed if it is admitted

    def __len__(self) -> int:
        return len(self.lru)

    def capacity_blocks(self) -> int:
        """Whole blocks the KV memory not used by running sequences holds now."""
        free = self.total_tokens - self.scheduler.kv_tokens()
        return max(free, 0) // self.block_tokens

    def trim(self) -> None:
        """Evict the least recently used blocks beyond the capacity now."""
        lru, capacity = self.lru, self.capacity_blocks()
        while len(lru) > capacity:
            lru.popitem(last=False)

    def full_blocks(self, i: int) -> tuple:
        """Request ``i``'s blocks wholly inside its prompt: the ones that can be cached and found."""
        blocks = self.prefix[i]
        full = self.tokens_in[i] // self.block_tokens
        return blocks if len(blocks) <= full else blocks[:full]

    def hit_blocks(self, i: int) -> int:
        """How many of request ``i``'s leading full blocks this replica holds now."""
        self.trim()
        lru, hit = self.lru, 0
        for h in self.full_blocks(i):
            if h not in lru:
                break
            hit += 1
        return hit

    def lookup(self, i: int) -> int:
        """Prompt tokens of the new request ``i`` found cached: ``min(hit P, tokens_in - 1)``."""
        hit = self.hit_blocks(i)
        self.pending = (i, hit)
        return min(hit * self.block_tokens, self.tokens_in[i] - 1)

    def admitted(self, i: int) -> None:
        """The new request ``i`` was admitted: its hit blocks are the most recently used; record its hit."""
        j, hit = self.pending
        if j != i:
            hit = self.hit_blocks(i)
        self.pending = (-1, 0)
        lru = self.lru
        blocks = self.prefix[i]
        for k in range(hit - 1, -1, -1):  # the first block last: the most recently used
            lru.move_to_end(blocks[k])
        self.record[i] = min(hit * self.block_tokens, self.tokens_in[i] - 1)

    def prefilled(self, i: int) -> None:
        """Request ``i``'s prompt is computed: its full blocks enter the cache, its first most recent."""
        lru = self.lru
        for h in reversed(self.full_blocks(i)):
            lru[h] = None
            lru.move_to_end(h)
        self.trim()
