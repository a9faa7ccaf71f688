"""A growth plan as a file: phases of traffic, an SLO and model options in, a fleet per phase out.

A **scenario** is what a planner writes down before sizing a fleet for the next year: how many calls
a day each phase of the roadmap brings (500k, then 2M, then 5M, 90 days each), the shape of the day
(its peak-to-mean ratio), how long prompts and answers are, the SLO (p99 latency and the largest
share of requests that may go unanswered), the ways the model can be served (model, dtype, GPU,
tensor parallelism) and, optionally, the price of a GPU-hour. ``load_scenario`` reads one from YAML
and checks every field: an unknown key, a missing one or a value out of range is refused with a
message naming the field, the value and what is allowed.

The YAML is read by ``ScenarioLoader``, a ``yaml.SafeLoader`` that refuses anchors and aliases
(``&a``/``*a``: no "billion laughs"), merge keys and duplicate keys, nesting deeper than
``MAX_YAML_DEPTH`` = 50 and files over ``MAX_YAML_BYTES`` = 1 MB (checked before parsing), and reads
numbers as YAML 1.2 does: ``1e9`` and ``1.0e15`` are floats, not strings.

Every field is bounded so that a plan is bounded work: at most ``MAX_PHASES`` = 100 phases of at
most ``MAX_CALLS_PER_DAY`` = 1e10 calls and 36 500 days; at most ``MAX_MODELS`` = 20 model options;
``search.duration_s`` at most 86 400 s, with at most ``MAX_WINDOW_ARRIVALS`` = 10**6 expected
arrivals in any phase's peak window; at most 16 batch sizes of at most 4096; ``max_replicas`` at
most 4096; ``replications`` at most 10; names at most 100 characters.

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
import os
import re
from collections.abc import Mapping
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ._validate import (
    MAX_SEED,
    MAX_TOKENS,
    _kind,
    _show,
    check_in,
    check_int,
    check_items,
    check_probability,
    check_range,
)
from .capacity import HOURS_PER_MONTH
from .cost import PURCHASES, load_prices, priced_hardware, unit_costs
from .planner import ModelOption, PlanResult, plan, roofline_option
from .profiles import DTYPE_BYTES, load_hardware
from .workload import (
    INTERARRIVAL_CV_RANGE,
    MAX_SIGMA,
    DiurnalCosine,
    TokenDistribution,
    TrafficClass,
    Workload,
)

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
    "ScenarioLoader",
    "MAX_YAML_BYTES",
    "MAX_YAML_DEPTH",
    "MAX_PHASES",
    "MAX_MODELS",
    "MAX_CALLS_PER_DAY",
    "MAX_WINDOW_ARRIVALS",
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
_SECONDS_PER_DAY = 86_400.0
_EXAMPLE = "scenario_example.yaml"

#: The largest scenario file (or text) read, in bytes; checked before parsing.
MAX_YAML_BYTES = 1_000_000
#: The deepest nesting of lists and mappings the YAML may hold.
MAX_YAML_DEPTH = 50
#: The most phases and model options a scenario may hold.
MAX_PHASES = 100
MAX_MODELS = 20
#: The most calls a phase may bring on an average day.
MAX_CALLS_PER_DAY = 1e10
#: The most arrivals a phase's simulated peak window may expect.
MAX_WINDOW_ARRIVALS = 10**6
#: The longest name (of the scenario, a phase or a model).
MAX_NAME_CHARS = 100


# ------------------------------------------------------------------------------------------ fields


def _mapping(name: str, value: object, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict:
    """A YAML mapping whose keys are among ``allowed`` and include ``required``."""
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a mapping with keys {', '.join(allowed)}; got {_kind(value)}")
    unknown = [key for key in value if key not in allowed]
    if unknown:
        shown = ", ".join(_show(key) for key in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        raise ValueError(f"{name} has unknown key(s) {shown}; allowed: {', '.join(allowed)}")
    missing = [key for key in required if key not in value]
    if missing:
        raise ValueError(f"{name} lacks required key(s) {', '.join(missing)}")
    return dict(value)


def _name(name: str, value: object) -> str:
    """A non-empty string of at most ``MAX_NAME_CHARS`` characters."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string, got {_kind(value)}")
    if len(value) > MAX_NAME_CHARS:
        raise ValueError(
            f"{name} must hold at most {MAX_NAME_CHARS} characters, got {len(value):,}: {_show(value)}"
        )
    return value


