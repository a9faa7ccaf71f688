"""The fast path: waits in a first-come-first-served station straight from two arrays.

When a station serves requests one at a time in arrival order (no batching, no priorities, no
timeouts), nothing about its future depends on anything but *when* requests arrive and *how long*
each one takes. Then no event queue is needed: the waits follow from the two arrays by a recursion,
and numpy can run many independent replications side by side. That is fast enough to screen
thousands of configurations before the full simpy model (``scaleplay.simulator``) checks the few that
matter.

One server, Lindley's recursion: the n-th request waits ``W[n] = max(0, W[n-1] + S[n-1] - T[n])``
for service times ``S`` and gaps between arrivals ``T``. Unrolled, ``W[n] = X[n] - min(X[0..n])``
with ``X`` the running sum of ``S - T``: a cumulative sum and a cumulative minimum, with no loop at all.

``c`` servers, the Kiefer-Wolfowitz recursion: keep the time at which each server next falls free.
The next request in line takes the server that frees first, waits until then (or not at all), and
pushes that server's free time on by its own service time. (This is the sorted workload vector
``R(W + S e_1 - T 1)^+`` of Kiefer and Wolfowitz, written in absolute time.) The loop over requests
stays, so numpy steps every replication at once; a handful of replications run through a heap instead.
The arithmetic is the one a discrete-event simulator does, so the waits agree with the simpy model to
rounding (the tests hold them to 1e-9 s).

>>> fifo_waits_s([0.0, 1.0, 2.0, 2.5], [2.0, 2.0, 1.0, 1.0], servers=1).tolist()
[0.0, 1.0, 2.0, 2.5]
>>> fifo_waits_s([0.0, 1.0, 2.0, 2.5], [2.0, 2.0, 1.0, 1.0], servers=2).tolist()
[0.0, 0.0, 0.0, 0.5]

Bounds, checked before any work: at most ``MAX_SERVERS`` (10**6) servers; times at most
``MAX_TIME_S`` (1e15 s, so that no sum of them leaves a float's range); rates in
[``MIN_RATE_PER_S``, ``MAX_RATE_PER_S``] = [1e-6, 1e9] per second; at most ``MAX_NUMBERS`` (10**8)
customers x replications drawn at once, at most ``MAX_REPLICATIONS`` (10**5) replications, and at
most ``MAX_CUSTOMERS`` (10**7) customers per replication in ``mmc_replications``.
"""

from __future__ import annotations

import heapq

import numpy as np
import pandas as pd

from ._validate import _show, check_int, check_probability, check_range
from .rng import stream

__all__ = [
    "MAX_SERVERS",
    "MAX_NUMBERS",
    "MAX_CUSTOMERS",
    "MAX_REPLICATIONS",
    "MAX_TIME_S",
    "MIN_RATE_PER_S",
    "MAX_RATE_PER_S",
    "fifo_waits_s",
    "exponential_arrays",
    "mmc_replications",
]

#: The most servers a station may have. (Servers beyond the number of customers change nothing, so
#: the recursions only ever track ``min(servers, customers)`` of them.)
MAX_SERVERS = 10**6
#: The most numbers, customers x replications, that ``exponential_arrays`` and ``mmc_replications``
#: draw (each of the two arrays).
MAX_NUMBERS = 10**8
#: The most replications drawn at once: each opens two random streams (some 40 us each), so 10**5
#: replications cost seconds before any number is drawn.
MAX_REPLICATIONS = 10**5
#: The most customers per replication in ``mmc_replications`` (which keeps a few arrays of them).
MAX_CUSTOMERS = 10**7
#: The latest arrival time and the longest service time ``fifo_waits_s`` takes, in seconds (about 32
#: million years): a sum of ``MAX_NUMBERS`` such times stays far inside a float's range.
MAX_TIME_S = 1e15
#: The slowest and fastest arrival or service rate, per second. With at most ``MAX_NUMBERS`` customers
#: at the slowest rate the last arrival comes near 1e14 s, below ``MAX_TIME_S``.
MIN_RATE_PER_S = 1e-6
MAX_RATE_PER_S = 1e9

