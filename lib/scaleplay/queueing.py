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

import numpy as np
from scipy import optimize, special

from ._validate import _show, check_finite, check_int, check_non_negative, check_positive, check_probability

__all__ = [
    "MAX_SERVERS",
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

#: The most servers (and the largest batch) the formulas take: far beyond any fleet, and the range in
#: which they keep about 12 significant digits.
MAX_SERVERS = 10**9


def _finite_result(value: float, cause: str) -> float:
    """``value`` if finite, else a ValueError saying which inputs made it overflow."""
    if not math.isfinite(value):
        raise ValueError(f"the result overflows a float: {cause}; use inputs of a sensible scale")
    return value


def littles_law_in_system(arrival_rate_per_s: float, time_in_system_s: float) -> float:
    """Little's law, L = lambda * W: the mean number of requests in flight."""
    lam = check_non_negative("arrival_rate_per_s", arrival_rate_per_s)
    w = check_non_negative("time_in_system_s", time_in_system_s)
    return _finite_result(
        lam * w, f"arrival_rate_per_s={arrival_rate_per_s!r} x time_in_system_s={time_in_system_s!r}"
    )


def offered_load(arrival_rate_per_s: float, service_rate_per_s: float) -> float:
    """a = lambda / mu, in servers' worth of work (Erlangs)."""
    lam = check_non_negative("arrival_rate_per_s", arrival_rate_per_s)
    mu = check_positive("service_rate_per_s", service_rate_per_s)
    return _finite_result(
        lam / mu, f"arrival_rate_per_s={arrival_rate_per_s!r} / service_rate_per_s={service_rate_per_s!r}"
    )


_MMC_STABLE = "arrival_rate_per_s < servers * service_rate_per_s"


def _check_stable(servers: int, load: float, names: str = _MMC_STABLE) -> None:
    if load >= servers:
        raise ValueError(
            f"the queue is unstable: offered load {load!r} must be < servers {servers} "
            f"({names}); add servers or cut the load"
        )


def _servers(value: object) -> int:
    return check_int("servers", value, minimum=1, maximum=MAX_SERVERS)


def _x_minus_log1p(x: float) -> float:
    """``x - log(1 + x)`` without cancellation near 0 (its series there); ``inf`` at x = -1."""
    if x <= -1.0:  # mean / k underflowed to 0: the Poisson probability is 0
        return math.inf
    if abs(x) >= 0.5:
        return x - math.log1p(x)
    total, power, k = 0.0, x * x, 2
    while True:
        term = power / k
        total += term if k % 2 == 0 else -term
        if abs(term) <= 1e-17 * abs(total):
            return total
        power *= x
        k += 1


def _log_poisson_pmf(k: float, mean: float) -> float:
    """log(mean^k e^-mean / k!), for real k >= 0 and mean > 0.

    Above k = 16 it is the saddle-point form (Loader, 2000): -k (x - log(1 + x)) - log(2 pi k) / 2 -
    Stirling's remainder, with x = mean / k - 1, which keeps full precision where the plain
    ``k log(mean) - mean - log k!`` loses it to the cancellation of three large terms.
    """
    if k < 16:
        return float(special.xlogy(k, mean) - mean - special.gammaln(k + 1.0))
    stirling = 1 / (12 * k) - 1 / (360 * k**3) + 1 / (1260 * k**5) - 1 / (1680 * k**7)
    return -k * _x_minus_log1p(mean / k - 1.0) - 0.5 * math.log(2.0 * math.pi * k) - stirling


def _erlang_b(servers: float, load: float) -> float:
    """Erlang B for checked inputs; ``servers`` may be any real > ``load`` or an integer.

    Below the load's scale it is the Poisson ratio B = P(N = c) / P(N <= c), N ~ Poisson(a), with the
    distribution function from ``scipy.special.gammaincc`` (defined for real c, which lets
    ``min_servers_for_wait_probability`` hand the search to a root finder). At or above it (integer c
    only) the distribution function underflows, and 1/B = sum_m c! / ((c - m)! a^m) converges within
    about 9 sqrt(c) terms.
    """
    if load == 0.0:
        return 0.0
    if load < servers:
        return math.exp(_log_poisson_pmf(servers, load)) / float(special.gammaincc(servers + 1.0, load))
    c = int(servers)
    terms = min(c, math.ceil(9.5 * math.sqrt(c)) + 64)
    # log of prod_{i < m} (c - i) / a, for m = 0 .. terms.
    steps = np.log(np.arange(c, c - terms, -1, dtype=np.float64) / load)
    logs = np.concatenate(([0.0], np.cumsum(steps)))
    return float(1.0 / np.exp(special.logsumexp(logs)))


def erlang_b(servers: int, offered_load: float) -> float:
    """Erlang B: the share of requests lost when ``servers`` are busy and nobody may wait (M/M/c/c).

    Computed in bounded time from the Poisson distribution (``scipy.special``), for up to
    ``MAX_SERVERS`` (10**9) servers.
    """
    servers = _servers(servers)
    load = check_non_negative("offered_load", offered_load)
    return _erlang_b(servers, load)


def _erlang_c(servers: float, load: float) -> float:
    blocking = _erlang_b(servers, load)
    return servers * blocking / (servers - load * (1.0 - blocking))


def erlang_c(servers: int, offered_load: float) -> float:
    """Erlang C: the probability that an arriving request waits for a server (M/M/c, infinite queue).

    Up to ``MAX_SERVERS`` (10**9) servers.
    """
    servers = _servers(servers)
    load = check_non_negative("offered_load", offered_load)
    _check_stable(servers, load, "offered_load < servers")
    return _erlang_c(servers, load)


def _mmc(
    arrival_rate_per_s: float, service_rate_per_s: float, servers: int
) -> tuple[float, float, int, float]:
    """Checked (lambda, mu, c) of a stable M/M/c, and c mu - lambda (the rate the queue drains at)."""
    lam = check_non_negative("arrival_rate_per_s", arrival_rate_per_s)
    mu = check_positive("service_rate_per_s", service_rate_per_s)
    c = _servers(servers)
    load = offered_load(lam, mu)
    _check_stable(c, load)
    return lam, mu, c, mu * (c - load)


def _inputs(arrival_rate_per_s: object, service_rate_per_s: object, servers: object) -> str:
    return (
        f"arrival_rate_per_s={arrival_rate_per_s!r}, service_rate_per_s={service_rate_per_s!r}, "
        f"servers={servers!r}"
    )


def mmc_mean_wait_s(arrival_rate_per_s: float, service_rate_per_s: float, servers: int) -> float:
    """Mean time a request waits before service starts, Wq = C(c, a) / (c mu - lambda)."""
    lam, mu, c, drain = _mmc(arrival_rate_per_s, service_rate_per_s, servers)
    p_wait = _erlang_c(c, lam / mu)
    if p_wait == 0.0:
        return 0.0
    with_inputs = _inputs(arrival_rate_per_s, service_rate_per_s, servers)
    return _finite_result(p_wait / drain if drain > 0 else math.inf, with_inputs)


def mmc_mean_queue_length(arrival_rate_per_s: float, service_rate_per_s: float, servers: int) -> float:
    """Mean number waiting, Lq = lambda * Wq (Little's law applied to the queue)."""
    wait_s = mmc_mean_wait_s(arrival_rate_per_s, service_rate_per_s, servers)
    with_inputs = _inputs(arrival_rate_per_s, service_rate_per_s, servers)
    return _finite_result(float(arrival_rate_per_s) * wait_s, with_inputs)


def mmc_wait_tail(arrival_rate_per_s: float, service_rate_per_s: float, servers: int, wait_s: float) -> float:
    """P(Wq > wait_s) = C(c, a) exp(-(c mu - lambda) wait_s): FIFO waits have an exponential tail."""
    lam, mu, c, drain = _mmc(arrival_rate_per_s, service_rate_per_s, servers)
    t = check_non_negative("wait_s", wait_s)
    p_wait = _erlang_c(c, lam / mu)
    return p_wait if t == 0.0 else p_wait * math.exp(-drain * t)


def mmc_wait_quantile_s(
    arrival_rate_per_s: float, service_rate_per_s: float, servers: int, quantile: float
) -> float:
    """The ``quantile`` of the wait before service (0 when at least that share never waits)."""
    lam, mu, c, drain = _mmc(arrival_rate_per_s, service_rate_per_s, servers)
    q = check_probability("quantile", quantile, open_low=True, open_high=True)
    p_wait = _erlang_c(c, lam / mu)
    if 1.0 - q >= p_wait:
        return 0.0
    with_inputs = _inputs(arrival_rate_per_s, service_rate_per_s, servers)
    return _finite_result(math.log(p_wait / (1.0 - q)) / drain if drain > 0 else math.inf, with_inputs)


def mg1_mean_wait_s(arrival_rate_per_s: float, mean_service_s: float, service_scv: float) -> float:
    """Pollaczek-Khinchine: Wq = rho (1 + scv) / (2 (1 - rho)) * E[S] for one server (M/G/1).

    ``service_scv`` is the squared coefficient of variation of the service time (1 exponential, 0
    deterministic).
    """
    lam = check_non_negative("arrival_rate_per_s", arrival_rate_per_s)
    mean_s = check_positive("mean_service_s", mean_service_s)
    scv = check_non_negative("service_scv", service_scv)
    rho = lam * mean_s
    _check_stable(1, rho, "arrival_rate_per_s * mean_service_s < 1")
    return _finite_result(
        rho * (1.0 + scv) / (2.0 * (1.0 - rho)) * mean_s,
        f"arrival_rate_per_s={arrival_rate_per_s!r}, mean_service_s={mean_service_s!r}, "
        f"service_scv={service_scv!r}",
    )


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

    ``max_batch`` is at most ``MAX_SERVERS`` (10**9).

    >>> round(bulk_service_mean_in_system(3.0, 1.0, 4), 2)
    10.66
    >>> round(bulk_service_mean_in_system(3.0, 1.0, 4, late_entry=True), 2)
    7.94
    """
    lam = check_positive("arrival_rate_per_s", arrival_rate_per_s)
    mu = check_positive("batch_rate_per_s", batch_rate_per_s)
    b = check_int("max_batch", max_batch, minimum=1, maximum=MAX_SERVERS)
    if not isinstance(late_entry, bool):
        raise TypeError(
            f"late_entry must be True or False, got {_show(late_entry)} ({type(late_entry).__name__})"
        )
    if lam >= b * mu:
        raise ValueError(
            f"the queue is unstable: arrival_rate_per_s {lam!r} must be < max_batch * batch_rate_per_s "
            f"= {b * mu!r}"
        )

    # The polynomial is (z - 1) (mu (z + z^2 + ... + z^b) - lambda): r is the root of the second factor,
    # which rises from -lambda at z = 0 to b mu - lambda > 0 at z = 1. It is solved for log(1 - r), so
    # that 1 - r keeps its digits however close to 1 the root is.
    def excess(log_gap: float) -> float:
        gap = math.exp(log_gap)  # 1 - z
        if gap >= 1.0:
            return -lam
        geometric = -math.expm1(b * math.log1p(-gap)) / gap  # 1 + z + ... + z^(b-1)
        return mu * (1.0 - gap) * geometric - lam

    log_gap = optimize.brentq(excess, -700.0, 0.0, xtol=1e-14, maxiter=500)
    gap = math.exp(log_gap)
    r = 1.0 - gap
    if late_entry:
        value = r / gap
    else:
        busy_scale = 1.0 / (1.0 / gap + mu / lam)
        value = busy_scale * r / gap**2 + lam / mu
    return _finite_result(
        value,
        f"arrival_rate_per_s={arrival_rate_per_s!r} is too close to max_batch * batch_rate_per_s",
    )


def _log_wait_odds(log_beta: float) -> float:
    """log(beta Phi(beta) / phi(beta)), the log of 1/P(wait) - 1 in the Halfin-Whitt limit."""
    beta = math.exp(log_beta)
    log_pdf = -0.5 * beta * beta - 0.5 * math.log(2.0 * math.pi)
    return log_beta + float(special.log_ndtr(beta)) - log_pdf


def halfin_whitt_beta(wait_probability: float) -> float:
    """The beta for which the Halfin-Whitt limit gives P(wait) = ``wait_probability``.

    In heavy traffic with c = a + beta sqrt(a), P(wait) tends to 1 / (1 + beta Phi(beta) / phi(beta)).
    Solved with ``scipy.optimize.brentq`` on the log of the odds, which keeps every probability in
    (0, 1) in range.
    """
    target = check_probability("wait_probability", wait_probability, open_low=True, open_high=True)
    log_odds = math.log1p(-target) - math.log(target)  # log(1/p - 1)
    log_beta = optimize.brentq(
        lambda x: _log_wait_odds(x) - log_odds, -750.0, math.log(50.0), xtol=1e-15, maxiter=500
    )
    return math.exp(log_beta)


def square_root_staffing(offered_load: float, beta: float) -> int:
    """c = ceil(a + beta sqrt(a)): the servers square-root staffing asks for (at least 1)."""
    load = check_non_negative("offered_load", offered_load)
    b = check_finite("beta", beta)
    if b < 0:
        raise ValueError(f"beta must be >= 0, got {beta!r}")
    servers = _finite_result(
        load + b * math.sqrt(load), f"offered_load={offered_load!r} + beta={beta!r} x sqrt(offered_load)"
    )
    return max(1, math.ceil(servers))


def min_servers_for_wait_probability(offered_load: float, wait_probability: float) -> int:
    """The fewest servers whose Erlang C P(wait) is at most ``wait_probability``.

    Erlang C falls as the servers grow (for real c too, through the incomplete gamma function), so
    ``scipy.optimize.brentq`` finds the crossing and the integers on either side settle it. An answer
    above ``MAX_SERVERS`` (10**9) is refused.
    """
    load = check_non_negative("offered_load", offered_load)
    target = check_probability("wait_probability", wait_probability, open_low=True)
    if load >= MAX_SERVERS:
        raise ValueError(
            f"offered_load must be < {MAX_SERVERS} (the most servers these formulas size), "
            f"got {_show(offered_load)}"
        )
    if load == 0.0:
        return 1
    low = math.floor(load) + 1  # the fewest servers that are stable
    if _erlang_c(low, load) <= target:
        return low
    # Bracket the crossing: double the headroom above the load until P(wait) is low enough.
    headroom, high = 1, low + 1
    while _erlang_c(high, load) > target:
        if high >= MAX_SERVERS:
            raise ValueError(
                f"offered_load={_show(offered_load)} needs more than {MAX_SERVERS} servers for "
                f"wait_probability={_show(wait_probability)}; that is beyond these formulas"
            )
        headroom *= 2
        high = min(MAX_SERVERS, low + headroom)
    crossing = optimize.brentq(lambda c: _erlang_c(c, load) - target, float(low), float(high), xtol=0.25)
    servers = max(low, min(high, math.ceil(crossing)))
    while servers > low and _erlang_c(servers - 1, load) <= target:
        servers -= 1
    while _erlang_c(servers, load) > target:
        servers += 1
    return servers
