"""The configs of the platform's controls: a model cascade, time-boxed answers, surge modes, overflow.

Each is a small frozen config that ``simulate`` switches on when it is set on ``PlatformConfig`` (every
one defaults to off); ``sim.controllers`` does the mechanics and ``scaleplay.controls`` holds the
reports. What each control means:

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
- **Surge modes** (``ModeControllerConfig``): every ``interval_s`` the controller reads its signals
  (the gateway's backlog, the p99 latency of the requests answered in the last ``window_s``, the
  arrival rate over that window and, for a token SLO, the p99 time to first token of the requests
  admitted in that window, one still waiting counted by its wait so far) and moves between ``MODES``
  with hysteresis: it steps up at once
  to the highest mode whose ``enter`` thresholds any signal reaches, and steps down one mode only
  when every signal is below that mode's ``exit`` thresholds and the mode has lasted ``min_dwell_s``.
  Each mode's ``ModeKnobs`` override the base config's batcher and gateway knobs.
- **Overflow** (``OverflowConfig``): requests the bounded queue would turn away as ``"queue_full"``
  are rejected online as ``"overflow"`` and served by an offline batch tier instead, opening at
  ``opens_s`` and serving ``offline_rate_per_s`` requests a second in arrival order, at
  ``price_per_request_usd`` each. ``SimulationResult.offline`` lists them.

Every control composes with every other and with regions: with regions each region runs its own
small model's pool, and the surge controller's knobs turn every region's large pool.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .._validate import (
    MAX_COUNT,
    MAX_PRIORITY,
    _kind,
    check_int,
    check_probability,
    check_range,
    check_seconds,
)
from ..profiles import MAX_BATCH_SIZE
from ._fields import _optional, _set
from .pool import PoolConfig

__all__ = [
    "MODES",
    "CascadeConfig",
    "TimeBoxConfig",
    "ModeSignals",
    "ModeKnobs",
    "ModeSettings",
    "ModeControllerConfig",
    "OverflowConfig",
]

#: The surge controller's modes, least to most severe; the Timeline's ``mode`` column holds these.
MODES: tuple[str, ...] = ("normal", "surge", "emergency")


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
        if not isinstance(self.small, PoolConfig):
            raise TypeError(f"small must be a PoolConfig, got {_kind(self.small)}")
        for name in ("min_confidence", "small_competence", "large_competence"):
            _set(self, name, check_probability(name, getattr(self, name)))
        _set(
            self,
            "human_min_confidence",
            _optional(check_probability, "human_min_confidence", self.human_min_confidence),
        )
        _set(self, "human_delay_s", check_seconds("human_delay_s", self.human_delay_s))

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
        _set(self, "budget_s", check_seconds("budget_s", self.budget_s, positive=True))
        _set(self, "cache_latency_s", check_seconds("cache_latency_s", self.cache_latency_s))


# ---------------------------------------------------------------------------------------------------
# Surge modes

_SIGNALS = ("queue_length", "p99_s", "arrival_rate_per_s", "ttft_p99_s")


@dataclass(frozen=True)
class ModeSignals:
    """Thresholds on the controller's signals; ``None`` leaves a signal out.

    ``ttft_p99_s`` reads the p99 time to first token of the requests admitted in the last ``window_s``,
    a request still waiting counted by its wait so far (so it rises as soon as a line builds, not when
    the late answers finish); it needs a continuous-batching pool (elsewhere it reads NaN, which
    reaches no threshold).
    """

    queue_length: float | None = None
    p99_s: float | None = None
    arrival_rate_per_s: float | None = None
    ttft_p99_s: float | None = None

    def __post_init__(self) -> None:
        for name in _SIGNALS:
            _set(self, name, _optional(check_range, name, getattr(self, name), 0.0, MAX_COUNT))
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
        _set(
            self,
            "max_batch_size",
            _optional(check_int, "max_batch_size", self.max_batch_size, minimum=1, maximum=MAX_BATCH_SIZE),
        )
        _set(self, "max_wait_s", _optional(check_seconds, "max_wait_s", self.max_wait_s))
        _set(
            self,
            "queue_capacity",
            _optional(check_int, "queue_capacity", self.queue_capacity, minimum=1, maximum=MAX_COUNT),
        )
        _set(
            self,
            "shed_priority_from",
            _optional(
                check_int, "shed_priority_from", self.shed_priority_from, minimum=0, maximum=MAX_PRIORITY
            ),
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
                raise TypeError(f"{name} must be a {kind.__name__}, got {_kind(getattr(self, name))}")
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
            raise TypeError(f"surge must be a ModeSettings, got {_kind(self.surge)}")
        if self.emergency is not None and not isinstance(self.emergency, ModeSettings):
            raise TypeError(f"emergency must be a ModeSettings or None, got {_kind(self.emergency)}")
        _set(self, "interval_s", check_seconds("interval_s", self.interval_s, positive=True))
        _set(self, "window_s", check_seconds("window_s", self.window_s, positive=True))
        _set(self, "min_dwell_s", check_seconds("min_dwell_s", self.min_dwell_s))

    @property
    def reads_ttft(self) -> bool:
        """Whether some threshold reads the TTFT signal (the controller computes it only then)."""
        return any(
            settings.enter.ttft_p99_s is not None or settings.exit.ttft_p99_s is not None
            for settings in self.levels
        )

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
        _set(
            self,
            "offline_rate_per_s",
            check_range("offline_rate_per_s", self.offline_rate_per_s, 0.0, MAX_COUNT, open_low=True),
        )
        _set(self, "opens_s", check_seconds("opens_s", self.opens_s))
        _set(
            self,
            "price_per_request_usd",
            check_range("price_per_request_usd", self.price_per_request_usd, 0.0, 1e6),
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
