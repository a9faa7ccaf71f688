"""What a component sees of the run it belongs to.

``engine.Platform`` builds the components, wires them to each other and is the one ``Run``. The
components depend on this contract, not on the engine, so that no module of the engine's parts imports
the engine back. The parts are typed loosely here; each is documented in its own module.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import simpy

from ..config import PlatformConfig
from .requests import Requests


class Run(Protocol):
    config: PlatformConfig
    env: simpy.Environment
    requests: Requests
    horizon_s: float | None
    plain: bool  # one class, one line, no admission rule, fetch, region or control
    faulty: bool  # a fault may cut batches short
    fast: bool  # played by the compiled loop (sim.fastloop), not simpy
    # The parts, wired by the engine: gateway.Gateway, router.Router, gateway.Deadlines,
    # ingestion.Ingestion, response.Responses, pool.Site and pool.Pool and pool.Line, engine.BatchRecord.
    gateway: Any
    router: Any
    deadlines: Any
    ingestion: Any
    answers: Any
    sites: list[Any]
    pools: list[Any]
    lines: list[Any]
    batches: Any
    iterations: Any  # continuous.IterationRecord
    provisioning: list[list[float]]  # pool, replica, requested_s, ready_s, end_s
    mode_changes: list[tuple[float, int]]
    open_admission: Any  # the null admission and autoscaler a pool starts with
    no_autoscaler: Any
    timebox: Any  # present only with a time-box

    def stream(self, name: str) -> np.random.Generator: ...

    def new_line(self, arrivals: bool = False) -> Any: ...

    def provision(self, pool: Any, replica: Any, now: float) -> int: ...

    def finished(self) -> bool: ...
