"""The iterative sizing loop: estimate with formulas, simulate around the estimate, refine.

Sizing an inference fleet is a search over replicas x batch size x model tier x quantization for the
cheapest configuration whose *peak* still meets the SLO: "the ``quantile`` (p99) latency is at most
``slo_s`` and at most ``max_rejected_share`` of the requests go unanswered". ``plan`` runs it in
three steps:

1. **Estimate** (``estimate``). For each model option and batch size, the batch time ``t_b`` is
   measured on the peak's own requests (consecutive groups of ``b``: total prompt tokens, longest
   output) and each replica is taken as ``b`` servers of an M/M/c queue with service time ``t_b``
   (the ``capacity`` module's model). The estimate is the fewest replicas whose Erlang C wait
   quantile plus a high batch time fits in the SLO (``queueing.mmc_wait_quantile_s``).
2. **Simulate** the candidates around the estimate (estimate - 1, estimate, estimate + 1) with
   ``simulator.simulate`` on the workload's peak window (``workload.generate_arrivals``), run until
   every request has its outcome. Every candidate sees the *same* arrivals (common random numbers),
   so the comparison between candidates is not blurred by traffic noise.
3. **Refine**, in rounds: a group (option, batch size) with no feasible candidate grows its
   replicas by half; a group with one bisects down to the fewest feasible replicas. A group stops
   when it cannot be cheaper than the best feasible configuration found so far. The plan is the
   cheapest feasible candidate (ties: lower latency quantile, then option, batch size, replicas order).

Feasibility is assumed to be monotone in replicas (more replicas never hurt), which holds for the
shared-queue pool on the same arrivals; noise can break it for other policies.

``PlanResult.candidates`` holds every simulated candidate with its cost per hour and per month,
whether it meets the SLO, and whether it is on the **cost-versus-latency frontier** (no other
candidate with an acceptable drop share is both cheaper and faster). Cost is the candidate's
replicas held for the hour (or a 730-hour month): the fleet provisioned for the peak.

**Sweeps run on any** ``concurrent.futures.Executor``: a local ``ProcessPoolExecutor`` by default, a
``ThreadPoolExecutor``, or a Dask cluster's ``Client.get_executor()``. Each candidate is one task;
its simulation seed is derived from the plan's ``seed`` (the same for every candidate with
``common_seed=True``, else from the seed and the candidate's own key), and each round's decisions
are taken only once all its results are in, so the plan is the same whatever the executor and
whatever order the results arrive in. Tasks are pickled to process workers: a ``ServiceTime`` class
defined in a notebook works with the default ``fork`` start method on Linux, not with ``spawn``.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from tqdm import tqdm

from . import queueing
from ._validate import MAX_REPLICAS as _MAX_REPLICAS
from ._validate import _kind, _show, check_int, check_non_negative, check_positive, check_probability
from .capacity import HOURS_PER_MONTH
from .cost import load_prices
from .metrics import latency_percentiles, mean_batch_size, outcome_shares, utilization
from .profiles import RooflineServiceTime, ServiceTime, load_hardware, load_model
from .rng import seed_sequence, stream
from .schema import ARRIVAL_COLUMNS, check_columns
from .simulator import BatcherConfig, PlatformConfig, PoolConfig, simulate
from .workload import SECONDS_PER_WEEK, Workload, generate_arrivals

__all__ = [
    "CANDIDATE_COLUMNS",
    "ESTIMATE_COLUMNS",
    "MAX_REPLICAS",
    "MAX_BATCH_SIZE",
    "MAX_REPLICATIONS",
    "ModelOption",
    "roofline_option",
    "PlanResult",
    "peak_start_s",
    "estimate",
    "sweep",
    "plan",
]

#: ``PlanResult.candidates`` and ``sweep``: one row per simulated candidate (``p99_s`` is named
#: after the plan's quantile: ``p95_s`` for 0.95).
CANDIDATE_COLUMNS: dict[str, tuple[str, str]] = {
    "option": ("object", "ModelOption.name"),
    "tier": ("object", "ModelOption.tier: the model"),
    "quantization": ("object", "ModelOption.quantization: the weights' dtype"),
    "hardware": ("object", "ModelOption.hardware"),
    "gpus_per_replica": ("int64", "GPUs one replica spans"),
    "max_batch_size": ("int64", "the batcher's cap"),
    "replicas": ("int64", "replicas in the pool"),
    "p50_s": ("float64", "median latency of the completed requests, pooled over replications"),
    "p99_s": ("float64", "the plan's latency quantile of the completed requests, pooled"),
    "rejected_share": ("float64", "share of arrivals refused at the gateway"),
    "timed_out_share": ("float64", "share of arrivals that timed out waiting"),
    "utilization": ("float64", "busy over provisioned replica-seconds, mean over replications"),
    "mean_batch_size": ("float64", "mean size of the batches served"),
    "cost_usd_per_hour": ("float64", "replicas x ModelOption.usd_per_replica_hour"),
    "cost_usd_per_month": ("float64", "cost_usd_per_hour x 730"),
    "meets_slo": ("bool", "latency quantile <= slo_s and rejected + timed-out share <= max_rejected_share"),
    "on_frontier": ("bool", "no acceptable candidate is both cheaper and at least as fast"),
    "round": ("int64", "the search round that simulated it (0: around the estimate)"),
    "seed": ("int64", "the simulation seed of its first replication"),
}

#: ``PlanResult.estimates`` and ``estimate``: one row per (option, batch size).
ESTIMATE_COLUMNS: dict[str, tuple[str, str]] = {
    "option": ("object", "ModelOption.name"),
    "max_batch_size": ("int64", "batch size b"),
    "arrival_rate_per_s": ("float64", "mean arrival rate of the peak window"),
    "batch_time_s": ("float64", "mean time of a full batch of the peak's requests"),
    "batch_time_high_s": ("float64", "the plan's quantile of those batch times"),
    "replica_throughput_per_s": ("float64", "b / batch_time_s"),
    "min_stable_replicas": ("int64", "fewest replicas with arrival rate < capacity"),
    "estimated_replicas": ("float64", "fewest replicas meeting the SLO by the formula (NaN: none <= max)"),
    "estimated_latency_s": ("float64", "M/M/c wait quantile + batch_time_high_s at estimated_replicas"),
}

# The most batches sampled per (option, batch size) to measure batch times.
_ESTIMATE_BATCHES = 256
#: The most replicas a candidate may have, the largest batch size and the most replications: far
#: beyond a plan a simulation can settle, and within ``queueing.MAX_SERVERS`` slots.
MAX_REPLICAS = _MAX_REPLICAS  # a pool's bound (scaleplay._validate)
MAX_BATCH_SIZE = 10_000
MAX_REPLICATIONS = 1_000
#: The most windows ``peak_start_s`` compares.
MAX_GRID_POINTS = 10_000_000


def _check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {_show(value)} ({_kind(value)})")
    return value


def _check_template(template: object) -> None:
    if template is not None and not isinstance(template, PlatformConfig):
        raise TypeError(f"template must be a PlatformConfig or None, got {_kind(template)}")


def _check_tables(arrivals: object) -> tuple[pd.DataFrame, ...]:
    """One arrivals table or a sequence of them, each with ``ARRIVAL_COLUMNS``."""
    if isinstance(arrivals, pd.DataFrame):
        tables: tuple = (arrivals,)
    elif isinstance(arrivals, Sequence) and not isinstance(arrivals, str):
        tables = tuple(arrivals)
    else:
        raise TypeError(
            f"arrivals must be an arrivals DataFrame or a sequence of them, got {_kind(arrivals)}"
        )
    if not tables:
        raise ValueError("arrivals must hold at least one arrivals table, got none")
    for table in tables:
        check_columns(table, ARRIVAL_COLUMNS, "arrivals")
    return tables


@dataclass(frozen=True)
class ModelOption:
    """One way to serve the model: a service-time curve and what a replica costs per hour.

    ``tier``, ``quantization`` and ``hardware`` are labels for the tables (``roofline_option`` fills
    them); ``name`` must be unique among the options of a plan.
    """

    name: str
    service: ServiceTime
    usd_per_replica_hour: float
    gpus_per_replica: int = 1
    tier: str = ""
    quantization: str = ""
    hardware: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"ModelOption name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.service, ServiceTime):
            raise TypeError(
                f"service must be a ServiceTime (with batch_time_s), got {_kind(self.service)}"
            )
        object.__setattr__(
            self, "usd_per_replica_hour", check_positive("usd_per_replica_hour", self.usd_per_replica_hour)
        )
        object.__setattr__(
            self, "gpus_per_replica", check_int("gpus_per_replica", self.gpus_per_replica, minimum=1)
        )
        for label in ("tier", "quantization", "hardware"):
            if not isinstance(getattr(self, label), str):
                raise TypeError(f"{label} must be a string, got {getattr(self, label)!r}")


def roofline_option(
    model: str,
    dtype: str = "bf16",
    *,
    hardware: str = "H100 SXM",
    tensor_parallel: int = 1,
    usd_per_gpu_hour: float | None = None,
    purchase: str = "on_demand",
    kv_dtype: str = "bf16",
    compute_precision: str = "bf16",
    name: str | None = None,
    **roofline: float,
) -> ModelOption:
    """A ``ModelOption`` for ``model`` stored as ``dtype`` on ``tensor_parallel`` x ``hardware``.

    ``compute_precision="fp8"`` (with ``dtype="fp8"``) is W8A8: the tensor cores run at their FP8
    peak; ``dtype="int8"`` or ``"fp8"`` with bf16 compute is weight-only (half the bytes, bf16 FLOP/s).
    The ``quantization`` label is ``dtype``, with ``"/fp8 compute"`` added for W8A8.

    The service time is ``RooflineServiceTime`` (``roofline`` passes ``overhead_s`` and the
    efficiencies); it refuses a model whose weights do not fit (Llama-3.1-70B in bf16 needs
    ``tensor_parallel=2`` on H100s, or ``dtype="int8"``). The price per GPU-hour comes from
    ``cost.load_prices(hardware)`` bought as ``purchase``, unless ``usd_per_gpu_hour`` is given.
    """
    service = RooflineServiceTime(
        load_hardware(hardware),
        load_model(model, dtype, kv_dtype=kv_dtype),
        tensor_parallel=tensor_parallel,
        compute_precision=compute_precision,
        **roofline,
    )
    if usd_per_gpu_hour is None:
        usd_per_gpu_hour = load_prices(hardware).usd_per_gpu_hour(purchase)
    usd_per_gpu_hour = check_positive("usd_per_gpu_hour", usd_per_gpu_hour)
    quantization = dtype if compute_precision == "bf16" else f"{dtype}/{compute_precision} compute"
    return ModelOption(
        name=name or f"{model} {quantization} on {tensor_parallel}x {hardware}",
        service=service,
        usd_per_replica_hour=usd_per_gpu_hour * service.tensor_parallel,
        gpus_per_replica=service.tensor_parallel,
        tier=model,
        quantization=quantization,
        hardware=hardware,
    )


@dataclass(frozen=True, eq=False)
class PlanResult:
    """What ``plan`` returns.

    ``config``: the cheapest configuration that met the SLO (``None`` if none did within
    ``max_replicas``); ``choice``: its row of ``candidates``; ``candidates``: every simulated
    candidate (``CANDIDATE_COLUMNS``), cheapest first; ``estimates``: the queueing step
    (``ESTIMATE_COLUMNS``); ``arrivals``: the peak window's arrivals (first replication) the
    candidates were simulated on, starting at ``peak_start_s`` of the workload clock.
    """

    config: PlatformConfig | None
    choice: pd.Series | None
    candidates: pd.DataFrame
    estimates: pd.DataFrame
    arrivals: pd.DataFrame
    peak_start_s: float

    @property
    def feasible(self) -> bool:
        return self.config is not None

    @property
    def frontier(self) -> pd.DataFrame:
        """The candidates on the cost-versus-latency frontier, cheapest first."""
        return self.candidates[self.candidates["on_frontier"]]


# ----------------------------------------------------------------------------------------- checks


def _check_options(options: Sequence[ModelOption]) -> tuple[ModelOption, ...]:
    if isinstance(options, ModelOption):
        options = (options,)
    if isinstance(options, str) or not isinstance(options, Sequence):
        raise TypeError(f"options must be a sequence of ModelOption objects, got {_kind(options)}")
    options = tuple(options)
    if not options:
        raise ValueError("options must hold at least one ModelOption, got none")
    for option in options:
        if not isinstance(option, ModelOption):
            raise TypeError(f"options must hold ModelOption objects, got {_kind(option)}")
    names = [option.name for option in options]
    if len(set(names)) != len(names):
        raise ValueError(f"option names must be unique, got {names}")
    return options


def _check_ints(name: str, values: Sequence[int], maximum: int) -> tuple[int, ...]:
    if isinstance(values, str) or not isinstance(values, Sequence) or len(values) == 0:
        raise ValueError(
            f"{name} must be a non-empty sequence of integers in [1, {maximum}], got {_show(values)}"
        )
    out = tuple(check_int(f"{name}[{i}]", v, minimum=1, maximum=maximum) for i, v in enumerate(values))
    if len(set(out)) != len(out):
        raise ValueError(f"{name} must not repeat a value, got {list(out)}")
    return out


def _label(quantile: float) -> str:
    return f"p{quantile * 100:.10g}_s"


# -------------------------------------------------------------------------------------- the peak


def peak_start_s(workload: Workload, duration_s: float, *, step_s: float = 60.0) -> float:
    """Where on the workload clock the busiest ``duration_s`` window of its week (and bursts) starts.

    The expected arrivals of every window starting on a ``step_s`` grid are compared (the earliest
    wins a tie), so a flat workload peaks at 0. The grid covers the week (or the last burst) plus
    ``duration_s`` in at most ``MAX_GRID_POINTS`` (10,000,000) steps: a finer ``step_s`` is refused.
    """
    if not isinstance(workload, Workload):
        raise TypeError(f"workload must be a Workload, got {_kind(workload)}")
    duration_s = check_positive("duration_s", duration_s)
    step_s = check_positive("step_s", step_s)
    horizon_s = max([SECONDS_PER_WEEK] + [b.end_s for b in workload.bursts])
    if (horizon_s + duration_s) / step_s > MAX_GRID_POINTS:
        raise ValueError(
            f"step_s must be >= (week + duration_s) / {MAX_GRID_POINTS} = "
            f"{(horizon_s + duration_s) / MAX_GRID_POINTS:.3g} s (at most {MAX_GRID_POINTS} grid points), "
            f"got step_s={step_s!r} with duration_s={duration_s!r}"
        )
    if step_s > horizon_s:
        raise ValueError(
            f"step_s must be <= the workload's horizon ({horizon_s!r} s: a week, or the last burst's "
            f"end), got {step_s!r}"
        )
    edges = np.arange(0.0, horizon_s + duration_s + step_s, step_s)
    # Midpoint rule per grid cell; the window sums are differences of its running total.
    mass = np.asarray(workload.rate_per_s(edges[:-1] + step_s / 2)) * step_s
    cumulative = np.concatenate(([0.0], np.cumsum(mass)))
    cells = max(1, round(duration_s / step_s))
    starts = np.arange(0, int(horizon_s // step_s) + 1)
    starts = starts[starts + cells < len(cumulative)]
    totals = cumulative[starts + cells] - cumulative[starts]
    # Identical days tie up to rounding: the earliest window within a relative 1e-9 of the best wins.
    first = int(np.flatnonzero(totals >= totals.max() * (1.0 - 1e-9))[0])
    return float(starts[first] * step_s)


def _peak_arrivals(
    workload: Workload | pd.DataFrame, duration_s: float, start_s: float | None, seed: int, replications: int
) -> tuple[list[pd.DataFrame], float, float]:
    """The arrivals of each replication, where the window starts, and how long it is."""
    if isinstance(workload, pd.DataFrame):
        check_columns(workload, ARRIVAL_COLUMNS, "workload")
        if replications != 1:
            raise ValueError(
                f"replications must be 1 when an arrivals table is given (it is one draw), got {replications}"
            )
        span = float(workload.attrs.get("duration_s", workload["t_s"].max() if len(workload) else 0.0))
        if not span > 0:
            raise ValueError("the arrivals table must span a positive duration (attrs['duration_s'] or t_s)")
        return [workload], float(workload.attrs.get("start_s", 0.0)), span
    if not isinstance(workload, Workload):
        raise TypeError(
            f"workload must be a Workload or an arrivals DataFrame, got {_kind(workload)}"
        )
    duration_s = check_positive("duration_s", duration_s)
    start = peak_start_s(workload, duration_s) if start_s is None else start_s
    tables = [
        generate_arrivals(workload, duration_s, seed=seed, start_s=start, replication=k)
        for k in range(replications)
    ]
    return tables, float(start), duration_s


# ----------------------------------------------------------------------------------- the estimate


def _batch_times(
    arrivals: pd.DataFrame, service: ServiceTime, b: int, rng: np.random.Generator
) -> np.ndarray:
    """Times of full batches of ``b`` consecutive requests, at most ``_ESTIMATE_BATCHES`` of them."""
    tokens_in = arrivals["tokens_in"].to_numpy(dtype=np.int64)
    tokens_out = arrivals["tokens_out"].to_numpy(dtype=np.int64)
    groups = len(tokens_in) // b
    if groups == 0:  # fewer requests than one batch: use them all
        return np.array([service.batch_time_s(b, int(tokens_in.sum()), int(tokens_out.max(initial=0)), rng)])
    picks = np.unique(np.linspace(0, groups - 1, min(groups, _ESTIMATE_BATCHES)).astype(np.int64))
    return np.array(
        [
            service.batch_time_s(
                b, int(tokens_in[g * b : (g + 1) * b].sum()), int(tokens_out[g * b : (g + 1) * b].max()), rng
            )
            for g in picks
        ]
    )


def estimate(
    arrivals: pd.DataFrame | Sequence[pd.DataFrame],
    options: Sequence[ModelOption],
    batch_sizes: Sequence[int] = (1,),
    *,
    slo_s: float,
    quantile: float = 0.99,
    max_replicas: int = 64,
    duration_s: float | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """The queueing step of the loop: one row per (option, batch size), ``ESTIMATE_COLUMNS``.

    ``arrivals`` is the peak window (or one table per replication); its mean rate is the count over
    ``duration_s`` (default: ``attrs['duration_s']`` or the last arrival time). See the module
    docstring for the model; it ignores the batcher's partial batches at light load and the
    difference between the wait quantile's and the batch time's tails, so it is a starting point.
    ``batch_sizes`` are at most ``MAX_BATCH_SIZE`` (10,000) and ``max_replicas`` at most
    ``MAX_REPLICAS`` (100,000).
    """
    tables = _check_tables(arrivals)
    options = _check_options(options)
    batch_sizes = _check_ints("batch_sizes", batch_sizes, MAX_BATCH_SIZE)
    slo_s = check_positive("slo_s", slo_s)
    quantile = check_probability("quantile", quantile, open_low=True, open_high=True)
    max_replicas = check_int("max_replicas", max_replicas, minimum=1, maximum=MAX_REPLICAS)
    seed = check_int("seed", seed, minimum=0)
    if duration_s is None:
        first = tables[0]
        duration_s = float(first.attrs.get("duration_s", first["t_s"].max() if len(first) else 0.0))
    duration_s = check_positive("duration_s", duration_s)
    rate = sum(len(t) for t in tables) / (len(tables) * duration_s)
    if not math.isfinite(rate):
        raise ValueError(
            f"duration_s={duration_s!r} is too short: the arrival rate over it overflows a float"
        )
    requests = pd.concat(tables, ignore_index=True) if len(tables) > 1 else tables[0]
    if len(requests) == 0:
        raise ValueError("arrivals hold no request: nothing to size for")
    rows = []
    for option in options:
        for b in batch_sizes:
            times = _batch_times(requests, option.service, b, stream(seed, f"planner/estimate/{option.name}"))
            batch_s = float(times.mean())
            high_s = float(np.quantile(times, quantile))
            throughput = b / batch_s if batch_s > 0 else math.inf
            load = rate / throughput  # replicas' worth of work
            if not load < 2**62:
                raise ValueError(
                    f"option {option.name!r} takes {batch_s!r} s a batch of {b}: the peak's "
                    f"{rate:.3g} requests/s would need {load:.3g} replicas, beyond any plan"
                )
            stable = max(1, math.floor(load) + 1) if math.isfinite(throughput) else 1

            def wait_s(r: int, b: int = b, batch_s: float = batch_s) -> float:
                service_rate = 1.0 / batch_s if batch_s > 0 else math.inf
                if not math.isfinite(service_rate):  # instant batches: nobody waits
                    return 0.0
                return queueing.mmc_wait_quantile_s(rate, service_rate, r * b, quantile)

            found, latency = math.nan, math.nan
            if high_s <= slo_s and stable <= max_replicas:
                # The wait falls as replicas are added: bisect for the fewest that fit the SLO.
                candidates = range(stable, max_replicas + 1)
                i = bisect.bisect_left(candidates, True, key=lambda r: wait_s(r) + high_s <= slo_s)
                if i < len(candidates):
                    found, latency = float(candidates[i]), wait_s(candidates[i]) + high_s
            rows.append(
                {
                    "option": option.name,
                    "max_batch_size": b,
                    "arrival_rate_per_s": rate,
                    "batch_time_s": batch_s,
                    "batch_time_high_s": high_s,
                    "replica_throughput_per_s": throughput,
                    "min_stable_replicas": stable,
                    "estimated_replicas": found,
                    "estimated_latency_s": latency,
                }
            )
    return pd.DataFrame(rows, columns=list(ESTIMATE_COLUMNS)).astype(
        {"max_batch_size": "int64", "min_stable_replicas": "int64"}
    )


# ----------------------------------------------------------------------------------- simulating


@dataclass(frozen=True)
class _Task:
    """One candidate to simulate: everything a worker needs, picklable."""

    config: PlatformConfig
    arrivals: tuple[pd.DataFrame, ...]
    seeds: tuple[int, ...]
    quantile: float


def _evaluate(task: _Task) -> dict[str, float]:
    """Simulate one candidate on every replication and pool the results (runs in a worker)."""
    logs, utilizations = [], []
    for arrivals, seed in zip(task.arrivals, task.seeds, strict=True):
        result = simulate(arrivals, task.config, seed=seed, log_columns="narrow")
        logs.append(result.log[["outcome", "latency_s", "batch_size"]])
        utilizations.append(utilization(result.timeline, horizon_s=result.horizon_s))
    log = pd.concat(logs, ignore_index=True) if len(logs) > 1 else logs[0]
    quantiles = sorted({0.5, task.quantile})
    latency = latency_percentiles(log, quantiles)
    shares = outcome_shares(log)
    return {
        "p50_s": float(latency[_label(0.5)]),
        "quantile_s": float(latency[_label(task.quantile)]),
        "rejected_share": float(shares["rejected"]),
        "timed_out_share": float(shares["timed_out"]),
        "utilization": float(np.nanmean(utilizations)) if not np.isnan(utilizations).all() else math.nan,
        "mean_batch_size": mean_batch_size(log),
    }


def _simulation_seed(seed: int, key: str, replication: int) -> int:
    return int(seed_sequence(seed, key, replication).generate_state(1, dtype=np.uint32)[0])


def _config(template: PlatformConfig | None, option: ModelOption, b: int, r: int) -> PlatformConfig:
    if template is None:
        return PlatformConfig(PoolConfig(r, option.service, BatcherConfig(max_batch_size=b)))
    pool = template.pool
    batcher = replace(pool.batcher, max_batch_size=b)
    return replace(template, pool=replace(pool, replicas=r, service=option.service, batcher=batcher))


@dataclass(frozen=True)
class _Search:
    """The fixed inputs of a sweep."""

    options: tuple[ModelOption, ...]
    arrivals: tuple[pd.DataFrame, ...]
    template: PlatformConfig | None
    slo_s: float
    quantile: float
    max_rejected_share: float
    seed: int
    common_seed: bool


def _run_round(
    search: _Search,
    candidates: list[tuple[int, int, int]],
    round_: int,
    executor: Executor,
    bar: tqdm,
) -> list[dict]:
    """Simulate ``(option index, batch size, replicas)`` candidates; rows in the order given."""
    tasks = []
    for o, b, r in candidates:
        option = search.options[o]
        key = "planner/simulate" if search.common_seed else f"planner/simulate/{option.name}/b{b}/r{r}"
        seeds = tuple(_simulation_seed(search.seed, key, k) for k in range(len(search.arrivals)))
        tasks.append(_Task(_config(search.template, option, b, r), search.arrivals, seeds, search.quantile))
    bar.total = (bar.total or 0) + len(tasks)
    bar.refresh()
    futures = {executor.submit(_evaluate, task): i for i, task in enumerate(tasks)}
    results: list[dict | None] = [None] * len(tasks)
    for future in as_completed(futures):
        results[futures[future]] = future.result()
        bar.update(1)
    rows = []
    for (o, b, r), task, result in zip(candidates, tasks, results, strict=True):
        option = search.options[o]
        assert result is not None
        dropped = result["rejected_share"] + result["timed_out_share"]
        per_hour = r * option.usd_per_replica_hour
        rows.append(
            {
                "option": option.name,
                "tier": option.tier,
                "quantization": option.quantization,
                "hardware": option.hardware,
                "gpus_per_replica": option.gpus_per_replica,
                "max_batch_size": b,
                "replicas": r,
                "p50_s": result["p50_s"],
                "p99_s": result["quantile_s"],
                "rejected_share": result["rejected_share"],
                "timed_out_share": result["timed_out_share"],
                "utilization": result["utilization"],
                "mean_batch_size": result["mean_batch_size"],
                "cost_usd_per_hour": per_hour,
                "cost_usd_per_month": per_hour * HOURS_PER_MONTH,
                "meets_slo": bool(
                    result["quantile_s"] <= search.slo_s and dropped <= search.max_rejected_share
                ),
                "on_frontier": False,
                "round": round_,
                "seed": task.seeds[0],
                "_option_index": o,
            }
        )
    return rows


def _table(rows: list[dict], search: _Search) -> pd.DataFrame:
    """Rows sorted cheapest first (deterministic ties), with the frontier marked."""
    frame = pd.DataFrame(rows, columns=[*CANDIDATE_COLUMNS, "_option_index"])
    frame = frame.sort_values(
        ["cost_usd_per_hour", "p99_s", "_option_index", "max_batch_size", "replicas"],
        kind="stable",
        na_position="last",
    ).reset_index(drop=True)
    acceptable = (frame["rejected_share"] + frame["timed_out_share"] <= search.max_rejected_share) & frame[
        "p99_s"
    ].notna()
    best = math.inf
    on_frontier = np.zeros(len(frame), dtype=bool)
    for i in np.flatnonzero(acceptable.to_numpy()):
        if frame.at[i, "p99_s"] < best:  # cheapest first: a row is on it when faster than all cheaper
            on_frontier[i] = True
            best = frame.at[i, "p99_s"]
    frame["on_frontier"] = on_frontier
    frame = frame.drop(columns="_option_index").astype(
        {"gpus_per_replica": "int64", "max_batch_size": "int64", "replicas": "int64", "round": "int64"}
    )
    return frame.rename(columns={"p99_s": _label(search.quantile)})


def _with_executor(executor: Executor | None, max_workers: int | None) -> tuple[Executor, bool]:
    if max_workers is not None:
        check_int("max_workers", max_workers, minimum=1, maximum=4096)
    if executor is None:
        return ProcessPoolExecutor(max_workers=max_workers), True
    if not isinstance(executor, Executor):
        raise TypeError(f"executor must be a concurrent.futures.Executor, got {_kind(executor)}")
    return executor, False


def _common_checks(
    slo_s: float, quantile: float, max_rejected_share: float, seed: int, progress: bool
) -> tuple[float, float, float, int]:
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be True or False, got {progress!r}")
    return (
        check_positive("slo_s", slo_s),
        check_probability("quantile", quantile, open_low=True, open_high=True),
        check_probability("max_rejected_share", max_rejected_share),
        check_int("seed", seed, minimum=0),
    )


def sweep(
    arrivals: pd.DataFrame | Sequence[pd.DataFrame],
    options: Sequence[ModelOption],
    *,
    replicas: Sequence[int],
    batch_sizes: Sequence[int] = (1,),
    slo_s: float,
    quantile: float = 0.99,
    max_rejected_share: float = 0.01,
    template: PlatformConfig | None = None,
    seed: int,
    common_seed: bool = True,
    executor: Executor | None = None,
    max_workers: int | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Simulate the full grid options x ``batch_sizes`` x ``replicas`` on ``arrivals``.

    The rows are ``CANDIDATE_COLUMNS`` (``round`` 0), cheapest first, the frontier marked; the
    arguments mean what they mean for ``plan`` (``replicas`` at most ``MAX_REPLICAS``, 100,000).
    ``arrivals`` may be a list of tables, one per replication, pooled per candidate.
    """
    slo_s, quantile, max_rejected_share, seed = _common_checks(
        slo_s, quantile, max_rejected_share, seed, progress
    )
    tables = _check_tables(arrivals)
    _check_template(template)
    search = _Search(
        _check_options(options),
        tables,
        template,
        slo_s,
        quantile,
        max_rejected_share,
        seed,
        _check_bool("common_seed", common_seed),
    )
    sizes = _check_ints("batch_sizes", batch_sizes, MAX_BATCH_SIZE)
    counts = _check_ints("replicas", replicas, MAX_REPLICAS)
    grid = [(o, b, r) for o in range(len(search.options)) for b in sizes for r in counts]
    pool, own = _with_executor(executor, max_workers)
    try:
        with tqdm(total=0, desc="sweep", unit="sim", disable=not progress) as bar:
            rows = _run_round(search, grid, 0, pool, bar)
    finally:
        if own:
            pool.shutdown()
    return _table(rows, search)


