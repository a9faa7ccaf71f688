"""Prefix caching: how many prompt blocks a pool of replicas finds already in its KV cache.

A request's prompt is a sequence of fixed-size blocks, each named by a hash (a trace's
``prefix_blocks``, ``trace.load_mooncake_trace``: 512 tokens a block). Requests whose leading blocks
agree share a prefix: a replica that still holds those blocks in its KV cache skips their prefill.

``prefix_hit_rates`` replays the requests in order through ``replicas`` caches of
``capacity_blocks`` blocks each, least recently used evicted first, under one routing policy:

- ``"round_robin"``: request ``i`` goes to replica ``i mod replicas``.
- ``"least_loaded"``: the replica with the fewest prompt blocks assigned so far (ties: lowest
  index). Blocks assigned are the load proxy (prefill work); it ignores when requests finish. (A
  count of requests would make it round robin again.)
- ``"prefix_affinity"``: the replica holding the longest run of the request's leading blocks, among
  those whose assigned requests do not exceed ``(1 + slack)`` times the mean per replica so far
  (the least loaded replica always qualifies); ties go to the fewer assigned, then the lowest index.
  ``slack=inf`` routes on the prefix alone; a small ``slack`` trades hits for balance.

A hit is the longest run of the request's leading blocks already cached on the replica it is sent
to (a block after a miss does not count: its KV depends on everything before it). The request's
blocks then become the most recently used, its first block most of all, so under pressure a shared
prefix's tail is evicted before its root (as vLLM's evictor does). Each replica's cache holds blocks
only; how many requests run at once, and the KV their decodes hold, is not modelled here.

``prefill_seconds_saved(step, tokens_in, tokens_saved)``: per request, the prefill time of the whole
prompt less that of the part left to compute, from ``steptime.StepTimeModel.prefill_time_s``; it is
the time to first token saved on an otherwise idle replica (a busy one batches prefills together).

``prefix_caching_table(arrivals, step, replicas)`` replays a trace through the engine itself
(``simulator.simulate``, continuous batching with ``ContinuousBatcherConfig(prefix_caching=True)``,
``sim.prefix``): there the caches hold only the KV memory the running sequences leave free, and a hit
shortens a prefill that shares its iterations with decodes and other prompts. One row per routing
policy, with caching off as the baseline: hit rates, time to first token, time per output token and
the load imbalance (``PREFIX_CACHING_TABLE_COLUMNS``).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from numbers import Integral

import numpy as np
import pandas as pd

from ._validate import MAX_REPLICAS, MAX_TOKENS, _kind, _show, check_in, check_int, check_range
from .simulator import ContinuousBatcherConfig, PlatformConfig, PoolConfig, simulate
from .steptime import StepTimeModel

__all__ = [
    "ENGINE_POLICIES",
    "POLICIES",
    "PREFIX_CACHING_TABLE_COLUMNS",
    "PrefixCacheResult",
    "prefix_caching_table",
    "prefix_hit_rates",
    "prefill_seconds_saved",
]

#: The routing policies ``prefix_hit_rates`` knows.
POLICIES = ("round_robin", "least_loaded", "prefix_affinity")


@dataclass(frozen=True)
class PrefixCacheResult:
    """What a replay of requests through per-replica prefix caches found.

    Per request (arrays in request order): ``replica`` it was sent to, ``blocks`` in its prompt,
    ``hit_blocks`` found cached, ``tokens_saved`` (``hit_blocks x block_tokens``, at most the prompt
    less one token when ``tokens_in`` was given). Overall: ``hit_rate`` (hit blocks over all blocks),
    ``requests_per_replica``, ``blocks_per_replica`` and ``imbalance`` (the most requests on one
    replica over the mean).
    """

    replica: np.ndarray
    blocks: np.ndarray
    hit_blocks: np.ndarray
    tokens_saved: np.ndarray
    hit_rate: float
    requests_per_replica: np.ndarray
    blocks_per_replica: np.ndarray
    imbalance: float


def _check_blocks(blocks_per_request: object) -> list[tuple]:
    """The requests' block hashes as tuples; a pandas Series (a trace's column) is read as a list."""
    if hasattr(blocks_per_request, "tolist") and not isinstance(blocks_per_request, str | bytes):
        blocks_per_request = blocks_per_request.tolist()
    if isinstance(blocks_per_request, str | bytes) or not isinstance(blocks_per_request, Sequence):
        raise TypeError(
            f"blocks_per_request must be a sequence of block-hash sequences, got {_kind(blocks_per_request)}"
        )
    if not blocks_per_request:
        raise ValueError("blocks_per_request must hold at least one request, got none")
    out = []
    for i, row in enumerate(blocks_per_request):
        if isinstance(row, np.ndarray):
            row = row.tolist()
        if isinstance(row, str | bytes) or not isinstance(row, Sequence):
            raise TypeError(f"blocks_per_request[{i}] must be a sequence of block hashes, got {_kind(row)}")
        for h in row:
            if isinstance(h, bool) or not isinstance(h, Integral | str):
                raise TypeError(
                    f"blocks_per_request[{i}] must hold integer or string block hashes, got {_show(h)}"
                )
        out.append(tuple(row))
    return out


def _cached_run(cache: OrderedDict, blocks: tuple) -> int:
    """How many of ``blocks``' leading blocks ``cache`` holds."""
    n = 0
    for h in blocks:
        if h not in cache:
            break
        n += 1
    return n


