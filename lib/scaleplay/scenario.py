"""A growth plan as a file: phases of traffic, an SLO and model options in, a fleet per phase out.

A **scenario** is what a planner writes down before sizing a fleet for the next year: how many calls
a day each phase of the roadmap brings (500k, then 2M, then 5M, 90 days each), the shape of the day
(its peak-to-mean ratio), how long prompts and answers are, the SLO (p99 latency and the largest
share of requests that may go unanswered), the ways the model can be served (model, dtype, GPU,
tensor parallelism) and, optionally, the price of a GPU-hour. ``load_scenario`` reads one from YAML
(``yaml.safe_load``) and checks every field: an unknown key, a missing one or a value out of range
is refused with a message naming the field, the value and what is allowed.

``plan_scenario`` sizes each phase for its **peak**: it runs ``planner.plan`` on the busiest
``search.duration_s`` window of that phase's day and returns the **plan table**, one row per phase
(``PLAN_COLUMNS``). Costs are the fleet provisioned for the peak and held all month
(``capacity.HOURS_PER_MONTH`` = 730 hours), priced through ``cost.load_prices`` and
``cost.unit_costs``. **GPU nodes** are servers of ``search.gpus_per_node`` GPUs (8 on an H100 HGX
board): ``ceil(GPUs per replica x replicas / gpus_per_node)``, a replica never split across nodes
when ``gpus_per_node`` is a multiple of its tensor parallelism.

``python -m scaleplay plan my.yaml`` prints the same table (``format_plan_table``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ._validate import check_finite, check_in, check_int, check_positive, check_probability
from .capacity import HOURS_PER_MONTH
from .cost import PURCHASES, load_prices, priced_hardware, unit_costs
from .planner import ModelOption, PlanResult, plan, roofline_option
from .profiles import load_hardware
from .workload import DiurnalCosine, TokenDistribution, TrafficClass, Workload

__all__ = [
    "PLAN_COLUMNS",
    "Phase",
    "Traffic",
    "RequestSizes",
    "ServiceLevel",
    "ModelChoice",
    "PriceOverrides",
    "SearchSettings",
    "Scenario",
    "example_scenario_path",
    "load_scenario",
    "plan_phases",
    "plan_table",
    "plan_scenario",
    "format_plan_table",
]

#: The plan table: one row per phase, in the scenario's order.
PLAN_COLUMNS: dict[str, str] = {
    "phase": "the phase's name",
    "days": "how long the phase lasts",
    "calls/day": "requests on an average day of the phase",
    "peak (req/s)": "mean rate at the busiest moment of the day",
    "model option": "the chosen model, dtype, tensor parallelism x GPU ('none': nothing met the SLO)",
    "max batch (requests)": "the batcher's cap of the chosen configuration",
    "replicas": "replicas provisioned for the peak",
    "GPUs": "replicas x GPUs per replica",
    "GPU nodes": "ceil(GPUs / gpus_per_node)",
    "p99 (s)": "simulated latency quantile at the peak (completed requests)",
    "rejected (%)": "simulated share of peak arrivals refused or timed out",
    "cost (USD/month)": "GPUs x price per GPU-hour x 730 hours",
    "cost (USD per 1k requests)": "monthly cost over the month's requests, per thousand",
    "phase cost (USD)": "the fleet held for every hour of the phase",
}

_HOURS_PER_DAY = 24.0
_EXAMPLE = "scenario_example.yaml"


# ------------------------------------------------------------------------------------------ fields


def _mapping(name: str, value: object, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict:
    """A YAML mapping whose keys are among ``allowed`` and include ``required``."""
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a mapping with keys {', '.join(allowed)}; got {value!r}")
    unknown = [key for key in value if key not in allowed]
    if unknown:
        raise ValueError(
            f"{name} has unknown key(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(allowed)}"
        )
    missing = [key for key in required if key not in value]
    if missing:
        raise ValueError(f"{name} lacks required key(s) {', '.join(missing)}")
    return dict(value)


def _name(name: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    return value


@dataclass(frozen=True)
class Phase:
    """One stage of the roadmap: ``calls_per_day`` on an average day, for ``days`` days."""

    name: str
    calls_per_day: float
    days: int = 90

    def __post_init__(self) -> None:
        _name("phase name", self.name)
        object.__setattr__(
            self, "calls_per_day", check_positive(f"{self.name}.calls_per_day", self.calls_per_day)
        )
        object.__setattr__(self, "days", check_int(f"{self.name}.days", self.days, minimum=1))


@dataclass(frozen=True)
class Traffic:
    """The shape of a day: a raised cosine peaking at ``peak_to_mean`` x the mean at ``peak_hour``.

    ``interarrival_cv`` > 1 makes arrivals burstier than Poisson (``workload.Workload``).
    """

    peak_to_mean: float = 1.5
    peak_hour: float = 14.0
    interarrival_cv: float = 1.0

    def __post_init__(self) -> None:
        ratio = check_positive("traffic.peak_to_mean", self.peak_to_mean)
        if not 1 <= ratio <= 2:
            raise ValueError(
                f"traffic.peak_to_mean must lie in [1, 2] (a raised-cosine day), got {self.peak_to_mean!r}"
            )
        object.__setattr__(self, "peak_to_mean", ratio)
        hour = check_finite("traffic.peak_hour", self.peak_hour)
        if not 0 <= hour < 24:
            raise ValueError(f"traffic.peak_hour must lie in [0, 24), got {self.peak_hour!r}")
        object.__setattr__(self, "peak_hour", hour)
        object.__setattr__(
            self, "interarrival_cv", check_positive("traffic.interarrival_cv", self.interarrival_cv)
        )


@dataclass(frozen=True)
class RequestSizes:
    """Prompt and answer lengths in tokens: lognormal with a median, a log-sd and a cap."""

    tokens_in_median: float = 500.0
    tokens_in_sigma: float = 0.5
    tokens_in_max: int = 8000
    tokens_out_median: float = 200.0
    tokens_out_sigma: float = 0.5
    tokens_out_max: int = 1000

    def __post_init__(self) -> None:
        for side in ("tokens_in", "tokens_out"):
            median = check_positive(f"requests.{side}.median", getattr(self, f"{side}_median"))
            sigma = getattr(self, f"{side}_sigma")
            if sigma != 0:
                sigma = check_positive(f"requests.{side}.sigma", sigma)
            cap = check_int(f"requests.{side}.maximum", getattr(self, f"{side}_max"), minimum=1)
            if cap < median:
                raise ValueError(f"requests.{side}.maximum must be >= its median {median:g}, got {cap}")
            object.__setattr__(self, f"{side}_median", median)
            object.__setattr__(self, f"{side}_sigma", float(sigma))

    def distributions(self) -> tuple[TokenDistribution, TokenDistribution]:
        return (
            TokenDistribution(self.tokens_in_median, self.tokens_in_sigma, self.tokens_in_max),
            TokenDistribution(self.tokens_out_median, self.tokens_out_sigma, self.tokens_out_max),
        )


@dataclass(frozen=True)
class ServiceLevel:
    """The SLO at the peak: p99 latency at most ``p99_s`` and at most ``max_rejected_share`` unanswered."""

    p99_s: float = 10.0
    max_rejected_share: float = 0.01

    def __post_init__(self) -> None:
        object.__setattr__(self, "p99_s", check_positive("slo.p99_s", self.p99_s))
        object.__setattr__(
            self, "max_rejected_share", check_probability("slo.max_rejected_share", self.max_rejected_share)
        )


@dataclass(frozen=True)
class ModelChoice:
    """Serve ``model`` (``data/models.csv``) as ``dtype`` on ``tensor_parallel`` x ``hardware``."""

    model: str
    dtype: str = "bf16"
    hardware: str = "H100 SXM"
    tensor_parallel: int = 1

    def __post_init__(self) -> None:
        _name("models[].model", self.model)
        _name("models[].dtype", self.dtype)
        check_in("models[].hardware", self.hardware, tuple(priced_hardware()))
        load_hardware(self.hardware)
        object.__setattr__(
            self, "tensor_parallel", check_int("models[].tensor_parallel", self.tensor_parallel, minimum=1)
        )

    @property
    def label(self) -> str:
        return f"{self.model} {self.dtype} on {self.tensor_parallel}x {self.hardware}"


@dataclass(frozen=True)
class PriceOverrides:
    """How GPU-hours are bought (``cost.PURCHASES``) and optional On-Demand prices per GPU, in USD."""

    purchase: str = "on_demand"
    on_demand_usd_per_gpu_hour: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        check_in("prices.purchase", self.purchase, PURCHASES)
        known = tuple(priced_hardware())
        checked = []
        for hardware, usd in self.on_demand_usd_per_gpu_hour:
            check_in("prices.on_demand_usd_per_gpu_hour key", hardware, known)
            checked.append(
                (hardware, check_positive(f"prices.on_demand_usd_per_gpu_hour[{hardware!r}]", usd))
            )
        object.__setattr__(self, "on_demand_usd_per_gpu_hour", tuple(checked))

    def usd_per_gpu_hour(self, hardware: str) -> float:
        """The price of a serving GPU-hour of ``hardware``: ``cost.load_prices`` with the overrides."""
        prices = load_prices(hardware)
        override = dict(self.on_demand_usd_per_gpu_hour).get(hardware)
        if override is not None:
            prices = replace(prices, on_demand_usd_per_gpu_hour=override)
        return prices.usd_per_gpu_hour(self.purchase)


@dataclass(frozen=True)
class SearchSettings:
    """The planner's knobs: the simulated peak window, the batch sizes tried, the replica cap."""

    duration_s: float = 120.0
    batch_sizes: tuple[int, ...] = (16, 32)
    max_replicas: int = 64
    replications: int = 1
    gpus_per_node: int = 8

    def __post_init__(self) -> None:
        object.__setattr__(self, "duration_s", check_positive("search.duration_s", self.duration_s))
        sizes = self.batch_sizes
        if isinstance(sizes, str | bytes) or not isinstance(sizes, tuple | list) or not sizes:
            raise ValueError(f"search.batch_sizes must be a non-empty list of integers >= 1, got {sizes!r}")
        sizes = tuple(check_int(f"search.batch_sizes[{i}]", b, minimum=1) for i, b in enumerate(sizes))
        if len(set(sizes)) != len(sizes):
            raise ValueError(f"search.batch_sizes must not repeat a value, got {list(sizes)}")
        object.__setattr__(self, "batch_sizes", sizes)
        object.__setattr__(
            self, "max_replicas", check_int("search.max_replicas", self.max_replicas, minimum=1)
        )
        object.__setattr__(
            self, "replications", check_int("search.replications", self.replications, minimum=1)
        )
        object.__setattr__(
            self, "gpus_per_node", check_int("search.gpus_per_node", self.gpus_per_node, minimum=1)
        )


