"""Queueing formulas: the back-of-the-envelope step, and the ground truth the simulator is tested against.

The M/M/c queue is the workhorse. Requests arrive as a Poisson stream at ``arrival_rate_per_s``
(lambda), each of ``servers`` servers (c) works at ``service_rate_per_s`` (mu), and the *offered load*
``a = lambda / mu`` counts how many servers the traffic keeps busy on average. Erlang's formulas then
give the chance a request has to wait (Erlang C), the chance it is turned away when there is no room
to wait (Erlang B), and the whole distribution of the wait. The published check (Gross & Harris;
Kleinrock): c = 4, lambda = 3, mu = 1 gives P(wait) = 0.509434 and Lq = 1.528302.

>>> round(erlang_c(4, 3.0), 6)
0.509434
>>> round(mmc_mean_queue_length(3.0, 1.0, 4), 6)
1.528302

Square-root staffing is the scaling law behind "big fleets run hotter": to keep P(wait) fixed, the
servers needed grow as ``a + beta * sqrt(a)``, so the idle headroom grows only as the square root of the
load and utilization climbs towards 1 as traffic grows (Halfin & Whitt, 1981).

Pollaczek-Khinchine covers one server with any service-time distribution (M/G/1), and the bulk-service
queue M/M^[b]/1 covers a replica that serves up to ``b`` waiting requests in one batch.
"""

from __future__ import annotations

import math

from ._validate import check_finite, check_int, check_non_negative, check_positive, check_probability

__all__ = [
    "littles_law_in_system",
    "offered_load",
    "erlang_b",
    "erlang_c",
    "mmc_mean_queue_length",
    "mmc_mean_wait_s",
    "mmc_wait_tail",
    "mmc_wait_quantile_s",
    "mg1_mean_wait_s",
    "md1_mean_wait_s",
    "bulk_service_mean_in_system",
    "halfin_whitt_beta",
    "square_root_staffing",
    "min_servers_for_wait_probability",
]


def littles_law_in_system(arrival_rate_per_s: float, time_in_system_s: float) -> float:
    """Little's law, L = lambda * W: the mean number of requests in flight."""
    return check_non_negative("arrival_rate_per_s", arrival_rate_per_s) * check_non_negative(
        "time_in_system_s", time_in_system_s
    )


def offered_load(arrival_rate_per_s: float, service_rate_per_s: float) -> float:
    """a = lambda / mu, in servers' worth of work (Erlangs)."""
    return check_non_negative("arrival_rate_per_s", arrival_rate_per_s) / check_positive(
        "service_rate_per_s", service_rate_per_s
    )


def _check_stable(servers: int, load: float) -> None:
    if load >= servers:
        raise ValueError(
            f"the queue is unstable: offered load {load!r} must be < servers {servers} "
            "(arrival_rate_per_s < servers * service_rate_per_s); add servers or cut the load"
        )


def erlang_b(servers: int, offered_load: float) -> float:
    """Erlang B: the share of requests lost when ``servers`` are busy and nobody may wait (M/M/c/c).

    Uses the stable recursion B(k) = a B(k-1) / (k + a B(k-1)), fine for tens of thousands of servers.
    """
    servers = check_int("servers", servers, minimum=1)
    load = check_non_negative("offered_load", offered_load)
    blocking = 1.0
    for k in range(1, servers + 1):
        blocking = load * blocking / (k + load * blocking)
    return blocking


def erlang_c(servers: int, offered_load: float) -> float:
    """Erlang C: the probability that an arriving request waits for a server (M/M/c, infinite queue)."""
    servers = check_int("servers", servers, minimum=1)
    load = check_non_negative("offered_load", offered_load)
    _check_stable(servers, load)
    blocking = erlang_b(servers, load)
    return servers * blocking / (servers - load * (1.0 - blocking))


def _mmc(arrival_rate_per_s: float, service_rate_per_s: float, servers: int) -> tuple[float, float, int]:
    """Checked (lambda, mu, c) of a stable M/M/c."""
    lam = check_non_negative("arrival_rate_per_s", arrival_rate_per_s)
    mu = check_positive("service_rate_per_s", service_rate_per_s)
    c = check_int("servers", servers, minimum=1)
    _check_stable(c, lam / mu)
    return lam, mu, c


def mmc_mean_wait_s(arrival_rate_per_s: float, service_rate_per_s: float, servers: int) -> float:
    """Mean time a request waits before service starts, Wq = C(c, a) / (c mu - lambda)."""
    lam, mu, c = _mmc(arrival_rate_per_s, service_rate_per_s, servers)
    return erlang_c(c, lam / mu) / (c * mu - lam)


def mmc_mean_queue_length(arrival_rate_per_s: float, service_rate_per_s: float, servers: int) -> float:
    """Mean number waiting, Lq = lambda * Wq (Little's law applied to the queue)."""
    return arrival_rate_per_s * mmc_mean_wait_s(arrival_rate_per_s, service_rate_per_s, servers)


def mmc_wait_tail(arrival_rate_per_s: float, service_rate_per_s: float, servers: int, wait_s: float) -> float:
    """P(Wq > wait_s) = C(c, a) exp(-(c mu - lambda) wait_s): FIFO waits have an exponential tail."""
    lam, mu, c = _mmc(arrival_rate_per_s, service_rate_per_s, servers)
    t = check_non_negative("wait_s", wait_s)
    return erlang_c(c, lam / mu) * math.exp(-(c * mu - lam) * t)


