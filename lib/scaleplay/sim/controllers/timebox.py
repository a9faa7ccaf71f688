"""The time-box: a request waiting for the large model leaves its line when its remaining budget falls
below the large model's expected time for it, and is answered at once by the small model's answer it
holds (with a cascade) or by a cached one. The rules are ``config.controls.TimeBoxConfig``'s; a pool
without a time-box admits everyone (``OpenAdmission``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import simpy

from ...config import TimeBoxConfig
from ...profiles import RandomServiceTime
from ..continuous import alone_s
from ..requests import ANSWERED, IN_LINE
from ..run import Run

if TYPE_CHECKING:
    from ..pool import Pool


class OpenAdmission:
    """Every request joins the line."""

    def admit(self, pool: Pool, i: int, now: float) -> bool:
        return True


class TimeBox(OpenAdmission):
    def __init__(self, platform: Run, config: TimeBoxConfig) -> None:
        self.platform, self.config = platform, config
        self.rng = platform.stream("timebox")
        requests = platform.requests
        requests.degraded = bytearray(requests.n)
        self.answered_s: dict[int, float] = {}  # a degraded escalation: when the small answer went out
        self.cached_s: dict[int, float] = {}  # a cached answer: when it was looked up

    def attach(self, pool: Pool) -> None:
        pool.admission = self

    def expected_s(self, pool: Pool, i: int) -> float:
        """The large model's mean time for request ``i`` alone: what its budget must still hold."""
        service = pool.config.service
        requests = self.platform.requests
        if pool.config.continuous:
            return alone_s(service, requests.tokens_in[i], requests.tokens_out[i])
        base = service.base if isinstance(service, RandomServiceTime) else service
        return float(base.batch_time_s(1, requests.tokens_in[i], requests.tokens_out[i], self.rng))

    def admit(self, pool: Pool, i: int, now: float) -> bool:
        platform = self.platform
        spare_s = platform.requests.t[i] + self.config.budget_s - now - self.expected_s(pool, i)
        if spare_s < 0:  # the large model could not answer in time even if it started now
            platform.gateway.backlog -= 1
            pool.site.backlog -= 1
            self.degrade(i, now)
            return False
        platform.env.timeout(spare_s, i).callbacks.append(self.on_budget_spent)
        return True

    def on_budget_spent(self, event: simpy.Event) -> None:
        platform = self.platform
        i, now = event.value, platform.env.now
        platform.deadlines.purge(now)
        requests = platform.requests
        if requests.state[i] != IN_LINE:  # started, timed out or answered already
            return
        platform.lines[requests.line_of[i]].count -= 1
        platform.gateway.backlog -= 1
        platform.router.site_of(i).backlog -= 1
        self.degrade(i, now)

    def degrade(self, i: int, now: float) -> None:
        """Answer ``i`` now without the large model: the small model's answer it holds, or the cache."""
        platform = self.platform
        requests = platform.requests
        requests.state[i] = ANSWERED
        requests.degraded[i] = 1
        first = getattr(requests, "first_batch", None)
        if first is not None and first[i] >= 0:
            requests.batch_of[i] = first[i]
            self.answered_s[i] = now
            done_s = now
        else:
            self.cached_s[i] = now
            done_s = now + self.config.cache_latency_s
        platform.answers.window.record_one(now, done_s + platform.config.network_hop_s - requests.t[i])
