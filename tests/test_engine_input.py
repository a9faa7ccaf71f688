"""Hostile input to the engine and its configs: each case a regression for what used to hang, wrap
around, overflow or pass unchecked. Every answer is a ValueError/TypeError naming the parameter and
showing the value, within a second (an alarm fails a case that takes longer)."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import pytest

from conftest import make_arrivals
from scaleplay.controls import AutoscalerConfig, CascadeConfig, TimeBoxConfig
from scaleplay.profiles import AffineServiceTime
from scaleplay.regions import Fault, Region, RegionsConfig
from scaleplay.simulator import (
    BatcherConfig,
    GatewayConfig,
    IngestionConfig,
    PlatformConfig,
    PoolConfig,
    simulate,
)

SERVICE = AffineServiceTime(fixed_s=0.5)
POOL = PoolConfig(1, SERVICE)


@contextmanager
def within(seconds: float) -> Iterator[None]:
    def hang(signum: int, frame: object) -> None:
        raise TimeoutError(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def refused(call: Callable[[], object], error: type[Exception], *words: str) -> None:
    with within(2.0), pytest.raises(error) as caught:
        call()
    for word in words:
        assert word in str(caught.value), (word, str(caught.value))


def arrivals(**columns: object) -> object:
    table = make_arrivals(np.arange(5.0))
    for name, values in columns.items():
        table[name] = values
    return table


@pytest.mark.parametrize(
    ("call", "error", "words"),
    [
        # used to hang: the Timeline's interval count stepped down one at a time
        (
            lambda: simulate(arrivals(), PlatformConfig(POOL), seed=1, horizon_s=1e30),
            ValueError,
            ["horizon_s", "1e+30"],
        ),
        (
            lambda: simulate(arrivals(), PlatformConfig(POOL), seed=1, timeline_step_s=1e-300),
            ValueError,
            ["timeline_step_s"],
        ),
        (
            lambda: simulate(arrivals(t_s=[0.0, 1.0, 2.0, 3.0, 1e30]), PlatformConfig(POOL), seed=1),
            ValueError,
            ["t_s", "row 4"],
        ),
        (lambda: PlatformConfig(POOL, network_hop_s=1e308), ValueError, ["network_hop_s", "1e+308"]),
        (lambda: IngestionConfig(0.1, cache_latency_s=1e308), ValueError, ["cache_latency_s"]),
        (lambda: TimeBoxConfig(1.0, cache_latency_s=1e308), ValueError, ["cache_latency_s"]),
        (
            lambda: CascadeConfig(PoolConfig(1, SERVICE, name="small"), human_delay_s=1e308),
            ValueError,
            ["human_delay_s"],
        ),
        (lambda: RegionsConfig((Region("a", 1.0),), ((1e308,),)), ValueError, ["rtt_s[0][0]"]),
        (lambda: Fault(1e308, "a"), ValueError, ["at_s"]),
        # used to pass unchecked
        (
            lambda: simulate(arrivals(difficulty=[0.1, 0.2, 1.5, 0.3, 0.4]), PlatformConfig(POOL), seed=1),
            ValueError,
            ["difficulty", "row 2", "1.5"],
        ),
        (
            lambda: simulate(arrivals(class_name=["a", "b", np.nan, "c", "d"]), PlatformConfig(POOL), seed=1),
            ValueError,
            ["class_name", "row 2", "nan"],
        ),
        (
            lambda: simulate(arrivals(class_name=[1, 2, 3, 4, 5]), PlatformConfig(POOL), seed=1),
            ValueError,
            ["class_name", "row 0"],
        ),
        (
            lambda: simulate(arrivals(tokens_in=[1, 2, 2**62, 4, 5]), PlatformConfig(POOL), seed=1),
            ValueError,
            ["tokens_in", "row 2"],
        ),
        (
            lambda: simulate(arrivals(priority=[0, 10**12, 0, 0, 0]), PlatformConfig(POOL), seed=1),
            ValueError,
            ["priority", "row 1"],
        ),
        # used to raise OverflowError
        (lambda: IngestionConfig(0.1, fetch_cv=1e308), ValueError, ["fetch_cv", "1e+308"]),
        (lambda: PoolConfig(10**30, SERVICE), ValueError, ["replicas", "100,000"]),
        (lambda: AutoscalerConfig(max_replicas=10**30), ValueError, ["max_replicas"]),
        (lambda: BatcherConfig(max_batch_size=10**30), ValueError, ["max_batch_size"]),
        # used to say "'NoneType' object is not iterable"
        (lambda: RegionsConfig(None, ((0.0,),)), TypeError, ["regions", "None"]),
        (lambda: RegionsConfig((Region("a", 1.0),), ((0.0,),), faults=None), TypeError, ["faults", "None"]),
        (
            lambda: simulate(arrivals(), PlatformConfig(POOL), seed=1, log_columns="wide"),
            ValueError,
            ["log_columns", "'wide'"],
        ),
    ],
)
def test_hostile_input_is_refused_by_name_at_once(call, error, words):
    refused(call, error, *words)


def test_the_bounds_themselves_are_accepted():
    # the largest values each bound allows still run (a run is not refused for what it may hold)
    config = PlatformConfig(
        PoolConfig(1, SERVICE, BatcherConfig(max_wait_s=1e9)), GatewayConfig(timeout_s=1e9), network_hop_s=1e9
    )
    with within(10.0):
        result = simulate(arrivals(tokens_in=10**9, priority=10**6), config, seed=1, timeline_step_s=1e3)
    assert (result.log["outcome"] == "completed").all()
    assert result.log["responded_s"].max() == pytest.approx(1e9 + 4.5, rel=1e-12)
