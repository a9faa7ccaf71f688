"""scaleplay: the simulation library behind the Scaling AI Playbooks.

Modules, in the order data flows through them (``lib/README.md`` draws the map):

- ``workload`` and ``trace``: users and traffic shapes, or a recorded trace, become an arrivals table.
- ``profiles``: how long a batch takes on a replica (affine, roofline from hardware specs, measured);
  ``kernels`` measures batched decode steps (CuPy on a GPU, NumPy twins on the CPU) and ``roofline``
  fits those measurements into a service-time curve.
- ``simulator``: the simpy model of the platform (gateway, feature fetch, batching replicas) that
  turns arrivals into a RequestLog and a Timeline; ``controls`` (autoscaler, cascade, time-box, surge
  modes, overflow) and ``regions`` (geo-routing, faults, failover) switch on parts of it.
- ``metrics``: percentiles, goodput, the latency waterfall, utilization, confidence intervals.
- ``queueing`` and ``fastpath``: the analytic formulas and the vectorized FIFO recursions that the
  simulator is checked against, and that screen designs quickly.
- ``capacity``: the back-of-the-envelope chain from users to replicas and dollars.
- ``cost``, ``alerting``, ``planner``: the bill, SLO burn-rate alerts, and the sizing loop that
  finds the cheapest configuration meeting an SLO.
- ``scenario``: a reader's scenario in YAML, planned phase by phase (``python -m scaleplay plan``).
- ``rng``, ``schema``, ``backend``, ``report``: named random streams, the tables' columns, the array
  backend for GPU kernels, and helpers for the book's chapters.
"""

from .alerting import SLO, evaluate_alerts
from .capacity import EnvelopeInputs, envelope, envelope_table
from .controls import (
    AutoscalerConfig,
    CascadeConfig,
    ColdStart,
    ModeControllerConfig,
    OverflowConfig,
    TimeBoxConfig,
)
from .cost import Prices, load_prices, monthly_bill, run_cost, unit_costs
from .fastpath import fifo_waits_s, mmc_replications
from .metrics import latency_percentiles, stage_breakdown, summarize
from .planner import ModelOption, plan, roofline_option
from .profiles import AffineServiceTime, RandomServiceTime, RooflineServiceTime, TabulatedServiceTime
from .regions import Fault, Region, RegionsConfig, fault_impact, region_report
from .rng import seed_sequence, stream
from .scenario import Scenario, load_scenario, plan_scenario
from .simulator import (
    BatcherConfig,
    GatewayConfig,
    IngestionConfig,
    PlatformConfig,
    PoolConfig,
    SimulationResult,
    simulate,
)
from .trace import load_trace
from .workload import generate_arrivals

__version__ = "0.1.0"

__all__ = [
    "SLO",
    "Scenario",
    "load_scenario",
    "plan_scenario",
    "AffineServiceTime",
    "AutoscalerConfig",
    "CascadeConfig",
    "ColdStart",
    "Fault",
    "ModeControllerConfig",
    "ModelOption",
    "OverflowConfig",
    "Prices",
    "Region",
    "RegionsConfig",
    "TimeBoxConfig",
    "evaluate_alerts",
    "fault_impact",
    "load_prices",
    "monthly_bill",
    "plan",
    "region_report",
    "roofline_option",
    "run_cost",
    "unit_costs",
    "BatcherConfig",
    "EnvelopeInputs",
    "GatewayConfig",
    "IngestionConfig",
    "PlatformConfig",
    "PoolConfig",
    "RandomServiceTime",
    "RooflineServiceTime",
    "SimulationResult",
    "TabulatedServiceTime",
    "envelope",
    "envelope_table",
    "fifo_waits_s",
    "generate_arrivals",
    "latency_percentiles",
    "load_trace",
    "mmc_replications",
    "seed_sequence",
    "simulate",
    "stage_breakdown",
    "stream",
    "summarize",
    "__version__",
]