def _list(name: str, value: object, limit: int, what: str) -> list:
    """A non-empty YAML list of at most ``limit`` entries."""
    if not isinstance(value, list) or not value:
        raise ValueError(f"{name} must be a non-empty list of {what}, got {_kind(value)}")
    if len(value) > limit:
        raise ValueError(f"{name} must hold at most {limit} {what}, got {len(value):,}")
    return value


@dataclass(frozen=True)
class Phase:
    """One stage of the roadmap: ``calls_per_day`` (at most 1e10) on an average day, for ``days``
    days (at most 36 500)."""

    name: str
    calls_per_day: float
    days: int = 90

    def __post_init__(self) -> None:
        _name("phase name", self.name)
        calls = check_range(
            f"{self.name}.calls_per_day", self.calls_per_day, 0.0, MAX_CALLS_PER_DAY, open_low=True
        )
        object.__setattr__(self, "calls_per_day", calls)
        object.__setattr__(self, "days", check_int(f"{self.name}.days", self.days, minimum=1, maximum=36_500))


@dataclass(frozen=True)
class Traffic:
    """The shape of a day: a raised cosine peaking at ``peak_to_mean`` x the mean at ``peak_hour``.

    ``interarrival_cv`` > 1 makes arrivals burstier than Poisson (``workload.Workload``); it lies
    in [0.01, 100].
    """

    peak_to_mean: float = 1.5
    peak_hour: float = 14.0
    interarrival_cv: float = 1.0

    def __post_init__(self) -> None:
        ratio = check_range(
            "traffic.peak_to_mean", self.peak_to_mean, 1.0, 2.0, unit=" (a raised-cosine day)"
        )
        object.__setattr__(self, "peak_to_mean", ratio)
        hour = check_range("traffic.peak_hour", self.peak_hour, 0.0, 24.0)
        if hour == 24:
            raise ValueError(f"traffic.peak_hour must lie in [0, 24), got {_show(self.peak_hour)}")
        object.__setattr__(self, "peak_hour", hour)
        low, high = INTERARRIVAL_CV_RANGE
        cv = check_range("traffic.interarrival_cv", self.interarrival_cv, low, high)
        object.__setattr__(self, "interarrival_cv", cv)


@dataclass(frozen=True)
class RequestSizes:
    """Prompt and answer lengths in tokens: lognormal with a median, a log-sd (at most 10) and a cap
    (at most 10**9 tokens, at least the median)."""

    tokens_in_median: float = 500.0
    tokens_in_sigma: float = 0.5
    tokens_in_max: int = 8000
    tokens_out_median: float = 200.0
    tokens_out_sigma: float = 0.5
    tokens_out_max: int = 1000

    def __post_init__(self) -> None:
        for side in ("tokens_in", "tokens_out"):
            median = check_range(
                f"requests.{side}.median", getattr(self, f"{side}_median"), 0.0, MAX_TOKENS, open_low=True
            )
            sigma = check_range(f"requests.{side}.sigma", getattr(self, f"{side}_sigma"), 0.0, MAX_SIGMA)
            cap = check_int(
                f"requests.{side}.maximum", getattr(self, f"{side}_max"), minimum=1, maximum=MAX_TOKENS
            )
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
    """The SLO at the peak: p99 latency at most ``p99_s`` (at most a day) and at most
    ``max_rejected_share`` unanswered."""

    p99_s: float = 10.0
    max_rejected_share: float = 0.01

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "p99_s",
            check_range("slo.p99_s", self.p99_s, 0.0, _SECONDS_PER_DAY, open_low=True, unit=" s"),
        )
        object.__setattr__(
            self, "max_rejected_share", check_probability("slo.max_rejected_share", self.max_rejected_share)
        )


