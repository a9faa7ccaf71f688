"""Shared test helpers: arrivals tables built with numpy, and reference formulas the library lacks."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

import numpy as np
import pandas as pd

from scaleplay.queueing import erlang_c
from scaleplay.rng import stream
from scaleplay.schema import OUTCOMES


def make_arrivals(
    t_s: np.ndarray,
    *,
    priority: np.ndarray | int = 0,
    tokens_in: np.ndarray | int = 100,
    tokens_out: np.ndarray | int = 50,
    service_s: np.ndarray | None = None,
) -> pd.DataFrame:
    """An arrivals table (``schema.ARRIVAL_COLUMNS``) for the given arrival times."""
    t_s = np.asarray(t_s, dtype=np.float64)
    n = len(t_s)

    def column(values: np.ndarray | int) -> np.ndarray:
        return np.broadcast_to(np.asarray(values, dtype=np.int64), n).copy()

    priority = column(priority)
    frame = pd.DataFrame(
        {
            "request_id": np.arange(n, dtype=np.int64),
            "t_s": t_s,
            "class_name": np.where(priority == 0, "paid", "free").astype(object),
            "priority": priority,
            "tokens_in": column(tokens_in),
            "tokens_out": column(tokens_out),
            "difficulty": np.full(n, 0.5),
        }
    )
    if service_s is not None:
        frame["service_s"] = np.asarray(service_s, dtype=np.float64)
    return frame


def poisson_arrivals(
    rate_per_s: float, count: int, seed: int, replication: int = 0, **columns: object
) -> pd.DataFrame:
    """``count`` Poisson arrivals at ``rate_per_s``, drawn from the tests' own named stream."""
    gaps = stream(seed, "test-arrivals", replication).exponential(1.0 / rate_per_s, count)
    return make_arrivals(np.cumsum(gaps), **columns)


def _root_in_unit_interval(
    poly: Callable[[float], float], low: float = 0.0, high: float = 1.0 - 1e-15
) -> float:
    """Bisection for the root of ``poly`` in (0, 1) with ``poly(low) > 0 > poly(high)``."""
    for _ in range(200):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if poly(mid) > 0 else (low, mid)
    return 0.5 * (low + high)


def bulk_no_late_entry_markov_chain(arrival_rate: float, batch_rate: float, max_batch: int) -> float:
    """The same L solved numerically from the Markov chain (idle; busy with n waiting, n < 400)."""
    lam, mu, b, top = arrival_rate, batch_rate, max_batch, 400
    rates = np.zeros((top + 2, top + 2))  # state 0 idle, state 1 + n busy with n waiting
    rates[0, 1] = lam
    for n in range(top + 1):
        if n < top:
            rates[1 + n, 2 + n] += lam
        rates[1 + n, 0 if n == 0 else 1 + n - min(n, b)] += mu
    np.fill_diagonal(rates, -rates.sum(axis=1))
    balance = np.vstack([rates.T, np.ones(top + 2)])
    p = np.linalg.lstsq(balance, np.append(np.zeros(top + 2), 1.0), rcond=None)[0]
    return float(p[1:] @ np.arange(top + 1)) + lam / mu


def erlang_arrivals_mean_wait_s(servers: int, arrival_rate: float, service_rate: float) -> float:
    """Round robin over ``servers`` replicas: each one is an E_c/M/1 queue.

    Every c-th Poisson arrival reaches a replica, so its gaps are Erlang(c, lambda). For GI/M/1,
    Wq = sigma / (mu (1 - sigma)) with sigma the root in (0, 1) of sigma = A*(mu (1 - sigma)), where
    A*(s) = (lambda / (lambda + s))^c is the Laplace transform of the gap.
    """
    lam, mu, c = arrival_rate, service_rate, servers
    sigma = _root_in_unit_interval(lambda z: (lam / (lam + mu * (1.0 - z))) ** c - z, 1e-12, 1.0 - 1e-12)
    return sigma / (mu * (1.0 - sigma))


def priority_mmc_mean_waits_s(arrival_rates: list[float], service_rate: float, servers: int) -> list[float]:
    """Non-preemptive priority M/M/c, equal service rates (Cobham): W_k = W0 / ((1 - s_{k-1})(1 - s_k)).

    W0 = C(c, a) / (c mu) is the mean residual time until some server frees, s_k the load of
    classes 0..k per unit of capacity.
    """
    capacity = servers * service_rate
    w0 = erlang_c(servers, sum(arrival_rates) / service_rate) / capacity
    cumulative = np.concatenate(([0.0], np.cumsum(arrival_rates) / capacity))
    return [w0 / ((1.0 - cumulative[k]) * (1.0 - cumulative[k + 1])) for k in range(len(arrival_rates))]


def mm1k_blocking(load: float, waiting_room: int) -> float:
    """P(an arrival is turned away) in M/M/1 with ``waiting_room`` places besides the one in service."""
    k = waiting_room + 1  # system capacity
    if math.isclose(load, 1.0):
        return 1.0 / (k + 1)
    return (1.0 - load) * load**k / (1.0 - load ** (k + 1))


def assert_outcomes_balance(log: pd.DataFrame, timeline: pd.DataFrame, arrivals: pd.DataFrame) -> None:
    """Every arrived request once, in order, with one outcome; the timeline's counts match the log."""
    assert log["request_id"].tolist() == arrivals["request_id"].tolist()[: len(log)]
    assert log["outcome"].isin(OUTCOMES).all()
    assert ((log["reject_reason"] != "") == (log["outcome"] == "rejected")).all()
    for name in ("rejected", "completed", "timed_out"):
        assert timeline[name].sum() == (log["outcome"] == name).sum(), name
    assert timeline["arrived"].sum() == len(log)


def finishes(call: Callable[[], object], seconds: float = 60.0) -> object:
    """Run ``call`` in a daemon thread: its result, or a failure if it is still running after ``seconds``
    (a guard against a loop that never ends, not a speed test)."""
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["value"] = call()
        except BaseException as error:  # noqa: BLE001 - handed back to the test
            box["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    if "error" in box:
        raise box["error"]
    return box["value"]
