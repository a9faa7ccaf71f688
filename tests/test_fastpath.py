"""The fast path against hand computation, against itself, against Erlang C, and against bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import make_arrivals
from scaleplay import fastpath
from scaleplay.fastpath import exponential_arrays, fifo_waits_s, mmc_replications
from scaleplay.metrics import replication_ci
from scaleplay.profiles import AffineServiceTime
from scaleplay.queueing import erlang_c, mmc_mean_wait_s
from scaleplay.simulator import BatcherConfig, PlatformConfig, PoolConfig, simulate


def _random_arrays(replications: int, customers: int, load: float, seed: int = 3):
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(1.0, (replications, customers)), axis=1)
    return arrivals, rng.exponential(load, (replications, customers))


def test_hand_computed_example():
    # One server: 0 -> [0, 2]; 1 waits to 2 -> [2, 4]; 2 waits to 4 -> [4, 5]; 2.5 waits to 5.
    arrivals, services = [0.0, 1.0, 2.0, 2.5], [2.0, 2.0, 1.0, 1.0]
    assert fifo_waits_s(arrivals, services, 1).tolist() == [0.0, 1.0, 2.0, 2.5]
    # Two servers: a [0, 2], b [1, 3], 2.0 takes a at once [2, 3], 2.5 waits for the first free (3).
    assert fifo_waits_s(arrivals, services, 2).tolist() == [0.0, 0.0, 0.0, 0.5]
    assert fifo_waits_s(arrivals, services, 3).tolist() == [0.0, 0.0, 0.0, 0.0]


def test_simultaneous_arrivals_queue_in_order():
    waits = fifo_waits_s([1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0], 2)
    assert waits.tolist() == [0.0, 0.0, 1.0, 2.0]


@pytest.mark.parametrize("replications", [1, 40])
def test_single_server_kiefer_wolfowitz_equals_lindley(replications):
    arrivals, services = _random_arrays(replications, 2000, load=0.9)
    lindley = fastpath._lindley(arrivals, services)
    heap = np.stack(
        [fastpath._kiefer_wolfowitz_heap(a, s, 1) for a, s in zip(arrivals, services, strict=True)]
    )
    vectorized = fastpath._kiefer_wolfowitz_numpy(arrivals, services, 1)
    # The cumulative-sum form rounds differently from the recursion, by far less than 1e-9 s.
    np.testing.assert_allclose(heap, lindley, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(vectorized, heap)
    assert (lindley > 0).mean() > 0.5  # a busy queue, so the comparison means something


def test_heap_and_vectorized_paths_agree_exactly():
    arrivals, services = _random_arrays(fastpath._HEAP_BELOW_REPLICATIONS + 8, 500, load=3.5)
    both = fifo_waits_s(arrivals, services, 4)  # vectorized over replications
    one_by_one = np.stack([fifo_waits_s(a, s, 4) for a, s in zip(arrivals, services, strict=True)])
    np.testing.assert_array_equal(both, one_by_one)
    assert both.shape == arrivals.shape


@settings(max_examples=60, deadline=None)
@given(
    gaps=st.lists(st.floats(0.0, 5.0), min_size=1, max_size=40),
    data=st.data(),
    servers=st.integers(1, 6),
)
def test_more_servers_never_wait_longer(gaps, data, servers):
    services = data.draw(st.lists(st.floats(0.0, 10.0), min_size=len(gaps), max_size=len(gaps)))
    arrivals = np.cumsum(gaps)
    fewer = fifo_waits_s(arrivals, services, servers)
    more = fifo_waits_s(arrivals, services, servers + 1)
    assert (fewer >= 0).all()
    assert (more <= fewer + 1e-9).all()
    # FIFO: requests start in arrival order.
    assert (np.diff(arrivals + fewer) >= -1e-9).all()
    assert (fifo_waits_s(arrivals, services, len(gaps)) == 0).all()


@pytest.mark.parametrize(
    ("servers", "arrival_rate_per_s"),
    [(1, 0.7), (4, 3.2), (16, 14.4)],  # utilization 0.7, 0.8, 0.9
)
def test_mmc_against_erlang_c(servers, arrival_rate_per_s):
    # A seed per case: with one seed, common random numbers would make the cases pass or fail together.
    runs = mmc_replications(arrival_rate_per_s, 1.0, servers, 20_000, 40, seed=servers)
    mean_wait, half_width = replication_ci(runs["mean_wait_s"])
    expected_wait = mmc_mean_wait_s(arrival_rate_per_s, 1.0, servers)
    assert abs(mean_wait - expected_wait) <= half_width
    assert half_width < 0.1 * expected_wait  # tight enough to catch a wrong model
    p_wait, p_half_width = replication_ci(runs["wait_probability"])
    assert abs(p_wait - erlang_c(servers, arrival_rate_per_s)) <= p_half_width
    sojourn, sojourn_half_width = replication_ci(runs["mean_sojourn_s"])
    assert abs(sojourn - (expected_wait + 1.0)) <= sojourn_half_width


def test_mm1_closed_form():
    # M/M/1: W = rho / (mu - lambda), here 0.5 / (2 - 1) = 0.5 s, and P(wait) = rho.
    runs = mmc_replications(1.0, 2.0, 1, 20_000, 40, seed=5)
    mean_wait, half_width = replication_ci(runs["mean_wait_s"])
    assert abs(mean_wait - 0.5) <= half_width
    p_wait, p_half_width = replication_ci(runs["wait_probability"])
    assert abs(p_wait - 0.5) <= p_half_width


def test_replications_are_reproducible_and_independent_of_their_number():
    few = mmc_replications(3.0, 1.0, 4, 300, 3, seed=2)
    many = mmc_replications(3.0, 1.0, 4, 300, 50, seed=2)
    np.testing.assert_array_equal(few.to_numpy(), many.iloc[:3].to_numpy())
    assert list(few.columns) == [
        "replication",
        "customers",
        "mean_wait_s",
        "wait_probability",
        "mean_sojourn_s",
    ]
    assert (few["customers"] == 270).all()  # 10% warm-up left out
    assert not np.array_equal(
        few["mean_wait_s"], mmc_replications(3.0, 1.0, 4, 300, 3, seed=3)["mean_wait_s"]
    )


def test_exponential_arrays_use_named_streams():
    arrivals, services = exponential_arrays(2.0, 1.0, 1000, 2, seed=7)
    assert arrivals.shape == services.shape == (2, 1000)
    assert (np.diff(arrivals, axis=1) >= 0).all()
    assert abs(arrivals[:, -1].mean() / 1000 - 0.5) < 0.05 and abs(services.mean() - 1.0) < 0.1
    from scaleplay.rng import stream

    np.testing.assert_array_equal(services[1], stream(7, "service", 1).exponential(1.0, 1000))


def test_empty_input():
    assert fifo_waits_s([], [], 3).shape == (0,)
    assert fifo_waits_s(np.zeros((2, 0)), np.zeros((2, 0)), 1).shape == (2, 0)


@pytest.mark.parametrize(
    ("arrivals", "services", "servers", "error", "message"),
    [
        ([0.0, 1.0], [1.0], 1, ValueError, "same shape"),
        ([0.0, -1.0], [1.0, 1.0], 1, ValueError, "arrival_times_s must be >= 0"),
        ([0.0, 1.0], [1.0, -0.5], 1, ValueError, r"service_times_s must be >= 0; entry \(1,\) is -0.5"),
        ([0.0, 2.0, 1.0], [1.0, 1.0, 1.0], 2, ValueError, "must be sorted"),
        ([0.0, np.nan], [1.0, 1.0], 1, ValueError, "arrival_times_s must be finite"),
        ([0.0, 1.0], [np.inf, 1.0], 1, ValueError, "service_times_s must be finite"),
        ([0.0, 1.0], [1.0, 1.0], 0, ValueError, "servers must be >= 1"),
        ([0.0, 1.0], [1.0, 1.0], 1.5, TypeError, "servers must be an integer"),
        (np.zeros((1, 1, 2)), np.zeros((1, 1, 2)), 1, ValueError, "1-D"),
        (["a", "b"], [1.0, 1.0], 1, TypeError, "arrival_times_s must be an array of real numbers"),
    ],
)
def test_bad_input(arrivals, services, servers, error, message):
    with pytest.raises(error, match=message):
        fifo_waits_s(arrivals, services, servers)


def test_bad_replication_settings():
    with pytest.raises(ValueError, match=r"arrival_rate_per_s must lie in \[1e-06, 1e\+09\] per s, got 0.0"):
        mmc_replications(0.0, 1.0, 1, 10, 2, seed=1)
    with pytest.raises(ValueError, match="warmup_share must lie in"):
        mmc_replications(1.0, 2.0, 1, 10, 2, seed=1, warmup_share=1.0)
    with pytest.raises(ValueError, match="replications must be >= 1"):
        mmc_replications(1.0, 2.0, 1, 10, 0, seed=1)


def _simpy_waits_s(arrival_times_s: np.ndarray, service_times_s: np.ndarray, servers: int) -> np.ndarray:
    config = PlatformConfig(
        pool=PoolConfig(
            replicas=servers,
            service=AffineServiceTime(fixed_s=1.0),  # unused: every request brings its service_s
            batcher=BatcherConfig(max_batch_size=1),
            policy="shared_queue",
        )
    )
    log = simulate(make_arrivals(arrival_times_s, service_s=service_times_s), config, seed=0).log
    assert (log["outcome"] == "completed").all()
    return (log["model_start_s"] - log["arrived_s"]).to_numpy()


@pytest.mark.parametrize(("servers", "arrival_rate_per_s"), [(1, 0.9), (4, 3.6), (16, 15.0)])
def test_agrees_with_the_simpy_model(servers, arrival_rate_per_s):
    arrivals, services = exponential_arrays(arrival_rate_per_s, 1.0, 5000, 1, seed=servers)
    fast = fifo_waits_s(arrivals[0], services[0], servers)
    np.testing.assert_allclose(fast, _simpy_waits_s(arrivals[0], services[0], servers), rtol=0, atol=1e-9)
    assert (fast > 0).mean() > 0.3  # busy enough to exercise the queue


def test_agrees_with_the_simpy_model_on_ties():
    # Whole-second times: arrivals that coincide with each other and with departures.
    rng = np.random.default_rng(4)
    arrivals = np.sort(rng.integers(0, 400, 600)).astype(np.float64)
    services = rng.integers(0, 6, 600).astype(np.float64)
    for servers in (1, 2, 3):
        fast = fifo_waits_s(arrivals, services, servers)
        np.testing.assert_allclose(fast, _simpy_waits_s(arrivals, services, servers), rtol=0, atol=1e-9)


# -- hostile input: refused by name, before any work --------------------------------------------------


@pytest.mark.parametrize("call", [fifo_waits_s, mmc_replications])
def test_absurd_server_counts_are_refused_by_name(call):
    # regression: servers=10**30 raised OverflowError "cannot fit 'int' into an index-sized integer"
    args = ([0.0, 1.0], [1.0, 1.0]) if call is fifo_waits_s else (1.0, 2.0)
    rest = () if call is fifo_waits_s else (10, 2, 0)
    with pytest.raises(
        ValueError, match=r"servers must be <= 1,000,000, got 1000000000000000000000000000000"
    ):
        call(*args, 10**30, *rest)


def test_more_servers_than_customers_wait_nothing_and_cost_nothing():
    arrivals, services = _random_arrays(40, 50, load=5.0)
    for servers in (50, 10**6):  # the recursions keep min(servers, customers) servers
        assert not fifo_waits_s(arrivals, services, servers).any()
        assert not fifo_waits_s(arrivals[0], services[0], servers).any()
    np.testing.assert_array_equal(fifo_waits_s(arrivals, services, 49), fifo_waits_s(arrivals, services, 49))


@pytest.mark.parametrize(
    ("customers", "replications", "message"),
    [
        # regression: these raised numpy's "Maximum allowed dimension exceeded", naming nothing
        (10**30, 2, r"customers must be <= 10,000,000, got 1000000000000000000000000000000"),
        (100, 10**30, r"replications must be <= 100,000, got 1000000000000000000000000000000"),
        (10**7, 11, r"customers x replications must be <= 100,000,000 numbers, got customers=10,000,000"),
    ],
)
def test_replication_sizes_are_bounded_before_allocating(customers, replications, message):
    with pytest.raises(ValueError, match=message):
        mmc_replications(1.0, 2.0, 1, customers, replications, seed=0)


def test_exponential_arrays_bound_sizes_rates_and_seed_before_allocating():
    with pytest.raises(ValueError, match=r"customers x replications must be <= 100,000,000"):
        exponential_arrays(1.0, 1.0, 10**8, 2, seed=0)
    with pytest.raises(ValueError, match=r"replications must be <= 100,000"):
        exponential_arrays(1.0, 1.0, 1, 10**30, seed=0)
    # A rate of 1e-300 drew gaps of 1e300 s whose sums overflowed to inf, and waits of NaN.
    with pytest.raises(
        ValueError, match=r"arrival_rate_per_s must lie in \[1e-06, 1e\+09\] per s, got 1e-300"
    ):
        exponential_arrays(1e-300, 1.0, 10, 2, seed=0)
    with pytest.raises(ValueError, match=r"service_rate_per_s must lie in .* got 1e\+308"):
        mmc_replications(1.0, 1e308, 1, 10, 2, seed=0)
    with pytest.raises(TypeError, match=r"seed must be an integer, got None"):
        exponential_arrays(1.0, 1.0, 10**7, 10, seed=None)  # before the 1.6 GB it would allocate


@pytest.mark.parametrize(
    ("arrivals", "services", "error", "message"),
    [
        (
            [True, False],
            [1.0, 1.0],
            TypeError,
            r"arrival_times_s must be an array of real numbers.*\[True, False\]",
        ),
        ("01", [1.0, 1.0], TypeError, r"arrival_times_s must be an array of real numbers.*'01'"),
        ([0.0, 1.0], None, TypeError, r"service_times_s must be an array of real numbers.*None"),
        (
            [0.0, 10**400],
            [1.0, 1.0],
            TypeError,
            r"arrival_times_s must be an array of real numbers.*\[0\.0, 1000",
        ),
        ([0.0, 1.0], [1j, 1.0], TypeError, r"service_times_s must be an array of real numbers"),
        (10**30, 1.0, ValueError, r"arrival_times_s must be .*1-D.*got shape \(\): 1000000"),
        # regression: sums of such times overflowed to inf and the waits came back inf or NaN
        (
            [0.0, 0.0, 0.0],
            [1e308, 1e308, 1e308],
            ValueError,
            r"service_times_s must be <= 1e\+15 s; entry \(0,\)",
        ),
        (
            [0.0, 2e15],
            [1.0, 1.0],
            ValueError,
            r"arrival_times_s must be <= 1e\+15 s; entry \(1,\) is 2000000000000000\.0",
        ),
    ],
)
def test_hostile_arrays_are_refused_by_name(arrivals, services, error, message):
    with pytest.raises(error, match=message):
        fifo_waits_s(arrivals, services, 2)


def test_the_largest_times_give_finite_waits():
    waits = fifo_waits_s([0.0] * 4, [1e15] * 4, 1)
    assert waits.tolist() == [0.0, 1e15, 2e15, 3e15]


def test_blocks_and_chunks_do_not_change_the_numbers(monkeypatch):
    whole = mmc_replications(3.0, 1.0, 4, 300, 70, seed=5)
    heap = fastpath._kiefer_wolfowitz_heap(*(a[0] for a in _random_arrays(1, 1000, load=1.5)), 2)
    monkeypatch.setattr(fastpath, "_BLOCK_NUMBERS", 1000)  # blocks of 3 replications: the heap path
    monkeypatch.setattr(fastpath, "_HEAP_CHUNK", 7)
    pd.testing.assert_frame_equal(mmc_replications(3.0, 1.0, 4, 300, 70, seed=5), whole)
    np.testing.assert_array_equal(
        fastpath._kiefer_wolfowitz_heap(*(a[0] for a in _random_arrays(1, 1000, load=1.5)), 2), heap
    )
