"""The platform's controls: autoscaling, a model cascade, time-boxed answers, surge modes, overflow.

Each control is a small frozen config that ``simulator.simulate`` switches on when it is set (every
one defaults to off, and a platform without controls runs exactly as before). This module holds the
configs, the pure decision rules the simulator's controller processes call, and the reports that read
a run's tables. The simulator does the mechanics; what each control means:

- **Autoscaler** (``AutoscalerConfig``, set on a ``PoolConfig``). Every ``interval_s`` it measures the
  pool's load and asks for ``desired_replicas``: *reactive* on the mean number of busy replicas over
  the last interval divided by ``target`` utilization (``metric="utilization"``, Kubernetes' HPA
  rule), or on the requests waiting or in service divided by ``target`` requests per replica
  (``metric="concurrency"``, Knative's rule, sampled at the evaluation instant); *predictive* when a
  ``forecast`` of the arrival rate is given: enough replicas for ``forecast(t + lead_s)`` at
  ``replica_rate_per_s`` each. With both it takes the larger. A new replica is billed from the
  moment it is asked for, but serves only after its cold start (``ColdStart``: a fixed part plus
  the weights' bytes over the load bandwidth). Scale-up is immediate; scale-down waits
  ``cooldown_s`` after the last change and never happens while a replica is starting; a removed
  replica finishes its running batches first (it is billed until then). ``min_replicas=0`` is
  scale-to-zero: after ``scale_to_zero_after_s`` without work the pool empties, and the next request
  asks for a replica at once and waits for its cold start.
- **Cascade** (``CascadeConfig``): a small model's pool in front of the platform's pool (the large
  model). The small model answers a request when its confidence ``1 - difficulty`` is at least
  ``min_confidence``; otherwise the request *escalates*: it joins the large model's line. With
  ``human_min_confidence`` the large model's answers with confidence ``1 - difficulty`` below it go
  on to a human reviewer, who adds ``human_delay_s`` (no capacity limit). Quality proxy: a model
  answers well a request whose difficulty is at most its *competence* (``small_competence``,
  ``large_competence``; a human always answers well).
- **Time-box** (``TimeBoxConfig``): each request has ``budget_s`` from its arrival. A request waiting
  for the large model leaves its line when its remaining budget falls below the large model's
  expected time for it (the mean batch time of a batch of one with its tokens); it is answered at
  that instant by the small model's answer it already holds (with a cascade) or by a cached answer
  after ``cache_latency_s``. Such requests are logged ``degraded``.
- **Surge modes** (``ModeControllerConfig``): every ``interval_s`` the controller reads three signals
  (the gateway's backlog, the p99 latency of the requests answered in the last ``window_s`` and the
  arrival rate over that window) and moves between ``MODES`` with hysteresis: it steps up at once
  to the highest mode whose ``enter`` thresholds any signal reaches, and steps down one mode only
  when every signal is below that mode's ``exit`` thresholds and the mode has lasted ``min_dwell_s``.
  Each mode's ``ModeKnobs`` override the base config's batcher and gateway knobs.
- **Overflow** (``OverflowConfig``): requests the bounded queue would turn away as ``"queue_full"``
  are rejected online as ``"overflow"`` and served by an offline batch tier instead, opening at
  ``opens_s`` and serving ``offline_rate_per_s`` requests a second in arrival order, at
  ``price_per_request_usd`` each. ``SimulationResult.offline`` lists them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ._validate import check_in, check_int, check_non_negative, check_positive, check_probability
from .metrics import busy_intervals

if TYPE_CHECKING:
    from .profiles import ModelSpec
    from .simulator import PoolConfig, SimulationResult

__all__ = [
    "AUTOSCALE_METRICS",
    "MODES",
    "ColdStart",
    "AutoscalerConfig",
    "CascadeConfig",
    "TimeBoxConfig",
    "ModeSignals",
    "ModeKnobs",
    "ModeSettings",
    "ModeControllerConfig",
    "OverflowConfig",
    "autoscale_efficiency",
    "autoscale_report",
    "cascade_report",
    "offline_report",
]

#: What a reactive autoscaler watches.
AUTOSCALE_METRICS: tuple[str, ...] = ("utilization", "concurrency")
#: The surge controller's modes, least to most severe; the Timeline's ``mode`` column holds these.
MODES: tuple[str, ...] = ("normal", "surge", "emergency")

# Slack so that a load of exactly ``k x target`` asks for ``k`` replicas despite rounding.
_CEIL_SLACK = 1e-9


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)


def _optional(check: Callable[..., object], name: str, value: object, **kwargs: int) -> object:
    return None if value is None else check(name, value, **kwargs)


def _ceil(x: float) -> int:
    return max(math.ceil(x - _CEIL_SLACK), 0)


# ---------------------------------------------------------------------------------------------------
# Autoscaler


@dataclass(frozen=True)
class ColdStart:
    """Seconds from asking for a replica to its serving: ``fixed_s + model_bytes / load_bandwidth``.

    ``fixed_s`` covers the machine, the container and the runtime; the second term loads the weights
    from storage or the network. The default is an instant start.

    >>> ColdStart(fixed_s=20.0, model_bytes=16e9, load_bandwidth_bytes_per_s=2e9).seconds
    28.0
    """

    fixed_s: float = 0.0
    model_bytes: float = 0.0
    load_bandwidth_bytes_per_s: float | None = None

    def __post_init__(self) -> None:
        _set(self, "fixed_s", check_non_negative("fixed_s", self.fixed_s))
        _set(self, "model_bytes", check_non_negative("model_bytes", self.model_bytes))
        _set(
            self,
            "load_bandwidth_bytes_per_s",
            _optional(check_positive, "load_bandwidth_bytes_per_s", self.load_bandwidth_bytes_per_s),
        )
        if self.model_bytes > 0 and self.load_bandwidth_bytes_per_s is None:
            raise ValueError(
                f"load_bandwidth_bytes_per_s is needed to load model_bytes={self.model_bytes!r}; got None"
            )

    @classmethod
    def for_model(
        cls, model: ModelSpec, load_bandwidth_bytes_per_s: float, fixed_s: float = 0.0
    ) -> ColdStart:
        """The cold start of ``model``'s weights (``ModelSpec.weight_bytes``) at that bandwidth."""
        return cls(fixed_s, model.weight_bytes, load_bandwidth_bytes_per_s)

    @property
    def seconds(self) -> float:
        if self.model_bytes == 0:
            return self.fixed_s
        return self.fixed_s + self.model_bytes / self.load_bandwidth_bytes_per_s


