"""The analytic formulas against published values and against each other."""

import math

import pytest

from conftest import finishes
from scaleplay import queueing as q


def test_erlang_c_published_example():
    # c = 4, lambda = 3, mu = 1 (Gross & Harris; Kleinrock)
    assert q.erlang_c(4, 3.0) == pytest.approx(0.509434, abs=5e-7)
    assert q.mmc_mean_queue_length(3.0, 1.0, 4) == pytest.approx(1.528302, abs=5e-7)
    assert q.mmc_mean_wait_s(3.0, 1.0, 4) == pytest.approx(1.528302 / 3.0, abs=5e-7)


def test_erlang_b_published_example():
    # A classic telephony table value: 10 Erlangs on 10 trunks blocks 21.46 %.
    assert q.erlang_b(10, 10.0) == pytest.approx(0.214582, abs=5e-7)


def test_single_server_reduces_to_mm1():
    lam, mu = 0.8, 1.0
    assert q.erlang_c(1, lam / mu) == pytest.approx(lam / mu)
    assert q.mmc_mean_wait_s(lam, mu, 1) == pytest.approx(lam / (mu * (mu - lam)))


def test_pollaczek_khinchine_md1_is_half_of_mm1():
    lam, service_s = 0.9, 1.0
    assert q.md1_mean_wait_s(lam, service_s) == pytest.approx(q.mmc_mean_wait_s(lam, 1.0, 1) / 2)
    assert q.mg1_mean_wait_s(lam, service_s, 1.0) == pytest.approx(q.mmc_mean_wait_s(lam, 1.0, 1))


def test_wait_tail_and_quantile_are_inverse():
    lam, mu, c = 30.0, 1.0, 34
    for quantile in (0.9, 0.99, 0.999):
        t = q.mmc_wait_quantile_s(lam, mu, c, quantile)
        assert t > 0
        assert q.mmc_wait_tail(lam, mu, c, t) == pytest.approx(1 - quantile)
    assert q.mmc_wait_tail(lam, mu, c, 0.0) == pytest.approx(q.erlang_c(c, lam / mu))


def test_wait_quantile_is_zero_when_most_requests_never_wait():
    assert q.erlang_c(10, 3.0) < 0.01
    assert q.mmc_wait_quantile_s(3.0, 1.0, 10, 0.99) == 0.0


def test_littles_law():
    assert q.littles_law_in_system(100.0, 0.25) == pytest.approx(25.0)


def test_bulk_service_published_value():
    # Gross & Harris's late-entry model; the batcher's own variant is checked against its Markov chain
    # in test_validation.py.
    assert q.bulk_service_mean_in_system(3.0, 1.0, 4, late_entry=True) == pytest.approx(7.94, abs=0.005)
    assert q.bulk_service_mean_in_system(3.0, 1.0, 4) == pytest.approx(10.657, abs=1e-3)


@pytest.mark.parametrize("late_entry", [False, True])
def test_bulk_service_with_batch_one_is_mm1(late_entry):
    lam, mu = 0.7, 1.0
    rho = lam / mu
    got = q.bulk_service_mean_in_system(lam, mu, 1, late_entry=late_entry)
    assert got == pytest.approx(rho / (1 - rho), rel=1e-9)


def test_square_root_staffing_matches_erlang_c_at_scale():
    beta = q.halfin_whitt_beta(0.2)
    for load in (100.0, 1000.0, 10000.0):
        exact = q.min_servers_for_wait_probability(load, 0.2)
        assert abs(q.square_root_staffing(load, beta) - exact) <= 1
        # headroom grows like sqrt(load): its ratio to sqrt(load) stays near beta
        assert (exact - load) / math.sqrt(load) == pytest.approx(beta, rel=0.1)


def test_min_servers_is_the_fewest():
    for load in (0.5, 3.0, 47.3, 800.0):
        c = q.min_servers_for_wait_probability(load, 0.1)
        assert q.erlang_c(c, load) <= 0.1
        if c - 1 > load:
            assert q.erlang_c(c - 1, load) > 0.1


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda: q.erlang_c(4, 4.0), "unstable"),
        (lambda: q.erlang_c(4, 5.0), "unstable"),
        (lambda: q.mmc_mean_wait_s(4.0, 1.0, 4), "unstable"),
        (lambda: q.erlang_c(0, 0.5), "servers"),
        (lambda: q.erlang_b(-1, 0.5), "servers"),
        (lambda: q.mmc_mean_wait_s(-1.0, 1.0, 4), "arrival_rate_per_s"),
        (lambda: q.mmc_mean_wait_s(1.0, 0.0, 4), "service_rate_per_s"),
        (lambda: q.mmc_mean_wait_s(float("nan"), 1.0, 4), "arrival_rate_per_s"),
        (lambda: q.erlang_c(4, float("nan")), "offered_load"),
        (lambda: q.mmc_wait_quantile_s(1.0, 1.0, 4, 1.0), "quantile"),
        (lambda: q.md1_mean_wait_s(1.0, 1.0), "unstable"),
        (lambda: q.bulk_service_mean_in_system(4.0, 1.0, 4), "unstable"),
        (lambda: q.halfin_whitt_beta(0.0), "wait_probability"),
        (lambda: q.square_root_staffing(10.0, -1.0), "beta"),
    ],
)
def test_bad_input_names_the_problem(call, needle):
    with pytest.raises(ValueError, match=needle):
        call()