def mmc_wait_quantile_s(
    arrival_rate_per_s: float, service_rate_per_s: float, servers: int, quantile: float
) -> float:
    """The ``quantile`` of the wait before service (0 when at least that share never waits)."""
    lam, mu, c = _mmc(arrival_rate_per_s, service_rate_per_s, servers)
    q = check_probability("quantile", quantile, open_low=True, open_high=True)
    p_wait = erlang_c(c, lam / mu)
    if 1.0 - q >= p_wait:
        return 0.0
    return math.log(p_wait / (1.0 - q)) / (c * mu - lam)


def mg1_mean_wait_s(arrival_rate_per_s: float, mean_service_s: float, service_scv: float) -> float:
    """Pollaczek-Khinchine: Wq = rho (1 + scv) / (2 (1 - rho)) * E[S] for one server (M/G/1).

    ``service_scv`` is the squared coefficient of variation of the service time (1 exponential, 0
    deterministic).
    """
    lam = check_non_negative("arrival_rate_per_s", arrival_rate_per_s)
    mean_s = check_positive("mean_service_s", mean_service_s)
    scv = check_non_negative("service_scv", service_scv)
    rho = lam * mean_s
    _check_stable(1, rho)
    return rho * (1.0 + scv) / (2.0 * (1.0 - rho)) * mean_s


def md1_mean_wait_s(arrival_rate_per_s: float, service_s: float) -> float:
    """M/D/1 (constant service time): Wq = rho / (2 mu (1 - rho))."""
    return mg1_mean_wait_s(arrival_rate_per_s, service_s, 0.0)


def bulk_service_mean_in_system(
    arrival_rate_per_s: float, batch_rate_per_s: float, max_batch: int, *, late_entry: bool = False
) -> float:
    """M/M^[b]/1: one server serves batches of up to ``max_batch`` requests, exponential batch time.

    Both variants share r, the root in (0, 1) of mu z^(b+1) - (lambda + mu) z + lambda = 0, and are
    stable while lambda < b mu.

    - ``late_entry=False`` (the replica's dynamic batcher): a free server takes up to b *waiting*
      requests and nobody joins a running batch. With states "idle" and "busy with n waiting", the busy
      probabilities are P_n = C r^n with C = 1 / (1 / (1 - r) + mu / lambda), so
      L = C r / (1 - r)^2 + lambda / mu (the waiting line plus one batch time per request).
    - ``late_entry=True`` (the textbook model, Gross & Harris): arrivals may join a running batch that
      has room, and the number in system is geometric, L = r / (1 - r).

    >>> round(bulk_service_mean_in_system(3.0, 1.0, 4), 2)
    10.66
    >>> round(bulk_service_mean_in_system(3.0, 1.0, 4, late_entry=True), 2)
    7.94
    """
    lam = check_positive("arrival_rate_per_s", arrival_rate_per_s)
    mu = check_positive("batch_rate_per_s", batch_rate_per_s)
    b = check_int("max_batch", max_batch, minimum=1)
    if lam >= b * mu:
        raise ValueError(
            f"the queue is unstable: arrival_rate_per_s {lam!r} must be < max_batch * batch_rate_per_s "
            f"= {b * mu!r}"
        )

    def poly(z: float) -> float:
        return mu * z ** (b + 1) - (lam + mu) * z + lam

    # poly(0) = lambda > 0 and poly is negative just below z = 1 when stable: bisect.
    low, high = 0.0, 1.0 - 1e-15
    for _ in range(200):
        mid = 0.5 * (low + high)
        if poly(mid) > 0:
            low = mid
        else:
            high = mid
    r = 0.5 * (low + high)
    if late_entry:
        return r / (1.0 - r)
    busy_scale = 1.0 / (1.0 / (1.0 - r) + mu / lam)
    return busy_scale * r / (1.0 - r) ** 2 + lam / mu


def _normal_pdf(x: float) -> float:
    return math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def _normal_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def halfin_whitt_beta(wait_probability: float) -> float:
    """The beta for which the Halfin-Whitt limit gives P(wait) = ``wait_probability``.

    In heavy traffic with c = a + beta sqrt(a), P(wait) tends to 1 / (1 + beta Phi(beta) / phi(beta)).
    """
    target = check_probability("wait_probability", wait_probability, open_low=True, open_high=True)
    low, high = 0.0, 40.0
    for _ in range(200):
        mid = 0.5 * (low + high)
        p = 1.0 / (1.0 + mid * _normal_cdf(mid) / _normal_pdf(mid)) if mid < 38 else 0.0
        if p > target:
            low = mid
        else:
            high = mid
    return 0.5 * (low + high)


def square_root_staffing(offered_load: float, beta: float) -> int:
    """c = ceil(a + beta sqrt(a)): the servers square-root staffing asks for (at least 1)."""
    load = check_non_negative("offered_load", offered_load)
    b = check_finite("beta", beta)
    if b < 0:
        raise ValueError(f"beta must be >= 0, got {beta!r}")
    return max(1, math.ceil(load + b * math.sqrt(load)))


def min_servers_for_wait_probability(offered_load: float, wait_probability: float) -> int:
    """The fewest servers whose Erlang C P(wait) is at most ``wait_probability``."""
    load = check_non_negative("offered_load", offered_load)
    target = check_probability("wait_probability", wait_probability, open_low=True)
    # One pass of the Erlang B recursion, checking C(k) = k B / (k - a (1 - B)) once k > a.
    blocking, servers = 1.0, 0
    while True:
        servers += 1
        blocking = load * blocking / (servers + load * blocking)
        if servers > load and servers * blocking / (servers - load * (1.0 - blocking)) <= target:
            return servers