def _next_replicas(tried: dict[int, bool], max_replicas: int, cap: int) -> int | None:
    """The group's next replica count to try, or ``None`` when it is done.

    No feasible count yet: grow by half above the largest tried (up to ``cap``, the most replicas
    that could still tie the best plan). Otherwise bisect between the largest infeasible count below
    the smallest feasible one and that feasible one.
    """
    feasible = [r for r, ok in tried.items() if ok]
    if not feasible:
        top = max(tried)
        nxt = min(max_replicas, cap, top + max(1, top // 2))
        return nxt if nxt > top else None
    hi = min(feasible)
    lo = max([r for r, ok in tried.items() if not ok and r < hi], default=0)
    if hi - lo <= 1 or lo + 1 > cap:
        return None
    return (lo + hi) // 2


def plan(
    workload: Workload | pd.DataFrame,
    options: Sequence[ModelOption],
    *,
    slo_s: float,
    seed: int,
    quantile: float = 0.99,
    max_rejected_share: float = 0.01,
    batch_sizes: Sequence[int] = (1,),
    max_replicas: int = 64,
    template: PlatformConfig | None = None,
    duration_s: float = 600.0,
    start_s: float | None = None,
    replications: int = 1,
    common_seed: bool = True,
    max_rounds: int = 12,
    executor: Executor | None = None,
    max_workers: int | None = None,
    progress: bool = False,
) -> PlanResult:
    """The cheapest configuration whose simulated peak meets the SLO (see the module docstring).

    - ``workload``: a ``Workload`` (its busiest ``duration_s`` window is simulated, starting at
      ``start_s`` of its clock if given, else at ``peak_start_s``) or an arrivals table to use as is.
    - ``options``: the model tiers x quantizations to consider (``ModelOption``; ``roofline_option``
      builds them from the hardware and model tables); ``batch_sizes``: the batcher caps to try.
    - The SLO: the ``quantile`` latency of completed requests at most ``slo_s`` and at most
      ``max_rejected_share`` of the arrivals refused or timed out.
    - ``template``: the rest of the platform (gateway, ingestion, batcher wait, policy, network hop);
      each candidate replaces its pool's replicas, service and ``max_batch_size``. Without one: a
      shared queue, no admission control, batches of whatever waits.
    - ``replications``: independent peak windows (arrival seeds ``seed``, replications 0, 1, ...),
      pooled per candidate; more of them make the plan less sensitive to one draw of traffic.
    - ``executor``: where the simulations run (default: a ``ProcessPoolExecutor`` of
      ``max_workers``, shut down at the end); ``progress`` shows a tqdm bar of simulations.
    - Bounds: ``batch_sizes`` at most ``MAX_BATCH_SIZE`` (10,000), ``max_replicas`` at most
      ``MAX_REPLICAS`` (100,000), ``replications`` at most ``MAX_REPLICATIONS`` (1,000);
      ``common_seed`` and ``progress`` are True or False.
    """
    slo_s, quantile, max_rejected_share, seed = _common_checks(
        slo_s, quantile, max_rejected_share, seed, progress
    )
    options = _check_options(options)
    batch_sizes = _check_ints("batch_sizes", batch_sizes, MAX_BATCH_SIZE)
    max_replicas = check_int("max_replicas", max_replicas, minimum=1, maximum=MAX_REPLICAS)
    replications = check_int("replications", replications, minimum=1, maximum=MAX_REPLICATIONS)
    max_rounds = check_int("max_rounds", max_rounds, minimum=1)
    _check_template(template)
    common_seed = _check_bool("common_seed", common_seed)
    if executor is not None and not isinstance(executor, Executor):
        raise TypeError(f"executor must be a concurrent.futures.Executor, got {_kind(executor)}")
    if max_workers is not None:
        check_int("max_workers", max_workers, minimum=1, maximum=4096)
    if start_s is not None:
        start_s = check_non_negative("start_s", start_s)
    tables, peak_s, span_s = _peak_arrivals(workload, duration_s, start_s, seed, replications)
    if not any(len(table) for table in tables):
        raise ValueError(
            f"the peak window (duration_s={span_s!r} s from {peak_s!r} s) holds no request: "
            "nothing to size for; lengthen duration_s"
        )
    estimates = estimate(
        tables,
        options,
        batch_sizes,
        slo_s=slo_s,
        quantile=quantile,
        max_replicas=max_replicas,
        duration_s=span_s,
        seed=seed,
    )
    search = _Search(options, tuple(tables), template, slo_s, quantile, max_rejected_share, seed, common_seed)

    groups = [(o, b) for o in range(len(options)) for b in batch_sizes]
    tried: dict[tuple[int, int], dict[int, bool]] = {g: {} for g in groups}
    first: list[tuple[int, int, int]] = []
    for (o, b), (_, row) in zip(groups, estimates.iterrows(), strict=True):
        center = row["estimated_replicas"]
        center = int(center) if not math.isnan(center) else int(row["min_stable_replicas"])
        center = min(center, max_replicas)
        first.extend((o, b, r) for r in (center - 1, center, center + 1) if 1 <= r <= max_replicas)

    rows: list[dict] = []
    pool, own = _with_executor(executor, max_workers)
    try:
        with tqdm(total=0, desc="plan", unit="sim", disable=not progress) as bar:
            batch = first
            for round_ in range(max_rounds):
                if not batch:
                    break
                new = _run_round(search, batch, round_, pool, bar)
                rows.extend(new)
                for row, (o, b, r) in zip(new, batch, strict=True):
                    tried[(o, b)][r] = row["meets_slo"]
                feasible_costs = [row["cost_usd_per_hour"] for row in rows if row["meets_slo"]]
                best = min(feasible_costs, default=math.inf)
                batch = []
                for o, b in groups:
                    price = options[o].usd_per_replica_hour
                    cap = max_replicas if math.isinf(best) else math.floor(best / price * (1 + 1e-12))
                    nxt = _next_replicas(tried[(o, b)], max_replicas, cap)
                    if nxt is not None and nxt not in tried[(o, b)]:
                        batch.append((o, b, nxt))
    finally:
        if own:
            pool.shutdown()

    candidates = _table(rows, search)
    feasible = candidates[candidates["meets_slo"]]
    if len(feasible):
        choice = feasible.iloc[0]
        o = next(i for i, option in enumerate(options) if option.name == choice["option"])
        config = _config(template, options[o], int(choice["max_batch_size"]), int(choice["replicas"]))
    else:
        choice, config = None, None
    return PlanResult(
        config=config,
        choice=choice,
        candidates=candidates,
        estimates=estimates,
        arrivals=tables[0],
        peak_start_s=peak_s,
    )