@dataclass(frozen=True)
class AutoscalerConfig:
    """A pool's autoscaler; see the module docstring for the rules.

    ``target`` is a utilization in (0, 1] for ``metric="utilization"`` and requests (waiting or in
    service) per replica for ``metric="concurrency"``. ``forecast`` maps a run time in seconds (the
    arrivals' ``t_s`` clock) to an arrival rate; for a workload started at ``start_s`` pass
    ``lambda t: workload.rate_per_s(t + start_s)``. ``replica_rate_per_s`` is the arrival rate one
    replica is meant to carry (its capacity times the headroom wanted). ``lead_s`` defaults to the
    cold start plus one interval: what it takes for a decision to turn into serving capacity.
    """

    max_replicas: int
    min_replicas: int = 1
    interval_s: float = 15.0
    metric: str = "utilization"
    target: float = 0.7
    cooldown_s: float = 60.0
    cold_start: ColdStart = field(default_factory=ColdStart)
    forecast: Callable[[float], float] | None = None
    replica_rate_per_s: float | None = None
    lead_s: float | None = None
    scale_to_zero_after_s: float | None = None

    def __post_init__(self) -> None:
        _set(self, "max_replicas", check_int("max_replicas", self.max_replicas, minimum=1))
        _set(
            self,
            "min_replicas",
            check_int("min_replicas", self.min_replicas, minimum=0, maximum=self.max_replicas),
        )
        _set(self, "interval_s", check_positive("interval_s", self.interval_s))
        check_in("metric", self.metric, AUTOSCALE_METRICS)
        if self.metric == "utilization":
            _set(self, "target", check_probability("target", self.target, open_low=True))
        else:
            _set(self, "target", check_positive("target", self.target))
        _set(self, "cooldown_s", check_non_negative("cooldown_s", self.cooldown_s))
        if not isinstance(self.cold_start, ColdStart):
            raise TypeError(f"cold_start must be a ColdStart, got {type(self.cold_start).__name__}")
        if self.forecast is not None and not callable(self.forecast):
            raise TypeError(f"forecast must be a callable t_s -> rate_per_s or None, got {self.forecast!r}")
        _set(
            self,
            "replica_rate_per_s",
            _optional(check_positive, "replica_rate_per_s", self.replica_rate_per_s),
        )
        if self.forecast is not None and self.replica_rate_per_s is None:
            raise ValueError("replica_rate_per_s must be set (> 0) when a forecast is given; got None")
        _set(self, "lead_s", _optional(check_non_negative, "lead_s", self.lead_s))
        _set(
            self,
            "scale_to_zero_after_s",
            _optional(check_positive, "scale_to_zero_after_s", self.scale_to_zero_after_s),
        )
        if self.min_replicas == 0 and self.scale_to_zero_after_s is None:
            raise ValueError("scale_to_zero_after_s must be set (> 0) when min_replicas=0; got None")

    @property
    def effective_lead_s(self) -> float:
        return self.lead_s if self.lead_s is not None else self.cold_start.seconds + self.interval_s

    def desired_replicas(self, *, now_s: float, busy_replicas: float, in_system: int, idle_s: float) -> int:
        """How many replicas the pool should have now, within ``[min_replicas, max_replicas]``.

        ``busy_replicas`` is the mean number of busy replicas over the last interval, ``in_system``
        the requests waiting for or in the pool now, ``idle_s`` how long the pool has had no work.
        """
        if self.metric == "utilization":
            want = _ceil(busy_replicas / self.target)
        else:
            want = _ceil(in_system / self.target)
        if self.forecast is not None:
            rate = float(self.forecast(now_s + self.effective_lead_s))
            if not rate >= 0:  # NaN or negative
                raise ValueError(f"forecast({now_s + self.effective_lead_s!r}) returned {rate!r}; need >= 0")
            want = max(want, _ceil(rate / self.replica_rate_per_s))
        if in_system > 0:
            want = max(want, 1)
        if want == 0 and (self.scale_to_zero_after_s is None or idle_s < self.scale_to_zero_after_s):
            want = 1
        return min(max(want, self.min_replicas), self.max_replicas)


