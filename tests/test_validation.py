"""The simpy platform against queueing theory and against ciw, inside 95% confidence intervals.

Each check runs independent replications (their own arrival stream and seed), drops a warm-up share
of every replication, and asks that the exact value lie inside the Student t interval of the
replication means. The seeds are fixed, so a pass is reproducible; a model error of a few percent
moves the interval off the exact value.
"""

from __future__ import annotations

import ciw
import numpy as np
import pandas as pd
import pytest

from conftest import (
    bulk_no_late_entry_markov_chain,
    erlang_arrivals_mean_wait_s,
    make_arrivals,
    mm1k_blocking,
    poisson_arrivals,
    priority_mmc_mean_waits_s,
)
from scaleplay.fastpath import fifo_waits_s
from scaleplay.metrics import replication_ci
from scaleplay.profiles import AffineServiceTime, RandomServiceTime
from scaleplay.queueing import bulk_service_mean_in_system, erlang_c, md1_mean_wait_s, mmc_mean_wait_s
from scaleplay.rng import stream
from scaleplay.simulator import BatcherConfig, GatewayConfig, PlatformConfig, PoolConfig, simulate

REPLICATIONS = 10
WARMUP_SHARE = 0.1


def exponential_service(mean_s: float) -> RandomServiceTime:
    return RandomServiceTime(AffineServiceTime(fixed_s=mean_s), "exponential")


def replicate(config: PlatformConfig, rate_per_s: float, customers: int, seed: int) -> list[pd.DataFrame]:
    """The logs of independent replications, warm-up rows dropped."""
    logs = []
    for rep in range(REPLICATIONS):
        arrivals = poisson_arrivals(rate_per_s, customers, seed, rep)
        log = simulate(arrivals, config, seed=seed * 1000 + rep).log
        logs.append(log.iloc[int(WARMUP_SHARE * customers) :])
    return logs


def assert_in_ci(values: list[float], exact: float, what: str) -> None:
    mean, half_width = replication_ci(values)
    assert abs(mean - exact) <= half_width, f"{what}: exact {exact:.5g} outside {mean:.5g} ± {half_width:.3g}"
    # The interval must also be tight enough to mean something.
    assert half_width <= 0.06 * max(abs(exact), 1e-9) + 1e-3, f"{what}: interval ±{half_width:.3g} too wide"


def waits(log: pd.DataFrame) -> np.ndarray:
    return (log["model_start_s"] - log["arrived_s"]).to_numpy()


@pytest.mark.parametrize(
    ("servers", "load_per_server", "customers"),
    [(1, 0.8, 40_000), (4, 0.5, 20_000), (4, 0.8, 30_000), (4, 0.9, 120_000)],
)
def test_mmc_wait_and_wait_probability_match_erlang_c(servers, load_per_server, customers):
    mu = 1.0
    lam = load_per_server * servers * mu
    config = PlatformConfig(pool=PoolConfig(replicas=servers, service=exponential_service(1.0 / mu)))
    logs = replicate(config, lam, customers, seed=11 + servers)
    assert_in_ci([waits(log).mean() for log in logs], mmc_mean_wait_s(lam, mu, servers), "Wq")
    assert_in_ci([(waits(log) > 0).mean() for log in logs], erlang_c(servers, lam / mu), "P(wait)")


def test_md1_wait_matches_pollaczek_khinchine():
    lam, service_s = 0.8, 1.0
    config = PlatformConfig(pool=PoolConfig(replicas=1, service=AffineServiceTime(fixed_s=service_s)))
    logs = replicate(config, lam, 40_000, seed=21)
    assert_in_ci([waits(log).mean() for log in logs], md1_mean_wait_s(lam, service_s), "M/D/1 Wq")