def _touch(cache: OrderedDict, blocks: tuple, capacity: int) -> None:
    """Make ``blocks`` the most recently used, the first most of all; evict beyond ``capacity``."""
    for h in reversed(blocks):
        cache[h] = None
        cache.move_to_end(h)
    while len(cache) > capacity:
        cache.popitem(last=False)


def prefix_hit_rates(
    blocks_per_request: Sequence[Sequence[int]],
    replicas: int,
    capacity_blocks: int,
    policy: str = "prefix_affinity",
    *,
    slack: float = 0.25,
    block_tokens: int = 512,
    tokens_in: Sequence[int] | np.ndarray | None = None,
) -> PrefixCacheResult:
    """Replay requests through ``replicas`` LRU caches of ``capacity_blocks`` blocks under ``policy``.

    ``blocks_per_request``: each request's block hashes in prompt order (a trace's ``prefix_blocks``).
    ``slack`` >= 0 (``inf`` allowed): ``"prefix_affinity"``'s load cap. ``block_tokens``: prompt tokens
    per block. ``tokens_in`` (optional, one per request): the prompt lengths, so that a full hit saves
    at most ``tokens_in - 1`` tokens (the last prompt token is always computed to yield the first
    output token; a trace's last block is partial).
    """
    rows = _check_blocks(blocks_per_request)
    replicas = check_int("replicas", replicas, minimum=1, maximum=MAX_REPLICAS)
    capacity_blocks = check_int("capacity_blocks", capacity_blocks, minimum=1, maximum=MAX_TOKENS)
    check_in("policy", policy, POLICIES)
    if isinstance(slack, bool) or not isinstance(slack, int | float) or math.isnan(slack) or slack < 0:
        raise ValueError(f"slack must be a number >= 0 (inf allowed), got {_show(slack)}")
    block_tokens = check_int("block_tokens", block_tokens, minimum=1, maximum=MAX_TOKENS)
    n = len(rows)
    prompt = None
    if tokens_in is not None:
        prompt = np.asarray(tokens_in)
        if prompt.shape != (n,) or not np.issubdtype(prompt.dtype, np.integer) or (prompt < 0).any():
            raise ValueError(
                f"tokens_in must hold {n} non-negative integers, one per request, got {_show(tokens_in)}"
            )

    caches = [OrderedDict() for _ in range(replicas)]
    load = np.zeros(replicas, dtype=np.int64)
    work = np.zeros(replicas, dtype=np.int64)
    replica = np.empty(n, dtype=np.int64)
    hits = np.empty(n, dtype=np.int64)
    for i, blocks in enumerate(rows):
        if policy == "round_robin":
            r = i % replicas
        elif policy == "least_loaded":
            r = int(np.argmin(work))
        else:
            cap = (1.0 + slack) * i / replicas
            best = (-1, 0, 0)
            r = 0
            for j in range(replicas):
                if load[j] > cap:
                    continue
                key = (_cached_run(caches[j], blocks), -int(load[j]), -j)
                if key > best:
                    best, r = key, j
        hits[i] = _cached_run(caches[r], blocks)
        replica[i] = r
        load[r] += 1
        work[r] += len(blocks)
        _touch(caches[r], blocks, capacity_blocks)

    blocks = np.array([len(b) for b in rows], dtype=np.int64)
    saved = hits * block_tokens
    if prompt is not None:
        saved = np.minimum(saved, np.maximum(prompt.astype(np.int64) - 1, 0))
    total = int(blocks.sum())
    return PrefixCacheResult(
        replica=replica,
        blocks=blocks,
        hit_blocks=hits,
        tokens_saved=saved,
        hit_rate=float(hits.sum() / total) if total else math.nan,
        requests_per_replica=load,
        blocks_per_replica=work,
        imbalance=float(load.max() / load.mean()),
    )


