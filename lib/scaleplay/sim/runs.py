"""What every iteration-cost model of the scheduler shares: finding where a run of decode steps is cut."""

from __future__ import annotations


class DecodeRuns:
    """A mixin for costs with ``decode_run_s(batch, context, steps)``, increasing in ``steps``."""

    __slots__ = ()

    def decode_run_s(self, batch: int, context: float, steps: int) -> float:
        raise NotImplementedError

    def steps_within(self, batch: int, context: float, steps: int, seconds: float) -> int:
        """How many of a run's ``steps`` iterations end within ``seconds`` of its start (bisection)."""
        if self.decode_run_s(batch, context, steps) <= seconds:
            return steps
        low, high = 0, steps  # decode_run_s(low) <= seconds < decode_run_s(high)
        while high - low > 1:
            middle = (low + high) // 2
            if self.decode_run_s(batch, context, middle) <= seconds:
                low = middle
            else:
                high = middle
        return low
