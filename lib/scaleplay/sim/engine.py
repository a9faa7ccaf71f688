"""The engine: builds a platform's components from its config, runs simpy, hands the record on.

``Platform`` is the run: the requests' columns, the simpy environment, the sites (one per region, each
with its large model's pool and, with a cascade, a small model's pool in front), and every component
wired to its neighbours. Streams are named as before the components split, so a seed gives the same
draws: ``"service/replica-<r>"`` for the one large pool, ``"service/<small>/replica-<r>"`` for a
cascade's small model, ``"service/<region>/replica-<r>"`` and ``"service/<region>/<small>/replica-<r>"``
with regions, ``"balancer..."`` likewise, ``"ingestion"``, ``"timebox"`` and ``"origin"``.
"""

from __future__ import annotations

import gc
import math
from array import array

import numpy as np
import simpy
from simpy.core import URGENT
from tqdm import tqdm

from ..config import PlatformConfig, PoolConfig
from ..rng import stream
from . import fastloop
from .clock import delay_until
from .continuous import ContinuousBatcher, IterationRecord
from .controllers.autoscaler import Autoscaler, NoAutoscaler
from .controllers.cascade import Escalation
from .controllers.modes import ModeController
from .controllers.timebox import OpenAdmission, TimeBox
from .faults import FaultInjector
from .gateway import Deadlines, DirectFeed, Gateway, NoDeadlines
from .ingestion import Ingestion, NoIngestion
from .pool import ArrivalLine, Line, Pool, Site, pool_class
from .replica import OneAtATime, StaticBatcher
from .requests import Requests
from .response import LatencyWindow, NoLatencyWindow, Responses
from .router import GeoRouter, Router


class BatchRecord:
    """Every batch the run started, one typed array per field (no boxed floats): its start and end
    (a fault may end it early), the replica, the requests in it and the pool's index."""

    __slots__ = ("start_s", "end_s", "replica", "size", "pool")

    def __init__(self) -> None:
        self.start_s, self.end_s = array("d"), array("d")
        self.replica, self.size, self.pool = array("q"), array("q"), array("q")

    def __len__(self) -> int:
        return len(self.start_s)

    def add(self, start_s: float, end_s: float, replica: int, size: int, pool: int) -> int:
        """Record a batch; its number."""
        k = len(self.start_s)
        self.start_s.append(start_s)
        self.end_s.append(end_s)
        self.replica.append(replica)
        self.size.append(size)
        self.pool.append(pool)
        return k


def is_plain(config: PlatformConfig) -> bool:
    """No admission rule, feature fetch, region or control, and one line: arrivals join in order."""
    gateway, pool = config.gateway, config.pool
    return (
        gateway.queue_capacity is None
        and gateway.rate_limit_per_s is None
        and gateway.shed_queue_length is None
        and gateway.timeout_s is None
        and all(
            getattr(config, name) is None
            for name in ("ingestion", "cascade", "timebox", "modes", "overflow", "regions")
        )
        and pool.autoscaler is None
        and (pool.policy == "shared_queue" or pool.replicas == 1)
    )


