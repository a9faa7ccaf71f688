"""Simulated time: landing an event exactly on a target moment in floating point."""

from __future__ import annotations

import math


def delay_until(now: float, target: float) -> float:
    """A delay ``d`` with ``now + d == target`` in floating point, so an event lands exactly on time."""
    d = target - now
    for _ in range(4):
        landed = now + d
        if landed == target:
            break
        d = math.nextafter(d, math.inf if landed < target else -math.inf)
    return max(d, 0.0)