# Below this many replications a per-replication heap beats a numpy step over the replication axis
# (measured: a numpy step costs ~4 us of overhead, a heap step ~0.15 us per replication).
_HEAP_BELOW_REPLICATIONS = 32
# The heap walks a replication in chunks of this many customers.
_HEAP_CHUNK = 1 << 16
# mmc_replications runs its replications in blocks of about this many numbers, so that its working
# memory stays a few hundred MB however many replications it is asked for.
_BLOCK_NUMBERS = 10**7


def _as_float_array(name: str, values: object) -> np.ndarray:
    allowed = "an array of real numbers (seconds), 1-D (customers) or 2-D (replications, customers)"
    if isinstance(values, str | bytes) or values is None:
        raise TypeError(f"{name} must be {allowed}, got {_show(values)} ({type(values).__name__})")
    try:
        raw = np.asarray(values)
        if raw.dtype.kind not in "iuf":  # bools, strings, complex, dates, objects that are not numbers
            if raw.dtype.kind in "bcmMSUV":
                raise TypeError(f"{raw.dtype} entries")
            raw = raw.astype(np.float64)
        out = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as err:
        raise TypeError(f"{name} must be {allowed}, got {_show(values)} ({type(values).__name__})") from err
    if out.ndim not in (1, 2):
        raise ValueError(f"{name} must be {allowed}; got shape {out.shape}: {_show(values)}")
    bad = ~np.isfinite(out)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name} must be finite; entry {where} is {float(out[where])!r}")
    negative = out < 0
    if negative.any():
        where = tuple(int(i) for i in np.argwhere(negative)[0])
        raise ValueError(f"{name} must be >= 0; entry {where} is {float(out[where])!r}")
    huge = out > MAX_TIME_S
    if huge.any():
        where = tuple(int(i) for i in np.argwhere(huge)[0])
        raise ValueError(f"{name} must be <= {MAX_TIME_S:g} s; entry {where} is {float(out[where])!r}")
    return out


def _checked_arrays(arrival_times_s: object, service_times_s: object) -> tuple[np.ndarray, np.ndarray]:
    arrivals = _as_float_array("arrival_times_s", arrival_times_s)
    services = _as_float_array("service_times_s", service_times_s)
    if arrivals.shape != services.shape:
        raise ValueError(
            f"arrival_times_s and service_times_s must have the same shape, "
            f"got {arrivals.shape} and {services.shape}"
        )
    unsorted = np.diff(arrivals, axis=-1) < 0
    if unsorted.any():
        where = tuple(int(i) for i in np.argwhere(unsorted)[0])
        after = (*where[:-1], where[-1] + 1)
        raise ValueError(
            f"arrival_times_s must be sorted (non-decreasing along the customer axis); entry {after} "
            f"({float(arrivals[after])!r}) comes before entry {where} ({float(arrivals[where])!r})"
        )
    return arrivals, services


def _lindley(arrivals: np.ndarray, services: np.ndarray) -> np.ndarray:
    """One server, every row at once: ``W = X - cummin(X)``, ``X = [0, cumsum(S[:-1] - diff(A))]``."""
    x = np.zeros_like(arrivals)
    np.cumsum(services[:, :-1] - np.diff(arrivals, axis=1), axis=1, out=x[:, 1:])
    return x - np.minimum.accumulate(x, axis=1)


def _kiefer_wolfowitz_heap(arrivals: np.ndarray, services: np.ndarray, servers: int) -> np.ndarray:
    """``servers`` servers, one replication, a heap of the servers' free times."""
    free = [0.0] * servers
    out = np.empty(len(arrivals))
    replace = heapq.heapreplace  # a local name: this loop is the hot path
    # In chunks, so that the Python floats of a long replication never all exist at once.
    for lo in range(0, len(arrivals), _HEAP_CHUNK):
        hi = lo + _HEAP_CHUNK
        waits: list[float] = []
        append = waits.append
        for arrival, service in zip(arrivals[lo:hi].tolist(), services[lo:hi].tolist(), strict=True):
            earliest = free[0]
            if earliest > arrival:
                append(earliest - arrival)
                replace(free, earliest + service)
            else:
                append(0.0)
                replace(free, arrival + service)
        out[lo:hi] = waits
    return out


