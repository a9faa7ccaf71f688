"""Ingestion: the feature fetch after admission (a lognormal delay, or a cache hit's fixed latency).

``features_ready_s`` is stamped when the router hands the request to a pool; without an ingestion
stage it equals ``admitted_s``.
"""

from __future__ import annotations

import simpy

from ..config import IngestionConfig
from .requests import FETCHING, TIMED_OUT, floats
from .run import Run


class NoIngestion:
    """No feature fetch: an admitted request goes on at once."""

    def __init__(self, platform: Run) -> None:
        self.platform = platform

    def fetch(self, i: int, now: float) -> None:
        self.platform.router.deliver(i, now)


class Ingestion(NoIngestion):
    """Each request's fetch delay, drawn up front from the stream ``"ingestion"``."""

    def __init__(self, platform: Run, config: IngestionConfig) -> None:
        super().__init__(platform)
        self.fetch_s = floats(config.delays_s(platform.requests.n, platform.stream("ingestion")))

    def fetch(self, i: int, now: float) -> None:
        delay_s = self.fetch_s[i]
        if delay_s > 0:
            self.platform.requests.state[i] = FETCHING
            self.platform.env.timeout(delay_s, i).callbacks.append(self.on_ready)
        else:
            self.platform.router.deliver(i, now)

    def on_ready(self, event: simpy.Event) -> None:
        platform, i = self.platform, event.value
        platform.deadlines.purge(platform.env.now)
        if platform.requests.state[i] == TIMED_OUT:
            return
        platform.router.deliver(i, platform.env.now)
