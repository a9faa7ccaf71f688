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
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from ._validate import MAX_REPLICAS, _kind, check_int, check_positive, check_probability
from .cost import SECONDS_PER_HOUR
from .disagg import DisaggregatedConfig, DisaggregatedResult, simulate_disaggregated
from .metrics import token_slo_met
from .simulator import PlatformConfig, SimulationResult, simulate

__all__ = ["slo_attainment", "Sizing", "fewest_replicas", "usd_per_1k_requests"]


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