@dataclass(frozen=True)
class Scenario:
    """A whole roadmap; see the module docstring and ``data/scenario_example.yaml``."""

    phases: tuple[Phase, ...]
    models: tuple[ModelChoice, ...]
    traffic: Traffic = Traffic()
    requests: RequestSizes = RequestSizes()
    slo: ServiceLevel = ServiceLevel()
    prices: PriceOverrides = PriceOverrides()
    search: SearchSettings = SearchSettings()
    seed: int = 0
    name: str = "scenario"

    def __post_init__(self) -> None:
        _name("name", self.name)
        for field_name, kind in (("phases", Phase), ("models", ModelChoice)):
            items = tuple(getattr(self, field_name))
            if not items:
                raise ValueError(f"{field_name} must hold at least one entry, got none")
            for item in items:
                if not isinstance(item, kind):
                    raise TypeError(
                        f"{field_name} must hold {kind.__name__} objects, got {type(item).__name__}"
                    )
            object.__setattr__(self, field_name, items)
        names = [p.name for p in self.phases]
        if len(set(names)) != len(names):
            raise ValueError(f"phase names must be unique, got {names}")
        labels = [m.label for m in self.models]
        if len(set(labels)) != len(labels):
            raise ValueError(f"models must not repeat an option, got {labels}")
        object.__setattr__(self, "seed", check_int("seed", self.seed, minimum=0))
        for i, choice in enumerate(self.models):  # the model must exist and fit on its GPUs
            try:
                self._option(choice)
            except (ValueError, TypeError) as error:
                raise type(error)(f"models[{i}] ({choice.label}): {error}") from None

    def _option(self, m: ModelChoice) -> ModelOption:
        return roofline_option(
            m.model,
            m.dtype,
            hardware=m.hardware,
            tensor_parallel=m.tensor_parallel,
            usd_per_gpu_hour=self.prices.usd_per_gpu_hour(m.hardware),
            name=m.label,
        )

    def workload(self, phase: Phase) -> Workload:
        """The phase's traffic as a ``Workload`` (one class; a day shaped by ``traffic``)."""
        tokens_in, tokens_out = self.requests.distributions()
        return Workload(
            daily_active_users=phase.calls_per_day,
            requests_per_user_per_day=1.0,
            classes=(TrafficClass("default", 1.0, tokens_in=tokens_in, tokens_out=tokens_out),),
            diurnal=DiurnalCosine(self.traffic.peak_to_mean, self.traffic.peak_hour),
            interarrival_cv=self.traffic.interarrival_cv,
        )

    def options(self) -> list[ModelOption]:
        """The ``planner.ModelOption`` of every model choice, priced with the overrides."""
        return [self._option(m) for m in self.models]