def _kiefer_wolfowitz_numpy(arrivals: np.ndarray, services: np.ndarray, servers: int) -> np.ndarray:
    """``servers`` servers, one numpy step per customer over every replication at once."""
    replications, customers = arrivals.shape
    rows = np.arange(replications)
    free = np.zeros((replications, servers))
    # Customer-major copies make each step read and write contiguous memory.
    arrivals_t = np.ascontiguousarray(arrivals.T)
    services_t = np.ascontiguousarray(services.T)
    waits_t = np.empty_like(arrivals_t)
    for i in range(customers):
        first = free.argmin(axis=1)
        start = np.maximum(arrivals_t[i], free[rows, first])
        np.subtract(start, arrivals_t[i], out=waits_t[i])
        free[rows, first] = start + services_t[i]
    return np.ascontiguousarray(waits_t.T)


def fifo_waits_s(arrival_times_s: object, service_times_s: object, servers: int) -> np.ndarray:
    """Seconds each request waits for a server in a FIFO station with ``servers`` identical servers.

    ``arrival_times_s`` (sorted) and ``service_times_s`` are both of shape ``(customers,)`` or
    ``(replications, customers)``, every entry finite, >= 0 and at most ``MAX_TIME_S`` (1e15 s);
    ``servers`` is at most ``MAX_SERVERS`` (10**6). The station starts empty at time 0. Returns the
    waits, same shape (a request's time in system is its wait plus its service time).
    """
    servers = check_int("servers", servers, minimum=1, maximum=MAX_SERVERS)
    arrivals, services = _checked_arrays(arrival_times_s, service_times_s)
    rows_a, rows_s = np.atleast_2d(arrivals), np.atleast_2d(services)
    # With at least as many servers as customers nobody waits; more servers than that change nothing.
    servers = min(servers, rows_a.shape[1])
    if rows_a.shape[1] == 0:
        waits = np.zeros_like(rows_a)
    elif servers == 1:
        waits = _lindley(rows_a, rows_s)
    elif rows_a.shape[0] < _HEAP_BELOW_REPLICATIONS:
        waits = np.stack([_kiefer_wolfowitz_heap(a, s, servers) for a, s in zip(rows_a, rows_s, strict=True)])
    else:
        waits = _kiefer_wolfowitz_numpy(rows_a, rows_s, servers)
    return waits.reshape(arrivals.shape)


def _check_draws(
    arrival_rate_per_s: object,
    service_rate_per_s: object,
    customers: object,
    replications: object,
    seed: object,
) -> tuple[float, float, int, int, int]:
    """The arguments of ``exponential_arrays``, checked (the sizes against ``MAX_NUMBERS``)."""
    arrival_rate_per_s = check_range(
        "arrival_rate_per_s", arrival_rate_per_s, MIN_RATE_PER_S, MAX_RATE_PER_S, unit=" per s"
    )
    service_rate_per_s = check_range(
        "service_rate_per_s", service_rate_per_s, MIN_RATE_PER_S, MAX_RATE_PER_S, unit=" per s"
    )
    customers = check_int("customers", customers, minimum=1, maximum=MAX_NUMBERS)
    replications = check_int("replications", replications, minimum=1, maximum=MAX_REPLICATIONS)
    if customers * replications > MAX_NUMBERS:
        raise ValueError(
            f"customers x replications must be <= {MAX_NUMBERS:,} numbers, got customers={customers:,} x "
            f"replications={replications:,} = {customers * replications:,}"
        )
    seed = check_int("seed", seed, minimum=0)
    return arrival_rate_per_s, service_rate_per_s, customers, replications, seed


