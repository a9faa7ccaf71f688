"""How fast the continuous-batching engine simulates: requests per second of wall time, events per request.

Two cases, both Llama-3.1-8B (bf16) on H100 SXM with the fitted step-time profile ``"h100-80gb"``
(``steptime.load_step_profile``), ``ContinuousBatcherConfig()`` (vLLM's defaults: 256 sequences,
8,192 tokens an iteration, chunked prefill), prompts of 300 to 700 tokens and answers of 150 to 250
(about 200), Poisson arrivals generated before the clock starts:

1. **a pool**: ``--replicas`` replicas (default 20) at ``--load`` (default 0.7) of the rate at which
   the pool's mean TTFT passes 1 s, measured by this script on a short sweep first;
2. **the 10M-user peak hour**: 6.25M requests in one hour (1,736 requests/s), on the replicas that
   hold the same load per replica; ``--peak-minutes`` shortens it (the rate stays).

Each case prints the requests simulated per second of wall time (``simulate`` alone), the mean and p99
TTFT, the mean latency and the mean running batch. Such a plain platform runs in the compiled loop
(``sim.fastloop``); the pool is also run in simpy (``fastloop.enabled = False``) on up to 20,000
requests, for its speed and its simpy events per request. The loop's first call (numba's import, and
its compilation unless ``__pycache__`` holds it) is timed apart, before the cases. Run::

    .venv/bin/python benchmarks/bench_continuous.py                 # about 5 minutes
    .venv/bin/python benchmarks/bench_continuous.py --quick         # under a minute
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import simpy

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

from scaleplay.sim import fastloop  # noqa: E402
from scaleplay.simulator import ContinuousBatcherConfig, PlatformConfig, PoolConfig, simulate  # noqa: E402
from scaleplay.steptime import load_step_profile  # noqa: E402

PEAK_REQUESTS_PER_HOUR = 6_250_000


def arrivals(count: int, rate_per_s: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "request_id": np.arange(count, dtype=np.int64),
            "t_s": np.cumsum(rng.exponential(1.0 / rate_per_s, count)),
            "class_name": "chat",
            "priority": np.zeros(count, dtype=np.int64),
            "tokens_in": rng.integers(300, 701, count),
            "tokens_out": rng.integers(150, 251, count),
            "difficulty": np.full(count, 0.5),
        }
    )


def platform(replicas: int) -> PlatformConfig:
    step = load_step_profile("h100-80gb", "Llama-3.1-8B", 1)
    return PlatformConfig(pool=PoolConfig(replicas, step, ContinuousBatcherConfig()), network_hop_s=0.0)


class EventCounter:
    """Counts the events simpy schedules while it is entered."""

    def __enter__(self) -> EventCounter:
        self.count = 0
        self.original = simpy.Environment.schedule

        def counting(env: simpy.Environment, *args: object, **kwargs: object) -> None:
            self.count += 1
            self.original(env, *args, **kwargs)

        simpy.Environment.schedule = counting
        return self

    def __exit__(self, *exc: object) -> None:
        simpy.Environment.schedule = self.original


def run(replicas: int, rate_per_s: float, count: int, seed: int) -> dict[str, float]:
    table = arrivals(count, rate_per_s, seed)
    config = platform(replicas)
    start = time.perf_counter()
    result = simulate(table, config, seed=seed)
    wall_s = time.perf_counter() - start
    log = result.log
    ttft = log["first_token_s"] - log["arrived_s"] if "first_token_s" in log else log["latency_s"] * np.nan
    return {
        "requests": count,
        "wall_s": wall_s,
        "requests_per_s": count / wall_s,
        "mean_ttft_s": float(ttft.mean()),
        "p99_ttft_s": float(ttft.quantile(0.99)),
        "mean_latency_s": float(log["latency_s"].mean()),
        "mean_running": float(log["batch_size"].mean()),
    }


def in_simpy(replicas: int, rate_per_s: float, count: int, seed: int) -> tuple[float, float]:
    """The simpy engine's requests per second of wall time, and its events per request."""
    table = arrivals(count, rate_per_s, seed)
    fastloop.enabled = False
    try:
        start = time.perf_counter()
        simulate(table, platform(replicas), seed=seed)
        wall_s = time.perf_counter() - start
        with EventCounter() as counter:
            simulate(table, platform(replicas), seed=seed)
    finally:
        fastloop.enabled = True
    return count / wall_s, counter.count / count


