"""Prefill/decode disaggregation (DistServe, Splitwise): one pool prefills, another decodes.

A *prefill pool* of replicas takes each request, computes its prompt's KV cache and its first token,
which goes straight to the client (its TTFT). The KV cache, ``tokens_in x model.kv_bytes_per_token``
bytes, then crosses a link (``bytes / link_bytes_per_s + link_latency_s``) to a *decode pool*, which
makes the other tokens. Each pool runs only its own kind of iteration, so a long prompt no longer
stretches the decode iterations of the requests running beside it (the prefill interference that
raises TPOT on a colocated replica), at the price of the transfer and of GPUs split between two
pools that cannot lend each other capacity.

The flow is feed-forward, so the run is two runs of the engine (``simulator.simulate``), exactly:

1. the arrivals on the prefill pool, each asking for one token (``tokens_out = 1``): their log gives
   each request's first token (``first_token_s``) and its outcome there;
2. the requests that completed stage 1 and want more tokens reach the decode pool when their KV has
   crossed the link (``first_token_s + transfer_s``), as requests of ``tokens_in + 1`` tokens of which
   ``tokens_in`` are already in the replica's KV cache (``arrivals['cached_tokens']``): the first
   iteration computes only the new token (at a decode step's cost) and KV blocks are held for the
   whole context; they ask for ``tokens_out - 1`` tokens.

The two logs are joined by ``request_id``. Left out: back-pressure. DistServe's prefill instances hold
a request's KV until a decode instance pulls it, so a congested decode pool slows the prefill pool;
here the prefill pool frees the KV at once and never waits for the decode side, and a link carries
any number of transfers at once at full bandwidth (no contention on it). The client's network hop is
left out on both sides (``network_hop_s = 0``), and so it is in the colocated runs this module compares.

``best_split`` sweeps the prefill:decode replica ratio of a fleet and ranks the splits by goodput per
GPU at a TTFT and TPOT SLO, beside the colocated pool of the same GPUs; ``disaggregation_table`` does
it across workloads and SLO pairs, to show where disaggregation wins and where it does not.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from tqdm import tqdm

from ._validate import _kind, _show, check_int, check_positive, check_real_array, check_seconds
from .metrics import token_goodput_per_s, token_latency_percentiles
from .rng import seed_sequence
from .schema import ARRIVAL_COLUMNS
from .sim.requests import arrival_columns
from .simulator import ContinuousBatcherConfig, PlatformConfig, PoolConfig, SimulationResult, simulate
from .steptime import StepTimeModel

__all__ = [
    "DISAGG_LOG_COLUMNS",
    "SPLIT_COLUMNS",
    "TRADEOFF_COLUMNS",
    "DisaggregatedConfig",
    "DisaggregatedResult",
    "simulate_disaggregated",
    "goodput_per_gpu",
    "best_split",
    "disaggregation_table",
]

#: One row per request of a disaggregated run (``DisaggregatedResult.log``).
DISAGG_LOG_COLUMNS: dict[str, tuple[str, str]] = {
    "request_id": ("int64", "from the arrivals table"),
    "class_name": ("object", "from the arrivals table"),
    "priority": ("int64", "from the arrivals table"),
    "tokens_in": ("int64", "from the arrivals table"),
    "tokens_out": ("int64", "from the arrivals table"),
    "arrived_s": ("float64", "reached the prefill pool"),
    "prefill_start_s": ("float64", "its first prefill iteration started (NaN if none did)"),
    "first_token_s": ("float64", "its prefill ended: the first token went to the client (NaN if not)"),
    "transfer_s": ("float64", "the KV cache's time on the link (NaN unless it was sent)"),
    "decode_arrived_s": ("float64", "first_token_s + transfer_s: the KV reached the decode pool"),
    "decode_start_s": ("float64", "its first decode-pool iteration started (NaN if none did)"),
    "last_token_s": ("float64", "its last token (first_token_s for a one-token answer; NaN if not made)"),
    "prefill_replica": ("int64", "prefill replica that served it (-1 if none)"),
    "decode_replica": ("int64", "decode replica that served it (-1 if none)"),
    "stage": ("object", "the last stage it reached: 'prefill', 'transfer' or 'decode'"),
    "outcome": ("object", "one of schema.OUTCOMES: completed only if every stage it needs completed"),
    "reject_reason": ("object", "the stage's reject reason ('' unless rejected)"),
    "latency_s": ("float64", "last_token_s - arrived_s (NaN unless completed)"),
    "ttft_s": ("float64", "first_token_s - arrived_s (NaN unless completed, as the engine's log)"),
    "tpot_s": (
        "float64",
        "(last_token_s - first_token_s) / (tokens_out - 1): transfer and decode queueing included "
        "(NaN unless completed with tokens_out >= 2)",
    ),
    "preemptions": ("int64", "KV-cache preemptions on both pools"),
}

#: One row per design of ``best_split``.
SPLIT_COLUMNS: dict[str, tuple[str, str]] = {
    "design": ("object", "'disaggregated' or 'colocated' (one pool of all the replicas)"),
    "prefill_replicas": ("int64", "replicas of the prefill pool (0 for colocated)"),
    "decode_replicas": ("int64", "replicas of the decode pool (0 for colocated)"),
    "replicas": ("int64", "replicas in all"),
    "gpus": ("int64", "replicas x tensor_parallel"),
    "goodput_per_s": ("float64", "requests within both SLOs per second (metrics.token_goodput_per_s)"),
    "goodput_per_gpu": ("float64", "goodput_per_s / gpus"),
    "attainment": ("float64", "share of the requests that arrived in the window that met both SLOs"),
    "p99_ttft_s": ("float64", "99th percentile TTFT of the completed requests"),
    "p99_tpot_s": ("float64", "99th percentile TPOT of the completed requests"),
    "completed_share": ("float64", "share of the logged requests that completed"),
    "best": ("bool", "the disaggregated split with the most goodput per GPU (the fewest GPUs on a tie)"),
}

#: One row per (workload, SLO) of ``disaggregation_table``.
TRADEOFF_COLUMNS: dict[str, tuple[str, str]] = {
    "workload": ("object", "the workload's name"),
    "slo": ("object", "the SLO pair's name"),
    "ttft_slo_s": ("float64", "TTFT SLO"),
    "tpot_slo_s": ("float64", "TPOT SLO"),
    "gpus": ("int64", "GPUs of every design compared"),
    "colocated_goodput_per_gpu": ("float64", "goodput per GPU of one pool of all the replicas"),
    "best_prefill_replicas": ("int64", "the best split's prefill replicas"),
    "best_decode_replicas": ("int64", "the best split's decode replicas"),
    "disaggregated_goodput_per_gpu": ("float64", "the best split's goodput per GPU"),
    "gain": (
        "float64",
        "disaggregated / colocated goodput per GPU (inf if colocated has none, NaN if neither)",
    ),
    "winner": ("object", "'disaggregated', 'colocated' or 'tie'"),
    "colocated_p99_tpot_s": ("float64", "the colocated pool's p99 TPOT"),
    "disaggregated_p99_tpot_s": ("float64", "the best split's p99 TPOT"),
    "colocated_p99_ttft_s": ("float64", "the colocated pool's p99 TTFT"),
    "disaggregated_p99_ttft_s": ("float64", "the best split's p99 TTFT"),
}

_STAGE_SEEDS = {"prefill": "disagg-prefill", "decode": "disagg-decode"}


def _child_seed(seed: int, name: str) -> int:
    """An integer seed for one stage: the named child stream of ``seed`` (``rng.seed_sequence``)."""
    return int(seed_sequence(seed, name).generate_state(1)[0])


def _check_pool(name: str, pool: object) -> PoolConfig:
    if not isinstance(pool, PoolConfig):
        raise TypeError(f"{name} must be a PoolConfig, got {_kind(pool)}")
    if not pool.continuous:
        raise ValueError(
            f"{name}.batcher must be a ContinuousBatcherConfig (a prefill or decode pool schedules per "
            f"iteration), got {_kind(pool.batcher)}"
        )
    if not isinstance(pool.service, StepTimeModel):
        raise TypeError(
            f"{name}.service must be a StepTimeModel (its model sizes the KV cache to send), got "
            f"{_kind(pool.service)}"
        )
    if pool.autoscaler is not None:
        raise ValueError(
            f"{name}.autoscaler must be None (goodput per GPU needs a fixed pool), "
            f"got {_kind(pool.autoscaler)}"
        )
    return pool


@dataclass(frozen=True)
class DisaggregatedConfig:
    """A prefill pool, a decode pool of the same model, and the link between them.

    Both pools batch continuously (``ContinuousBatcherConfig``) on a ``StepTimeModel`` of the same
    ``model`` (their hardware and ``tensor_parallel`` may differ) and have a fixed number of replicas.
    A request's KV cache takes ``tokens_in x model.kv_bytes_per_token / link_bytes_per_s +
    link_latency_s`` seconds to cross (``transfer_s``).
    """

    prefill: PoolConfig
    decode: PoolConfig
    link_bytes_per_s: float
    link_latency_s: float = 0.0

    def __post_init__(self) -> None:
        _check_pool("prefill", self.prefill)
        _check_pool("decode", self.decode)
        model, other = self.prefill.service.model, self.decode.service.model
        if other != model:
            raise ValueError(
                f"decode.service.model must be the prefill pool's model {model.name!r} (with the same "
                f"weight and KV-cache precision), got {other.name!r}"
                + (" with another precision" if other.name == model.name else "")
            )
        object.__setattr__(
            self, "link_bytes_per_s", check_positive("link_bytes_per_s", self.link_bytes_per_s)
        )
        object.__setattr__(self, "link_latency_s", check_seconds("link_latency_s", self.link_latency_s))

    @property
    def kv_bytes_per_token(self) -> float:
        """Bytes of KV cache one prompt token sends over the link."""
        return self.prefill.service.model.kv_bytes_per_token

    def transfer_s(self, prompt_tokens: object) -> float | np.ndarray:
        """Seconds the KV cache of ``prompt_tokens`` prompt tokens (a number or an array, >= 0) takes to
        cross the link."""
        tokens = check_real_array("prompt_tokens", prompt_tokens)
        if not (tokens >= 0).all() or not np.isfinite(tokens).all():
            raise ValueError(f"prompt_tokens must be finite and >= 0, got {_show(prompt_tokens)}")
        seconds = tokens * self.kv_bytes_per_token / self.link_bytes_per_s + self.link_latency_s
        return float(seconds) if seconds.ndim == 0 else seconds

    @property
    def prefill_gpus(self) -> int:
        return self.prefill.replicas * self.prefill.service.tensor_parallel

    @property
    def decode_gpus(self) -> int:
        return self.decode.replicas * self.decode.service.tensor_parallel

    @property
    def gpus(self) -> int:
        """GPUs of both pools: replicas x tensor_parallel each."""
        return self.prefill_gpus + self.decode_gpus


def _check_slos(ttft_slo_s: float, tpot_slo_s: float) -> tuple[float, float]:
    return check_positive("ttft_slo_s", ttft_slo_s), check_positive("tpot_slo_s", tpot_slo_s)


def goodput_per_gpu(
    log: pd.DataFrame, ttft_slo_s: float, tpot_slo_s: float, start_s: float, end_s: float, gpus: float
) -> float:
    """Requests that arrived in ``[start_s, end_s)`` and met both SLOs, per second and per GPU:
    ``metrics.token_goodput_per_s / gpus``. ``log`` is a disaggregated log (``DISAGG_LOG_COLUMNS``) or
    an engine RequestLog of a continuous pool."""
    gpus = check_positive("gpus", gpus)
    return token_goodput_per_s(log, ttft_slo_s, tpot_slo_s, start_s, end_s) / gpus


@dataclass(frozen=True)
class DisaggregatedResult:
    """A disaggregated run: the joined log (``DISAGG_LOG_COLUMNS``) and each stage's own run."""

    log: pd.DataFrame
    prefill: SimulationResult
    decode: SimulationResult
    config: DisaggregatedConfig = field(repr=False)

    @property
    def gpus(self) -> int:
        return self.config.gpus

    def goodput_per_gpu(self, ttft_slo_s: float, tpot_slo_s: float, start_s: float, end_s: float) -> float:
        """``goodput_per_gpu`` of this run's log over both pools' GPUs."""
        return goodput_per_gpu(self.log, ttft_slo_s, tpot_slo_s, start_s, end_s, self.gpus)