@dataclass(frozen=True)
class ModelChoice:
    """Serve ``model`` (``data/models.csv``) as ``dtype`` on ``tensor_parallel`` (1 to 64) x ``hardware``."""

    model: str
    dtype: str = "bf16"
    hardware: str = "H100 SXM"
    tensor_parallel: int = 1

    def __post_init__(self) -> None:
        _name("models[].model", self.model)
        check_in("models[].dtype", self.dtype, tuple(DTYPE_BYTES))
        check_in("models[].hardware", self.hardware, tuple(priced_hardware()))
        load_hardware(self.hardware)
        object.__setattr__(
            self,
            "tensor_parallel",
            check_int("models[].tensor_parallel", self.tensor_parallel, minimum=1, maximum=64),
        )

    @property
    def label(self) -> str:
        return f"{self.model} {self.dtype} on {self.tensor_parallel}x {self.hardware}"


@dataclass(frozen=True)
class PriceOverrides:
    """How GPU-hours are bought (``cost.PURCHASES``) and optional On-Demand prices per GPU, in USD
    (each in (0, 10**6]), as ``(GPU name, USD)`` pairs."""

    purchase: str = "on_demand"
    on_demand_usd_per_gpu_hour: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        check_in("prices.purchase", self.purchase, PURCHASES)
        known = tuple(priced_hardware())
        name = "prices.on_demand_usd_per_gpu_hour"
        pairs = self.on_demand_usd_per_gpu_hour
        if not isinstance(pairs, tuple | list) or len(pairs) > len(known):
            raise TypeError(f"{name} must be (GPU name, USD) pairs, one per GPU at most, got {_kind(pairs)}")
        checked = []
        for pair in pairs:
            if not isinstance(pair, tuple | list) or len(pair) != 2:
                raise TypeError(f"{name} must hold (GPU name, USD) pairs, got {_kind(pair)}")
            hardware, usd = pair
            check_in(f"{name} key", hardware, known)
            checked.append((hardware, check_range(f"{name}[{hardware!r}]", usd, 0.0, 1e6, open_low=True)))
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
    """The planner's knobs: the simulated peak window, the batch sizes tried, the replica cap.

    Bounds: ``duration_s`` in (0, 86 400]; 1 to 16 distinct ``batch_sizes`` in [1, 4096];
    ``max_replicas`` and ``gpus_per_node`` in [1, 4096]; ``replications`` in [1, 10].
    """

    duration_s: float = 120.0
    batch_sizes: tuple[int, ...] = (16, 32)
    max_replicas: int = 64
    replications: int = 1
    gpus_per_node: int = 8

    def __post_init__(self) -> None:
        duration = check_range(
            "search.duration_s", self.duration_s, 0.0, _SECONDS_PER_DAY, open_low=True, unit=" s"
        )
        object.__setattr__(self, "duration_s", duration)
        sizes = self.batch_sizes
        if not isinstance(sizes, tuple | list) or not 1 <= len(sizes) <= 16:
            raise ValueError(
                f"search.batch_sizes must be a list of 1 to 16 integers >= 1, got {_kind(sizes)}"
            )
        sizes = tuple(
            check_int(f"search.batch_sizes[{i}]", b, minimum=1, maximum=4096) for i, b in enumerate(sizes)
        )
        if len(set(sizes)) != len(sizes):
            raise ValueError(f"search.batch_sizes must not repeat a value, got {list(sizes)}")
        object.__setattr__(self, "batch_sizes", sizes)
        for field, maximum in (("max_replicas", 4096), ("replications", 10), ("gpus_per_node", 4096)):
            value = check_int(f"search.{field}", getattr(self, field), minimum=1, maximum=maximum)
            object.__setattr__(self, field, value)


