"""Economics: what a fleet costs per hour, per month, per 1k requests and per user.

A provisioned fleet is paid by the GPU-hour whether it is busy or not, so the bill follows the
*replica-seconds* a deployment holds: the Timeline's ``replicas`` column times each interval's
length (``fleet_profile``), times the GPUs a replica spans (tensor parallelism). Three ways to buy
those hours, all priced off the On-Demand rate of a ``Prices``:

- **On-Demand**: pay for the hours you hold, nothing more.
- **Reserved** (a commitment for a term): ``reserved_discount`` off, but every hour of the term is
  paid, used or not. A reserved GPU pays off once it is needed more than ``1 - reserved_discount``
  of the time (``reserved_break_even``); against a fleet that breathes with the day, the cheapest
  baseline is the largest fleet size held at least that share of the time (``best_reserved_gpus``).
- **Spot**: ``spot_discount`` off, but the provider reclaims instances, on average
  ``spot_interruptions_per_hour`` times per instance-hour. The model is deliberately simple: each
  interruption starts a replacement at once, and the replacement is paid for ``spot_replacement_s``
  (boot, image pull, weight loading) before it serves. Holding a serving GPU-hour on spot therefore
  costs ``1 + spot_interruptions_per_hour x spot_replacement_s / 3600`` paid GPU-hours
  (``Prices.spot_overhead``). The capacity lost while a replacement starts is a latency risk, not a
  line on the bill: simulate it with a fault injector, or hold spare replicas.

**Serverless** GPU platforms bill only the seconds a container runs plus, at the front door, a fee
per request: idle capacity is free, busy capacity dearer. ``serverless_break_even`` gives the traffic
per GPU (and the utilization) below which that beats a provisioned GPU. The serverless bill assumes
the platform batches as well as the simulated fleet did; it bills the fleet's busy GPU-seconds, or
(``billed="running"``) every second its workers run, as RunPod and Modal bill a worker from its start
until it stops; cold starts are left out.

Prices are data: ``data/prices.csv`` holds each figure with its provider, its source and the date it
was listed, ``load_prices(hardware, provider=...)`` reads one provider's rows into a ``Prices`` (so a
comparison of its ways to buy is like for like) and ``dataclasses.replace(prices, ...)`` overrides
any of them. A price a provider does not list is 0 (no serverless GPUs at AWS: the serverless
functions refuse such prices); ``serverless_provider`` takes the serverless price from another
provider, a pair the ``Prices.provider`` label states. A month is ``capacity.HOURS_PER_MONTH`` = 730
hours; a GB is 1e9 bytes.

>>> prices = Prices("toy", on_demand_usd_per_gpu_hour=2.0, reserved_discount=0.25)
>>> prices.reserved_usd_per_gpu_hour, reserved_break_even(prices)
(1.5, 0.75)
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from importlib import resources

import numpy as np
import pandas as pd

from ._validate import (
    _kind,
    _show,
    check_in,
    check_int,
    check_non_negative,
    check_positive,
    check_probability,
    check_real_array,
)
from .capacity import HOURS_PER_MONTH
from .metrics import busy_intervals, interval_widths
from .schema import REQUEST_LOG_COLUMNS, TIMELINE_COLUMNS, check_columns

__all__ = [
    "PURCHASES",
    "SERVERLESS_BILLING",
    "DEFAULT_PROVIDER",
    "BILL_COLUMNS",
    "FLEET_PROFILE_COLUMNS",
    "SECONDS_PER_HOUR",
    "BYTES_PER_GB",
    "MAX_GPUS",
    "MAX_GRID_POINTS",
    "Prices",
    "load_prices",
    "price_table",
    "price_providers",
    "priced_hardware",
    "fleet_profile",
    "gpu_profile",
    "run_cost",
    "monthly_bill",
    "serverless_bill",
    "unit_costs",
    "reserved_break_even",
    "best_reserved_gpus",
    "serverless_break_even",
    "API_PRICE_COLUMNS",
    "THROUGHPUT_TOKENS",
    "BUY_VS_BUILD_COLUMNS",
    "ENGINEER_USD_PER_MONTH",
    "load_api_prices",
    "api_bill",
    "buy_vs_build",
    "buy_vs_build_break_even",
]

SECONDS_PER_HOUR = 3600.0
BYTES_PER_GB = 1e9
#: Ways to buy provisioned GPU-hours.
PURCHASES: tuple[str, ...] = ("on_demand", "reserved", "spot")
#: What a serverless bill counts: the GPU-seconds running a batch, or every second a worker runs.
SERVERLESS_BILLING: tuple[str, ...] = ("busy", "running")
#: The provider ``load_prices`` reads by default (the reference product's GPU-hours).
DEFAULT_PROVIDER = "AWS"

#: A bill: one row per line item, indexed by ``item``.
BILL_COLUMNS: dict[str, tuple[str, str]] = {
    "quantity": ("float64", "how much was bought in the month, in ``unit``"),
    "unit": ("object", "what one unit is, e.g. 'GPU-hour'"),
    "unit_usd": ("float64", "price of one unit, US dollars"),
    "cost_usd": ("float64", "quantity x unit_usd"),
}

#: A fleet over time: one row per interval.
FLEET_PROFILE_COLUMNS: dict[str, tuple[str, str]] = {
    "t_s": ("float64", "start of the interval"),
    "duration_s": ("float64", "length of the interval"),
    "gpus": ("float64", "time-average GPUs provisioned (replicas x gpus_per_replica)"),
    "busy_gpus": ("float64", "time-average GPUs running a batch"),
}

_CSV = "prices.csv"
#: The most GPUs a count (reserved GPUs, GPUs per replica) may name.
MAX_GPUS = 10**9
#: The most intervals ``gpu_profile`` builds.
MAX_GRID_POINTS = 10_000_000


@dataclass(frozen=True)
class Prices:
    """The prices one deployment pays, for one kind of GPU. Every field can be overridden.

    Rates are per *GPU*: a replica spread over ``k`` GPUs by tensor parallelism costs ``k`` times
    as much. Discounts are fractions off the On-Demand rate, in [0, 1). ``provider`` names where the
    prices come from ("" for prices built by hand).
    """

    hardware: str
    on_demand_usd_per_gpu_hour: float
    reserved_discount: float = 0.0
    spot_discount: float = 0.0
    spot_interruptions_per_hour: float = 0.0
    spot_replacement_s: float = 0.0
    serverless_usd_per_gpu_s: float = 0.0
    serverless_usd_per_request: float = 0.0
    egress_usd_per_gb: float = 0.0
    storage_usd_per_gb_month: float = 0.0
    provider: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.hardware, str) or not self.hardware:
            raise ValueError(f"hardware must be a non-empty string, got {self.hardware!r}")
        if not isinstance(self.provider, str):
            raise TypeError(f"provider must be a str, got {_show(self.provider)} ({_kind(self.provider)})")
        set_ = object.__setattr__
        on_demand = check_positive("on_demand_usd_per_gpu_hour", self.on_demand_usd_per_gpu_hour)
        set_(self, "on_demand_usd_per_gpu_hour", on_demand)
        for name in ("reserved_discount", "spot_discount"):
            set_(self, name, check_probability(name, getattr(self, name), open_high=True))
        for name in (
            "spot_interruptions_per_hour",
            "spot_replacement_s",
            "serverless_usd_per_gpu_s",
            "serverless_usd_per_request",
            "egress_usd_per_gb",
            "storage_usd_per_gb_month",
        ):
            set_(self, name, check_non_negative(name, getattr(self, name)))
        if not math.isfinite(self.spot_effective_usd_per_gpu_hour):
            raise ValueError(
                "spot_interruptions_per_hour x spot_replacement_s makes a spot GPU-hour's price overflow "
                f"a float: got {self.spot_interruptions_per_hour!r} and {self.spot_replacement_s!r}"
            )

    @property
    def reserved_usd_per_gpu_hour(self) -> float:
        """The committed rate (paid for every hour of the term)."""
        return self.on_demand_usd_per_gpu_hour * (1.0 - self.reserved_discount)

    @property
    def spot_usd_per_gpu_hour(self) -> float:
        """The spot list rate, before interruptions."""
        return self.on_demand_usd_per_gpu_hour * (1.0 - self.spot_discount)

    @property
    def spot_overhead(self) -> float:
        """Paid spot GPU-hours per serving GPU-hour: ``1 + interruptions/h x replacement_s / 3600``."""
        return 1.0 + self.spot_interruptions_per_hour * self.spot_replacement_s / SECONDS_PER_HOUR

    @property
    def spot_effective_usd_per_gpu_hour(self) -> float:
        """What a *serving* spot GPU-hour costs once replacements are paid for."""
        return self.spot_usd_per_gpu_hour * self.spot_overhead

    def usd_per_gpu_hour(self, purchase: str = "on_demand") -> float:
        """The price of a serving GPU-hour bought as ``purchase`` (one of ``PURCHASES``)."""
        check_in("purchase", purchase, PURCHASES)
        return {
            "on_demand": self.on_demand_usd_per_gpu_hour,
            "reserved": self.reserved_usd_per_gpu_hour,
            "spot": self.spot_effective_usd_per_gpu_hour,
        }[purchase]


# ---------------------------------------------------------------------------------------------- data


_TABLE_COLUMNS = ["item", "hardware", "provider", "value", "unit", "source", "source_date", "notes"]


def price_table() -> pd.DataFrame:
    """Every row of ``data/prices.csv``: ``item``, ``hardware`` ("" for prices that hold for any GPU),
    ``provider`` ("" for this book's assumptions, which hold for any provider), ``value``, ``unit``,
    ``source``, ``source_date`` and ``notes``."""
    with resources.files("scaleplay").joinpath("data", _CSV).open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if list(reader.fieldnames or ()) != _TABLE_COLUMNS:
            raise ValueError(f"{_CSV} must have the columns {_TABLE_COLUMNS}, got {reader.fieldnames}")
        rows = list(reader)
    known = {f.name for f in fields(Prices)} - {"hardware", "provider"}
    seen: set[tuple[str, str, str]] = set()
    for i, row in enumerate(rows):
        where = f"{_CSV} row {i + 2} ({row['item']!r}, {row['hardware']!r}, {row['provider']!r})"
        if not row["source"] or not row["source_date"]:
            raise ValueError(f"{where} lacks its source or source_date")
        if row["item"] not in known:
            raise ValueError(f"{where}: unknown item; known items are {sorted(known)}")
        key = (row["item"], row["hardware"], row["provider"])
        if key in seen:
            raise ValueError(f"{where} repeats an earlier row")
        seen.add(key)
        row["value"] = float(row["value"])
    return pd.DataFrame(rows, columns=_TABLE_COLUMNS)


def price_providers(item: str = "on_demand_usd_per_gpu_hour", hardware: str = "H100 SXM") -> list[str]:
    """The providers ``data/prices.csv`` lists ``item`` of ``hardware`` for, in the table's order."""
    check_in("item", item, tuple(f.name for f in fields(Prices) if f.name not in ("hardware", "provider")))
    table = price_table()
    rows = table[(table["item"] == item) & (table["hardware"] == hardware) & (table["provider"] != "")]
    return list(dict.fromkeys(rows["provider"]))


def priced_hardware(provider: str = DEFAULT_PROVIDER) -> list[str]:
    """The GPUs ``load_prices`` knows at ``provider``: those with its On-Demand row in ``data/prices.csv``."""
    table = price_table()
    rows = table[(table["item"] == "on_demand_usd_per_gpu_hour") & (table["provider"] == provider)]
    return rows["hardware"].tolist()


def _provider_values(table: pd.DataFrame, hardware: str, provider: str) -> dict[str, float]:
    """``provider``'s prices of ``hardware``: its own rows over the book's ("" provider), a GPU's own
    row over one for every GPU."""
    values: dict[str, float] = {}
    for who in ("", provider):
        for gpu in ("", hardware):
            rows = table[(table["provider"] == who) & (table["hardware"] == gpu)]
            values.update(zip(rows["item"], rows["value"], strict=True))
    return values


def load_prices(
    hardware: str = "H100 SXM", provider: str = DEFAULT_PROVIDER, *, serverless_provider: str | None = None
) -> Prices:
    """The ``Prices`` of ``hardware`` (a name from ``data/hardware.csv``) at ``provider``, from
    ``data/prices.csv``.

    The provider's rows with an empty ``hardware`` (discounts, egress, storage...) apply to every GPU; a
    row for the GPU itself wins over them; rows with an empty ``provider`` are this book's assumptions
    (spot discount, replacement time) and apply to every provider. A price the provider does not list
    is 0. ``serverless_provider`` takes the serverless GPU-second price from another provider (a
    stated pair, recorded in ``Prices.provider``). Override with ``dataclasses.replace(prices, field=value)``.

    >>> load_prices("L4").on_demand_usd_per_gpu_hour
    0.8048
    >>> load_prices("H100 SXM", "RunPod").serverless_usd_per_gpu_s
    0.00116
    """
    if not isinstance(hardware, str):
        raise TypeError(f"hardware must be a GPU name (str), got {_show(hardware)} ({_kind(hardware)})")
    if not isinstance(provider, str):
        raise TypeError(
            f"provider must be a provider's name (str), got {_show(provider)} ({_kind(provider)})"
        )
    table = price_table()
    listed = sorted(set(table["provider"]) - {""})
    if provider not in listed:
        raise ValueError(f"provider must be one of {listed} (data/prices.csv), got {provider!r}")
    names = priced_hardware(provider)
    if hardware not in names:
        others = price_providers("on_demand_usd_per_gpu_hour", hardware)
        raise ValueError(
            f"no On-Demand price for hardware {hardware!r} at provider {provider!r}; priced there: "
            f"{', '.join(map(repr, names)) or 'none'}; providers pricing {hardware!r}: "
            f"{', '.join(map(repr, others)) or 'none'}. "
            "Build Prices(hardware, on_demand_usd_per_gpu_hour, ...) yourself for another GPU"
        )
    values = _provider_values(table, hardware, provider)
    label = provider
    if serverless_provider is not None:
        offering = price_providers("serverless_usd_per_gpu_s", hardware)
        if serverless_provider not in offering:
            raise ValueError(
                f"serverless_provider must be one listing a serverless price for {hardware!r}: {offering}, "
                f"got {serverless_provider!r}"
            )
        rows = table[
            (table["item"] == "serverless_usd_per_gpu_s")
            & (table["hardware"] == hardware)
            & (table["provider"] == serverless_provider)
        ]
        values["serverless_usd_per_gpu_s"] = float(rows["value"].iloc[0])
        label = f"{provider} + {serverless_provider} serverless"
    return Prices(hardware=hardware, provider=label, **values)


def _check_serverless(prices: Prices) -> None:
    """Refuse a provider's prices without a serverless GPU price: 0 there means not offered, not free."""
    if prices.provider and prices.serverless_usd_per_gpu_s == 0:
        offering = price_providers("serverless_usd_per_gpu_s", prices.hardware)
        raise ValueError(
            f"prices of {prices.hardware!r} at {prices.provider!r} have no serverless GPU price (none "
            f"listed); load_prices({prices.hardware!r}, provider) of one that lists it ({offering}), or "
            "name a serverless_provider"
        )


# --------------------------------------------------------------------------------------------- usage


def fleet_profile(
    timeline: pd.DataFrame, *, gpus_per_replica: int = 1, horizon_s: float | None = None
) -> pd.DataFrame:
    """The GPUs a run held, interval by interval (``FLEET_PROFILE_COLUMNS``), from its Timeline.

    ``horizon_s`` is where the last interval ends (``SimulationResult.horizon_s``); without it the
    last interval is as long as the others (see ``metrics.utilization``).
    """
    check_columns(
        timeline, {c: TIMELINE_COLUMNS[c] for c in ("t_s", "replicas", "busy_replicas")}, "timeline"
    )
    gpus_per_replica = check_int("gpus_per_replica", gpus_per_replica, minimum=1, maximum=MAX_GPUS)
    widths = interval_widths(timeline, horizon_s)
    return pd.DataFrame(
        {
            "t_s": timeline["t_s"].to_numpy(dtype=np.float64),
            "duration_s": widths,
            "gpus": timeline["replicas"].to_numpy(dtype=np.float64) * gpus_per_replica,
            "busy_gpus": timeline["busy_replicas"].to_numpy(dtype=np.float64) * gpus_per_replica,
        }
    )


def _area_at(
    points_s: np.ndarray, starts_s: np.ndarray, ends_s: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """The integral from 0 to each point of a sum of boxes (``weight`` on ``[start, end)``).

    The integral of a step function is piecewise linear between its steps, so it is computed
    exactly at the steps and interpolated in between.
    """
    if len(starts_s) == 0:
        return np.zeros(len(points_s))
    times = np.concatenate([starts_s, ends_s])
    order = np.argsort(times, kind="stable")
    times = times[order]
    level = np.cumsum(np.concatenate([weights, -weights])[order])
    area = np.concatenate([[0.0], np.cumsum(level[:-1] * np.diff(times))])
    return np.interp(points_s, times, area, left=0.0)


def gpu_profile(
    result: object, gpus_per_replica: int | Mapping[str, int] = 1, *, step_s: float = 60.0
) -> pd.DataFrame:
    """The GPUs a run held and kept busy, on a grid of ``step_s`` (``FLEET_PROFILE_COLUMNS``).

    Unlike ``fleet_profile``, which reads one Timeline, this adds up every pool of the run (a
    cascade's small and large models, with their own ``gpus_per_replica``: a number for all pools or
    a mapping from pool name) from ``SimulationResult.provisioning`` (each replica is billed from the
    moment it is asked for, cold start included, until it is removed) and ``batches`` (a replica is
    busy while some batch runs on it). The grid holds at most ``MAX_GRID_POINTS`` (10,000,000)
    intervals: a ``step_s`` finer than ``horizon_s / 10**7`` is refused.
    """
    for name in ("provisioning", "batches", "horizon_s"):
        if getattr(result, name, None) is None:
            raise TypeError(f"result must be a SimulationResult (with .{name}), got {_kind(result)}")
    step_s = check_positive("step_s", step_s)
    horizon_s = check_positive("result.horizon_s", result.horizon_s)
    if horizon_s / step_s > MAX_GRID_POINTS:
        raise ValueError(
            f"step_s must be >= result.horizon_s / {MAX_GRID_POINTS} = {horizon_s / MAX_GRID_POINTS:.3g} "
            f"(at most {MAX_GRID_POINTS} intervals), got {step_s!r}"
        )
    prov, batches = result.provisioning, result.batches
    pools = sorted(set(prov["pool"]))
    if isinstance(gpus_per_replica, Mapping):
        missing = sorted(set(pools) - set(gpus_per_replica))
        if missing:
            raise ValueError(f"gpus_per_replica lacks pools {missing}; the run's pools are {pools}")
        per_pool = {
            p: check_int(f"gpus_per_replica[{p!r}]", gpus_per_replica[p], minimum=1, maximum=MAX_GPUS)
            for p in pools
        }
    else:
        per_pool = dict.fromkeys(
            pools, check_int("gpus_per_replica", gpus_per_replica, minimum=1, maximum=MAX_GPUS)
        )
    edges = np.append(np.arange(0.0, horizon_s, step_s), horizon_s)
    held = prov["pool"].map(per_pool).to_numpy(dtype=np.float64)
    ends = np.minimum(prov["end_s"].fillna(horizon_s).to_numpy(dtype=np.float64), horizon_s)
    held_area = _area_at(edges, prov["requested_s"].to_numpy(dtype=np.float64), ends, held)
    busy = busy_intervals(batches, horizon_s)
    busy_area = _area_at(
        edges,
        busy["start_s"].to_numpy(dtype=np.float64),
        busy["end_s"].to_numpy(dtype=np.float64),
        busy["pool"].map(per_pool).to_numpy(dtype=np.float64),
    )
    widths = np.diff(edges)
    return pd.DataFrame(
        {
            "t_s": edges[:-1],
            "duration_s": widths,
            "gpus": np.diff(held_area) / widths,
            "busy_gpus": np.diff(busy_area) / widths,
        }
    )


def _profile(fleet: float | pd.DataFrame) -> pd.DataFrame:
    """A checked profile; a plain number is that many GPUs held for a whole month."""
    if isinstance(fleet, pd.DataFrame):
        check_columns(fleet, {c: FLEET_PROFILE_COLUMNS[c] for c in ("duration_s", "gpus")}, "fleet")
        durations = fleet["duration_s"].to_numpy(dtype=np.float64)
        gpus = fleet["gpus"].to_numpy(dtype=np.float64)
        if len(durations) == 0:
            raise ValueError("fleet must hold at least one interval, got an empty profile")
        if not np.isfinite(durations).all() or (durations < 0).any() or durations.sum() <= 0:
            raise ValueError("fleet['duration_s'] must be finite and >= 0, with a positive total")
        if not np.isfinite(gpus).all() or (gpus < 0).any():
            raise ValueError("fleet['gpus'] must be finite and >= 0")
        return fleet
    gpus = check_non_negative("fleet", fleet)
    month_s = HOURS_PER_MONTH * SECONDS_PER_HOUR
    return pd.DataFrame({"t_s": [0.0], "duration_s": [month_s], "gpus": [gpus], "busy_gpus": [math.nan]})


def _to_month(profile: pd.DataFrame) -> float:
    """The factor that stretches the profile's span to a month (the profile repeats)."""
    return HOURS_PER_MONTH * SECONDS_PER_HOUR / float(profile["duration_s"].sum())


def run_cost(
    result: object, prices: Prices, *, gpus_per_replica: int = 1, purchase: str = "on_demand"
) -> pd.Series:
    """What one simulated run cost, from its provisioned replica-seconds.

    ``result`` is a ``SimulationResult`` (anything with ``log``, ``timeline`` and ``horizon_s``).
    Returns ``duration_s``, ``gpu_hours`` (provisioned), ``busy_gpu_hours``, ``cost_usd``,
    ``usd_per_hour`` (over the run), ``completed`` (requests), ``usd_per_1k_requests`` (per 1000
    *completed* requests: refused ones cost capacity too, but buy nothing) and
    ``busy_gpu_s_per_request`` (busy GPU-seconds per completed request, what ``serverless_break_even``
    needs). Reserved hours are priced as if fully used; see ``monthly_bill`` for the real commitment.
    """
    for name in ("log", "timeline", "horizon_s"):
        if not hasattr(result, name):
            raise TypeError(f"result must be a SimulationResult (with .{name}), got {_kind(result)}")
    if not isinstance(prices, Prices):
        raise TypeError(f"prices must be a Prices, got {_kind(prices)}")
    rate = prices.usd_per_gpu_hour(purchase)
    profile = fleet_profile(result.timeline, gpus_per_replica=gpus_per_replica, horizon_s=result.horizon_s)
    check_columns(result.log, {"outcome": REQUEST_LOG_COLUMNS["outcome"]}, "result.log")
    duration_s = float(profile["duration_s"].sum())
    gpu_hours = float(np.dot(profile["gpus"], profile["duration_s"])) / SECONDS_PER_HOUR
    busy_gpu_hours = float(np.dot(profile["busy_gpus"], profile["duration_s"])) / SECONDS_PER_HOUR
    completed = int((result.log["outcome"] == "completed").sum())
    cost_usd = gpu_hours * rate
    return pd.Series(
        {
            "duration_s": duration_s,
            "gpu_hours": gpu_hours,
            "busy_gpu_hours": busy_gpu_hours,
            "cost_usd": cost_usd,
            "usd_per_hour": cost_usd / duration_s * SECONDS_PER_HOUR,
            "completed": float(completed),
            "usd_per_1k_requests": cost_usd / completed * 1000.0 if completed else math.nan,
            "busy_gpu_s_per_request": busy_gpu_hours * SECONDS_PER_HOUR / completed
            if completed
            else math.nan,
        },
        name="run_cost",
    )


# ---------------------------------------------------------------------------------------------- bills


def _bill(rows: list[tuple[str, float, str, float]], causes: Mapping[str, str]) -> pd.DataFrame:
    """The bill of ``rows``; a line (or a total) that overflows a float names ``causes[item]``."""
    frame = pd.DataFrame(rows, columns=["item", "quantity", "unit", "unit_usd"]).set_index("item")
    with np.errstate(over="ignore", invalid="ignore"):
        frame["cost_usd"] = frame["quantity"] * frame["unit_usd"]
        total = float(frame["cost_usd"].sum())
    bad = [item for item in frame.index if not np.isfinite(frame.at[item, "cost_usd"])]
    if bad or not math.isfinite(total):
        items = bad or list(frame.index)
        raise ValueError(
            f"the bill overflows a float at {', '.join(items)}: "
            f"{'; '.join(causes[item] for item in items)}; use inputs of a sensible scale"
        )
    return frame[list(BILL_COLUMNS)]


def _common_lines(
    prices: Prices, requests_per_month: float, egress_bytes_per_request: float, storage_gb: float
) -> list[tuple[str, float, str, float]]:
    with np.errstate(over="ignore"):
        egress_gb = requests_per_month * egress_bytes_per_request / BYTES_PER_GB
    return [
        ("egress", egress_gb, "GB", prices.egress_usd_per_gb),
        ("storage", storage_gb, "GB-month", prices.storage_usd_per_gb_month),
    ]


def _common_causes(requests_per_month: float, egress_bytes_per_request: float, storage_gb: float) -> dict:
    return {
        "egress": f"requests_per_month={requests_per_month!r} x egress_bytes_per_request="
        f"{egress_bytes_per_request!r}",
        "storage": f"storage_gb={storage_gb!r}",
    }


def monthly_bill(
    fleet: float | pd.DataFrame,
    prices: Prices,
    *,
    requests_per_month: float,
    reserved_gpus: int = 0,
    spot_share: float = 0.0,
    egress_bytes_per_request: float = 0.0,
    storage_gb: float = 0.0,
) -> pd.DataFrame:
    """The monthly bill of a provisioned fleet, one line item per row (``BILL_COLUMNS``).

    ``fleet`` is a number of GPUs held all month, or a ``fleet_profile`` (a day, an hour, a run),
    which is taken to repeat for the whole month. ``reserved_gpus`` are committed: paid 730 hours
    whatever the profile needs. The GPU-hours above them are bought on demand, except a share
    ``spot_share`` bought on spot, whose quantity includes the paid replacement time
    (``Prices.spot_overhead``). ``egress_bytes_per_request`` leave for the internet with each
    request; ``storage_gb`` are kept all month.

    Line items, in this order: ``gpu_reserved``, ``gpu_on_demand``, ``gpu_spot``, ``egress``,
    ``storage`` (a line bought in quantity 0 is listed at 0). The total is ``bill["cost_usd"].sum()``.
    ``reserved_gpus`` is at most ``MAX_GPUS`` (10**9); a bill whose lines overflow a float is refused.
    """
    if not isinstance(prices, Prices):
        raise TypeError(f"prices must be a Prices, got {_kind(prices)}")
    profile = _profile(fleet)
    requests_per_month = check_non_negative("requests_per_month", requests_per_month)
    reserved_gpus = check_int("reserved_gpus", reserved_gpus, minimum=0, maximum=MAX_GPUS)
    spot_share = check_probability("spot_share", spot_share)
    egress_bytes_per_request = check_non_negative("egress_bytes_per_request", egress_bytes_per_request)
    storage_gb = check_non_negative("storage_gb", storage_gb)
    gpus = profile["gpus"].to_numpy(dtype=np.float64)
    durations = profile["duration_s"].to_numpy(dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        above_hours = float(np.dot(np.maximum(gpus - reserved_gpus, 0.0), durations)) / SECONDS_PER_HOUR
        above_hours *= _to_month(profile)
    rows = [
        ("gpu_reserved", reserved_gpus * HOURS_PER_MONTH, "GPU-hour", prices.reserved_usd_per_gpu_hour),
        ("gpu_on_demand", (1.0 - spot_share) * above_hours, "GPU-hour", prices.on_demand_usd_per_gpu_hour),
        (
            "gpu_spot",
            spot_share * above_hours * prices.spot_overhead,
            "GPU-hour",
            prices.spot_usd_per_gpu_hour,
        ),
    ]
    fleet_cause = f"fleet={_show(fleet)} held for a month"
    causes = {
        "gpu_reserved": f"reserved_gpus={reserved_gpus!r}",
        "gpu_on_demand": fleet_cause,
        "gpu_spot": fleet_cause,
        **_common_causes(requests_per_month, egress_bytes_per_request, storage_gb),
    }
    lines = rows + _common_lines(prices, requests_per_month, egress_bytes_per_request, storage_gb)
    return _bill(lines, causes)


def serverless_bill(
    busy: float | pd.DataFrame,
    prices: Prices,
    *,
    requests_per_month: float,
    egress_bytes_per_request: float = 0.0,
    storage_gb: float = 0.0,
    billed: str = "busy",
) -> pd.DataFrame:
    """The monthly bill of the same work on a serverless GPU platform (``BILL_COLUMNS``).

    ``busy`` is the billed GPU-seconds per month, or a ``fleet_profile`` stretched to a month: its
    ``busy_gpus`` (``billed="busy"``: only the seconds running a batch) or its ``gpus``
    (``billed="running"``: every second a worker runs, as flex workers are billed from their start until
    they stop). Line items: ``gpu_serverless`` (GPU-seconds at ``serverless_usd_per_gpu_s``),
    ``requests`` (the per-request fee), ``egress``, ``storage``. Prices loaded for a provider that lists
    no serverless GPU price are refused.
    """
    if not isinstance(prices, Prices):
        raise TypeError(f"prices must be a Prices, got {_kind(prices)}")
    _check_serverless(prices)
    column = {"busy": "busy_gpus", "running": "gpus"}[check_in("billed", billed, SERVERLESS_BILLING)]
    if isinstance(busy, pd.DataFrame):
        profile = _profile(busy)
        check_columns(profile, {column: FLEET_PROFILE_COLUMNS[column]}, "busy")
        busy_gpus = profile[column].to_numpy(dtype=np.float64)
        if not np.isfinite(busy_gpus).all() or (busy_gpus < 0).any():
            raise ValueError(f"busy[{column!r}] must be finite and >= 0")
        with np.errstate(over="ignore", invalid="ignore"):
            busy_s = float(np.dot(busy_gpus, profile["duration_s"])) * _to_month(profile)
    else:
        busy_s = check_non_negative("busy", busy)
    requests_per_month = check_non_negative("requests_per_month", requests_per_month)
    egress_bytes_per_request = check_non_negative("egress_bytes_per_request", egress_bytes_per_request)
    storage_gb = check_non_negative("storage_gb", storage_gb)
    rows = [
        ("gpu_serverless", busy_s, "GPU-second", prices.serverless_usd_per_gpu_s),
        ("requests", requests_per_month, "request", prices.serverless_usd_per_request),
    ]
    causes = {
        "gpu_serverless": f"busy={_show(busy)} for a month",
        "requests": f"requests_per_month={requests_per_month!r}",
        **_common_causes(requests_per_month, egress_bytes_per_request, storage_gb),
    }
    lines = rows + _common_lines(prices, requests_per_month, egress_bytes_per_request, storage_gb)
    return _bill(lines, causes)


def unit_costs(
    bill: pd.DataFrame, *, requests_per_month: float, monthly_active_users: float | None = None
) -> pd.Series:
    """The headline figures of a bill: ``monthly_usd``, ``usd_per_1k_requests`` and
    ``usd_per_user_month`` (NaN without ``monthly_active_users``)."""
    check_columns(bill, {"cost_usd": BILL_COLUMNS["cost_usd"]}, "bill")
    requests = check_positive("requests_per_month", requests_per_month)
    users = (
        None if monthly_active_users is None else check_positive("monthly_active_users", monthly_active_users)
    )
    with np.errstate(over="ignore", invalid="ignore"):
        total = float(bill["cost_usd"].sum())
    out = {
        "monthly_usd": total,
        "usd_per_1k_requests": total / requests * 1000.0,
        "usd_per_user_month": total / users if users is not None else math.nan,
    }
    overflowed = [k for k, v in out.items() if math.isinf(v) or (math.isnan(v) and k != "usd_per_user_month")]
    if overflowed:
        raise ValueError(
            f"{', '.join(overflowed)} overflow a float: bill total {total!r}, requests_per_month="
            f"{requests_per_month!r}, monthly_active_users={monthly_active_users!r}"
        )
    return pd.Series(out, name="unit_costs")


# ------------------------------------------------------------------------------------------ break-even


def reserved_break_even(prices: Prices) -> float:
    """The duty cycle (share of the term a GPU is needed) above which reserving it beats On-Demand.

    A reserved GPU costs ``(1 - d) x p`` every hour; On-Demand costs ``p`` for the hours used. They
    tie at a duty cycle of ``1 - d``.
    """
    if not isinstance(prices, Prices):
        raise TypeError(f"prices must be a Prices, got {_kind(prices)}")
    return 1.0 - prices.reserved_discount


def best_reserved_gpus(fleet: pd.DataFrame, prices: Prices, *, spot_share: float = 0.0) -> int:
    """The number of GPUs to reserve under a fleet that varies (a ``fleet_profile``).

    The ``k``-th reserved GPU saves the hours it replaces only while the fleet needs at least ``k``,
    so it pays off when that happens more than the reserved rate over the replaced hour's price of
    the time: ``1 - reserved_discount`` against On-Demand. With ``spot_share`` of the hours above the
    reservation bought on spot (as ``monthly_bill`` buys them), the replaced hour is that blend of
    On-Demand and spot (replacements included), a cheaper hour, so fewer GPUs are worth reserving.
    The answer is the largest such ``k`` (0 if none).
    """
    if not isinstance(fleet, pd.DataFrame):
        raise TypeError(f"fleet must be a fleet_profile DataFrame, got {_kind(fleet)}")
    if not isinstance(prices, Prices):
        raise TypeError(f"prices must be a Prices, got {_kind(prices)}")
    profile = _profile(fleet)
    spot_share = check_probability("spot_share", spot_share)
    gpus = profile["gpus"].to_numpy(dtype=np.float64)
    durations = profile["duration_s"].to_numpy(dtype=np.float64)
    replaced = (1.0 - spot_share) * prices.on_demand_usd_per_gpu_hour
    replaced += spot_share * prices.spot_effective_usd_per_gpu_hour
    needed = prices.reserved_usd_per_gpu_hour / replaced

    def worth_it(k: int) -> bool:
        # The k-th GPU is in use for the part of the time the fleet exceeds k - 1 (a fractional
        # time-average level k - 1 + f counts as the k-th GPU busy f of the interval).
        used = float(np.dot(np.clip(gpus - (k - 1), 0.0, 1.0), durations)) / durations.sum()
        return used > needed

    # The k-th GPU's use falls as k grows, so the GPUs worth reserving are 1 .. best: bisect for it
    # (a time logarithmic in the fleet's size, however large).
    worth, not_worth = 0, math.ceil(float(gpus.max())) + 1
    while not_worth - worth > 1:
        middle = (worth + not_worth) // 2
        worth, not_worth = (middle, not_worth) if worth_it(middle) else (worth, middle)
    return worth


def serverless_break_even(
    prices: Prices, busy_gpu_s_per_request: float, *, purchase: str = "on_demand"
) -> pd.Series:
    """Where a provisioned GPU and a serverless platform cost the same per request.

    A provisioned GPU costs ``P`` per hour whatever it serves; serverless costs
    ``c = busy_gpu_s_per_request x serverless_usd_per_gpu_s + serverless_usd_per_request`` per
    request. They tie at ``P / (3600 c)`` requests per second per GPU; below that traffic serverless
    is cheaper. ``break_even_utilization`` is the provisioned GPU's busy share at that traffic: above
    1 a provisioned GPU never catches up (serverless is cheaper at any load it can carry).

    Returns ``provisioned_usd_per_gpu_hour``, ``serverless_usd_per_request`` (all in),
    ``break_even_requests_per_s_per_gpu`` and ``break_even_utilization`` (``inf`` when serverless is
    free).
    """
    if not isinstance(prices, Prices):
        raise TypeError(f"prices must be a Prices, got {_kind(prices)}")
    _check_serverless(prices)
    busy_s = check_positive("busy_gpu_s_per_request", busy_gpu_s_per_request)
    provisioned = prices.usd_per_gpu_hour(purchase)
    per_request = busy_s * prices.serverless_usd_per_gpu_s + prices.serverless_usd_per_request
    if not math.isfinite(per_request):
        raise ValueError(
            f"busy_gpu_s_per_request={busy_gpu_s_per_request!r} x serverless_usd_per_gpu_s overflows a float"
        )
    rate = provisioned / SECONDS_PER_HOUR / per_request if per_request > 0 else math.inf
    return pd.Series(
        {
            "provisioned_usd_per_gpu_hour": provisioned,
            "serverless_usd_per_request": per_request,
            "break_even_requests_per_s_per_gpu": rate,
            "break_even_utilization": rate * busy_s,
        },
        name="serverless_break_even",
    )


# ------------------------------------------------------------------------------- buy instead of build

_API_CSV = "api_prices.csv"
#: The columns of ``data/api_prices.csv``, in order: a hosted per-token API's list prices, each row
#: with the ``data/models.csv`` model it is ``comparable_to``, its source and the date it was listed.
API_PRICE_COLUMNS: tuple[str, ...] = (
    "provider",
    "model",
    "comparable_to",
    "input_usd_per_million_tokens",
    "output_usd_per_million_tokens",
    "source",
    "source_date",
    "notes",
)
#: What a throughput per GPU counts: generated tokens only, or prompt and generated tokens.
THROUGHPUT_TOKENS: tuple[str, ...] = ("output", "total")
TOKENS_PER_MILLION = 1e6

#: Median annual wage of US software developers (SOC 15-1252), May 2023: BLS Occupational Employment
#: and Wage Statistics, read through an O*NET career page that quotes it ("$132,270 Median Wage (2023)").
SOFTWARE_DEVELOPER_MEDIAN_WAGE_USD_PER_YEAR = 132_270.0
#: Wages and salaries' share of what an employer pays for a worker (the rest is benefits): 68.3% for
#: civilian workers, BLS Employer Costs for Employee Compensation, September 2018
#: (https://www.bls.gov/news.release/archives/ecec_12142018.htm).
WAGE_SHARE_OF_COMPENSATION = 0.683
#: A loaded engineer-month, the default price of the engineering self-hosting needs: the median wage
#: grossed up by the benefits share, over 12 months (about $16,100). Office, equipment and on-call
#: premiums are left out; put your own figure in ``engineer_usd_per_month``.
ENGINEER_USD_PER_MONTH = SOFTWARE_DEVELOPER_MEDIAN_WAGE_USD_PER_YEAR / WAGE_SHARE_OF_COMPENSATION / 12.0

#: The columns of ``buy_vs_build``: one row per monthly traffic.
BUY_VS_BUILD_COLUMNS: dict[str, tuple[str, str]] = {
    "requests_per_month": ("float64", "the traffic"),
    "tokens_per_month": ("float64", "prompt and generated tokens of that traffic"),
    "gpus": ("float64", "GPUs self-hosting holds (whole replicas, at least one); NaN for a given cost"),
    "gpu_usd": ("float64", "the GPUs' month (or the given self-hosted cost)"),
    "engineering_usd": ("float64", "engineers x engineer_usd_per_month"),
    "self_hosted_usd": ("float64", "gpu_usd + engineering_usd"),
    "api_usd": ("float64", "the API's bill for the same traffic"),
    "api_over_self_hosted": ("float64", "api_usd / self_hosted_usd: above 1 self-hosting is cheaper"),
}


def load_api_prices() -> pd.DataFrame:
    """Every row of ``data/api_prices.csv`` (``API_PRICE_COLUMNS``), checked: a source and a date on
    each row, prices finite and > 0, ``comparable_to`` a model of ``data/models.csv``, no repeats.

    >>> table = load_api_prices()
    >>> bool((table["input_usd_per_million_tokens"] > 0).all())
    True
    """
    from .profiles import model_names

    with resources.files("scaleplay").joinpath("data", _API_CSV).open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != API_PRICE_COLUMNS:
            raise ValueError(f"{_API_CSV} must have the columns {API_PRICE_COLUMNS}, got {reader.fieldnames}")
        rows = list(reader)
    models = model_names()
    seen: set[tuple[str, str]] = set()
    for i, row in enumerate(rows):
        where = f"{_API_CSV} row {i + 2} ({row['provider']!r}, {row['model']!r})"
        if not row["provider"] or not row["model"]:
            raise ValueError(f"{where} lacks its provider or model")
        if not row["source"] or not row["source_date"]:
            raise ValueError(f"{where} lacks its source or source_date")
        if row["comparable_to"] not in models:
            raise ValueError(f"{where}: comparable_to {row['comparable_to']!r} is not one of {models}")
        key = (row["provider"], row["model"])
        if key in seen:
            raise ValueError(f"{where} repeats an earlier row")
        seen.add(key)
        for column in ("input_usd_per_million_tokens", "output_usd_per_million_tokens"):
            try:
                value = float(row[column])
            except ValueError:
                raise ValueError(f"{where}: {column} must be a number, got {row[column]!r}") from None
            row[column] = check_positive(f"{where}: {column}", value)
    return pd.DataFrame(rows, columns=list(API_PRICE_COLUMNS))


def _api_usd_per_token(price: object) -> tuple[float, float]:
    """(input, output) USD per token of ``price``: a ``(provider, model)`` pair of
    ``data/api_prices.csv``, or a row (a mapping or Series) with the two price columns."""
    if isinstance(price, tuple):
        if len(price) != 2 or not all(isinstance(p, str) for p in price):
            raise TypeError(f"price must be a (provider, model) pair of strings, got {_kind(price)}")
        table = load_api_prices()
        match = table[(table["provider"] == price[0]) & (table["model"] == price[1])]
        if match.empty:
            known = ", ".join(
                f"({p!r}, {m!r})" for p, m in zip(table["provider"], table["model"], strict=True)
            )
            raise ValueError(f"price {price!r} is not a (provider, model) of {_API_CSV}; known: {known}")
        price = match.iloc[0]
    if not isinstance(price, Mapping | pd.Series):
        raise TypeError(
            f"price must be a (provider, model) pair or a row of load_api_prices(), got {_kind(price)}"
        )
    rates = []
    for column in ("input_usd_per_million_tokens", "output_usd_per_million_tokens"):
        if column not in price:
            raise ValueError(f"price lacks {column!r}; a row of load_api_prices() has it")
        rates.append(check_non_negative(f"price[{column!r}]", price[column]) / TOKENS_PER_MILLION)
    return rates[0], rates[1]


def api_bill(requests_per_month: float, tokens_in: float, tokens_out: float, price: object) -> float:
    """What a hosted per-token API charges a month: ``requests_per_month x (tokens_in x input price +
    tokens_out x output price)``, prices per million tokens. ``price`` is a ``(provider, model)`` pair
    of ``data/api_prices.csv`` or a row of ``load_api_prices()`` (any mapping with its two price
    columns, to try another price).

    >>> api_bill(1e6, 1000, 200, {"input_usd_per_million_tokens": 0.5, "output_usd_per_million_tokens": 2.0})
    900.0
    """
    requests = check_non_negative("requests_per_month", requests_per_month)
    tokens_in = check_non_negative("tokens_in", tokens_in)
    tokens_out = check_non_negative("tokens_out", tokens_out)
    usd_in, usd_out = _api_usd_per_token(price)
    bill = requests * (tokens_in * usd_in + tokens_out * usd_out)
    if not math.isfinite(bill):
        raise ValueError(
            f"requests_per_month={requests_per_month!r} x tokens_in={tokens_in!r}, tokens_out={tokens_out!r} "
            "makes the bill overflow a float"
        )
    return bill


@dataclass(frozen=True)
class _Build:
    """The terms of a buy-or-build comparison: the API costs ``api_usd_per_request`` per request;
    self-hosting costs ``replica_usd_per_month`` per replica, each carrying ``requests_per_replica``
    a month (``inf`` for a given fixed cost), at least one replica, plus ``engineering_usd``."""

    api_usd_per_request: float
    replica_usd_per_month: float
    requests_per_replica: float
    gpus_per_replica: int
    engineering_usd: float
    tokens_per_request: float
    fixed: bool


def _build_terms(
    price: object,
    tokens_in: float,
    tokens_out: float,
    engineers: float,
    engineer_usd_per_month: float,
    prices: Prices | None,
    tokens_per_s_per_gpu: float | None,
    utilization: float | None,
    gpus_per_replica: int,
    purchase: str,
    throughput_tokens: str,
    self_hosted_usd_per_month: float | None,
) -> _Build:
    tokens_in = check_non_negative("tokens_in", tokens_in)
    tokens_out = check_positive("tokens_out", tokens_out)
    usd_in, usd_out = _api_usd_per_token(price)
    engineering = check_non_negative("engineers", engineers) * check_non_negative(
        "engineer_usd_per_month", engineer_usd_per_month
    )
    gpus_per_replica = check_int("gpus_per_replica", gpus_per_replica, minimum=1, maximum=MAX_GPUS)
    per_request = tokens_in * usd_in + tokens_out * usd_out
    month_s = HOURS_PER_MONTH * SECONDS_PER_HOUR
    gpu_terms = {"prices": prices, "tokens_per_s_per_gpu": tokens_per_s_per_gpu, "utilization": utilization}
    if self_hosted_usd_per_month is not None:
        given = [name for name, value in gpu_terms.items() if value is not None]
        if given:
            raise ValueError(
                f"give either self_hosted_usd_per_month or {', '.join(gpu_terms)}, not both: got "
                f"self_hosted_usd_per_month={self_hosted_usd_per_month!r} and {', '.join(given)}"
            )
        fixed = check_non_negative("self_hosted_usd_per_month", self_hosted_usd_per_month)
        terms = (fixed, math.inf, True)
    else:
        missing = [name for name, value in gpu_terms.items() if value is None]
        if missing:
            raise ValueError(
                f"self-hosting's cost needs {', '.join(missing)} (or a self_hosted_usd_per_month instead)"
            )
        if not isinstance(prices, Prices):
            raise TypeError(f"prices must be a Prices, got {_kind(prices)}")
        rate = check_positive("tokens_per_s_per_gpu", tokens_per_s_per_gpu)
        target = check_probability("utilization", utilization, open_low=True)
        counted = tokens_out
        if check_in("throughput_tokens", throughput_tokens, THROUGHPUT_TOKENS) == "total":
            counted += tokens_in
        replica_usd = gpus_per_replica * HOURS_PER_MONTH * prices.usd_per_gpu_hour(purchase)
        terms = (replica_usd, gpus_per_replica * rate * target * month_s / counted, False)
    return _Build(
        per_request, terms[0], terms[1], gpus_per_replica, engineering, tokens_in + tokens_out, terms[2]
    )


def _replicas(requests: np.ndarray, build: _Build) -> np.ndarray:
    """Whole replicas the traffic needs at the target utilization, at least one. Traffic that fills
    ``n`` replicas to within a relative ``1e-12`` needs ``n``: a product's rounding adds none."""
    if build.fixed:
        return np.ones_like(requests)
    return np.maximum(1.0, np.ceil(requests / build.requests_per_replica * (1.0 - 1e-12)))


def buy_vs_build(
    price: object,
    *,
    requests_per_month: float | list[float] | np.ndarray,
    tokens_in: float,
    tokens_out: float,
    engineers: float,
    engineer_usd_per_month: float = ENGINEER_USD_PER_MONTH,
    prices: Prices | None = None,
    tokens_per_s_per_gpu: float | None = None,
    utilization: float | None = None,
    gpus_per_replica: int = 1,
    purchase: str = "on_demand",
    throughput_tokens: str = "output",
    self_hosted_usd_per_month: float | None = None,
) -> pd.DataFrame:
    """Self-hosting against a hosted per-token API, month by month, at each traffic in
    ``requests_per_month`` (``BUY_VS_BUILD_COLUMNS``).

    The API bills ``api_bill`` for every request. Self-hosting pays for whole replicas of
    ``gpus_per_replica`` GPUs (at least one, however quiet the month) at ``prices`` bought as
    ``purchase``, enough that each GPU runs at ``utilization`` of ``tokens_per_s_per_gpu`` — the
    throughput one GPU sustains *at the SLO*, which the simulator measures; it counts generated tokens
    (``throughput_tokens="output"``) or prompt and generated tokens (``"total"``). Or it pays a given
    ``self_hosted_usd_per_month``, whatever the traffic. Either way it also pays ``engineers`` x
    ``engineer_usd_per_month``: the people who run the fleet and build the book's levers (default: a
    loaded US software developer, ``ENGINEER_USD_PER_MONTH``). ``engineers`` has no default: state it,
    0 included. ``buy_vs_build_break_even`` gives the traffic above which self-hosting stays cheaper.
    """
    build = _build_terms(
        price, tokens_in, tokens_out, engineers, engineer_usd_per_month, prices, tokens_per_s_per_gpu,
        utilization, gpus_per_replica, purchase, throughput_tokens, self_hosted_usd_per_month,
    )  # fmt: skip
    requests = np.atleast_1d(np.asarray(check_real_array("requests_per_month", requests_per_month)))
    if requests.ndim != 1 or not np.isfinite(requests).all() or (requests < 0).any():
        raise ValueError("requests_per_month must be a number or a sequence of finite numbers >= 0")
    replicas = _replicas(requests, build)
    with np.errstate(over="ignore", invalid="ignore"):
        gpu_usd = replicas * build.replica_usd_per_month
        self_hosted = gpu_usd + build.engineering_usd
        api = requests * build.api_usd_per_request
        ratio = np.divide(api, self_hosted, out=np.full_like(api, np.inf), where=self_hosted > 0)
        ratio[(api == 0) & (self_hosted == 0)] = 1.0
    if not (np.isfinite(self_hosted).all() and np.isfinite(api).all()):
        raise ValueError("requests_per_month is so large that a monthly cost overflows a float")
    return pd.DataFrame(
        {
            "requests_per_month": requests,
            "tokens_per_month": requests * build.tokens_per_request,
            "gpus": np.full_like(requests, np.nan) if build.fixed else replicas * build.gpus_per_replica,
            "gpu_usd": gpu_usd,
            "engineering_usd": np.full_like(requests, build.engineering_usd),
            "self_hosted_usd": self_hosted,
            "api_usd": api,
            "api_over_self_hosted": ratio,
        }
    )


def buy_vs_build_break_even(
    price: object,
    *,
    tokens_in: float,
    tokens_out: float,
    engineers: float,
    engineer_usd_per_month: float = ENGINEER_USD_PER_MONTH,
    prices: Prices | None = None,
    tokens_per_s_per_gpu: float | None = None,
    utilization: float | None = None,
    gpus_per_replica: int = 1,
    purchase: str = "on_demand",
    throughput_tokens: str = "output",
    self_hosted_usd_per_month: float | None = None,
) -> pd.Series:
    """The traffic above which self-hosting never costs more than the API (arguments as ``buy_vs_build``).

    With ``a`` the API's price of a request, ``c`` a replica's month, ``k`` the requests a replica
    carries a month and ``E`` the engineering, self-hosting costs ``S_n = c n + E`` for traffic in
    ``((n - 1) k, n k]`` (``n >= 1``), the API ``a R``. On step ``n`` the API is cheaper below
    ``S_n / a``; that stretch is empty once ``n (a k - c) >= a k + E``. So if ``a k > c`` the last
    step where the API still wins somewhere is ``n* = ceil((a k + E) / (a k - c)) - 1`` and the break-even
    is ``R* = min(n* k, S_n* / a)``: just below it the API is cheaper, above it self-hosting never
    costs more. Because replicas come whole, self-hosting may also win on stretches below
    ``R*`` (just after a replica is filled); those do not last. If ``a k <= c`` a replica's month
    costs at least what its full traffic would cost on the API: self-hosting never wins (``inf``).

    Returns ``api_usd_per_request``, ``replica_usd_per_month``, ``requests_per_month_per_replica``,
    ``engineering_usd_per_month``, ``break_even_requests_per_month``, ``break_even_tokens_per_month``
    (prompt and generated), ``break_even_gpus`` and ``self_hosted_usd_per_million_tokens_at_scale``
    (``c / k`` per token: what a full fleet costs, engineering spread to nothing).
    """
    build = _build_terms(
        price, tokens_in, tokens_out, engineers, engineer_usd_per_month, prices, tokens_per_s_per_gpu,
        utilization, gpus_per_replica, purchase, throughput_tokens, self_hosted_usd_per_month,
    )  # fmt: skip
    a, c, k, e = (
        build.api_usd_per_request,
        build.replica_usd_per_month,
        build.requests_per_replica,
        build.engineering_usd,
    )
    if a == 0:
        even, replicas = math.inf, math.nan
    elif build.fixed:
        even, replicas = (c + e) / a, 1.0
    elif a * k <= c:
        even, replicas = math.inf, math.nan
    else:
        last = max(1, math.ceil((a * k + e) / (a * k - c)) - 1)
        even = min(last * k, (c * last + e) / a)
        replicas = float(_replicas(np.array([even]), build)[0])
    return pd.Series(
        {
            "api_usd_per_request": a,
            "replica_usd_per_month": c,
            "requests_per_month_per_replica": k,
            "engineering_usd_per_month": e,
            "break_even_requests_per_month": even,
            "break_even_tokens_per_month": even * build.tokens_per_request,
            "break_even_gpus": math.nan if build.fixed else replicas * build.gpus_per_replica,
            "self_hosted_usd_per_million_tokens_at_scale": math.nan
            if build.fixed
            else c / k / build.tokens_per_request * TOKENS_PER_MILLION,
        },
        name="buy_vs_build_break_even",
    )