def _stage_arrivals(columns: dict[str, np.ndarray], arrivals: pd.DataFrame) -> pd.DataFrame:
    """Stage 1's arrivals: each asks for its first token only."""
    frame = pd.DataFrame({name: arrivals[name].to_numpy() for name in ARRIVAL_COLUMNS})
    frame["tokens_out"] = np.minimum(columns["tokens_out"], 1)
    if "cached_tokens" in columns:  # a prefix cache on the prefill side still skips its tokens
        frame["cached_tokens"] = columns["cached_tokens"]
    return frame


def simulate_disaggregated(
    arrivals: pd.DataFrame,
    config: DisaggregatedConfig,
    seed: int,
    horizon_s: float | None = None,
    *,
    progress: bool = False,
) -> DisaggregatedResult:
    """Play ``arrivals`` through the prefill pool, the link and the decode pool (module docstring).

    Each stage runs ``simulator.simulate`` with its own named child stream of ``seed`` and the same
    ``horizon_s``: a request whose KV reaches the decode pool after the horizon is ``in_flight``. The
    log has one row per request the prefill pool's log has (those that arrived before the horizon), in
    the same order; a request is ``completed`` only when every stage it needs completed, else it takes
    the outcome (and reject reason) of the stage where it stopped.
    """
    if not isinstance(config, DisaggregatedConfig):
        raise TypeError(f"config must be a DisaggregatedConfig, got {_kind(config)}")
    seed = check_int("seed", seed, minimum=0)
    columns = arrival_columns(arrivals)
    first = simulate(
        _stage_arrivals(columns, arrivals),
        PlatformConfig(config.prefill, network_hop_s=0.0),
        seed=_child_seed(seed, _STAGE_SEEDS["prefill"]),
        horizon_s=horizon_s,
        progress=progress,
    )
    one = first.log
    n = len(one)
    tokens_in = one["tokens_in"].to_numpy()
    tokens_out = columns["tokens_out"][:n]
    first_token = one["first_token_s"].to_numpy(dtype=np.float64)
    prefill_done = (one["outcome"] == "completed").to_numpy()
    sent = prefill_done & (tokens_out >= 2)
    transfer = np.where(sent, config.transfer_s(tokens_in), np.nan)
    ready = first_token + transfer
    rows = np.flatnonzero(sent)
    rows = rows[np.argsort(ready[rows], kind="stable")]
    second_arrivals = pd.DataFrame(
        {
            "request_id": one["request_id"].to_numpy()[rows],
            "t_s": ready[rows],
            "class_name": one["class_name"].to_numpy()[rows],
            "priority": one["priority"].to_numpy()[rows],
            "tokens_in": tokens_in[rows] + 1,
            "tokens_out": tokens_out[rows] - 1,
            "difficulty": columns["difficulty"][rows],
            "cached_tokens": tokens_in[rows],
        }
    )
    second = simulate(
        second_arrivals,
        PlatformConfig(config.decode, network_hop_s=0.0),
        seed=_child_seed(seed, _STAGE_SEEDS["decode"]),
        horizon_s=horizon_s,
        progress=progress,
    )
    return DisaggregatedResult(_join(one, second.log, tokens_out, transfer), first, second, config)