# ------------------------------------------------------------------------------------------ loading

_TOP = ("name", "seed", "phases", "traffic", "requests", "slo", "models", "prices", "search")


def _from_dict(data: object) -> Scenario:
    top = _mapping("the scenario", data, _TOP, required=("phases", "models"))
    phases_raw = top["phases"]
    if not isinstance(phases_raw, list) or not phases_raw:
        raise ValueError(f"phases must be a non-empty list of phases, got {phases_raw!r}")
    phases = []
    for i, raw in enumerate(phases_raw):
        entry = _mapping(f"phases[{i}]", raw, ("name", "calls_per_day", "days"), required=("calls_per_day",))
        entry.setdefault("name", f"phase {i + 1}")
        phases.append(Phase(**entry))
    models_raw = top["models"]
    if not isinstance(models_raw, list) or not models_raw:
        raise ValueError(f"models must be a non-empty list of model options, got {models_raw!r}")
    models = [
        ModelChoice(
            **_mapping(f"models[{i}]", raw, ("model", "dtype", "hardware", "tensor_parallel"), ("model",))
        )
        for i, raw in enumerate(models_raw)
    ]
    kwargs: dict[str, Any] = {"phases": tuple(phases), "models": tuple(models)}
    if "name" in top:
        kwargs["name"] = top["name"]
    if "seed" in top:
        kwargs["seed"] = top["seed"]
    if "traffic" in top:
        kwargs["traffic"] = Traffic(
            **_mapping("traffic", top["traffic"], ("peak_to_mean", "peak_hour", "interarrival_cv"))
        )
    if "requests" in top:
        sizes = _mapping("requests", top["requests"], ("tokens_in", "tokens_out"))
        flat: dict[str, Any] = {}
        for side, raw in sizes.items():
            for key, value in _mapping(f"requests.{side}", raw, ("median", "sigma", "maximum")).items():
                flat[f"{side}_{'max' if key == 'maximum' else key}"] = value
        kwargs["requests"] = RequestSizes(**flat)
    if "slo" in top:
        kwargs["slo"] = ServiceLevel(**_mapping("slo", top["slo"], ("p99_s", "max_rejected_share")))
    if "prices" in top:
        raw = _mapping("prices", top["prices"] or {}, ("purchase", "on_demand_usd_per_gpu_hour"))
        per_gpu = raw.pop("on_demand_usd_per_gpu_hour", None) or {}
        if not isinstance(per_gpu, Mapping):
            raise TypeError(f"prices.on_demand_usd_per_gpu_hour must map a GPU name to USD, got {per_gpu!r}")
        kwargs["prices"] = PriceOverrides(on_demand_usd_per_gpu_hour=tuple(per_gpu.items()), **raw)
    if "search" in top:
        raw = _mapping(
            "search",
            top["search"],
            ("duration_s", "batch_sizes", "max_replicas", "replications", "gpus_per_node"),
        )
        if isinstance(raw.get("batch_sizes"), list):
            raw["batch_sizes"] = tuple(raw["batch_sizes"])
        kwargs["search"] = SearchSettings(**raw)
    return Scenario(**kwargs)


