"""What follows a batch of the model that answers: the requests are answered.

``model_end_s`` is the batch's end and ``responded_s = model_end_s + network_hop_s`` (plus the round
trip to the user's region, and a human reviewer's delay where a cascade sends answers on). The surge
controller reads the latencies of recent answers from a ``LatencyWindow``; without it the window is a
null object that keeps nothing.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from .run import Run

if TYPE_CHECKING:
    from .pool import Pool


class NoLatencyWindow:
    """Nobody reads recent latencies: keep nothing."""

    def record(self, batch: list[int], now: float, done_s: float) -> None:
        pass

    def record_one(self, now: float, latency_s: float) -> None:
        pass


class LatencyWindow(NoLatencyWindow):
    """(answered_s, latency_s) of recent answers, oldest first; the reader trims it."""

    def __init__(self, platform: Run) -> None:
        self.t = platform.requests.t
        self.recent: deque[tuple[float, float]] = deque()

    def record(self, batch: list[int], now: float, done_s: float) -> None:
        t, recent = self.t, self.recent
        for i in batch:
            recent.append((now, done_s - t[i]))

    def record_one(self, now: float, latency_s: float) -> None:
        self.recent.append((now, latency_s))


class Responses:
    """The exit of a pool whose batches answer their requests."""

    def __init__(self, platform: Run, window: NoLatencyWindow) -> None:
        self.platform, self.window = platform, window

    def on_batch_end(self, pool: Pool, batch: list[int], now: float) -> None:
        self.window.record(batch, now, now + pool.answer_delay_s)