# ---------------------------------------------------------------------------------------------------
# Cascade and time-box


@dataclass(frozen=True)
class CascadeConfig:
    """A small model in front of the platform's pool (the large model); see the module docstring."""

    small: PoolConfig
    min_confidence: float = 0.5
    small_competence: float = 0.5
    large_competence: float = 1.0
    human_min_confidence: float | None = None
    human_delay_s: float = 0.0

    def __post_init__(self) -> None:
        from .simulator import PoolConfig  # the simulator imports this module first

        if not isinstance(self.small, PoolConfig):
            raise TypeError(f"small must be a PoolConfig, got {type(self.small).__name__}")
        for name in ("min_confidence", "small_competence", "large_competence"):
            _set(self, name, check_probability(name, getattr(self, name)))
        _set(
            self,
            "human_min_confidence",
            _optional(check_probability, "human_min_confidence", self.human_min_confidence),
        )
        _set(self, "human_delay_s", check_non_negative("human_delay_s", self.human_delay_s))

    def escalates(self, difficulty: np.ndarray) -> np.ndarray:
        """Whether the small model passes each request on: confidence ``1 - difficulty`` too low."""
        return 1.0 - np.asarray(difficulty, dtype=np.float64) < self.min_confidence

    def to_human(self, difficulty: np.ndarray) -> np.ndarray:
        """Whether the large model's answer goes on to a human reviewer."""
        if self.human_min_confidence is None:
            return np.zeros(np.shape(difficulty), dtype=bool)
        return 1.0 - np.asarray(difficulty, dtype=np.float64) < self.human_min_confidence


@dataclass(frozen=True)
class TimeBoxConfig:
    """Each request's latency budget and the cached answer's latency; see the module docstring."""

    budget_s: float
    cache_latency_s: float = 0.0

    def __post_init__(self) -> None:
        _set(self, "budget_s", check_positive("budget_s", self.budget_s))
        _set(self, "cache_latency_s", check_non_negative("cache_latency_s", self.cache_latency_s))