@dataclass(frozen=True)
class Scenario:
    """A whole roadmap; see the module docstring (and its bounds) and ``data/scenario_example.yaml``."""

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
        for field_name, kind, limit in (("phases", Phase, MAX_PHASES), ("models", ModelChoice, MAX_MODELS)):
            items = check_items(field_name, getattr(self, field_name), kind, max_size=limit)
            if not items:
                raise ValueError(f"{field_name} must hold at least one entry, got none")
            object.__setattr__(self, field_name, items)
        for field_name, kind in (
            ("traffic", Traffic),
            ("requests", RequestSizes),
            ("slo", ServiceLevel),
            ("prices", PriceOverrides),
            ("search", SearchSettings),
        ):
            if not isinstance(getattr(self, field_name), kind):
                raise TypeError(
                    f"{field_name} must be a {kind.__name__}, got {_kind(getattr(self, field_name))}"
                )
        names = [p.name for p in self.phases]
        if len(set(names)) != len(names):
            raise ValueError(f"phase names must be unique, got {names}")
        labels = [m.label for m in self.models]
        if len(set(labels)) != len(labels):
            raise ValueError(f"models must not repeat an option, got {labels}")
        object.__setattr__(self, "seed", check_int("seed", self.seed, minimum=0, maximum=MAX_SEED))
        duration = self.search.duration_s
        for phase in self.phases:  # the busiest window must stay a bounded simulation
            expected = phase.calls_per_day / _SECONDS_PER_DAY * self.traffic.peak_to_mean * duration
            if expected > MAX_WINDOW_ARRIVALS:
                raise ValueError(
                    f"search.duration_s={duration:g} s at the peak of phase {phase.name!r} "
                    f"({phase.calls_per_day:g} calls/day) expects about {expected:.3g} arrivals; at most "
                    f"{MAX_WINDOW_ARRIVALS:.0e} are simulated: shorten search.duration_s"
                )
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
    phases_raw = _list("phases", top["phases"], MAX_PHASES, "phases")
    phases = []
    for i, raw in enumerate(phases_raw):
        entry = _mapping(f"phases[{i}]", raw, ("name", "calls_per_day", "days"), required=("calls_per_day",))
        entry.setdefault("name", f"phase {i + 1}")
        phases.append(Phase(**entry))
    models_raw = _list("models", top["models"], MAX_MODELS, "model options")
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
            raise TypeError(
                f"prices.on_demand_usd_per_gpu_hour must map a GPU name to USD, got {_kind(per_gpu)}"
            )
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


# YAML 1.2 floats: a dot or an exponent (``1.5``, ``1e9``, ``1.0e15``, ``-2E-3``), or inf / nan.
_FLOAT_12 = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.VERBOSE,
)
_FLOAT_TAG = "tag:yaml.org,2002:float"


class ScenarioLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` for untrusted scenario files: no anchors or aliases, no merge or duplicate
    keys, nesting at most ``MAX_YAML_DEPTH`` deep, YAML 1.2 floats (``1e9`` is a number).

    The size limit (``MAX_YAML_BYTES``) is checked by ``load_scenario`` before the text gets here.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.composer.ComposerError(
                None, None, "anchors and aliases (&name, *name) are not allowed", event.start_mark
            )
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"nesting deeper than {MAX_YAML_DEPTH} levels is not allowed",
                    event.start_mark,
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value if isinstance(node, yaml.MappingNode) else ():
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise yaml.constructor.ConstructorError(
                    None, None, "merge keys (<<) are not allowed", key_node.start_mark
                )
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    "a mapping key must be a plain value, not a list or mapping",
                    key_node.start_mark,
                ) from None
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {_show(key)}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _construct_int(loader: ScenarioLoader, node: yaml.ScalarNode) -> int:
    """An integer of at most 100 digits (longer ones cost quadratic time to read)."""
    if len(node.value) > 100:
        raise yaml.constructor.ConstructorError(
            None,
            None,
            f"an integer of {len(node.value):,} characters is not allowed (at most 100)",
            node.start_mark,
        )
    return yaml.SafeLoader.construct_yaml_int(loader, node)


ScenarioLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
ScenarioLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _FLOAT_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ScenarioLoader.add_implicit_resolver(_FLOAT_TAG, _FLOAT_12, list("-+0123456789."))


def example_scenario_path() -> Path:
    """The packaged example, ``scaleplay/data/scenario_example.yaml``."""
    return Path(str(resources.files("scaleplay").joinpath("data", _EXAMPLE)))


def _read_file(path: Path) -> str:
    """The UTF-8 text of a scenario file of at most ``MAX_YAML_BYTES`` bytes."""
    shown = _show(str(path))
    try:
        info = path.stat()
    except FileNotFoundError:
        raise FileNotFoundError(f"scenario file {shown} does not exist") from None
    except (OSError, ValueError) as error:  # a name the system refuses, a file it cannot reach
        raise ValueError(f"scenario file {shown} cannot be read: {_show(str(error))}") from None
    if path.is_dir():
        raise ValueError(f"scenario file {shown} is a directory, not a file")
    if not path.is_file():
        raise ValueError(f"scenario file {shown} is not a regular file")
    too_big = f"scenario file {shown} holds more than {MAX_YAML_BYTES:,} bytes; a scenario is a short text"
    if info.st_size > MAX_YAML_BYTES:
        raise ValueError(too_big)
    with path.open("rb") as stream:
        data = stream.read(MAX_YAML_BYTES + 1)
    if len(data) > MAX_YAML_BYTES:
        raise ValueError(too_big)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"scenario file {shown} is not UTF-8 text (byte {data[error.start]:#04x} at offset {error.start})"
        ) from None


def load_scenario(path_or_text: str | os.PathLike[str]) -> Scenario:
    """A ``Scenario`` from a YAML file (a path, or a string on one line naming a file) or YAML text
    (a string holding at least one line break).

    Raises ``FileNotFoundError`` for a missing file, ``ValueError`` for a file that is not a readable
    UTF-8 text of at most ``MAX_YAML_BYTES`` bytes, for YAML that does not parse or that
    ``ScenarioLoader`` refuses, and ``ValueError``/``TypeError`` naming the field for a value that is
    not allowed.
    """
    if isinstance(path_or_text, str) and not path_or_text.strip():
        raise ValueError(f"path_or_text must name a file or hold YAML text, got {_show(path_or_text)}")
    if isinstance(path_or_text, os.PathLike) or (isinstance(path_or_text, str) and "\n" not in path_or_text):
        text = _read_file(Path(path_or_text))
        source = Path(path_or_text).name[:80]
    elif isinstance(path_or_text, str):
        text, source = path_or_text, "the scenario text"
        if len(text) > MAX_YAML_BYTES:
            raise ValueError(f"the scenario text holds {len(text):,} characters; at most {MAX_YAML_BYTES:,}")
    else:
        raise TypeError(f"path_or_text must be a path or YAML text, got {_kind(path_or_text)}")
    loader = None
    try:
        loader = ScenarioLoader(text)
        loader.name = source  # marks say where: "in <source>, line 3, column 7"
        data = loader.get_single_data()
    except yaml.YAMLError as error:
        message = " ".join(str(error).replace("<unicode string>", source).split())[:300]
        raise ValueError(f"the scenario is not valid YAML: {message}") from None
    finally:
        if loader is not None:
            loader.dispose()
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
        raise TypeError(f"scenario must be a Scenario, got {_kind(scenario)}")
    if executor is not None and not isinstance(executor, Executor):
        raise TypeError(f"executor must be a concurrent.futures Executor or None, got {_kind(executor)}")
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be a bool, got {_kind(progress)}")
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
    if not isinstance(scenario, Scenario):
        raise TypeError(f"scenario must be a Scenario, got {_kind(scenario)}")
    if not isinstance(results, list | tuple) or not all(isinstance(r, PlanResult) for r in results):
        raise TypeError(f"results must be a list of PlanResult (from plan_phases), got {_kind(results)}")
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
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"table must be a DataFrame (from plan_table), got {_kind(table)}")
    return table.to_string(
        float_format=lambda x: f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}",
    )