class Platform:
    """One run of the platform."""

    def __init__(
        self, columns: dict[str, np.ndarray], config: PlatformConfig, seed: int, horizon_s: float | None
    ) -> None:
        self.config, self.seed, self.horizon_s = config, seed, horizon_s
        self.env = simpy.Environment()
        self.requests = Requests(columns)
        self.lines: list[Line] = []
        self.pools: list[Pool] = []
        self.batches = BatchRecord()
        self.iterations = IterationRecord()  # runs of iterations of continuous-batching replicas
        self.provisioning: list[list[float]] = []  # pool, replica, requested_s, ready_s, end_s
        self.mode_changes: list[tuple[float, int]] = []
        window = LatencyWindow(self) if config.modes is not None else NoLatencyWindow()
        self.answers = Responses(self, window)
        self.open_admission = OpenAdmission()
        self.no_autoscaler = NoAutoscaler()
        gateway = config.gateway
        # A plain platform (one class, one line, no admission rule, fetch, region or control) feeds
        # its arrivals into the line in bulk: the same run, without touching each request.
        self.plain = self.requests.levels == 1 and is_plain(config)
        if self.plain:
            self.requests.ready = self.requests.joined = self.requests.t
        self.deadlines = (
            Deadlines(self, gateway.timeout_s) if gateway.timeout_s is not None else NoDeadlines()
        )
        self.gateway = (DirectFeed if self.plain else Gateway)(self, gateway, config.overflow)
        self.ingestion = (
            Ingestion(self, config.ingestion) if config.ingestion is not None else NoIngestion(self)
        )

        regions, cascade = config.regions, config.cascade
        if regions is None:
            self.sites = [Site(config.pool.name)]
            self.router = Router(self, self.sites)
            larges = [(config.pool, config.pool.name, "", "balancer")]
        else:
            self.sites = [Site(region.name) for region in regions.regions]
            self.router = GeoRouter(self, self.sites, regions, columns["origin"])
            larges = [
                (regions.pool_of(k, config.pool), name, f"{name}/", f"balancer/{name}")
                for k, name in enumerate(regions.names)
            ]
            self.faults = FaultInjector(self, regions)
        self.faulty = regions is not None and bool(regions.faults)  # batches may be cut short
        own_times = self.requests.service_s is not None
        human_s = (
            cascade.human_delay_s if cascade is not None and cascade.human_min_confidence is not None else 0.0
        )
        for site, (pool_config, label, prefix, balancer) in zip(self.sites, larges, strict=True):
            site.large = self._pool(site, pool_config, label, f"service/{prefix}", balancer)
            site.large.own_times = own_times and site.large.max_size == 1 and not pool_config.continuous
            site.large.answer_delay_s = config.network_hop_s + human_s
        if cascade is not None:
            self.escalation = Escalation(self, cascade, columns["difficulty"])
            small = cascade.small
            for site, (_, label, prefix, balancer) in zip(self.sites, larges, strict=True):
                label = small.name if regions is None else f"{label}/{small.name}"
                site.small = self._pool(
                    site, small, label, f"service/{prefix}{small.name}/", f"{balancer}/{small.name}"
                )
                site.small.exit = self.escalation
                site.small.answer_delay_s = config.network_hop_s
        if config.timebox is not None:
            self.timebox = TimeBox(self, config.timebox)
            for site in self.sites:
                self.timebox.attach(site.large)

        if any(pool.config.continuous for pool in self.pools):
            tokens_in = np.frombuffer(self.requests.tokens_in, dtype=np.int64)
            if len(tokens_in) and tokens_in.min() < 1:
                row = int(np.argmin(tokens_in))
                raise ValueError(
                    f"arrivals['tokens_in'] must be >= 1 with a continuous batcher (an iteration-level "
                    f"engine prefills at least one prompt token to make the first); row {row} holds "
                    f"{tokens_in[row]}"
                )
        if self.requests.cached is not None and not any(pool.config.continuous for pool in self.pools):
            raise ValueError(
                "arrivals['cached_tokens'] is read only by a continuous batcher (a static batch does not "
                "prefill token by token); drop the column or use a ContinuousBatcherConfig"
            )
        # A plain platform of one continuous pool runs in the compiled loop (``fastloop``), not simpy.
        self.fast = fastloop.eligible(self)
        for pool in self.pools:
            for replica in pool.replicas[: pool.config.replicas]:
                replica.record = self.provision(pool, replica, 0.0)
                self.provisioning[replica.record][3] = 0.0
            if pool.config.autoscaler is not None:
                Autoscaler(self, pool).start()
            if pool.config.continuous:
                if not self.fast:
                    ContinuousBatcher(pool).start()
                continue
            one_at_a_time = self.plain and pool.config.batcher.max_batch_size == 1
            (OneAtATime if one_at_a_time else StaticBatcher)(pool).start()
        if config.modes is not None:
            self.modes = ModeController(self, config.modes, window)
            self.modes.pools = [site.large for site in self.sites]
            self.modes.start()
        if not self.fast:
            self.gateway.start()

    # -- wiring ---------------------------------------------------------------------------------------
    def stream(self, name: str) -> np.random.Generator:
        return stream(self.seed, name)

    def new_line(self, arrivals: bool = False) -> Line:
        index = len(self.lines)
        if arrivals:
            line = ArrivalLine(index, self.requests.t, self.env)
        else:
            line = Line(index, self.requests.levels, self.env)
        self.lines.append(line)
        return line

    def _pool(self, site: Site, config: PoolConfig, label: str, prefix: str, balancer: str) -> Pool:
        pool = pool_class(config)(self, site, config, label, prefix, balancer)
        self.pools.append(pool)
        return pool

    def provision(self, pool: Pool, replica: object, now: float) -> int:
        """A new row of the provisioning record: the replica is billed from ``now``."""
        self.provisioning.append([pool.index, replica.index, now, math.nan, math.nan])
        return len(self.provisioning) - 1

    def finished(self) -> bool:
        """Nothing left to do in a run without a horizon: the controllers may stop."""
        return (
            self.horizon_s is None
            and self.gateway.fed_all
            and self.gateway.backlog == 0
            and not any(pool.busy() for pool in self.pools)
        )

    # -- running --------------------------------------------------------------------------------------
    def run(self, progress: bool) -> None:
        """Run to the horizon (or until every request has its outcome). Python's cyclic garbage
        collector is paused meanwhile: a run makes no garbage cycles, and each collection would walk
        every object alive, the caller's included, millions of times over a long run."""
        if self.fast:
            fastloop.run(self, progress)
            return
        collecting = gc.isenabled()
        gc.disable()
        try:
            self._run(progress)
        finally:
            if collecting:
                gc.enable()

    def _run(self, progress: bool) -> None:
        env, horizon_s = self.env, self.horizon_s
        end_s = horizon_s if horizon_s is not None else (self.requests.t[-1] if self.requests.n else 0.0)
        if progress and end_s > 0:
            with tqdm(total=end_s, unit="sim s", desc="simulate") as bar:
                chunks = 100
                for k in range(1, chunks + 1):
                    target = end_s if k == chunks else end_s * k / chunks
                    if target > env.now:
                        self._run_until(target)
                        bar.update(target - bar.n)
        elif horizon_s is not None:
            self._run_until(horizon_s)
        if horizon_s is None:
            env.run()
        self.deadlines.purge(horizon_s if horizon_s is not None else env.now)

    def _run_until(self, target: float) -> None:
        """``env.run(until=target)``, stopping exactly at ``target`` (before the events due then)."""
        stop = simpy.Event(self.env)
        stop._ok, stop._value = True, None
        self.env.schedule(stop, URGENT, delay_until(self.env.now, target))
        self.env.run(until=stop)