def example_scenario_path() -> Path:
    """The packaged example, ``scaleplay/data/scenario_example.yaml``."""
    return Path(str(resources.files("scaleplay").joinpath("data", _EXAMPLE)))


def load_scenario(path_or_text: str | Path) -> Scenario:
    """A ``Scenario`` from a YAML file (a ``Path``, or a one-line string naming a file) or YAML text.

    Raises ``FileNotFoundError`` for a missing file, ``ValueError`` for YAML that does not parse and
    ``ValueError``/``TypeError`` naming the field for a value that is not allowed.
    """
    if isinstance(path_or_text, Path) or (
        isinstance(path_or_text, str)
        and "\n" not in path_or_text
        and (path_or_text.endswith((".yaml", ".yml")) or Path(path_or_text).is_file())
    ):
        path = Path(path_or_text)
        if not path.is_file():
            raise FileNotFoundError(f"scenario file {str(path)!r} does not exist")
        text = path.read_text(encoding="utf-8")
    elif isinstance(path_or_text, str):
        text = path_or_text
    else:
        raise TypeError(f"path_or_text must be a path or YAML text, got {type(path_or_text).__name__}")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(f"the scenario is not valid YAML: {' '.join(str(error).split())}") from None
    return _from_dict(data)


# ------------------------------------------------------------------------------------------ planning


