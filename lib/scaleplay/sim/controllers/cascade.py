"""The cascade: a small model's pool in front of the large model's, in every site.

The small pool's exit decides after each batch: a request whose confidence ``1 - difficulty`` is below
``min_confidence`` escalates (it joins its site's large pool, counts in the backlog again and has no
deadline any more, since it has started); the others are answered. The rules are
``config.controls.CascadeConfig``'s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ...config import CascadeConfig
from ..requests import filled
from ..response import Responses
from ..run import Run

if TYPE_CHECKING:
    from ..pool import Pool


class Escalation(Responses):
    """The small pool's exit: escalate what it is unsure of, answer the rest."""

    def __init__(self, platform: Run, config: CascadeConfig, difficulty: np.ndarray) -> None:
        super().__init__(platform, platform.answers.window)
        requests = platform.requests
        n = requests.n
        requests.joined = filled(np.float64, np.nan, n)
        requests.first_batch = filled(np.int64, -1, n)  # the small model's batch
        requests.escalated_s = filled(np.float64, np.nan, n)
        self.escalates = config.escalates(difficulty).tolist()

    def on_batch_end(self, pool: Pool, batch: list[int], now: float) -> None:
        platform = self.platform
        requests, escalates = platform.requests, self.escalates
        answered = []
        for i in batch:
            if escalates[i]:
                requests.first_batch[i] = requests.batch_of[i]
                requests.batch_of[i] = -1
                requests.escalated_s[i] = now
                requests.exempt[i] = 1
                platform.gateway.backlog += 1
                pool.site.backlog += 1
                platform.router.escalate(i, now, pool.site)
            else:
                answered.append(i)
        self.window.record(answered, now, now + pool.answer_delay_s)