def _join(one: pd.DataFrame, two: pd.DataFrame, tokens_out: np.ndarray, transfer: np.ndarray) -> pd.DataFrame:
    """One row per request of stage 1's log, stage 2's columns joined by request id."""
    n = len(one)
    at = pd.Index(one["request_id"].to_numpy()).get_indexer(two["request_id"].to_numpy())
    decoded = np.zeros(n, dtype=bool)
    decoded[at] = True

    def from_two(name: str, fill: object, dtype: type) -> np.ndarray:
        out = np.full(n, fill, dtype=dtype)
        out[at] = two[name].to_numpy(dtype=dtype)
        return out

    first_token = one["first_token_s"].to_numpy(dtype=np.float64)
    arrived = one["arrived_s"].to_numpy(dtype=np.float64)
    sent = ~np.isnan(transfer)
    outcome = one["outcome"].to_numpy(dtype=object).copy()
    reason = one["reject_reason"].to_numpy(dtype=object).copy()
    stage = np.full(n, "prefill", dtype=object)
    stage[sent] = "transfer"
    stage[decoded] = "decode"
    outcome[sent & ~decoded] = "in_flight"  # its KV was still on the link at the horizon
    outcome[at] = two["outcome"].to_numpy(dtype=object)  # stage 2's rows come in their arrival order
    reason[at] = two["reject_reason"].to_numpy(dtype=object)
    two_done = from_two("outcome", "", object) == "completed"
    last_token = np.where(
        sent, np.where(two_done, from_two("model_end_s", np.nan, np.float64), np.nan), first_token
    )
    last_token[outcome != "completed"] = np.nan
    completed = outcome == "completed"
    long_answer = completed & (tokens_out >= 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(long_answer, (last_token - first_token) / np.maximum(tokens_out - 1, 1), np.nan)
    preemptions = one["preemptions"].to_numpy(dtype=np.int64) + from_two("preemptions", 0, np.int64)
    return pd.DataFrame(
        {
            "request_id": one["request_id"].to_numpy(dtype=np.int64),
            "class_name": one["class_name"].to_numpy(dtype=object),
            "priority": one["priority"].to_numpy(dtype=np.int64),
            "tokens_in": one["tokens_in"].to_numpy(dtype=np.int64),
            "tokens_out": tokens_out.astype(np.int64),
            "arrived_s": arrived,
            "prefill_start_s": one["model_start_s"].to_numpy(dtype=np.float64),
            "first_token_s": first_token,
            "transfer_s": transfer,
            "decode_arrived_s": first_token + transfer,
            "decode_start_s": from_two("model_start_s", np.nan, np.float64),
            "last_token_s": last_token,
            "prefill_replica": one["replica"].to_numpy(dtype=np.int64),
            "decode_replica": from_two("replica", -1, np.int64),
            "stage": stage,
            "outcome": outcome,
            "reject_reason": reason,
            "latency_s": np.where(completed, last_token - arrived, np.nan),
            "ttft_s": np.where(completed, first_token - arrived, np.nan),
            "tpot_s": tpot,
            "preemptions": preemptions,
        }
    )


# ------------------------------------------------------------------------------------------ the planner


def _splits(splits: object, tensor_parallel: int, name: str = "splits") -> list[tuple[int, int]]:
    """``splits``: a GPU count (every split of it into whole replicas of both pools) or (prefill,
    decode) replica pairs."""
    if isinstance(splits, int) and not isinstance(splits, bool):
        total = check_int(name, splits, minimum=2 * tensor_parallel)
        if total % tensor_parallel:
            raise ValueError(
                f"{name} (a GPU count) must be a multiple of tensor_parallel={tensor_parallel}, got {total}"
            )
        replicas = total // tensor_parallel
        return [(p, replicas - p) for p in range(1, replicas)]
    if not isinstance(splits, Sequence) or isinstance(splits, str) or not splits:
        raise TypeError(
            f"splits must be a GPU count (int) or a non-empty list of (prefill_replicas, decode_replicas), "
            f"got {_kind(splits)}"
        )
    out = []
    for k, pair in enumerate(splits):
        if not isinstance(pair, Sequence) or isinstance(pair, str) or len(pair) != 2:
            raise TypeError(
                f"splits[{k}] must be a (prefill_replicas, decode_replicas) pair, got {_kind(pair)}"
            )
        out.append(
            (
                check_int(f"splits[{k}][0]", pair[0], minimum=1),
                check_int(f"splits[{k}][1]", pair[1], minimum=1),
            )
        )
    return out


@dataclass(frozen=True)
class _Run:
    design: str
    prefill_replicas: int
    decode_replicas: int
    replicas: int
    gpus: int
    log: pd.DataFrame


def _window(arrivals: pd.DataFrame, start_s: float | None, end_s: float | None) -> tuple[float, float]:
    """The goodput window: ``[start_s, end_s)``, by default from 0 to just after the last arrival."""
    start = 0.0 if start_s is None else check_seconds("start_s", start_s)
    if end_s is None:
        last = float(arrivals["t_s"].max()) if len(arrivals) else 0.0
        end = float(np.nextafter(max(last, start), math.inf))
    else:
        end = check_seconds("end_s", end_s)
    if not end > start:
        raise ValueError(f"end_s must be later than start_s={start!r}, got {end!r}")
    return start, end


def _sweep(
    arrivals: pd.DataFrame,
    step: StepTimeModel,
    pairs: list[tuple[int, int]],
    *,
    link_bytes_per_s: float,
    link_latency_s: float,
    prefill_batcher: ContinuousBatcherConfig,
    decode_batcher: ContinuousBatcherConfig,
    colocated_batcher: ContinuousBatcherConfig,
    seed: int,
    horizon_s: float | None,
    progress: bool,
    label: str = "split",
) -> list[_Run]:
    """Every split's run, then one colocated run per total replica count."""
    tp = step.tensor_parallel
    totals = sorted({p + d for p, d in pairs})
    runs: list[_Run] = []
    with tqdm(total=len(pairs) + len(totals), desc=label, unit="sim", disable=not progress) as bar:
        for p, d in pairs:
            config = DisaggregatedConfig(
                PoolConfig(p, step, prefill_batcher, name="prefill"),
                PoolConfig(d, step, decode_batcher, name="decode"),
                link_bytes_per_s,
                link_latency_s,
            )
            result = simulate_disaggregated(arrivals, config, seed, horizon_s)
            runs.append(_Run("disaggregated", p, d, p + d, config.gpus, result.log))
            bar.update()
        for total in totals:
            platform = PlatformConfig(PoolConfig(total, step, colocated_batcher), network_hop_s=0.0)
            log = simulate(arrivals, platform, seed=seed, horizon_s=horizon_s).log
            runs.append(_Run("colocated", 0, 0, total, total * tp, log))
            bar.update()
    return runs


def _score(
    runs: list[_Run], ttft_slo_s: float, tpot_slo_s: float, start_s: float, end_s: float
) -> pd.DataFrame:
    rows = []
    for run in runs:
        log = run.log
        goodput = token_goodput_per_s(log, ttft_slo_s, tpot_slo_s, start_s, end_s)
        arrived = log["arrived_s"].to_numpy()
        inside = int(((arrived >= start_s) & (arrived < end_s)).sum())
        tails = token_latency_percentiles(log, (0.99,))["p99_s"]
        rows.append(
            {
                "design": run.design,
                "prefill_replicas": run.prefill_replicas,
                "decode_replicas": run.decode_replicas,
                "replicas": run.replicas,
                "gpus": run.gpus,
                "goodput_per_s": goodput,
                "goodput_per_gpu": goodput / run.gpus,
                "attainment": round(goodput * (end_s - start_s)) / inside if inside else math.nan,
                "p99_ttft_s": float(tails["ttft"]),
                "p99_tpot_s": float(tails["tpot"]),
                "completed_share": float((log["outcome"] == "completed").mean()) if len(log) else math.nan,
            }
        )
    table = pd.DataFrame(rows, columns=[c for c in SPLIT_COLUMNS if c != "best"])
    split = table[table["design"] == "disaggregated"]
    best = np.zeros(len(table), dtype=bool)
    if len(split):
        top = split.sort_values(["goodput_per_gpu", "gpus"], ascending=[False, True], kind="stable").index[0]
        best[top] = True
    table["best"] = best
    return table


def _batchers(
    batcher: object, prefill_batcher: object, decode_batcher: object
) -> tuple[ContinuousBatcherConfig, ContinuousBatcherConfig, ContinuousBatcherConfig]:
    out = []
    for name, value in (
        ("batcher", batcher),
        ("prefill_batcher", prefill_batcher),
        ("decode_batcher", decode_batcher),
    ):
        value = batcher if value is None else value
        if not isinstance(value, ContinuousBatcherConfig):
            raise TypeError(f"{name} must be a ContinuousBatcherConfig, got {_kind(value)}")
        out.append(value)
    return out[1], out[2], out[0]


def _check_step(step: object) -> StepTimeModel:
    if not isinstance(step, StepTimeModel):
        raise TypeError(f"step must be a StepTimeModel, got {_kind(step)}")
    return step


def best_split(
    arrivals: pd.DataFrame,
    step: StepTimeModel,
    splits: int | Sequence[tuple[int, int]],
    ttft_slo_s: float,
    tpot_slo_s: float,
    *,
    link_bytes_per_s: float,
    link_latency_s: float = 0.0,
    batcher: ContinuousBatcherConfig | None = None,
    prefill_batcher: ContinuousBatcherConfig | None = None,
    decode_batcher: ContinuousBatcherConfig | None = None,
    seed: int = 0,
    horizon_s: float | None = None,
    start_s: float | None = None,
    end_s: float | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """The planner's knob: goodput per GPU of every prefill:decode split, beside the colocated pool.

    ``splits`` is a GPU count (every split of its ``count / step.tensor_parallel`` replicas with at
    least one on each side) or a list of ``(prefill_replicas, decode_replicas)``. Every replica is
    ``step`` (so ``tensor_parallel`` GPUs); the prefill and decode pools batch with
    ``prefill_batcher`` and ``decode_batcher`` (default ``batcher``, default ``ContinuousBatcherConfig()``)
    and the colocated pool, one per total replica count of the splits, with ``batcher``. Goodput counts
    the requests that arrived in ``[start_s, end_s)`` (default: from 0 to the last arrival, included)
    and met both SLOs. One table (``SPLIT_COLUMNS``): the splits in the order given, then the colocated rows;
    ``best`` marks the split with the most goodput per GPU.
    """
    step = _check_step(step)
    ttft_slo_s, tpot_slo_s = _check_slos(ttft_slo_s, tpot_slo_s)
    pairs = _splits(splits, step.tensor_parallel)
    prefill, decode, colocated = _batchers(
        batcher or ContinuousBatcherConfig(), prefill_batcher, decode_batcher
    )
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be True or False, got {_show(progress)}")
    arrival_columns(arrivals)  # bad arrivals fail here, before any run
    start, end = _window(arrivals, start_s, end_s)
    runs = _sweep(
        arrivals, step, pairs, link_bytes_per_s=link_bytes_per_s, link_latency_s=link_latency_s,
        prefill_batcher=prefill, decode_batcher=decode, colocated_batcher=colocated, seed=seed,
        horizon_s=horizon_s, progress=progress,
    )  # fmt: skip
    return _score(runs, ttft_slo_s, tpot_slo_s, start, end)


def disaggregation_table(
    workloads: Mapping[str, pd.DataFrame],
    step: StepTimeModel,
    gpus: int,
    slos: Mapping[str, tuple[float, float]],
    *,
    link_bytes_per_s: float,
    link_latency_s: float = 0.0,
    batcher: ContinuousBatcherConfig | None = None,
    prefill_batcher: ContinuousBatcherConfig | None = None,
    decode_batcher: ContinuousBatcherConfig | None = None,
    seed: int = 0,
    horizon_s: float | None = None,
    start_s: float | None = None,
    end_s: float | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Where disaggregation wins: for each workload (its arrivals: a load, a prompt/answer mix) and
    each SLO pair (name -> ``(ttft_slo_s, tpot_slo_s)``), goodput per GPU of the colocated pool of
    ``gpus`` GPUs against the best prefill:decode split of them (``best_split``; each workload is
    simulated once and scored at every SLO). One row per (workload, SLO): ``TRADEOFF_COLUMNS``."""
    step = _check_step(step)
    if not isinstance(workloads, Mapping) or not workloads:
        raise TypeError(f"workloads must be a non-empty mapping of name -> arrivals, got {_kind(workloads)}")
    if not isinstance(slos, Mapping) or not slos:
        raise TypeError(
            f"slos must be a non-empty mapping of name -> (ttft_slo_s, tpot_slo_s), got {_kind(slos)}"
        )
    pairs_of_slo = {}
    for name, pair in slos.items():
        if not isinstance(pair, Sequence) or isinstance(pair, str) or len(pair) != 2:
            raise TypeError(f"slos[{name!r}] must be a (ttft_slo_s, tpot_slo_s) pair, got {_kind(pair)}")
        pairs_of_slo[name] = _check_slos(*pair)
    if not isinstance(gpus, int) or isinstance(gpus, bool):
        raise TypeError(f"gpus must be a GPU count (int), got {_kind(gpus)}")
    pairs = _splits(gpus, step.tensor_parallel, "gpus")
    prefill, decode, colocated = _batchers(
        batcher or ContinuousBatcherConfig(), prefill_batcher, decode_batcher
    )
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be True or False, got {_show(progress)}")
    for arrivals in workloads.values():  # every table checked before the first run
        arrival_columns(arrivals)
        _window(arrivals, start_s, end_s)
    rows = []
    for name, arrivals in workloads.items():
        start, end = _window(arrivals, start_s, end_s)
        runs = _sweep(
            arrivals, step, pairs, link_bytes_per_s=link_bytes_per_s, link_latency_s=link_latency_s,
            prefill_batcher=prefill, decode_batcher=decode, colocated_batcher=colocated, seed=seed,
            horizon_s=horizon_s, progress=progress, label=str(name),
        )  # fmt: skip
        for slo, (ttft_slo_s, tpot_slo_s) in pairs_of_slo.items():
            table = _score(runs, ttft_slo_s, tpot_slo_s, start, end)
            top = table[table["best"]].iloc[0]
            alone = table[table["design"] == "colocated"].iloc[0]
            split_gpu, alone_gpu = float(top["goodput_per_gpu"]), float(alone["goodput_per_gpu"])
            if split_gpu == alone_gpu:
                winner, gain = "tie", (1.0 if alone_gpu else math.nan)
            else:
                winner = "disaggregated" if split_gpu > alone_gpu else "colocated"
                gain = split_gpu / alone_gpu if alone_gpu else math.inf
            rows.append(
                {
                    "workload": name, "slo": slo, "ttft_slo_s": ttft_slo_s, "tpot_slo_s": tpot_slo_s,
                    "gpus": int(alone["gpus"]), "colocated_goodput_per_gpu": alone_gpu,
                    "best_prefill_replicas": int(top["prefill_replicas"]),
                    "best_decode_replicas": int(top["decode_replicas"]),
                    "disaggregated_goodput_per_gpu": split_gpu, "gain": gain, "winner": winner,
                    "colocated_p99_tpot_s": float(alone["p99_tpot_s"]),
                    "disaggregated_p99_tpot_s": float(top["p99_tpot_s"]),
                    "colocated_p99_ttft_s": float(alone["p99_ttft_s"]),
                    "disaggregated_p99_ttft_s": float(top["p99_ttft_s"]),
                }
            )  # fmt: skip
    return pd.DataFrame(rows, columns=list(TRADEOFF_COLUMNS))
