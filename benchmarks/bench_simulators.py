"""Speed and fidelity of three simulators of the same M/M/4 queue at 80% utilization, side by side.

    python benchmarks/bench_simulators.py                      # 1M customers or 60 s per simulator
    python benchmarks/bench_simulators.py --customers 200000 --seconds 10   # a quick run

Each simulator runs the queue (arrival rate 3.2/s, service rate 1/s, 4 servers) for ``--customers``
customers, or fewer if a pilot run says that would take longer than ``--seconds``. It prints the
customers simulated per second of wall time, the ratio to ciw measured in this same run, and the mean
wait against Erlang C with a 95% confidence interval (the first 10% of customers left out as warm-up).
Then a batching pool (8 replicas, batches of up to 32, an affine batch time) shows the full model's
speed when batching packs many requests into each event.

Targets (reported, not asserted): the simpy model at least 2x ciw, the fast path at least 100x ciw,
each mean wait within 1% of Erlang C (a single run of 1M customers only resolves about +-2% at this
load, so read the error next to its confidence interval), the batching pool at least 100k requests/s.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable

import ciw
import numpy as np

from scaleplay.fastpath import exponential_arrays, fifo_waits_s, mmc_replications
from scaleplay.metrics import batch_means_ci, replication_ci
from scaleplay.profiles import AffineServiceTime, RandomServiceTime
from scaleplay.queueing import mmc_mean_wait_s
from scaleplay.simulator import BatcherConfig, PlatformConfig, PoolConfig, simulate
from scaleplay.workload import Workload, generate_arrivals

ARRIVAL_RATE_PER_S, SERVICE_RATE_PER_S, SERVERS = 3.2, 1.0, 4
WARMUP_SHARE = 0.1
REPLICATIONS = 100
PILOT_CUSTOMERS = 20_000
BLOCK_CUSTOMERS = 20_000
LONG_FACTOR = 100  # the fidelity run simulates this many times --customers

# A run returns the waits of its customers in arrival order (1-D), or per-replication mean waits.
Run = Callable[[int, int], np.ndarray]


def run_ciw(customers: int, seed: int) -> np.ndarray:
    network = ciw.create_network(
        arrival_distributions=[ciw.dists.Exponential(rate=ARRIVAL_RATE_PER_S)],
        service_distributions=[ciw.dists.Exponential(rate=SERVICE_RATE_PER_S)],
        number_of_servers=[SERVERS],
    )
    ciw.seed(seed)
    simulation = ciw.Simulation(network)
    simulation.simulate_until_max_customers(customers, method="Finish")
    records = sorted(simulation.get_all_records(), key=lambda r: r.arrival_date)
    return np.array([r.waiting_time for r in records])


def run_model(customers: int, seed: int) -> np.ndarray:
    workload = Workload.from_rate(ARRIVAL_RATE_PER_S)
    arrivals = generate_arrivals(workload, customers / ARRIVAL_RATE_PER_S, seed=seed)
    service = RandomServiceTime(AffineServiceTime(fixed_s=1.0 / SERVICE_RATE_PER_S), "exponential")
    config = PlatformConfig(pool=PoolConfig(replicas=SERVERS, service=service, policy="shared_queue"))
    log = simulate(arrivals, config, seed=seed).log
    return (log["model_start_s"] - log["arrived_s"]).to_numpy()


def run_fast_stream(customers: int, seed: int) -> np.ndarray:
    arrivals, services = exponential_arrays(ARRIVAL_RATE_PER_S, SERVICE_RATE_PER_S, customers, 1, seed)
    return fifo_waits_s(arrivals[0], services[0], SERVERS)


def run_fast_replications(customers: int, seed: int) -> np.ndarray:
    per_replication = max(customers // REPLICATIONS, 10)
    runs = mmc_replications(
        ARRIVAL_RATE_PER_S,
        SERVICE_RATE_PER_S,
        SERVERS,
        per_replication,
        REPLICATIONS,
        seed,
        warmup_share=WARMUP_SHARE,
    )
    return runs["mean_wait_s"].to_numpy()


def run_fast_long(customers: int, seed: int) -> np.ndarray:
    """Many replications in blocks of ``REPLICATIONS`` x ``BLOCK_CUSTOMERS``, to keep memory small."""
    per_block = REPLICATIONS * BLOCK_CUSTOMERS
    blocks = max(1, round(customers / per_block))
    return np.concatenate(
        [run_fast_replications(min(customers, per_block), seed * 10_000 + b) for b in range(blocks)]
    )


def timed(run: Run, customers: int, seed: int) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    out = run(customers, seed)
    return out, time.perf_counter() - start


def budgeted(run: Run, customers: int, seconds: float, seed: int) -> tuple[np.ndarray, int, float]:
    """Run ``customers``, or as many as a pilot run says fit in ``seconds``."""
    pilot = min(customers, PILOT_CUSTOMERS)
    out, wall_s = timed(run, pilot, seed)
    target = min(customers, int(pilot / wall_s * seconds))
    if target <= pilot:
        return out, pilot, wall_s
    out, wall_s = timed(run, target, seed)
    return out, target, wall_s


def mean_wait_ci(out: np.ndarray, replications: bool) -> tuple[float, float]:
    if replications:
        return replication_ci(out)
    return batch_means_ci(out[int(WARMUP_SHARE * len(out)) :], batches=20)


def bench_mmc(customers: int, seconds: float, seed: int) -> None:
    theory_s = mmc_mean_wait_s(ARRIVAL_RATE_PER_S, SERVICE_RATE_PER_S, SERVERS)
    print(
        f"M/M/{SERVERS} at utilization {ARRIVAL_RATE_PER_S / (SERVERS * SERVICE_RATE_PER_S):.2f}: "
        f"Erlang C mean wait {theory_s:.4f} s. "
        f"Budget per simulator: {customers:,} customers or {seconds:g} s."
    )
    simulators: list[tuple[str, Run, bool]] = [
        ("ciw", run_ciw, False),
        ("simpy model (simulator.simulate)", run_model, False),
        ("fast path, one stream", run_fast_stream, False),
        (f"fast path, {REPLICATIONS} replications", run_fast_replications, True),
    ]
    header = f"{'simulator':34} {'customers':>11} {'wall_s':>8} {'customers/s':>12} {'vs ciw':>8}"
    print(f"{header} {'mean_wait_s':>11} {'error':>7} {'95% CI':>8}")
    simulators.append((f"fast path, {LONG_FACTOR}x customers", run_fast_long, True))
    ciw_rate = None
    for name, run, replications in simulators:
        wanted = customers * (LONG_FACTOR if run is run_fast_long else 1)
        out, simulated, wall_s = budgeted(run, wanted, seconds, seed)
        rate = simulated / wall_s
        ciw_rate = ciw_rate or rate
        mean_s, half_width_s = mean_wait_ci(out, replications)
        print(
            f"{name:34} {simulated:>11,} {wall_s:>8.2f} {rate:>12,.0f} {rate / ciw_rate:>7.1f}x "
            f"{mean_s:>11.4f} {(mean_s - theory_s) / theory_s:>+7.2%} {half_width_s / theory_s:>7.2%}"
        )


def bench_batching(requests: int, seconds: float, seed: int) -> None:
    replicas, max_batch = 8, 32
    curve = AffineServiceTime(fixed_s=0.05, per_item_s=0.005)  # a batch of 32 takes 0.21 s
    capacity_per_s = replicas * max_batch / curve.batch_time_s(max_batch, 0, 0)
    rate_per_s = 0.8 * capacity_per_s
    config = PlatformConfig(
        pool=PoolConfig(replicas=replicas, service=curve, batcher=BatcherConfig(max_batch_size=max_batch))
    )

    def run(count: int, seed: int) -> np.ndarray:
        arrivals = generate_arrivals(Workload.from_rate(rate_per_s), count / rate_per_s, seed=seed)
        log = simulate(arrivals, config, seed=seed).log
        return log["batch_size"].to_numpy()

    sizes, simulated, wall_s = budgeted(run, requests, seconds, seed)
    print(
        f"\nBatching pool: {replicas} replicas, batches of up to {max_batch}, {rate_per_s:,.0f} requests/s "
        f"(80% of full-batch capacity).\n{simulated:,} requests in {wall_s:.2f} s: "
        f"{simulated / wall_s:,.0f} requests/s simulated (target >= 100,000); "
        f"mean batch size {len(sizes) / np.sum(1.0 / sizes):.1f}."
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000, help="customers per simulator")
    parser.add_argument("--seconds", type=float, default=60.0, help="wall-clock budget per simulator")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.customers < 1000 or args.seconds <= 0:
        parser.error("--customers must be >= 1000 and --seconds > 0")
    print(
        f"Python {platform.python_version()}, numpy {np.__version__}, ciw {ciw.__version__}, "
        f"{os.cpu_count()} CPUs, {platform.machine()}"
    )
    bench_mmc(args.customers, args.seconds, args.seed)
    bench_batching(args.customers, args.seconds, args.seed)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