def test_batching_replica_matches_bulk_service_queue():
    """Exponential batch time of mean 1 whatever the size, take up to b = 4 waiting: L = 10.66."""
    lam, mu, b = 3.0, 1.0, 4
    batcher = BatcherConfig(max_batch_size=b)
    pool = PoolConfig(replicas=1, service=exponential_service(1.0 / mu), batcher=batcher)
    logs = replicate(PlatformConfig(pool=pool), lam, 100_000, seed=31)
    in_system = [lam * (log["model_end_s"] - log["arrived_s"]).mean() for log in logs]
    assert_in_ci(in_system, bulk_service_mean_in_system(lam, mu, b), "L (Little)")
    assert max(log["batch_size"].max() for log in logs) == b


def test_bulk_reference_is_its_markov_chain_and_not_the_late_entry_queue():
    """The reference above against a numerical solve; the late-entry formula (7.94) is another model."""
    exact = bulk_service_mean_in_system(3.0, 1.0, 4)
    assert exact == pytest.approx(bulk_no_late_entry_markov_chain(3.0, 1.0, 4), rel=1e-9)
    assert exact == pytest.approx(10.657, abs=1e-3)
    assert bulk_service_mean_in_system(3.0, 1.0, 4, late_entry=True) == pytest.approx(7.943, abs=1e-3)


def test_round_robin_replicas_are_erlang_arrival_queues():
    lam, mu, c = 3.2, 1.0, 4
    pool = PoolConfig(replicas=c, service=exponential_service(1.0 / mu), policy="round_robin")
    logs = replicate(PlatformConfig(pool=pool), lam, 30_000, seed=41)
    assert_in_ci([waits(log).mean() for log in logs], erlang_arrivals_mean_wait_s(c, lam, mu), "E4/M/1 Wq")


def test_gateway_capacity_blocks_like_mm1k():
    lam, mu, room = 1.2, 1.0, 3
    config = PlatformConfig(
        pool=PoolConfig(replicas=1, service=exponential_service(1.0 / mu)),
        gateway=GatewayConfig(queue_capacity=room),
    )
    logs = replicate(config, lam, 20_000, seed=51)
    blocked = [(log["reject_reason"] == "queue_full").mean() for log in logs]
    assert_in_ci(blocked, mm1k_blocking(lam / mu, room), "P(block)")


def test_saturated_deterministic_batches_reach_b_over_t_b():
    """Overloaded, every batch is full: each replica completes B / t(B) requests per second."""
    b, replicas = 8, 2
    service = AffineServiceTime(fixed_s=0.05, per_item_s=0.01)
    capacity_per_s = replicas * b / service.batch_time_s(b, 0, 0)
    arrivals = poisson_arrivals(1.5 * capacity_per_s, 40_000, seed=61)
    batcher = BatcherConfig(max_batch_size=b, max_wait_s=0.02)
    pool = PoolConfig(replicas=replicas, service=service, batcher=batcher)
    result = simulate(arrivals, PlatformConfig(pool=pool), seed=61, horizon_s=200.0)
    window = result.timeline[result.timeline["t_s"] >= 20.0]
    throughput_per_s = window["completed"].sum() / (len(window) * 1.0)
    assert throughput_per_s == pytest.approx(capacity_per_s, rel=0.005)
    assert window["mean_batch_size"].min() == b


def ciw_priority_waits(
    rates: list[float], mu: float, servers: int, max_time: float, seed: int
) -> list[float]:
    """Per-class mean waits from one ciw run of the same non-preemptive priority M/M/c."""
    classes = [f"Class {k}" for k in range(len(rates))]
    network = ciw.create_network(
        arrival_distributions={k: [ciw.dists.Exponential(r)] for k, r in zip(classes, rates, strict=True)},
        service_distributions={k: [ciw.dists.Exponential(mu)] for k in classes},
        number_of_servers=[servers],
        priority_classes={k: p for p, k in enumerate(classes)},
    )
    ciw.seed(seed)
    sim = ciw.Simulation(network)
    sim.simulate_until_max_time(max_time)
    records = [r for r in sim.get_all_records() if r.arrival_date > WARMUP_SHARE * max_time]
    return [float(np.mean([r.waiting_time for r in records if r.customer_class == k])) for k in classes]


