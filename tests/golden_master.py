"""The golden master of the simulator: hashes of every table a run returns, for platforms covering
every feature and two seeds each. ``test_golden.py`` checks them; after a deliberate, documented
change of results, re-record one entry with ``python tests/golden_master.py NAME...`` (all: no NAME).

A table is hashed by its values, column by column (names, then floats as IEEE bytes, integers as
int64, anything else as text), so a change of dtype alone (object to categorical) keeps the hash.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from conftest import make_arrivals, poisson_arrivals
from scaleplay import (
    AutoscalerConfig,
    BatcherConfig,
    CascadeConfig,
    ColdStart,
    Fault,
    GatewayConfig,
    IngestionConfig,
    ModeControllerConfig,
    OverflowConfig,
    PlatformConfig,
    PoolConfig,
    Region,
    RegionsConfig,
    TimeBoxConfig,
    simulate,
)
from scaleplay.controls import ModeKnobs, ModeSettings, ModeSignals
from scaleplay.profiles import AffineServiceTime, RandomServiceTime

RECORD = Path(__file__).with_name("golden_master.json")
SEEDS = (3, 11)
TABLES = ("log", "timeline", "batches", "provisioning", "offline", "modes")

EXP = RandomServiceTime(AffineServiceTime(fixed_s=1.0), "exponential")
AFFINE = AffineServiceTime(fixed_s=0.3, per_item_s=0.05, per_token_in_s=0.0005, per_token_out_s=0.002)
SMALL = AffineServiceTime(fixed_s=0.1, per_item_s=0.02)


def _hash_frame(frame: pd.DataFrame | None) -> str:
    digest = hashlib.sha256()
    if frame is None:
        return "none"
    digest.update(repr(list(frame.columns)).encode())
    for name in frame.columns:
        values = frame[name].to_numpy()
        if values.dtype.kind == "f":
            digest.update(np.ascontiguousarray(values, dtype=np.float64).tobytes())
        elif values.dtype.kind in "iub":
            digest.update(np.ascontiguousarray(values, dtype=np.int64).tobytes())
        else:
            digest.update("\x1f".join(map(str, values.tolist())).encode())
    return digest.hexdigest()[:16]


def _priorities(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed + 1000).integers(0, 3, n)


def _traffic(rate: float, n: int, seed: int, **columns: object) -> pd.DataFrame:
    arrivals = poisson_arrivals(rate, n, seed, **columns)
    arrivals["difficulty"] = np.random.default_rng(seed + 7).random(n)
    arrivals["tokens_in"] = np.random.default_rng(seed + 8).integers(20, 400, n)
    arrivals["tokens_out"] = np.random.default_rng(seed + 9).integers(10, 300, n)
    return arrivals


def _surge() -> ModeControllerConfig:
    return ModeControllerConfig(
        surge=ModeSettings(
            enter=ModeSignals(queue_length=8),
            exit=ModeSignals(queue_length=2),
            knobs=ModeKnobs(max_batch_size=8, max_wait_s=0.05, shed_priority_from=2),
        ),
        emergency=ModeSettings(
            enter=ModeSignals(queue_length=20),
            exit=ModeSignals(queue_length=5),
            knobs=ModeKnobs(max_batch_size=16, queue_capacity=25, shed_priority_from=1),
        ),
        interval_s=2.0,
        window_s=10.0,
        min_dwell_s=10.0,
    )


def _regions(pool: PoolConfig, faults: tuple[Fault, ...] = (), **kwargs: object) -> RegionsConfig:
    return RegionsConfig(
        regions=(Region("us", 0.5), Region("eu", 0.3), Region("ap", 0.2)),
        rtt_s=((0.02, 0.09, 0.16), (0.09, 0.02, 0.2), (0.16, 0.2, 0.03)),
        faults=faults,
        **kwargs,
    )


def _pool(replicas: int, service=AFFINE, batch: int = 1, wait_s: float = 0.0, **kwargs: object) -> PoolConfig:
    return PoolConfig(replicas, service, BatcherConfig(batch, wait_s), **kwargs)


def _scaler(**kwargs: object) -> AutoscalerConfig:
    base = dict(max_replicas=8, min_replicas=1, interval_s=5.0, target=0.6, cooldown_s=20.0)
    base.update(kwargs)
    return AutoscalerConfig(**base)


# name -> (arrivals for a seed, config, simulate's keyword arguments)
Case = tuple[Callable[[int], pd.DataFrame], PlatformConfig, dict]


def cases() -> dict[str, Case]:
    mm = lambda seed: poisson_arrivals(3.2, 600, seed)  # noqa: E731 - M/M/4 at rho 0.8
    busy = lambda seed: _traffic(6.0, 700, seed)  # noqa: E731
    classes = lambda seed: _traffic(6.0, 700, seed, priority=_priorities(seed, 700))  # noqa: E731
    surge = lambda seed: _traffic(14.0, 900, seed, priority=_priorities(seed, 900))  # noqa: E731
    ticks = lambda seed: make_arrivals(np.repeat(np.arange(200, dtype=float) * 0.5, 2))  # noqa: E731
    own = lambda seed: poisson_arrivals(  # noqa: E731
        2.0, 400, seed, service_s=np.random.default_rng(seed).exponential(1.5, 400)
    )
    cascade = CascadeConfig(_pool(2, SMALL, 4, 0.05, name="small"), min_confidence=0.6)
    return {
        "mm1": (lambda seed: poisson_arrivals(0.8, 500, seed), PlatformConfig(_pool(1, EXP)), {}),
        "mm4": (mm, PlatformConfig(_pool(4, EXP)), {}),
        "mm4_horizon": (mm, PlatformConfig(_pool(4, EXP)), {"horizon_s": 120.0}),
        "batch8_wait": (busy, PlatformConfig(_pool(2, AFFINE, 8, 0.2)), {}),
        "batch_no_wait": (busy, PlatformConfig(_pool(2, AFFINE, 8, 0.0)), {}),
        "two_slots": (
            busy,
            PlatformConfig(PoolConfig(2, AFFINE, BatcherConfig(4, 0.1, max_concurrent_batches=2))),
            {},
        ),
        "round_robin": (busy, PlatformConfig(_pool(3, AFFINE, 4, 0.1, policy="round_robin")), {}),
        "jsq": (busy, PlatformConfig(_pool(3, AFFINE, 4, 0.1, policy="join_shortest_queue")), {}),
        "p2c": (busy, PlatformConfig(_pool(3, AFFINE, 4, 0.1, policy="power_of_two")), {}),
        "priorities": (classes, PlatformConfig(_pool(2, AFFINE, 4, 0.1)), {}),
        "ties": (ticks, PlatformConfig(_pool(2, AffineServiceTime(fixed_s=1.0), 2, 0.5)), {}),
        "queue_full": (
            busy,
            PlatformConfig(_pool(1, AFFINE, 4, 0.1), GatewayConfig(queue_capacity=6)),
            {},
        ),
        "rate_limit": (
            busy,
            PlatformConfig(_pool(2, AFFINE, 4, 0.1), GatewayConfig(rate_limit_per_s=4.0, rate_limit_burst=5)),
            {},
        ),
        "shedding": (
            classes,
            PlatformConfig(_pool(1, AFFINE, 4, 0.1), GatewayConfig(shed_queue_length=4, shed_min_priority=1)),
            {},
        ),
        "timeouts": (classes, PlatformConfig(_pool(1, AFFINE, 4, 0.1), GatewayConfig(timeout_s=2.0)), {}),
        "ingestion": (
            busy,
            PlatformConfig(
                _pool(2, AFFINE, 4, 0.1),
                GatewayConfig(timeout_s=3.0),
                IngestionConfig(0.05, 1.5, cache_hit_ratio=0.4, cache_latency_s=0.002),
                network_hop_s=0.03,
            ),
            {"timeline_step_s": 5.0},
        ),
        "own_times": (own, PlatformConfig(_pool(4, AFFINE)), {}),
        "autoscaler": (
            surge,
            PlatformConfig(_pool(2, AFFINE, 4, 0.1, autoscaler=_scaler(cold_start=ColdStart(fixed_s=8.0)))),
            {},
        ),
        "scale_to_zero": (
            lambda seed: _traffic(0.05, 40, seed),
            PlatformConfig(
                _pool(
                    1,
                    autoscaler=_scaler(
                        min_replicas=0, scale_to_zero_after_s=60.0, metric="concurrency", target=2.0
                    ),
                )
            ),
            {},
        ),
        "cascade": (busy, PlatformConfig(_pool(2, AFFINE, 4, 0.1), cascade=cascade), {}),
        "cascade_human": (
            busy,
            PlatformConfig(
                _pool(2, AFFINE, 4, 0.1),
                cascade=CascadeConfig(
                    _pool(2, SMALL, 4, 0.05, name="small"), human_min_confidence=0.8, human_delay_s=30.0
                ),
                network_hop_s=0.01,
            ),
            {},
        ),
        "timebox": (
            busy,
            PlatformConfig(_pool(1, AFFINE, 4, 0.1), timebox=TimeBoxConfig(1.5, cache_latency_s=0.01)),
            {},
        ),
        "cascade_timebox": (
            surge,
            PlatformConfig(_pool(2, AFFINE, 4, 0.1), cascade=cascade, timebox=TimeBoxConfig(2.0)),
            {},
        ),
        "modes": (surge, PlatformConfig(_pool(2, AFFINE, 4, 0.1), modes=_surge()), {}),
        "overflow": (
            surge,
            PlatformConfig(
                _pool(1, AFFINE, 4, 0.1),
                GatewayConfig(queue_capacity=10),
                overflow=OverflowConfig(2.0, opens_s=30.0, price_per_request_usd=0.001),
            ),
            {},
        ),
        "everything_one_region": (
            surge,
            PlatformConfig(
                _pool(2, AFFINE, 4, 0.1, autoscaler=_scaler()),
                GatewayConfig(queue_capacity=40, timeout_s=8.0),
                IngestionConfig(0.02),
                cascade=cascade,
                modes=_surge(),
                overflow=OverflowConfig(3.0),
            ),
            {"horizon_s": 70.0},
        ),
        "regions": (busy, PlatformConfig(_pool(1, AFFINE, 4, 0.1), regions=_regions(_pool(1))), {}),
        "regions_spill": (
            surge,
            PlatformConfig(
                _pool(1, AFFINE, 4, 0.1),
                GatewayConfig(timeout_s=6.0),
                regions=_regions(_pool(1), spill_backlog=3),
            ),
            {},
        ),
        "regions_faults": (
            busy,
            PlatformConfig(
                _pool(2, AFFINE, 4, 0.1),
                ingestion=IngestionConfig(0.05),
                regions=_regions(
                    _pool(2),
                    faults=(Fault(20.0, "us", "all", 30.0), Fault(40.0, "eu", 1), Fault(60.0, "us", 1, 10.0)),
                ),
            ),
            {},
        ),
        "regions_no_failover": (
            busy,
            PlatformConfig(
                _pool(2, AFFINE, 4, 0.1),
                regions=_regions(_pool(2), faults=(Fault(20.0, "eu", "all"),), failover=False),
            ),
            {"horizon_s": 100.0},
        ),
        "regions_autoscaler_first": (
            surge,
            PlatformConfig(
                _pool(2, AFFINE, 4, 0.1),
                regions=RegionsConfig(
                    regions=(
                        Region("us", 0.7, _pool(2, AFFINE, 4, 0.1, autoscaler=_scaler())),
                        Region("eu", 0.3),
                    ),
                    rtt_s=((0.02, 0.09), (0.09, 0.02)),
                ),
            ),
            {},
        ),
    }


def fingerprint(name: str, seed: int) -> dict[str, str]:
    arrivals, config, kwargs = cases()[name]
    result = simulate(arrivals(seed), config, seed=seed, **kwargs)
    return {table: _hash_frame(getattr(result, table)) for table in TABLES}


def recorded() -> dict[str, dict[str, str]]:
    return json.loads(RECORD.read_text())


def main(names: list[str]) -> None:
    record = recorded() if RECORD.exists() else {}
    for name in names or list(cases()):
        for seed in SEEDS:
            record[f"{name}/{seed}"] = fingerprint(name, seed)
    RECORD.write_text(json.dumps(dict(sorted(record.items())), indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
