"""The router: which site (region) serves a request, and where it goes when that site cannot.

``Router`` has one site. ``GeoRouter`` spreads requests over regions (``config.regions`` documents
the rules): each request's origin, its nearest healthy region (one whose pools all have a replica up),
the spill-over bound, and moving a request whose region failed. A site's *backlog* counts the requests
routed there and not yet started.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..config import RegionsConfig
from .requests import filled, ints
from .run import Run

if TYPE_CHECKING:
    from .pool import Pool, Site


class Router:
    """Every request to the one site."""

    def __init__(self, platform: Run, sites: list[Site]) -> None:
        self.platform, self.sites = platform, sites

    def assign(self, i: int) -> None:
        self.sites[0].backlog += 1

    def site_of(self, i: int) -> Site:
        return self.sites[0]

    def deliver(self, i: int, now: float) -> None:
        """Features ready: the request joins its site's first pool."""
        self.platform.requests.ready[i] = now
        self.sites[0].entry.join(i, now)

    def escalate(self, i: int, now: float, site: Site) -> None:
        """The small model passed it on: it joins the site's large model."""
        site.large.join(i, now)

    def move(self, i: int, pool: Pool) -> Pool:
        return pool


class GeoRouter(Router):
    """Requests from origin regions to the nearest healthy region, with spill-over and failover."""

    def __init__(self, platform: Run, sites: list[Site], regions: RegionsConfig, origin: np.ndarray) -> None:
        super().__init__(platform, sites)
        requests = platform.requests
        requests.origin = ints(origin)
        requests.region_of = filled(np.int64, -1, requests.n)
        requests.retries = filled(np.int64, 0, requests.n)
        self.origin, self.region_of = requests.origin, requests.region_of
        self.prefer = [regions.preference(a) for a in range(len(regions.regions))]
        self.failover, self.spill = regions.failover, regions.spill_backlog

    def route(self, i: int) -> int:
        """The region for request ``i``: its nearest, or the nearest healthy one not over the spill bound."""
        prefer = self.prefer[self.origin[i]]
        if not self.failover:
            return prefer[0]
        sites, spill = self.sites, self.spill
        healthy = [k for k in prefer if sites[k].healthy()]
        if not healthy:  # nowhere to go: wait at the nearest region for a recovery
            return prefer[0]
        if spill is not None:
            for k in healthy:
                if sites[k].backlog < spill:
                    return k
        return healthy[0]

    def assign(self, i: int) -> None:
        k = self.route(i)
        self.region_of[i] = k
        self.sites[k].backlog += 1

    def site_of(self, i: int) -> Site:
        return self.sites[self.region_of[i]]

    def deliver(self, i: int, now: float) -> None:
        self.platform.requests.ready[i] = now
        pool = self.sites[self.region_of[i]].entry
        if pool.up == 0 and self.failover:  # its region failed while the features were fetched
            pool = self.move(i, pool)
        pool.join(i, now)

    def escalate(self, i: int, now: float, site: Site) -> None:
        pool = site.large
        if pool.up == 0 and self.failover:
            pool = self.move(i, pool)
        pool.join(i, now)

    def move(self, i: int, pool: Pool) -> Pool:
        """Route ``i`` again (``pool`` cannot serve); it stays counted in one region's backlog."""
        k = self.route(i)
        pool.site.backlog -= 1
        site = self.sites[k]
        site.backlog += 1
        self.region_of[i] = k
        return site.large if pool is pool.site.large else site.entry