def prefill_seconds_saved(step: object, tokens_in: object, tokens_saved: object) -> np.ndarray:
    """Seconds of prefill each request skips: ``prefill_time_s(1, tokens_in)`` less
    ``prefill_time_s(1, tokens_in - tokens_saved)``, from ``step`` (a ``steptime.StepTimeModel``).

    This is the time to first token saved when the request is prefilled alone on an idle replica;
    in a busy batch the saving is shared with the requests prefilled beside it.
    """
    if not callable(getattr(step, "prefill_time_s", None)):
        raise TypeError(f"step must be a StepTimeModel (with prefill_time_s), got {_kind(step)}")
    prompt = np.atleast_1d(np.asarray(tokens_in))
    saved = np.atleast_1d(np.asarray(tokens_saved))
    for name, values in (("tokens_in", prompt), ("tokens_saved", saved)):
        if not np.issubdtype(values.dtype, np.integer) or values.ndim != 1 or (values < 0).any():
            raise ValueError(f"{name} must be non-negative integers (a 1-d array), got {_show(values)}")
    if prompt.shape != saved.shape:
        raise ValueError(
            f"tokens_in and tokens_saved must have the same length, got {prompt.size} and {saved.size}"
        )
    if (saved > prompt).any():
        row = int(np.argmax(saved > prompt))
        raise ValueError(
            f"tokens_saved must not exceed tokens_in (request {row}: {int(saved[row])} > {int(prompt[row])})"
        )
    full = np.asarray(step.prefill_time_s(1, prompt), dtype=float)
    rest = np.asarray(step.prefill_time_s(1, prompt - saved), dtype=float)
    return full - rest


#: The engine's balancing policies ``prefix_caching_table`` compares by default (``config.POLICIES``).
ENGINE_POLICIES = ("round_robin", "least_kv_cache", "prefix_affinity")

#: The columns of ``prefix_caching_table``: one row per policy and caching setting.
PREFIX_CACHING_TABLE_COLUMNS: dict[str, tuple[str, str]] = {
    "policy": ("object", "the pool's balancing policy (config.POLICIES)"),
    "prefix_caching": ("bool", "the replicas cache prompt blocks (False: the baseline)"),
    "block_hit_rate": (
        "float64",
        "prompt blocks found cached over all prompt blocks (hit blocks: ceil(cached_tokens / block "
        "tokens), exact for blocks of 2 tokens or more)",
    ),
    "token_hit_rate": ("float64", "prompt tokens found cached (not prefilled) over all prompt tokens"),
    "ttft_mean_s": ("float64", "mean time to first token of the completed requests"),
    "ttft_p99_s": ("float64", "99th percentile of the time to first token"),
    "tpot_mean_s": ("float64", "mean time per output token after the first"),
    "imbalance": ("float64", "most requests served by one replica over the mean per replica"),
    "completed": ("int64", "requests completed"),
}


