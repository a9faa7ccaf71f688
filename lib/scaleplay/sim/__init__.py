"""The simulation engine: the platform as simpy components, one module per stage of the data flow.

``simulate(arrivals, PlatformConfig, seed=...)`` plays an arrivals table through the platform:

    requests     the arrival columns and each request's state, as typed arrays
    gateway      arrivals fed in order; admission (rate limit, shedding, bounded queue); deadlines
    router       the site (region) that serves a request; failover and spill-over
    ingestion    the feature fetch
    pool         waiting lines and the balancing policy (one class per policy)
    replica      the batch slots of each replica (the static batcher)
    continuous   or each replica's iteration scheduler: continuous batching with a paged KV cache
    fastloop     a plain platform of one continuous pool, played by a compiled copy of the same loop
    response     the answer, and the latency window the surge controller reads
    controllers  autoscaler, cascade, time-box, surge modes: attached to a pool or the gateway by hooks
    faults       replicas that stop and come back
    engine       builds the components from the config and runs simpy
    output       the RequestLog, the Timeline and the other tables

Every request that arrives ends ``completed``, ``rejected``, ``timed_out`` or ``in_flight``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._validate import _kind, check_in, check_int, check_seconds
from ..config import PlatformConfig
from ..config.regions import check_origin_names
from ..rng import stream
from .engine import Platform
from .output import NARROW_LOG_COLUMNS, SimulationResult, interval_count, result
from .requests import arrival_columns

__all__ = ["NARROW_LOG_COLUMNS", "SimulationResult", "simulate"]


def simulate(
    arrivals: pd.DataFrame,
    config: PlatformConfig,
    *,
    seed: int,
    horizon_s: float | None = None,
    timeline_step_s: float = 1.0,
    progress: bool = False,
    log_columns: str = "all",
) -> SimulationResult:
    """Play ``arrivals`` (``schema.ARRIVAL_COLUMNS``, sorted by ``t_s``) through the platform.

    ``seed`` fixes every random draw; each component draws from its own named stream (listed in
    ``sim.engine``), so switching one on never moves another's draws. ``horizon_s`` stops the run
    (default: run until every request has its outcome). ``progress`` shows a tqdm bar that advances
    with simulated time. ``log_columns="narrow"`` returns a RequestLog of the columns a planner reads
    (``NARROW_LOG_COLUMNS``), which saves memory on long runs. ``scaleplay.config`` documents the
    configs and their rules.
    """
    if not isinstance(config, PlatformConfig):
        raise TypeError(f"config must be a PlatformConfig, got {_kind(config)}")
    seed = check_int("seed", seed, minimum=0)
    horizon_s = None if horizon_s is None else check_seconds("horizon_s", horizon_s, positive=True)
    timeline_step_s = check_seconds("timeline_step_s", timeline_step_s, positive=True)
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be True or False, got {progress!r}")
    check_in("log_columns", log_columns, ("all", "narrow"))
    if horizon_s is not None:
        interval_count(horizon_s, timeline_step_s)
    columns = arrival_columns(arrivals)
    n = len(columns["t_s"]) if horizon_s is None else int(np.searchsorted(columns["t_s"], horizon_s, "left"))
    if horizon_s is None and n:  # the Timeline reaches at least the last arrival
        interval_count(float(columns["t_s"][n - 1]), timeline_step_s)
    columns = {name: values[:n] for name, values in columns.items()}
    regions = config.regions
    if regions is not None:
        pools = [regions.pool_of(k, config.pool) for k in range(len(regions.regions))]
        pools += [config.cascade.small] if config.cascade is not None else []
        polling = config.modes is not None or any(pool.autoscaler is not None for pool in pools)
        if polling and horizon_s is None and any(f.duration_s is None for f in regions.faults):
            # requests stuck behind a permanent fault would keep the controllers polling for ever
            raise ValueError(
                "horizon_s must be set when an autoscaler or the surge controller runs and a fault is "
                "permanent"
            )
        if "origin_region" in arrivals.columns:
            columns["origin"] = check_origin_names(arrivals["origin_region"].iloc[:n].tolist(), regions.names)
        else:
            columns["origin"] = regions.draw_origins(n, stream(seed, "origin"))

    platform = Platform(columns, config, seed, horizon_s)
    platform.run(progress)
    return result(platform, columns, arrivals["class_name"], timeline_step_s, log_columns == "narrow")
