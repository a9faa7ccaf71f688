"""The surge controller: every ``interval_s`` it reads the gateway's backlog, the p99 latency of the
answers of the last ``window_s`` and the arrival rate over that window, and moves between ``MODES``
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
            }
            new = modes.next_mode(level, signals, now - since)
            if new != level:
                level, since = new, now
                platform.mode_changes.append((now, level))
                self.apply(level)

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