def test_non_integer_servers_is_a_type_error():
    with pytest.raises(TypeError, match="servers"):
        q.erlang_c(4.5, 1.0)


# ---- bad and extreme inputs: a clear error or a finite answer, in bounded time -------------------



def _erlang_b_recursion(c, a):
    blocking = 1.0
    for k in range(1, c + 1):
        blocking = a * blocking / (k + a * blocking)
    return blocking


@pytest.mark.parametrize("servers", [1, 2, 7, 40, 300, 5000, 100_000])
@pytest.mark.parametrize("load_per_server", [1e-3, 0.5, 0.95, 1.0, 1.2, 10.0])
def test_erlang_b_matches_the_recursion(servers, load_per_server):
    load = servers * load_per_server
    assert q.erlang_b(servers, load) == pytest.approx(_erlang_b_recursion(servers, load), rel=1e-9)
    if load < servers:
        blocking = _erlang_b_recursion(servers, load)
        classic = servers * blocking / (servers - load * (1 - blocking))
        assert q.erlang_c(servers, load) == pytest.approx(classic, rel=1e-9)


def test_a_billion_servers_take_bounded_time_and_more_are_refused():
    # At c = a the blocking is about sqrt(2 / (pi c)) (Jagerman); the old recursion looped c times.
    b = finishes(lambda: q.erlang_b(10**9, 1e9))
    assert b == pytest.approx(math.sqrt(2 / (math.pi * 1e9)), rel=1e-3)
    assert 0 < finishes(lambda: q.erlang_c(10**9, 0.9999e9)) < 1
    assert 0 < finishes(lambda: q.mmc_mean_wait_s(0.9999e9, 1.0, 10**9)) < 1
    for call in (
        lambda: q.erlang_b(10**12, 5.0),
        lambda: q.erlang_c(10**12, 5.0),
        lambda: q.mmc_wait_quantile_s(1.0, 1.0, 10**30, 0.9),
    ):
        with pytest.raises(ValueError, match="servers must be <="):
            finishes(call)


def test_min_servers_takes_bounded_time_and_refuses_what_no_fleet_could_be():
    with pytest.raises(ValueError, match="offered_load"):
        finishes(lambda: q.min_servers_for_wait_probability(1e308, 0.5))
    with pytest.raises(ValueError, match="offered_load"):
        finishes(lambda: q.min_servers_for_wait_probability(10**30, 0.5))
    c = finishes(lambda: q.min_servers_for_wait_probability(1e8, 0.2))
    assert q.erlang_c(c, 1e8) <= 0.2 < q.erlang_c(c - 1, 1e8)
    assert q.min_servers_for_wait_probability(0.0, 0.5) == 1
    assert q.min_servers_for_wait_probability(3.5, 1.0) == 4  # any stable fleet


def test_late_entry_must_be_a_bool():
    for value in ("False", 0, 1, None, math.nan):
        with pytest.raises(TypeError, match="late_entry must be True or False"):
            q.bulk_service_mean_in_system(3.0, 1.0, 4, late_entry=value)


def test_bulk_service_near_its_limits():
    near = q.bulk_service_mean_in_system(4.0 * (1 - 1e-12), 1.0, 4)
    assert math.isfinite(near) and near > 1e10
    assert q.bulk_service_mean_in_system(1e-300, 1.0, 10**9) == pytest.approx(1e-300)
    with pytest.raises(ValueError, match="max_batch"):
        q.bulk_service_mean_in_system(1.0, 1.0, 10**30)


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda: q.offered_load(1.0, 1e-320), "service_rate_per_s"),
        (lambda: q.littles_law_in_system(1e200, 1e200), "time_in_system_s"),
        (lambda: q.mmc_mean_wait_s(3.9e-310, 1e-310, 4), "service_rate_per_s"),
        (lambda: q.mg1_mean_wait_s(0.99, 1.0, 1e308), "service_scv"),
        (lambda: q.mg1_mean_wait_s(0.5, 1e308, 0.0), "mean_service_s"),
        (lambda: q.square_root_staffing(4.0, 1e308), "beta"),
    ],
)
def test_results_that_overflow_are_refused(call, needle):
    with pytest.raises(ValueError, match=needle):
        call()


def test_a_huge_service_rate_gives_finite_waits():
    assert q.mmc_wait_tail(0.0, 1e308, 10, 0.0) == 0.0
    assert q.mmc_wait_tail(1e308, 1e308, 2, 0.0) == pytest.approx(q.erlang_c(2, 1.0))
    assert q.mmc_wait_quantile_s(1e308, 1e308, 2, 0.9) == 0.0 or math.isfinite(
        q.mmc_wait_quantile_s(1e308, 1e308, 2, 0.9)
    )


def test_halfin_whitt_beta_solves_its_equation_over_the_whole_range():
    betas = [q.halfin_whitt_beta(p) for p in (1e-300, 1e-9, 0.01, 0.2, 0.5, 0.9, 1 - 1e-16)]
    assert all(math.isfinite(b) and b > 0 for b in betas)
    assert betas == sorted(betas, reverse=True)
    for p in (1e-9, 0.2, 0.9):
        beta = q.halfin_whitt_beta(p)
        phi = math.exp(-beta * beta / 2) / math.sqrt(2 * math.pi)
        big_phi = 0.5 * (1 + math.erf(beta / math.sqrt(2)))
        assert 1 / (1 + beta * big_phi / phi) == pytest.approx(p, rel=1e-9)