def warm_up(seed: int) -> tuple[float, str]:
    """The compiled loop's first call (numba's import, then its compilation or its load from the cache),
    so that no case below pays for it."""
    start = time.perf_counter()
    simulate(arrivals(100, 5.0, seed), platform(1), seed=seed)
    wall_s = time.perf_counter() - start
    stats = getattr(fastloop.play, "stats", None)  # a numba dispatcher's, once compiled
    if stats is None:
        return wall_s, "not used: turned off, or numba missing"
    return wall_s, "loaded from the cache" if stats.cache_hits else "compiled"


def knee_rate_per_replica(seed: int, count: int) -> float:
    """The lowest rate per replica (of a sweep on one replica) whose mean TTFT passes 1 s."""
    for rate in np.arange(2.0, 40.0, 1.0):
        row = run(1, float(rate), count, seed)
        if row["mean_ttft_s"] > 1.0:
            return float(rate)
    return 40.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--replicas", type=int, default=20)
    parser.add_argument("--load", type=float, default=0.7)
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--peak-minutes", type=float, default=60.0)
    parser.add_argument("--skip-peak", action="store_true")
    parser.add_argument("--quick", action="store_true", help="20,000 requests, 3 minutes of the peak hour")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.quick:
        args.requests, args.peak_minutes = 20_000, 3.0

    first_s, how = warm_up(args.seed)
    print(f"compiled loop: first call {first_s:.1f} s (loop {how}); not in the times below")
    knee = knee_rate_per_replica(args.seed, 2_000)
    per_replica = args.load * knee
    print(
        f"knee: mean TTFT passes 1 s at {knee:g} requests/s on one replica; load {args.load:g} -> "
        f"{per_replica:.1f} requests/s per replica"
    )
    rate = per_replica * args.replicas
    row = run(args.replicas, rate, args.requests, args.seed)
    simpy_per_s, events = in_simpy(args.replicas, rate, min(args.requests, 20_000), args.seed)
    print(
        f"pool: {args.replicas} replicas, {rate:.0f} requests/s offered, {row['requests']:,} requests in "
        f"{row['wall_s']:.2f} s = {row['requests_per_s']:,.0f} requests/s simulated (target >= 100,000); "
        f"simpy: {simpy_per_s:,.0f} requests/s, {events:.2f} events per request; mean TTFT "
        f"{row['mean_ttft_s']:.3f} s, p99 "
        f"{row['p99_ttft_s']:.3f} s; mean latency {row['mean_latency_s']:.2f} s; mean running "
        f"{row['mean_running']:.0f}"
    )
    if args.skip_peak:
        return
    peak_rate = PEAK_REQUESTS_PER_HOUR / 3600.0
    replicas = math.ceil(peak_rate / per_replica)
    count = int(peak_rate * args.peak_minutes * 60.0)
    row = run(replicas, peak_rate, count, args.seed)
    hour_s = row["wall_s"] * 60.0 / args.peak_minutes
    print(
        f"peak hour: {peak_rate:.0f} requests/s on {replicas} replicas, {args.peak_minutes:g} minutes = "
        f"{count:,} requests in {row['wall_s']:.1f} s ({row['requests_per_s']:,.0f} requests/s); the hour "
        f"would take {hour_s:.0f} s (target < 60 s); mean TTFT {row['mean_ttft_s']:.3f} s"
    )


if __name__ == "__main__":
    main()