def test_priority_classes_match_ciw_and_cobham():
    rates, mu, servers = [0.6, 1.0], 1.0, 2
    lam = sum(rates)
    ours = []
    for rep in range(REPLICATIONS):
        arrivals = poisson_arrivals(lam, 20_000, seed=71, replication=rep)
        # Thin the Poisson stream into two independent Poisson classes.
        uniform = stream(71, "test-classes", rep).random(len(arrivals))
        arrivals["priority"] = (uniform >= rates[0] / lam).astype(np.int64)
        config = PlatformConfig(pool=PoolConfig(replicas=servers, service=exponential_service(1.0 / mu)))
        log = simulate(arrivals, config, seed=710 + rep).log.iloc[2_000:]
        ours.append([waits(log[log["priority"] == k]).mean() for k in range(2)])
    theirs = [ciw_priority_waits(rates, mu, servers, 12_000.0, seed=rep) for rep in range(6)]
    exact = priority_mmc_mean_waits_s(rates, mu, servers)
    for k in range(2):
        ours_k = [w[k] for w in ours]
        theirs_k = [w[k] for w in theirs]
        assert_in_ci(ours_k, exact[k], f"class {k} wait vs Cobham")
        (m1, h1), (m2, h2) = replication_ci(ours_k), replication_ci(theirs_k)
        assert abs(m1 - m2) <= np.hypot(h1, h2), f"class {k}: ours {m1:.4f}±{h1:.3f}, ciw {m2:.4f}±{h2:.3f}"


@pytest.mark.parametrize("servers", [1, 3])
def test_unbatched_shared_queue_agrees_with_the_fast_path(servers):
    """Same arrays in, same waits out: the simpy model and the Kiefer-Wolfowitz recursion."""
    rng = np.random.default_rng(5)
    t_s = np.cumsum(rng.exponential(1.0 / (0.85 * servers), 20_000))
    service_s = rng.exponential(1.0, 20_000)
    config = PlatformConfig(pool=PoolConfig(replicas=servers, service=exponential_service(1.0)))
    log = simulate(make_arrivals(t_s, service_s=service_s), config, seed=1).log
    expected = fifo_waits_s(t_s, service_s, servers)
    np.testing.assert_allclose(waits(log), expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose((log["model_end_s"] - log["model_start_s"]).to_numpy(), service_s, atol=1e-9)


def test_littles_law_holds_on_the_timeline():
    """Time-average queue and busy replicas equal the summed waits and service over the horizon."""
    lam, mu, c = 3.0, 1.0, 4
    config = PlatformConfig(pool=PoolConfig(replicas=c, service=exponential_service(1.0 / mu)))
    result = simulate(poisson_arrivals(lam, 20_000, seed=81), config, seed=81, timeline_step_s=7.0)
    log, timeline = result.log, result.timeline
    widths = np.diff(np.append(timeline["t_s"].to_numpy(), result.horizon_s))
    mean_queue = float((timeline["queue_length"] * widths).sum() / result.horizon_s)
    mean_busy = float((timeline["busy_replicas"] * widths).sum() / result.horizon_s)
    rate_per_s = len(log) / result.horizon_s
    assert mean_queue == pytest.approx(rate_per_s * waits(log).mean(), rel=1e-9)
    service = (log["model_end_s"] - log["model_start_s"]).mean()
    assert mean_busy == pytest.approx(rate_per_s * service, rel=1e-9)
    # ... and the offered load lam / mu sits inside the interval of batch means of busy replicas.
    per_interval = timeline["busy_replicas"].to_numpy()[:-1]
    means = per_interval[: len(per_interval) // 20 * 20].reshape(20, -1).mean(axis=1)
    mean, half_width = replication_ci(means)
    assert abs(mean - lam / mu) <= half_width
