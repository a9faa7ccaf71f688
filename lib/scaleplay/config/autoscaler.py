"""The autoscaler's config: when a pool asks for replicas, and how long a new one takes to start.

``AutoscalerConfig`` is set on a ``PoolConfig``; ``sim.controllers.autoscaler`` does the mechanics. The
rules:

- **Autoscaler** (``AutoscalerConfig``, set on a ``PoolConfig``). Every ``interval_s`` it measures the
  pool's load and asks for ``desired_replicas``: *reactive* on the mean number of busy replicas over
  the last interval divided by ``target`` utilization (``metric="utilization"``, Kubernetes' HPA
  rule), or on the requests waiting or in service divided by ``target`` requests per replica
  (``metric="concurrency"``, Knative's rule, sampled at the evaluation instant), or on the serving
  engine's saturation (``metric="saturation"``, below); *predictive* when a
  ``forecast`` of the arrival rate is given: enough replicas for ``forecast(t + lead_s)`` at
  ``replica_rate_per_s`` each. With both it takes the larger. A new replica is billed from the
  moment it is asked for, but serves only after its cold start (``ColdStart``: a fixed part plus
  the weights' bytes over the load bandwidth). Scale-up is immediate; scale-down waits
  ``cooldown_s`` after the last change and never happens while a replica is starting; a removed
  replica finishes its running batches first (it is billed until then). ``min_replicas=0`` is
  scale-to-zero: after ``scale_to_zero_after_s`` without work the pool empties, and the next request
  asks for a replica at once and waits for its cold start.
- **Saturation** (``metric="saturation"``, continuous-batching pools only): llm-d's saturation
  analyser (the Workload Variant Autoscaler's default). At each evaluation every serving replica
  reports its KV-cache utilisation (tokens held over the cache's tokens) and its waiting requests;
  it is *saturated* when ``kv >= kv_saturation`` (0.8) or ``waiting >= waiting_saturation`` (5).
  Over the replicas that are not saturated, the mean spare KV is ``kv_saturation - kv`` and the
  mean spare queue ``waiting_saturation - waiting``. **Up** by one replica when every replica is
  saturated or either mean spare falls below its trigger (``kv_spare_trigger`` 0.1,
  ``waiting_spare_trigger`` 3): the pool adds capacity before its replicas fill, not after. No
  second replica is asked for while one is still starting (its capacity is already on the way).
  **Down** by one when no replica is saturated and the load spread over one replica fewer (each
  mean times ``n / (n - 1)``) would leave the mean KV at most ``kv_scale_down`` (0.2) and the
  mean spare queue at least its trigger; and only when every evaluation over the last
  ``cooldown_s`` found so (Kubernetes' scale-down stabilisation window, through which llm-d's
  autoscaler acts), the cooldown having passed since the last change. Else **hold**.

  Two departures from llm-d, both against flapping. llm-d lets a replica go when the spread load
  stays under the scale-up point (``kv_saturation - kv_spare_trigger``); that assumes a replica's
  KV use grows in proportion to its load. It does only while its latency is flat: nearer its
  throughput limit each step slows as the batch grows, requests stay longer, and KV use climbs
  several times faster than the load (``tests/test_engine_signals.py`` measures it), so a pool
  that drops to where the proportional estimate says 0.7 saturates at once and scales up again.
  ``kv_scale_down`` is the KV use up to which the estimate holds. And the signals are sampled at
  an instant and noisy, so one calm sample is not enough to remove a replica.

  Utilisation is a poor signal for such a pool: a continuous-batching replica runs iterations
  whenever it holds one sequence, so it reads busy at a fraction of its capacity, and
  ``"utilization"`` asks for far more replicas than the load needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .._validate import (
    MAX_COUNT,
    MAX_REPLICAS,
    _kind,
    check_in,
    check_int,
    check_probability,
    check_range,
    check_seconds,
)
from ._fields import _optional, _set

if TYPE_CHECKING:
    from ..profiles import ModelSpec

__all__ = ["AUTOSCALE_METRICS", "ColdStart", "AutoscalerConfig"]

#: What a reactive autoscaler watches (``"saturation"``: a continuous-batching pool's KV cache and queues).
AUTOSCALE_METRICS: tuple[str, ...] = ("utilization", "concurrency", "saturation")

# Slack so that a load of exactly ``k x target`` asks for ``k`` replicas despite rounding.
_CEIL_SLACK = 1e-9


def _ceil(x: float) -> int:
    return max(math.ceil(x - _CEIL_SLACK), 0)


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
        _set(self, "fixed_s", check_seconds("fixed_s", self.fixed_s))
        _set(self, "model_bytes", check_range("model_bytes", self.model_bytes, 0.0, 1e18, unit=" bytes"))
        _set(
            self,
            "load_bandwidth_bytes_per_s",
            _optional(check_range, "load_bandwidth_bytes_per_s", self.load_bandwidth_bytes_per_s, 1.0, 1e15),
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

    With ``metric="saturation"`` (continuous batching only; ``target`` is not read) a replica is
    saturated at a KV-cache utilisation of ``kv_saturation`` (a fraction of its cache) or
    ``waiting_saturation`` waiting requests; ``kv_spare_trigger`` (a fraction) and
    ``waiting_spare_trigger`` (requests) are the mean spare capacities below which the pool scales
    up; the defaults are llm-d's (0.8, 5, 0.1, 3). Each trigger must be below its threshold, or the
    pool would always be short of spare capacity. ``kv_scale_down`` is the mean KV utilisation the
    replicas left must stay at or under for one to go: at most the scale-up point
    ``kv_saturation - kv_spare_trigger`` (llm-d's choice), and by default well below it.
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
    kv_saturation: float = 0.8
    waiting_saturation: int = 5
    kv_spare_trigger: float = 0.1
    waiting_spare_trigger: float = 3.0
    kv_scale_down: float = 0.2

    def __post_init__(self) -> None:
        _set(
            self,
            "max_replicas",
            check_int("max_replicas", self.max_replicas, minimum=1, maximum=MAX_REPLICAS),
        )
        _set(
            self,
            "min_replicas",
            check_int("min_replicas", self.min_replicas, minimum=0, maximum=self.max_replicas),
        )
        _set(self, "interval_s", check_seconds("interval_s", self.interval_s, positive=True))
        check_in("metric", self.metric, AUTOSCALE_METRICS)
        if self.metric == "utilization":
            _set(self, "target", check_probability("target", self.target, open_low=True))
        else:
            _set(self, "target", check_range("target", self.target, 0.0, MAX_COUNT, open_low=True))
        _set(self, "cooldown_s", check_seconds("cooldown_s", self.cooldown_s))
        if not isinstance(self.cold_start, ColdStart):
            raise TypeError(f"cold_start must be a ColdStart, got {_kind(self.cold_start)}")
        if self.forecast is not None and not callable(self.forecast):
            raise TypeError(f"forecast must be a callable t_s -> rate_per_s or None, got {self.forecast!r}")
        _set(
            self,
            "replica_rate_per_s",
            _optional(
                check_range, "replica_rate_per_s", self.replica_rate_per_s, 0.0, MAX_COUNT, open_low=True
            ),
        )
        if self.forecast is not None and self.replica_rate_per_s is None:
            raise ValueError("replica_rate_per_s must be set (> 0) when a forecast is given; got None")
        _set(self, "lead_s", _optional(check_seconds, "lead_s", self.lead_s))
        _set(
            self,
            "scale_to_zero_after_s",
            _optional(check_seconds, "scale_to_zero_after_s", self.scale_to_zero_after_s, positive=True),
        )
        if self.min_replicas == 0 and self.scale_to_zero_after_s is None:
            raise ValueError("scale_to_zero_after_s must be set (> 0) when min_replicas=0; got None")
        _set(self, "kv_saturation", check_probability("kv_saturation", self.kv_saturation, open_low=True))
        _set(
            self,
            "waiting_saturation",
            check_int("waiting_saturation", self.waiting_saturation, minimum=1, maximum=MAX_COUNT),
        )
        _set(self, "kv_spare_trigger", check_probability("kv_spare_trigger", self.kv_spare_trigger))
        if self.kv_spare_trigger >= self.kv_saturation:
            raise ValueError(
                f"kv_spare_trigger must be below kv_saturation ({self.kv_saturation:g}), or every "
                f"replica would always lack spare KV cache; got {self.kv_spare_trigger!r}"
            )
        _set(
            self,
            "waiting_spare_trigger",
            check_range("waiting_spare_trigger", self.waiting_spare_trigger, 0.0, MAX_COUNT),
        )
        if self.waiting_spare_trigger >= self.waiting_saturation:
            raise ValueError(
                f"waiting_spare_trigger must be below waiting_saturation ({self.waiting_saturation}), "
                f"or every replica would always lack spare queue; got {self.waiting_spare_trigger!r}"
            )
        _set(self, "kv_scale_down", check_probability("kv_scale_down", self.kv_scale_down, open_low=True))
        scale_up_kv = self.kv_saturation - self.kv_spare_trigger
        if self.kv_scale_down > scale_up_kv + _CEIL_SLACK:
            raise ValueError(
                f"kv_scale_down must be at most kv_saturation - kv_spare_trigger ({scale_up_kv:g}), where "
                f"the pool scales up, or a scale-down could land where it scales up again; got "
                f"{self.kv_scale_down!r}"
            )

    @property
    def effective_lead_s(self) -> float:
        return self.lead_s if self.lead_s is not None else self.cold_start.seconds + self.interval_s

    def desired_replicas(
        self,
        *,
        now_s: float,
        busy_replicas: float,
        in_system: int,
        idle_s: float,
        replicas: int = 0,
        starting: int = 0,
        kv_utilization: Sequence[float] = (),
        waiting: Sequence[float] = (),
    ) -> int:
        """How many replicas the pool should have now, within ``[min_replicas, max_replicas]``.

        ``busy_replicas`` is the mean number of busy replicas over the last interval, ``in_system``
        the requests waiting for or in the pool now, ``idle_s`` how long the pool has had no work.
        The saturation rule reads ``replicas`` (ready or starting now), ``starting`` (of those, still
        starting) and, one entry per serving replica, its ``kv_utilization`` (a fraction of its
        cache) and its ``waiting`` requests.
        """
        if self.metric == "utilization":
            want = _ceil(busy_replicas / self.target)
        elif self.metric == "concurrency":
            want = _ceil(in_system / self.target)
        else:
            want = replicas + self.saturation_step(kv_utilization, waiting, in_system, starting)
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

    def saturation_step(
        self, kv_utilization: Sequence[float], waiting: Sequence[float], in_system: int, starting: int
    ) -> int:
        """+1, -1 or 0 replicas: llm-d's saturation rule on the serving replicas' signals (see the
        module docstring); ``starting`` replicas hold a scale-up back, ``in_system`` the last replica."""
        if len(kv_utilization) != len(waiting):
            raise ValueError(
                f"kv_utilization and waiting must have one entry per serving replica; got "
                f"{len(kv_utilization)} and {len(waiting)}"
            )
        n = len(kv_utilization)
        if n == 0:  # no replica reports (all starting, failed or none): nothing to judge by
            return 0
        kv_limit, waiting_limit = self.kv_saturation, self.waiting_saturation
        free = [
            (k, w) for k, w in zip(kv_utilization, waiting, strict=True) if k < kv_limit and w < waiting_limit
        ]
        short = not free
        if free:
            spare_kv = math.fsum(kv_limit - k for k, _ in free) / len(free)
            spare_waiting = math.fsum(waiting_limit - w for _, w in free) / len(free)
            short = spare_kv < self.kv_spare_trigger or spare_waiting < self.waiting_spare_trigger
        if short:
            return 0 if starting else 1
        if len(free) < n:  # some replica is saturated: no room to remove one
            return 0
        if n == 1:  # the last replica goes only when it holds nothing (scale-to-zero's rules decide)
            return -1 if in_system == 0 and max(kv_utilization) == 0 and max(waiting) == 0 else 0
        spread = n / (n - 1)  # the load of n replicas on n - 1
        kv_after = spread * math.fsum(kv_utilization) / n
        waiting_after = spread * math.fsum(waiting) / n
        if kv_after <= self.kv_scale_down and waiting_limit - waiting_after >= self.waiting_spare_trigger:
            return -1
        return 0
