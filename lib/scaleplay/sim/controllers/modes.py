"""The surge controller: every ``interval_s`` it reads the gateway's backlog, the p99 latency of the
answers of the last ``window_s``, the arrival rate over that window and (when a threshold reads it) the
p99 time to first token of the requests admitted in that window, and moves between ``MODES``
with hysteresis (``config.controls.ModeControllerConfig``'s rules). A mode's knobs turn the gateway's
queue capacity and shedding and the batcher of every large pool (each from its own base config)."""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Generator
from typing import TYPE_CHECKING

import numpy as np
import simpy

from ...config import ModeControllerConfig
from ..requests import REJECTED, as_numpy
from ..response import LatencyWindow
from ..run import Run

if TYPE_CHECKING:
    from ..pool import Pool


class ModeController:
    def __init__(self, platform: Run, config: ModeControllerConfig, window: LatencyWindow) -> None:
        self.platform, self.config, self.window = platform, config, window
        self.pools: list[Pool] = []  # the large pools whose batchers it turns
        platform.mode_changes.append((0.0, 0))

    def start(self) -> None:
        self.platform.env.process(self.run())

    def run(self) -> Generator[simpy.Event, None, None]:
        platform, modes, recent = self.platform, self.config, self.window.recent
        env, t = platform.env, platform.requests.t
        level, since = 0, 0.0
        while True:
            yield env.timeout(modes.interval_s)
            now = env.now
            platform.deadlines.purge(now)
            if platform.finished():
                return
            low = now - modes.window_s
            while recent and recent[0][0] <= low:
                recent.popleft()
            signals = {
                "queue_length": float(platform.gateway.backlog),
                "p99_s": float(np.percentile([x[1] for x in recent], 99)) if recent else math.nan,
                "arrival_rate_per_s": (bisect_right(t, now) - bisect_right(t, low)) / modes.window_s,
                "ttft_p99_s": self.ttft_p99_s(low, now) if modes.reads_ttft else math.nan,
            }
            new = modes.next_mode(level, signals, now - since)
            if new != level:
                level, since = new, now
                platform.mode_changes.append((now, level))
                self.apply(level)

    def ttft_p99_s(self, low: float, now: float) -> float:
        """The p99 time to first token of the requests that arrived in ``(low, now]`` and were admitted,
        one without a first token yet counted by its wait so far; NaN without a continuous pool."""
        requests = self.platform.requests
        first_token = getattr(requests, "first_token", None)
        if first_token is None:
            return math.nan
        t = requests.t
        start, end = bisect_right(t, low), bisect_right(t, now)
        if end <= start:
            return math.nan
        arrived = as_numpy(t, np.float64)[start:end]
        first = as_numpy(first_token, np.float64)[start:end]
        admitted = as_numpy(requests.state, np.int8)[start:end] != REJECTED
        if not admitted.any():
            return math.nan
        waited = np.where(np.isnan(first), now, first) - arrived
        return float(np.percentile(waited[admitted], 99))

    def apply(self, level: int) -> None:
        knobs, gateway = self.config.knobs(level), self.platform.gateway
        for pool in self.pools:
            batcher = pool.config.batcher
            if pool.config.continuous:  # its iterations are not batches: the batch knobs do not apply
                continue
            pool.max_size = (
                knobs.max_batch_size if knobs.max_batch_size is not None else batcher.max_batch_size
            )
            pool.max_wait_s = knobs.max_wait_s if knobs.max_wait_s is not None else batcher.max_wait_s
        base = gateway.config.queue_capacity
        gateway.capacity = knobs.queue_capacity if knobs.queue_capacity is not None else base
        gateway.shed_from = knobs.shed_priority_from
        for pool in self.pools:
            for line in pool.lines:
                line.wake_all()
