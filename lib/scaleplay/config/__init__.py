"""The configs of a platform, below the engine: frozen dataclasses validated on construction.

``pool`` (batcher, pool) and ``autoscaler`` first, then ``controls`` (cascade, time-box, surge modes,
overflow) and ``regions`` (regions, faults), and ``platform`` (gateway, ingestion, the whole platform)
on top. Nothing here imports the engine (``scaleplay.sim``) or the reports.
"""

from .autoscaler import AUTOSCALE_METRICS, AutoscalerConfig, ColdStart
from .controls import (
    MODES,
    CascadeConfig,
    ModeControllerConfig,
    ModeKnobs,
    ModeSettings,
    ModeSignals,
    OverflowConfig,
    TimeBoxConfig,
)
from .platform import GatewayConfig, IngestionConfig, PlatformConfig
from .pool import CONTINUOUS_POLICIES, POLICIES, SCHEDULES, BatcherConfig, ContinuousBatcherConfig, PoolConfig
from .regions import Fault, Region, RegionsConfig

__all__ = [
    "AUTOSCALE_METRICS",
    "CONTINUOUS_POLICIES",
    "MODES",
    "POLICIES",
    "SCHEDULES",
    "AutoscalerConfig",
    "BatcherConfig",
    "ContinuousBatcherConfig",
    "CascadeConfig",
    "ColdStart",
    "Fault",
    "GatewayConfig",
    "IngestionConfig",
    "ModeControllerConfig",
    "ModeKnobs",
    "ModeSettings",
    "ModeSignals",
    "OverflowConfig",
    "PlatformConfig",
    "PoolConfig",
    "Region",
    "RegionsConfig",
    "TimeBoxConfig",
]