def _draw(
    arrival_rate_per_s: float, service_rate_per_s: float, customers: int, rows: range, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The arrays of replications ``rows`` (checked arguments)."""
    arrivals = np.empty((len(rows), customers))
    services = np.empty((len(rows), customers))
    for i, r in enumerate(rows):
        gaps = stream(seed, "arrivals", r).exponential(1.0 / arrival_rate_per_s, customers)
        np.cumsum(gaps, out=arrivals[i])
        services[i] = stream(seed, "service", r).exponential(1.0 / service_rate_per_s, customers)
    return arrivals, services


def exponential_arrays(
    arrival_rate_per_s: float, service_rate_per_s: float, customers: int, replications: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Poisson arrival times and exponential service times, each of shape ``(replications, customers)``.

    Replication ``r`` draws from the streams ``"arrivals"`` and ``"service"`` of replication ``r``, so
    its draws do not depend on how many replications were asked for. The rates lie in
    [``MIN_RATE_PER_S``, ``MAX_RATE_PER_S``] = [1e-6, 1e9] per second, ``replications`` is at most
    ``MAX_REPLICATIONS`` (10**5) and ``customers x replications`` at most ``MAX_NUMBERS`` (10**8),
    checked before anything is allocated.
    """
    checked = _check_draws(arrival_rate_per_s, service_rate_per_s, customers, replications, seed)
    rate_a, rate_s, customers, replications, seed = checked
    return _draw(rate_a, rate_s, customers, range(replications), seed)


def mmc_replications(
    arrival_rate_per_s: float,
    service_rate_per_s: float,
    servers: int,
    customers: int,
    replications: int,
    seed: int,
    *,
    warmup_share: float = 0.1,
) -> pd.DataFrame:
    """Independent replications of an M/M/c queue, one row each, for quick screening.

    Each replication starts empty, so its first requests wait less than in steady state: the first
    ``warmup_share`` of each replication's ``customers`` are simulated but left out of the statistics.
    An unstable queue (``arrival_rate_per_s >= servers * service_rate_per_s``) is simulated all the
    same; its waits grow with ``customers``.

    Columns: ``replication``; ``customers`` (counted after the warm-up); ``mean_wait_s``;
    ``wait_probability`` (share that waited at all); ``mean_sojourn_s`` (wait plus service).

    Bounds, checked before any work: ``servers`` at most ``MAX_SERVERS`` (10**6), the rates in
    [1e-6, 1e9] per second, ``customers`` at most ``MAX_CUSTOMERS`` (10**7), ``replications`` at most
    ``MAX_REPLICATIONS`` (10**5) and ``customers x replications`` at most ``MAX_NUMBERS`` (10**8). The
    replications run in blocks of about 10**7 numbers, so memory stays a few hundred MB.
    """
    servers = check_int("servers", servers, minimum=1, maximum=MAX_SERVERS)
    warmup_share = check_probability("warmup_share", warmup_share, open_high=True)
    check_int("customers", customers, minimum=1, maximum=MAX_CUSTOMERS)
    checked = _check_draws(arrival_rate_per_s, service_rate_per_s, customers, replications, seed)
    rate_a, rate_s, customers, replications, seed = checked
    skip = int(warmup_share * customers)  # < customers, since warmup_share < 1
    block = max(1, _BLOCK_NUMBERS // customers)
    mean_wait, wait_probability, mean_sojourn = [], [], []
    for first in range(0, replications, block):
        rows = range(first, min(first + block, replications))
        arrivals, services = _draw(rate_a, rate_s, customers, rows, seed)
        waits = fifo_waits_s(arrivals, services, servers)[:, skip:]
        mean_wait.append(waits.mean(axis=1))
        wait_probability.append((waits > 0).mean(axis=1))
        mean_sojourn.append((waits + services[:, skip:]).mean(axis=1))
    return pd.DataFrame(
        {
            "replication": np.arange(replications, dtype=np.int64),
            "customers": np.full(replications, customers - skip, dtype=np.int64),
            "mean_wait_s": np.concatenate(mean_wait),
            "wait_probability": np.concatenate(wait_probability),
            "mean_sojourn_s": np.concatenate(mean_sojourn),
        }
    )
