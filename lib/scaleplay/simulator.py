"""The inference platform as a discrete-event model: ``simulate`` and the configs it reads.

The engine lives in ``scaleplay.sim`` (one module per stage: gateway, router, ingestion, pool,
replica, controllers, faults, output) and the configs in ``scaleplay.config``; this module keeps the
names the chapters import. A request's life, with the log column stamped at each handoff:
``arrived_s`` at the gateway, which admits it at once (``admitted_s``) or rejects it; its features
are fetched (``features_ready_s``); it waits in a line of its pool until a batch slot of a replica
takes it (``model_start_s``); the batch ends (``model_end_s``); the answer reaches the client
(``responded_s``). With a ``ContinuousBatcherConfig`` a replica schedules per iteration instead
(``sim.continuous``): a request starts at its first iteration, its first token comes at the end of
its prefill (``first_token_s``) and it ends with its last token. Every request ends ``completed``,
``rejected``, ``timed_out`` or ``in_flight``.
"""

from .config import (
    POLICIES,
    SCHEDULES,
    BatcherConfig,
    ContinuousBatcherConfig,
    GatewayConfig,
    IngestionConfig,
    PlatformConfig,
    PoolConfig,
)
from .sim import SimulationResult, simulate

__all__ = [
    "POLICIES",
    "SCHEDULES",
    "BatcherConfig",
    "ContinuousBatcherConfig",
    "PoolConfig",
    "GatewayConfig",
    "IngestionConfig",
    "PlatformConfig",
    "SimulationResult",
    "simulate",
]
