"""Experiments on the serving engine: how many replicas a design needs to meet a token SLO, and its cost.

The book's gate metric is the **share of requests served at the SLO**: of the requests that arrived,
those that completed with their time to first token within ``ttft_slo_s`` *and* their time per
output token within ``tpot_slo_s`` (DistServe's attainment, counted over arrivals, so a rejected or
unfinished request counts against it). ``fewest_replicas`` finds the smallest pool of a design that
reaches a target share on given arrivals: it doubles the pool until the target is met, then bisects,
on the same arrivals and seed every time (common random numbers), assuming as the planner does that
more replicas never hurt. For a disaggregated design (``disagg.DisaggregatedConfig``) the replicas are
the two pools' together, and at each total every prefill:decode split is tried: the design meets the
target at a total when its best split does.

**One statistics convention** (``replicate``): a run's statistic is computed on that run's own log (a
p99 is the replication's p99, never a percentile of pooled logs), and a design point is reported as
the mean over independent replications with a Student t confidence interval
(``metrics.replication_ci``). Replication ``r`` of seed ``s`` runs on its own seed
(``replication_seed``), drawn from the seed tree so that no two replications share a stream.

**Sweeps** (``attainment_sweep``): one design at a range of loads, each load summarised by that
convention (or, with one replication, run on the seed itself, as ``reference.gate_users`` runs it),
and ``first_miss``: the first load of a sweep whose share at the SLO falls below the target.

**A feature fetch behind a cache** (``feature_fetch``): the ``IngestionConfig`` of a platform whose
cache misses read a database shared with other readers, an M/M/1 queue at the load they bring
(``database_utilization``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from tqdm import tqdm

from ._validate import (
    MAX_REPLICAS,
    _kind,
    check_int,
    check_non_negative,
    check_positive,
    check_probability,
    check_seconds,
)
from .cost import SECONDS_PER_HOUR
from .disagg import DisaggregatedConfig, DisaggregatedResult, simulate_disaggregated
from .metrics import outcome_shares, replication_ci, token_latency_percentiles, token_slo_met
from .rng import seed_sequence
from .simulator import IngestionConfig, PlatformConfig, SimulationResult, simulate

__all__ = [
    "slo_attainment",
    "Sizing",
    "fewest_replicas",
    "usd_per_1k_requests",
    "MAX_REPLICATIONS",
    "REPLICATION_COLUMNS",
    "Replications",
    "replication_seed",
    "replicate",
    "SWEEP_STATISTICS",
    "attainment_sweep",
    "first_miss",
    "database_utilization",
    "feature_fetch",
]

#: The most replications ``replicate`` runs: enough for any interval, few enough to stay bounded.
MAX_REPLICATIONS = 1_000
#: The columns of ``Replications.summary``, one row per statistic.
REPLICATION_COLUMNS: dict[str, str] = {
    "mean": "mean of the statistic over the replications",
    "half_width": "half-width of its Student t confidence interval",
    "low": "mean - half_width",
    "high": "mean + half_width",
    "replications": "how many replications",
}


def slo_attainment(log: pd.DataFrame, ttft_slo_s: float, tpot_slo_s: float) -> float:
    """The share of arrived requests that completed within both token SLOs (a one-token answer has no
    TPOT and meets that one). NaN for an empty log."""
    good = token_slo_met(log, ttft_slo_s, tpot_slo_s)
    return float(good.mean()) if len(good) else float("nan")


@dataclass(frozen=True)
class Sizing:
    """The smallest pool found: ``replicas``, ``gpus`` (replicas x tensor parallel), its ``attainment``
    and its run (``result``), every pool size tried (``tried``: replicas -> attainment) and, for a
    disaggregated design, its ``split`` (prefill replicas, decode replicas)."""

    replicas: int
    gpus: int
    attainment: float
    result: SimulationResult | DisaggregatedResult
    tried: dict[int, float]
    split: tuple[int, int] | None = None


def fewest_replicas(
    arrivals: pd.DataFrame,
    platform: PlatformConfig | DisaggregatedConfig,
    *,
    ttft_slo_s: float,
    tpot_slo_s: float,
    target: float = 0.99,
    seed: int = 0,
    max_replicas: int = 1024,
) -> Sizing:
    """The fewest replicas of ``platform.pool`` (a continuous-batching pool) whose share of requests at
    the SLO reaches ``target`` on ``arrivals`` (every other setting of ``platform`` kept), or of a
    disaggregated design's two pools together (each split tried). Raises ``ValueError`` when even
    ``max_replicas`` do not reach it."""
    if isinstance(platform, DisaggregatedConfig):
        tensor_parallel = platform.prefill.service.tensor_parallel
        if platform.decode.service.tensor_parallel != tensor_parallel:
            raise ValueError(
                "a disaggregated design's pools must have one tensor_parallel to be sized together; got "
                f"{tensor_parallel} (prefill) and {platform.decode.service.tensor_parallel} (decode)"
            )
        least = 2
    elif isinstance(platform, PlatformConfig):
        if not platform.pool.continuous:
            raise ValueError("platform.pool must have a ContinuousBatcherConfig: the SLO is on tokens")
        if platform.pool.autoscaler is not None:
            raise ValueError("platform.pool must have no autoscaler: a sized pool has fixed replicas")
        tensor_parallel = getattr(platform.pool.service, "tensor_parallel", 1)
        least = 1
    else:
        raise TypeError(f"platform must be a PlatformConfig or a DisaggregatedConfig, got {_kind(platform)}")
    target = check_probability("target", target, open_low=True)
    max_replicas = check_int("max_replicas", max_replicas, minimum=least, maximum=MAX_REPLICAS)
    check_positive("ttft_slo_s", ttft_slo_s)
    check_positive("tpot_slo_s", tpot_slo_s)
    tried: dict[int, float] = {}
    runs: dict[int, tuple[SimulationResult | DisaggregatedResult, tuple[int, int] | None]] = {}

    def attains(replicas: int) -> bool:
        if isinstance(platform, PlatformConfig):
            pool = replace(platform.pool, replicas=replicas)
            designs = [(simulate(arrivals, replace(platform, pool=pool), seed=seed), None)]
        else:
            designs = [
                (simulate_disaggregated(arrivals, _split(platform, p, replicas - p), seed), (p, replicas - p))
                for p in range(1, replicas)
            ]
        shares = [slo_attainment(result.log, ttft_slo_s, tpot_slo_s) for result, _ in designs]
        best = int(np.argmax(shares))  # the first (fewest prefill replicas) of the best
        tried[replicas], runs[replicas] = shares[best], designs[best]
        return tried[replicas] >= target

    low, high = least - 1, least  # low misses (or is too few), high is the next to try
    while not attains(high):
        if high == max_replicas:
            raise ValueError(
                f"even max_replicas={max_replicas} replicas serve only {tried[high]:.1%} of the requests "
                f"at the SLO (TTFT <= {ttft_slo_s} s, TPOT <= {tpot_slo_s} s), below target={target}"
            )
        low, high = high, min(2 * high, max_replicas)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if attains(middle) else (middle, high)
    result, split = runs[high]
    return Sizing(high, high * tensor_parallel, tried[high], result, dict(sorted(tried.items())), split)


def _split(design: DisaggregatedConfig, prefill: int, decode: int) -> DisaggregatedConfig:
    prefill_pool = replace(design.prefill, replicas=prefill)
    return replace(design, prefill=prefill_pool, decode=replace(design.decode, replicas=decode))


def usd_per_1k_requests(gpus: float, usd_per_gpu_hour: float, requests_per_s: float) -> float:
    """GPU cost of 1,000 requests when ``gpus`` GPUs at ``usd_per_gpu_hour`` serve ``requests_per_s``."""
    gpus = check_positive("gpus", gpus)
    usd_per_gpu_hour = check_positive("usd_per_gpu_hour", usd_per_gpu_hour)
    requests_per_s = check_positive("requests_per_s", requests_per_s)
    return 1000.0 * gpus * usd_per_gpu_hour / (requests_per_s * SECONDS_PER_HOUR)


def replication_seed(seed: int, replication: int) -> int:
    """The seed of replication ``replication`` of an experiment seeded ``seed`` (a child of the seed
    tree, so replications never share a random stream)."""
    sequence = seed_sequence(check_int("seed", seed, minimum=0), "replication", replication)
    return int(sequence.generate_state(1, np.uint32)[0])


@dataclass(frozen=True)
class Replications:
    """Independent replications of one design point: ``runs`` (one row per replication, a column per
    statistic, plus ``seed``) and ``summary`` (one row per statistic, ``REPLICATION_COLUMNS``)."""

    runs: pd.DataFrame
    summary: pd.DataFrame

    def mean(self, statistic: str) -> float:
        return float(self.summary.loc[statistic, "mean"])

    def half_width(self, statistic: str) -> float:
        return float(self.summary.loc[statistic, "half_width"])


def replicate(
    run: Callable[[int], Mapping[str, float] | pd.Series],
    replications: int,
    *,
    seed: int,
    confidence: float = 0.95,
    progress: bool = False,
) -> Replications:
    """Run ``run(seed_r)`` for ``replications`` independent seeds (``replication_seed(seed, r)``); each
    call returns its statistics by name, computed on its own run. Summarised by the module's one
    convention: the mean over replications with a Student t interval at ``confidence``."""
    if not callable(run):
        raise TypeError(f"run must be a callable taking a seed, got {_kind(run)}")
    replications = check_int("replications", replications, minimum=2, maximum=MAX_REPLICATIONS)
    seed = check_int("seed", seed, minimum=0)
    confidence = check_probability("confidence", confidence, open_low=True, open_high=True)
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be True or False, got {progress!r}")
    rows = []
    for r in tqdm(range(replications), desc="replications", disable=not progress):
        seed_r = replication_seed(seed, r)
        stats = run(seed_r)
        if not isinstance(stats, (Mapping, pd.Series)):
            raise TypeError(f"run must return a mapping of statistics, got {_kind(stats)}")
        rows.append({**dict(stats), "seed": seed_r})
    runs = pd.DataFrame(rows)
    summary = {}
    for name in runs.columns.drop("seed"):
        mean, half = replication_ci(runs[name].to_numpy(dtype=float), confidence)
        summary[name] = {"mean": mean, "half_width": half, "low": mean - half, "high": mean + half,
                         "replications": replications}  # fmt: skip
    return Replications(runs, pd.DataFrame.from_dict(summary, orient="index")[list(REPLICATION_COLUMNS)])


#: The statistics of one run that ``attainment_sweep`` reports at each load.
SWEEP_STATISTICS: dict[str, str] = {
    "attainment": "share of the arrived requests served within both token SLOs (slo_attainment)",
    "p50_ttft_s": "median time to first token of the completed requests",
    "p99_ttft_s": "99th percentile time to first token of the completed requests",
    "p50_tpot_s": "median time per output token of the completed requests",
    "p99_tpot_s": "99th percentile time per output token of the completed requests",
    "refused_share": "share of the arrived requests rejected or timed out",
}


def _sweep_run(
    arrivals_at: Callable[[float, int], pd.DataFrame],
    platform: PlatformConfig,
    load: float,
    ttft_slo_s: float,
    tpot_slo_s: float,
) -> Callable[[int], dict[str, float]]:
    def run(seed: int) -> dict[str, float]:
        arrivals = arrivals_at(load, seed)
        if not isinstance(arrivals, pd.DataFrame):
            raise TypeError(f"arrivals_at must return an arrivals DataFrame, got {_kind(arrivals)}")
        log = simulate(arrivals, platform, seed=seed).log
        tails = token_latency_percentiles(log[log["outcome"] == "completed"], quantiles=(0.5, 0.99))
        shares = outcome_shares(log)
        return {
            "attainment": slo_attainment(log, ttft_slo_s, tpot_slo_s),
            "p50_ttft_s": tails.loc["ttft", "p50_s"],
            "p99_ttft_s": tails.loc["ttft", "p99_s"],
            "p50_tpot_s": tails.loc["tpot", "p50_s"],
            "p99_tpot_s": tails.loc["tpot", "p99_s"],
            "refused_share": float(shares["rejected"] + shares["timed_out"]),
        }

    return run


def attainment_sweep(
    arrivals_at: Callable[[float, int], pd.DataFrame],
    platform: PlatformConfig,
    loads: object,
    *,
    ttft_slo_s: float,
    tpot_slo_s: float,
    seed: int,
    replications: int = 1,
    target: float = 0.99,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """One design (``platform``, a continuous-batching pool) at each of ``loads`` (increasing positive
    numbers: users, requests a second, whatever ``arrivals_at(load, seed)`` turns into arrivals).

    One row per load, indexed ``load``: each of ``SWEEP_STATISTICS``, its ``<name>_half_width`` and
    ``meets`` (the attainment reaches ``target``). With ``replications`` >= 2 each load is
    ``replicate``'s mean over independent replications with its Student t half-width; with one, the
    run is on ``seed`` itself (arrivals and engine), as ``reference.gate_users`` runs it, and the
    half-widths are NaN."""
    if not callable(arrivals_at):
        raise TypeError(f"arrivals_at must be a callable (load, seed) -> arrivals, got {_kind(arrivals_at)}")
    if not isinstance(platform, PlatformConfig):
        raise TypeError(f"platform must be a PlatformConfig, got {_kind(platform)}")
    if not platform.pool.continuous:
        raise ValueError("platform.pool must have a ContinuousBatcherConfig: the SLO is on tokens")
    if isinstance(loads, (str, bytes)) or not hasattr(loads, "__len__"):
        raise TypeError(f"loads must be a list of positive numbers, got {_kind(loads)}")
    loads = [check_positive(f"loads[{k}]", load) for k, load in enumerate(loads)]
    if not loads:
        raise ValueError("loads must hold at least one load, got none")
    if any(b <= a for a, b in zip(loads, loads[1:], strict=False)):
        raise ValueError(f"loads must increase strictly, got {loads}")
    ttft_slo_s = check_positive("ttft_slo_s", ttft_slo_s)
    tpot_slo_s = check_positive("tpot_slo_s", tpot_slo_s)
    seed = check_int("seed", seed, minimum=0)
    replications = check_int("replications", replications, minimum=1, maximum=MAX_REPLICATIONS)
    target = check_probability("target", target, open_low=True)
    rows = {}
    for load in loads:
        run = _sweep_run(arrivals_at, platform, load, ttft_slo_s, tpot_slo_s)
        if replications == 1:
            stats = run(seed)
            rows[load] = {**stats, **{f"{name}_half_width": np.nan for name in stats}}
        else:
            summary = replicate(run, replications, seed=seed, confidence=confidence).summary
            rows[load] = {**summary["mean"], **summary["half_width"].add_suffix("_half_width")}
    table = pd.DataFrame.from_dict(rows, orient="index").rename_axis("load")
    columns = [*SWEEP_STATISTICS, *(f"{name}_half_width" for name in SWEEP_STATISTICS)]
    table = table[columns]
    table["meets"] = table["attainment"] >= target
    return table


def first_miss(sweep: pd.DataFrame) -> float:
    """The first load of an ``attainment_sweep`` that misses its target (NaN when every load meets it)."""
    if not isinstance(sweep, pd.DataFrame) or "meets" not in sweep.columns:
        raise TypeError(f"sweep must be a table from attainment_sweep (a 'meets' column), got {_kind(sweep)}")
    misses = sweep.index[~sweep["meets"].astype(bool)]
    return float(misses[0]) if len(misses) else float("nan")


def database_utilization(
    requests_per_s: float, *, hit_ratio: float, read_s: float, other_reads_per_s: float = 0.0
) -> float:
    """The busy share of the database behind a feature cache: it serves the reads the cache misses
    (``requests_per_s`` x (1 - ``hit_ratio``)) and ``other_reads_per_s`` from other services,
    ``read_s`` seconds each. At 1 or more it cannot keep up."""
    requests_per_s = check_non_negative("requests_per_s", requests_per_s)
    hit_ratio = check_probability("hit_ratio", hit_ratio)
    read_s = check_seconds("read_s", read_s, positive=True)
    other_reads_per_s = check_non_negative("other_reads_per_s", other_reads_per_s)
    return (requests_per_s * (1.0 - hit_ratio) + other_reads_per_s) * read_s


def feature_fetch(
    requests_per_s: float,
    *,
    hit_ratio: float,
    read_s: float,
    other_reads_per_s: float = 0.0,
    cache_latency_s: float = 0.0,
) -> IngestionConfig:
    """The feature fetch in front of a pool at ``requests_per_s``: a cache answers ``hit_ratio`` of the
    reads in ``cache_latency_s``; a miss reads the database (``database_utilization``), an M/M/1 queue
    whose time in system is exponential with mean ``read_s / (1 - utilization)``, drawn for each read
    with that mean and a coefficient of variation of 1. Raises ``ValueError`` when the database cannot
    keep up (utilization >= 1: no steady state)."""
    utilization = database_utilization(
        requests_per_s, hit_ratio=hit_ratio, read_s=read_s, other_reads_per_s=other_reads_per_s
    )
    if utilization >= 1.0:
        raise ValueError(
            f"the database cannot keep up: utilization {utilization:.3g} >= 1 at requests_per_s="
            f"{requests_per_s:g}, hit_ratio={hit_ratio:g}, read_s={read_s:g}, other_reads_per_s="
            f"{other_reads_per_s:g}; raise hit_ratio or lower the load"
        )
    cache_latency_s = check_seconds("cache_latency_s", cache_latency_s)
    return IngestionConfig(
        fetch_mean_s=read_s / (1.0 - utilization),
        fetch_cv=1.0,
        cache_hit_ratio=hit_ratio,
        cache_latency_s=cache_latency_s,
    )