# ---------------------------------------------------------------------------------------------------
# Surge modes

_SIGNALS = ("queue_length", "p99_s", "arrival_rate_per_s")


@dataclass(frozen=True)
class ModeSignals:
    """Thresholds on the controller's signals; ``None`` leaves a signal out."""

    queue_length: float | None = None
    p99_s: float | None = None
    arrival_rate_per_s: float | None = None

    def __post_init__(self) -> None:
        for name in _SIGNALS:
            _set(self, name, _optional(check_non_negative, name, getattr(self, name)))
        if all(getattr(self, name) is None for name in _SIGNALS):
            raise ValueError(
                f"ModeSignals needs at least one threshold of {', '.join(_SIGNALS)}; all are None"
            )

    def any_reached(self, signals: dict[str, float]) -> bool:
        """Some signal at or above its threshold (a NaN signal, e.g. no p99 yet, reaches nothing)."""
        return any((limit := getattr(self, name)) is not None and signals[name] >= limit for name in _SIGNALS)

    def all_below(self, signals: dict[str, float]) -> bool:
        """Every thresholded signal below its threshold (NaN counts as below)."""
        return not any(
            (limit := getattr(self, name)) is not None and signals[name] >= limit for name in _SIGNALS
        )


@dataclass(frozen=True)
class ModeKnobs:
    """What a mode changes; ``None`` keeps the base config's value.

    ``shed_priority_from=k`` rejects every request of priority ``>= k`` (reason ``"shed"``): the
    non-critical classes are switched off whatever the backlog.
    """

    max_batch_size: int | None = None
    max_wait_s: float | None = None
    queue_capacity: int | None = None
    shed_priority_from: int | None = None

    def __post_init__(self) -> None:
        _set(self, "max_batch_size", _optional(check_int, "max_batch_size", self.max_batch_size, minimum=1))
        _set(self, "max_wait_s", _optional(check_non_negative, "max_wait_s", self.max_wait_s))
        _set(self, "queue_capacity", _optional(check_int, "queue_capacity", self.queue_capacity, minimum=1))
        _set(
            self,
            "shed_priority_from",
            _optional(check_int, "shed_priority_from", self.shed_priority_from, minimum=0),
        )


@dataclass(frozen=True)
class ModeSettings:
    """One mode above normal: when to enter it, when to leave it, and its knobs."""

    enter: ModeSignals
    exit: ModeSignals
    knobs: ModeKnobs = field(default_factory=ModeKnobs)

    def __post_init__(self) -> None:
        for name, kind in (("enter", ModeSignals), ("exit", ModeSignals), ("knobs", ModeKnobs)):
            if not isinstance(getattr(self, name), kind):
                raise TypeError(f"{name} must be a {kind.__name__}, got {type(getattr(self, name)).__name__}")
        for name in _SIGNALS:
            high, low = getattr(self.enter, name), getattr(self.exit, name)
            if (high is None) != (low is None):
                raise ValueError(
                    f"exit.{name}={low!r}, enter.{name}={high!r}: a signal needs both thresholds or neither"
                )
            if high is not None and low > high:
                raise ValueError(f"exit.{name} must be <= enter.{name}={high!r} (hysteresis), got {low!r}")


@dataclass(frozen=True)
class ModeControllerConfig:
    """The surge controller: ``surge`` and optional ``emergency`` settings, cadence and dwell."""

    surge: ModeSettings
    emergency: ModeSettings | None = None
    interval_s: float = 5.0
    window_s: float = 30.0
    min_dwell_s: float = 60.0

    def __post_init__(self) -> None:
        if not isinstance(self.surge, ModeSettings):
            raise TypeError(f"surge must be a ModeSettings, got {type(self.surge).__name__}")
        if self.emergency is not None and not isinstance(self.emergency, ModeSettings):
            raise TypeError(f"emergency must be a ModeSettings or None, got {type(self.emergency).__name__}")
        _set(self, "interval_s", check_positive("interval_s", self.interval_s))
        _set(self, "window_s", check_positive("window_s", self.window_s))
        _set(self, "min_dwell_s", check_non_negative("min_dwell_s", self.min_dwell_s))

    @property
    def levels(self) -> tuple[ModeSettings, ...]:
        """The settings of the modes above normal, by level (1 = surge, 2 = emergency)."""
        return (self.surge,) if self.emergency is None else (self.surge, self.emergency)

    def next_mode(self, current: int, signals: dict[str, float], dwell_s: float) -> int:
        """The mode level (index into ``MODES``) after one evaluation; see the module docstring."""
        levels = self.levels
        for level in range(len(levels), current, -1):
            if levels[level - 1].enter.any_reached(signals):
                return level
        if current > 0 and dwell_s >= self.min_dwell_s and levels[current - 1].exit.all_below(signals):
            return current - 1
        return current

    def knobs(self, level: int) -> ModeKnobs:
        return ModeKnobs() if level == 0 else self.levels[level - 1].knobs