def plan_phases(
    scenario: Scenario, *, executor: Executor | None = None, progress: bool = False
) -> list[PlanResult]:
    """``planner.plan`` on each phase's peak window, in the scenario's order.

    Every phase uses the scenario's seed, so the plans are the same whatever the ``executor``
    (default: one local ``ProcessPoolExecutor`` shared by the phases).
    """
    if not isinstance(scenario, Scenario):
        raise TypeError(f"scenario must be a Scenario, got {type(scenario).__name__}")
    options = scenario.options()
    search = scenario.search
    own = executor is None
    pool = ProcessPoolExecutor() if own else executor
    try:
        return [
            plan(
                scenario.workload(phase),
                options,
                slo_s=scenario.slo.p99_s,
                max_rejected_share=scenario.slo.max_rejected_share,
                batch_sizes=search.batch_sizes,
                max_replicas=search.max_replicas,
                replications=search.replications,
                duration_s=search.duration_s,
                seed=scenario.seed,
                executor=pool,
                progress=progress,
            )
            for phase in scenario.phases
        ]
    finally:
        if own:
            pool.shutdown()


def plan_table(scenario: Scenario, results: list[PlanResult]) -> pd.DataFrame:
    """The plan table (``PLAN_COLUMNS``) of ``plan_phases``' results."""
    if len(results) != len(scenario.phases):
        raise ValueError(f"results must hold one plan per phase ({len(scenario.phases)}), got {len(results)}")
    rows = []
    for phase, result in zip(scenario.phases, results, strict=True):
        peak = scenario.workload(phase).peak_rate_per_s
        row: dict[str, Any] = {"phase": phase.name, "days": phase.days, "calls/day": phase.calls_per_day}
        row["peak (req/s)"] = peak
        choice = result.choice
        if choice is None:
            row["model option"] = "none"
            rows.append(row)
            continue
        gpus = int(choice["gpus_per_replica"]) * int(choice["replicas"])
        usd_per_hour = float(choice["cost_usd_per_hour"])
        bill = pd.DataFrame(
            {
                "quantity": [gpus * HOURS_PER_MONTH],
                "unit": ["GPU-hour"],
                "unit_usd": [usd_per_hour / gpus],
                "cost_usd": [usd_per_hour * HOURS_PER_MONTH],
            },
            index=pd.Index(["GPUs"], name="item"),
        )
        units = unit_costs(bill, requests_per_month=phase.calls_per_day * HOURS_PER_MONTH / _HOURS_PER_DAY)
        row.update(
            {
                "model option": choice["option"],
                "max batch (requests)": int(choice["max_batch_size"]),
                "replicas": int(choice["replicas"]),
                "GPUs": gpus,
                "GPU nodes": math.ceil(gpus / scenario.search.gpus_per_node),
                "p99 (s)": float(choice["p99_s"]),
                "rejected (%)": 100.0 * float(choice["rejected_share"] + choice["timed_out_share"]),
                "cost (USD/month)": float(units["monthly_usd"]),
                "cost (USD per 1k requests)": float(units["usd_per_1k_requests"]),
                "phase cost (USD)": usd_per_hour * _HOURS_PER_DAY * phase.days,
            }
        )
        rows.append(row)
    table = pd.DataFrame(rows, columns=list(PLAN_COLUMNS))
    for column in ("max batch (requests)", "replicas", "GPUs", "GPU nodes"):
        table[column] = table[column].astype("Int64")
    return table.set_index("phase")


def plan_scenario(
    scenario: Scenario, *, executor: Executor | None = None, progress: bool = False
) -> pd.DataFrame:
    """The plan table of ``scenario``: each phase sized for its peak (``plan_phases``)."""
    return plan_table(scenario, plan_phases(scenario, executor=executor, progress=progress))


def format_plan_table(table: pd.DataFrame) -> str:
    """The plan table as ``python -m scaleplay plan`` prints it (``DataFrame.to_string``)."""
    return table.to_string(
        float_format=lambda x: f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}",
    )