def prefix_caching_table(
    arrivals: pd.DataFrame,
    step: StepTimeModel,
    replicas: int,
    policies: Sequence[str] = ENGINE_POLICIES,
    *,
    rate_scale: float = 1.0,
    batcher: ContinuousBatcherConfig | None = None,
    affinity_slack: float = 0.25,
    seed: int = 0,
) -> pd.DataFrame:
    """Replay ``arrivals`` (with ``prefix_blocks``, e.g. ``trace.load_mooncake_trace()``) through
    ``replicas`` continuous-batching replicas of ``step`` under each of ``policies``, with prefix
    caching off (the baseline; not for ``"prefix_affinity"``, which needs it) and on.

    ``rate_scale`` (> 0, at most 1000) multiplies the arrival rate (the times are divided by it).
    ``batcher`` (default ``ContinuousBatcherConfig()``) is the replicas' batcher; its
    ``prefix_block_tokens`` must be the size the trace's hashes were made with (512 for Mooncake).
    ``affinity_slack`` is ``PoolConfig.affinity_slack``. No network hop. Returns
    ``PREFIX_CACHING_TABLE_COLUMNS``, the baselines first, then the policies in the order given.
    """
    if not isinstance(arrivals, pd.DataFrame):
        raise TypeError(f"arrivals must be an arrivals table (a DataFrame), got {_kind(arrivals)}")
    if "prefix_blocks" not in arrivals.columns:
        raise ValueError(
            "arrivals must have a 'prefix_blocks' column (trace.load_mooncake_trace gives one); it has "
            f"{_show(list(arrivals.columns))}"
        )
    if not isinstance(step, StepTimeModel):
        raise TypeError(f"step must be a StepTimeModel (steptime.load_step_profile), got {_kind(step)}")
    replicas = check_int("replicas", replicas, minimum=1, maximum=MAX_REPLICAS)
    if isinstance(policies, str) or not isinstance(policies, Sequence) or not policies:
        raise ValueError(f"policies must be a non-empty sequence of policy names, got {_show(policies)}")
    rate_scale = check_range("rate_scale", rate_scale, 0.0, 1000.0, open_low=True)
    batcher = ContinuousBatcherConfig() if batcher is None else batcher
    if not isinstance(batcher, ContinuousBatcherConfig):
        raise TypeError(f"batcher must be a ContinuousBatcherConfig or None, got {_kind(batcher)}")
    off = replace(batcher, prefix_caching=False)
    on = replace(batcher, prefix_caching=True)
    if rate_scale != 1.0:
        arrivals = arrivals.assign(t_s=arrivals["t_s"].to_numpy(dtype=float) / rate_scale)
    runs = [(p, off) for p in policies if p != "prefix_affinity"] + [(p, on) for p in policies]
    block_tokens = on.prefix_block_tokens
    blocks = int(arrivals["prefix_blocks"].map(len).sum())
    rows = []
    for policy, config in runs:
        pool = PoolConfig(replicas, step, config, policy, affinity_slack=affinity_slack)
        log = simulate(arrivals, PlatformConfig(pool, network_hop_s=0.0), seed=seed).log
        cached = log["cached_tokens"].to_numpy() if "cached_tokens" in log else np.zeros(len(log), np.int64)
        served = log["replica"].to_numpy()
        per_replica = np.bincount(served[served >= 0], minlength=replicas)
        ttft = log["ttft_s"].to_numpy()
        rows.append(
            {
                "policy": policy,
                "prefix_caching": config.prefix_caching,
                "block_hit_rate": float(-(-cached // block_tokens).sum() / blocks) if blocks else math.nan,
                "token_hit_rate": float(cached.sum() / log["tokens_in"].sum()),
                "ttft_mean_s": float(np.nanmean(ttft)),
                "ttft_p99_s": float(np.nanpercentile(ttft, 99)),
                "tpot_mean_s": float(np.nanmean(log["tpot_s"].to_numpy())),
                "imbalance": float(per_replica.max() / per_replica.mean()),
                "completed": int((log["outcome"] == "completed").sum()),
            }
        )
    return pd.DataFrame(rows, columns=list(PREFIX_CACHING_TABLE_COLUMNS))