# ---------------------------------------------------------------------------------------------------
# Overflow


@dataclass(frozen=True)
class OverflowConfig:
    """The offline tier that takes the requests the bounded queue turns away."""

    offline_rate_per_s: float
    opens_s: float = 0.0
    price_per_request_usd: float = 0.0

    def __post_init__(self) -> None:
        _set(self, "offline_rate_per_s", check_positive("offline_rate_per_s", self.offline_rate_per_s))
        _set(self, "opens_s", check_non_negative("opens_s", self.opens_s))
        _set(
            self,
            "price_per_request_usd",
            check_non_negative("price_per_request_usd", self.price_per_request_usd),
        )

    def schedule(self, queued_s: np.ndarray) -> np.ndarray:
        """Completion times of requests queued at ``queued_s`` (sorted): FIFO, one every 1/rate.

        ``done_k = max(opens, queued_k, done_{k-1}) + 1/rate``, unrolled into a running maximum.
        """
        queued_s = np.asarray(queued_s, dtype=np.float64)
        k = np.arange(len(queued_s), dtype=np.float64)
        gap_s = 1.0 / self.offline_rate_per_s
        start = np.maximum.accumulate(np.maximum(queued_s, self.opens_s) - k * gap_s) if len(k) else k
        return start + (k + 1.0) * gap_s


# ---------------------------------------------------------------------------------------------------
# Reports


def _widths(timeline: pd.DataFrame, horizon_s: float) -> np.ndarray:
    t = timeline["t_s"].to_numpy(dtype=np.float64)
    return np.diff(np.append(t, horizon_s))


def autoscale_efficiency(result: SimulationResult, target_utilization: float = 1.0) -> float:
    """Capacity needed over capacity provisioned, over the whole run.

    Needed capacity at a moment is the busy replicas divided by ``target_utilization`` (what the load
    in fact used, at the utilization one means to run at); provisioned capacity counts every replica
    billed, starting ones included. Both are integrated over the Timeline. 1 is a perfect fit; an
    efficiency above 1 means the pool ran hotter than the target. NaN if nothing was provisioned.
    """
    target_utilization = check_probability("target_utilization", target_utilization, open_low=True)
    widths = _widths(result.timeline, result.horizon_s)
    provisioned = float(np.dot(result.timeline["replicas"].to_numpy(dtype=np.float64), widths))
    busy = float(np.dot(result.timeline["busy_replicas"].to_numpy(dtype=np.float64), widths))
    return busy / target_utilization / provisioned if provisioned > 0 else math.nan


def autoscale_report(result: SimulationResult, pool: str | None = None) -> pd.Series:
    """Replica-seconds of one pool (default: all pools): billed, starting, serving, busy.

    ``provisioned_replica_s`` is what a per-replica (per-hour) bill counts; ``busy_replica_s``, the
    seconds replicas spent running batches, is what per-request (serverless) billing of model time
    counts. ``starting_replica_s`` is billed time spent in cold starts; ``cold_starts`` counts replicas
    asked for during the run that took time to start; ``efficiency`` is busy over provisioned.
    """
    prov, batches = result.provisioning, result.batches
    if pool is not None:
        if pool not in set(prov["pool"]):
            raise ValueError(f"pool must be one of {sorted(set(prov['pool']))}, got {pool!r}")
        prov, batches = prov[prov["pool"] == pool], batches[batches["pool"] == pool]
    end = prov["end_s"].to_numpy()
    ready = np.minimum(prov["ready_s"].fillna(np.inf).to_numpy(), end)
    requested = prov["requested_s"].to_numpy()
    provisioned_s = float(np.sum(end - requested))
    starting_s = float(np.sum(ready - requested))
    busy_s = _busy_seconds(batches, result.horizon_s)
    return pd.Series(
        {
            "provisioned_replica_s": provisioned_s,
            "starting_replica_s": starting_s,
            "busy_replica_s": busy_s,
            "cold_starts": float(np.sum((requested > 0) & (ready > requested))),
            "efficiency": busy_s / provisioned_s if provisioned_s > 0 else math.nan,
        },
        name="autoscale",
    )


