"""Faults: replicas of a region stop at a moment and come back after a while (or never).

``config.regions`` documents the rules. A fault takes the highest-numbered replicas of the region's
large pool that are provisioned and up (``"all"``: every replica of every pool of the region). A batch
running on a failed replica is cut short: its record ends then and its requests are retried at the
front of a line (their region's, or the nearest healthy one's when none of its replicas is left and
failover is on), counting in the backlog again. When a pool of a region has no replica left, the
requests waiting for it move to the nearest healthy region.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import simpy

from ..config import RegionsConfig
from .run import Run

if TYPE_CHECKING:
    from .pool import Pool, Replica


class FaultInjector:
    def __init__(self, platform: Run, regions: RegionsConfig) -> None:
        self.platform, self.failover = platform, regions.failover
        for fault in regions.faults:
            site = platform.sites[regions.names.index(fault.region)]
            platform.env.timeout(fault.at_s, (site, fault)).callbacks.append(self.on_fault)

    def on_fault(self, event: simpy.Event) -> None:
        site, fault = event.value
        platform = self.platform
        now = platform.env.now
        platform.deadlines.purge(now)
        if fault.replicas == "all":
            taken = [(pool, replica) for pool in site.pools for replica in pool.replicas]
        else:
            up = [x for x in reversed(site.large.replicas) if x.down == 0 and x.status != 0]
            taken = [(site.large, replica) for replica in up[: fault.replicas]]
        failed: list[tuple[Pool, Replica]] = []
        for pool, replica in taken:
            replica.down += 1
            if replica.down == 1:
                pool.stop_serving(replica)
                pool.up -= 1
                failed.append((pool, replica))
        for pool in site.pools:
            pool.changed()
            for line in pool.lines:  # idle slots of the failed replicas must notice and park
                line.wake_all()
        for pool, replica in failed:
            lost, replica.running = replica.running, {}
            for process, (batch, k) in lost.items():
                process.interrupt()
                self.lose(pool, replica, batch, k, now)
        for pool in site.pools:
            pool.rebalance(now)
            if pool.up == 0 and self.failover:
                self.evacuate(pool, now)
        if fault.duration_s is not None:
            platform.env.timeout(fault.duration_s, taken).callbacks.append(self.on_recovery)

    def lose(self, pool: Pool, replica: Replica, batch: list[int], k: int, now: float) -> None:
        """A batch died with its replica: end its record now and retry its requests, oldest first."""
        platform = self.platform
        requests = platform.requests
        platform.batches.end_s[k] = now
        size = len(batch)
        replica.in_service -= size
        platform.gateway.backlog += size
        pool.site.backlog += size
        for i in reversed(batch):  # each goes to the front of its line: reversed keeps their order
            requests.batch_of[i] = -1
            requests.retries[i] += 1
            requests.exempt[i] = 1
            target = pool
            if pool.up == 0 and self.failover:
                target = platform.router.move(i, pool)
            target.join(i, now, front=True)

    def evacuate(self, pool: Pool, now: float) -> None:
        """The pool has no replica left: move its waiting requests to the nearest healthy regions."""
        platform = self.platform
        same_role = [site.large if pool is pool.site.large else site.entry for site in platform.sites]
        if all(other.up == 0 for other in same_role):
            return
        state = platform.requests.state
        for line in pool.lines:
            for i in line.drain(state):
                platform.router.move(i, pool).join(i, now)

    def on_recovery(self, event: simpy.Event) -> None:
        for pool, replica in event.value:
            replica.down -= 1
            if replica.down == 0:
                pool.up += 1
                pool.changed()
                pool.serve(replica)