def _busy_seconds(batches: pd.DataFrame, horizon_s: float) -> float:
    """Seconds some batch runs on a replica, per replica, summed (overlapping slots merged)."""
    busy = busy_intervals(batches, horizon_s)
    return float((busy["end_s"] - busy["start_s"]).sum())


def cascade_report(
    result: SimulationResult, arrivals: pd.DataFrame, competence: dict[str, float] | None = None
) -> pd.Series:
    """Escalation rate, latency, model-seconds per model and the quality proxy of a run.

    Works on any run: a cascade, or one pool alone (always-small or always-large, as baselines).
    ``competence`` maps a model (pool) name to the highest difficulty it answers well; by default it
    comes from the run's ``CascadeConfig`` (small and large competence), and a pool alone counts as
    fully competent unless given. ``"human"`` answers are always good, ``"cache"`` answers never.
    ``quality`` is the share of completed requests answered well; ``model_s`` the batch seconds per
    model (the cost driver: one replica-second of each model at its price).
    """
    config, log = result.config, result.log
    cascade = config.cascade
    names = {config.pool.name: 1.0}
    if cascade is not None:
        names = {config.pool.name: cascade.large_competence, cascade.small.name: cascade.small_competence}
    names.update(competence or {})
    names.update({"human": 1.0, "cache": -1.0})
    difficulty = arrivals.set_index("request_id")["difficulty"].reindex(log["request_id"]).to_numpy()
    model = (
        log["model"].to_numpy()
        if "model" in log
        else np.where(log["outcome"].to_numpy() == "completed", config.pool.name, "")
    )
    done = log["outcome"].to_numpy() == "completed"
    limit = np.array([names.get(m, math.nan) for m in model[done]], dtype=np.float64)
    good = difficulty[done] <= limit
    escalated = log["escalated_s"].notna().to_numpy() if "escalated_s" in log else np.zeros(len(log), bool)
    admitted = log["admitted_s"].notna().to_numpy()
    latency = log["latency_s"].to_numpy()[done]
    durations = result.batches["end_s"] - result.batches["start_s"]
    per_model = durations.groupby(result.batches["pool"]).sum()
    out = {
        "requests": float(len(log)),
        "completed": float(done.sum()),
        "escalation_rate": float(escalated[admitted].mean()) if admitted.any() else math.nan,
        "degraded_share": float(log["degraded"].to_numpy()[done].mean())
        if "degraded" in log and done.any()
        else 0.0,
        "p50_s": float(np.percentile(latency, 50)) if done.any() else math.nan,
        "p99_s": float(np.percentile(latency, 99)) if done.any() else math.nan,
        "quality": float(good.mean()) if done.any() else math.nan,
        "model_s": float(per_model.sum()),
    }
    for name, seconds in per_model.items():
        out[f"model_s[{name}]"] = float(seconds)
    return pd.Series(out, name="cascade")


def offline_report(result: SimulationResult) -> pd.Series:
    """The overflow tier: requests sent offline, their delay (mean, p99, max) and what they cost."""
    offline = result.offline
    delay = offline["delay_s"].to_numpy()
    empty = len(delay) == 0
    return pd.Series(
        {
            "requests": float(len(delay)),
            "mean_delay_s": math.nan if empty else float(delay.mean()),
            "p99_delay_s": math.nan if empty else float(np.percentile(delay, 99)),
            "max_delay_s": math.nan if empty else float(delay.max()),
            "cost_usd": float(offline["cost_usd"].sum()),
        },
        name="offline",
    )
