"""The book's reference product, and its phase ladder: one assistant that every chapter starts from.

``REFERENCE`` is a chat assistant on Llama-3.1-70B served on H100s, four to a replica (tensor
parallel: 141 GB of BF16 weights need at least two 80 GB GPUs, and four leave room for the KV cache),
with the step-time profile fitted to measured steps (``steptime.load_step_profile``). Each daily
active user sends ``requests_per_user_per_day`` requests, over a day shaped by ``diurnal`` (the
busiest hour ``peak_to_mean`` times the mean); prompts and answers follow the Azure 2023 conversation
trace's shape (``workload.DEFAULT_TOKENS_IN`` and ``DEFAULT_TOKENS_OUT``). Its SLO is on tokens: at
the peak, ``slo_target`` of the requests get their first token within ``ttft_slo_s`` and every later
token within ``tpot_slo_s`` (``experiments.slo_attainment``, the book's gate metric). GPUs are priced
On-Demand from ``data/prices.csv``.

**The phase ladder** (``phase_ladder``). Each growth phase has a design and the largest fleet that
design runs as (``Phase.max_replicas``: one replica; one pool of a few nodes; a region's pool), and
its **gate** is the user count at which that fleet stops meeting the SLO: the next design is needed
there. A phase's card is its design at the top of its range, or at its gate if the gate comes first:
the fleet (the fewest replicas meeting the SLO, ``experiments.fewest_replicas``), its batch settings,
its p99 TTFT and TPOT, and its cost per 1,000 requests and per user and month (the fleet sized for the
peak, held all month). The last phase grows by **cells**: copies of the previous phase's largest
fleet, each serving up to that phase's gate, so it has no gate in the book's range. ``phase_card``
gives the card of any user count: the phase whose range holds it, sized for exactly that peak.

**How long a peak is simulated** (``sizing_arrivals``): ``window_s`` seconds, stretched where the peak
is slow so that the window holds at least ``MIN_PEAK_REQUESTS`` requests. A 99% target leaves 1% of
the window's requests to miss; in five minutes of a one-replica product's peak that is five requests,
and whether the fleet "meets" the SLO would turn on a handful of long prompts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd
from tqdm import tqdm

from ._validate import check_int, check_positive, check_probability
from .capacity import HOURS_PER_MONTH, EnvelopeInputs, mean_tpot_s, replica_envelope
from .cost import load_prices
from .experiments import fewest_replicas, slo_attainment, usd_per_1k_requests
from .metrics import token_latency_percentiles
from .simulator import ContinuousBatcherConfig, PlatformConfig, PoolConfig, simulate
from .steptime import StepTimeModel, load_step_profile
from .workload import (
    DEFAULT_TOKENS_IN,
    DEFAULT_TOKENS_OUT,
    FLAT,
    DiurnalCosine,
    TokenDistribution,
    TrafficClass,
    Workload,
    generate_arrivals,
)

__all__ = [
    "Phase",
    "Product",
    "REFERENCE",
    "LADDER_COLUMNS",
    "MIN_PEAK_REQUESTS",
    "gate_users",
    "card_table",
    "ladder_card",
    "phase_card",
    "phase_cards",
    "phase_ladder",
]

SECONDS_PER_DAY = 86_400.0
#: The fewest requests a sized peak holds (``sizing_arrivals``): 1% of them is 60 requests.
MIN_PEAK_REQUESTS = 6_000
#: Weight and compute formats a design may use: (weights dtype, compute precision).
FORMATS: dict[str, tuple[str, str]] = {"BF16": ("bf16", "bf16"), "FP8": ("fp8", "fp8")}


@dataclass(frozen=True)
class Phase:
    """A growth phase: up to ``max_users`` daily active users, served in ``format`` by one pool of at
    most ``max_replicas`` replicas (``None``: cells of the previous phase's fleet), balanced by
    ``policy``; ``design`` says it in words."""

    name: str
    max_users: float
    design: str
    format: str = "BF16"
    max_replicas: int | None = 1
    policy: str = "shared_queue"

    def __post_init__(self) -> None:
        check_positive("max_users", self.max_users)
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {sorted(FORMATS)}, got {self.format!r}")
        if self.max_replicas is not None:
            check_int("max_replicas", self.max_replicas, minimum=1, maximum=100_000)


@dataclass(frozen=True)
class Product:
    """A product to size (module docstring): traffic, token lengths, model and hardware, SLO, phases."""

    name: str = "the assistant"
    requests_per_user_per_day: float = 10.0
    diurnal: DiurnalCosine = field(default_factory=DiurnalCosine)
    tokens_in: TokenDistribution = DEFAULT_TOKENS_IN
    tokens_out: TokenDistribution = DEFAULT_TOKENS_OUT
    model: str = "Llama-3.1-70B"
    profile: str = "h100-80gb"
    hardware: str = "H100 SXM"
    tensor_parallel: int = 4
    gpus_per_node: int = 8
    batcher: ContinuousBatcherConfig = field(default_factory=ContinuousBatcherConfig)
    ttft_slo_s: float = 2.0
    tpot_slo_s: float = 0.1
    slo_target: float = 0.99
    phases: tuple[Phase, ...] = ()

    def __post_init__(self) -> None:
        check_positive("requests_per_user_per_day", self.requests_per_user_per_day)
        check_int("gpus_per_node", self.gpus_per_node, minimum=1, maximum=1024)
        check_positive("ttft_slo_s", self.ttft_slo_s)
        check_positive("tpot_slo_s", self.tpot_slo_s)
        check_probability("slo_target", self.slo_target, open_low=True)
        tops = [phase.max_users for phase in self.phases]
        if tops != sorted(tops):
            raise ValueError(f"phases must grow: their max_users must increase, got {tops}")

    def peak_rate_per_s(self, users: float) -> float:
        """Requests per second in the busiest hour of ``users`` daily active users."""
        return users * self.requests_per_user_per_day / SECONDS_PER_DAY * self.diurnal.peak

    def workload(self, users: float, **changes: object) -> Workload:
        """The product's traffic over its day at ``users`` daily active users, one chat class; ``changes``
        replace ``Workload`` fields (``bursts``, ``classes``, ``interarrival_cv``, ...). Arrivals drawn
        from it over ``[peak_start_s(w), peak_start_s(w) + w)`` straddle the busiest hour."""
        classes = (TrafficClass("chat", 1.0, tokens_in=self.tokens_in, tokens_out=self.tokens_out),)
        fields = {"classes": classes, "diurnal": self.diurnal, **changes}
        return Workload(check_positive("users", users), self.requests_per_user_per_day, **fields)

    def peak_start_s(self, window_s: float) -> float:
        """The clock time at which a ``window_s``-second window centred on the busiest hour starts."""
        return self.diurnal.peak_hour * 3600.0 - check_positive("window_s", window_s) / 2

    def peak_arrivals(self, users: float, window_s: float, seed: int) -> pd.DataFrame:
        """``window_s`` seconds of the busiest hour's arrivals (a steady rate: the hour's peak level)."""
        rate = self.peak_rate_per_s(check_positive("users", users))
        classes = (TrafficClass("chat", 1.0, tokens_in=self.tokens_in, tokens_out=self.tokens_out),)
        daily = rate * SECONDS_PER_DAY  # a flat day at the peak's rate: one request a "user"
        workload = Workload(daily, requests_per_user_per_day=1.0, classes=classes, diurnal=FLAT)
        return generate_arrivals(workload, window_s, seed=seed)

    def sizing_window_s(self, users: float, window_s: float) -> float:
        """Seconds of the peak that sizing simulates: ``window_s``, or longer where the peak is slow, so
        that it holds ``MIN_PEAK_REQUESTS`` requests on average."""
        rate = self.peak_rate_per_s(check_positive("users", users))
        return max(check_positive("window_s", window_s), MIN_PEAK_REQUESTS / rate)

    def sizing_arrivals(self, users: float, window_s: float, seed: int) -> pd.DataFrame:
        """The peak arrivals every card and gate is sized on (``sizing_window_s`` seconds of them)."""
        return self.peak_arrivals(users, self.sizing_window_s(users, window_s), seed)

    def step(self, format: str = "BF16") -> StepTimeModel:
        """The model's step time on one replica in ``format`` (``FORMATS``)."""
        dtype, precision = FORMATS[format]
        return load_step_profile(
            self.profile, self.model, self.tensor_parallel, dtype=dtype, compute_precision=precision
        )

    def platform(self, phase: Phase, replicas: int = 1) -> PlatformConfig:
        """``phase``'s design as a platform of ``replicas`` replicas."""
        pool = PoolConfig(replicas, self.step(phase.format), self.batcher, policy=phase.policy)
        return PlatformConfig(pool)

    def _replica(self, format: str, changes: dict) -> dict:
        step = self.step(format)
        args = {
            "kv_tokens": self.batcher.kv_blocks(step) * self.batcher.block_tokens,
            "tokens_in": self.tokens_in.mean_tokens,
            "tokens_out": self.tokens_out.mean_tokens,
            "max_num_seqs": self.batcher.max_num_seqs,
            "max_batched_tokens": self.batcher.max_batched_tokens,
        }
        unknown = sorted(set(changes) - set(args) - {"tpot_slo_s"})
        if unknown:
            raise TypeError(f"changes may set {sorted([*args, 'tpot_slo_s'])}, got {unknown}")
        return {"step": step, **args, **changes}

    def envelope(self, format: str = "BF16", **changes: float) -> pd.Series:
        """The back of the envelope of one replica in ``format`` serving the product's mean request at its
        TPOT SLO (``capacity.replica_envelope``; the KV cache as the batcher sizes it). ``changes`` replace
        its inputs: ``tokens_in``, ``tokens_out``, ``tpot_slo_s``, ``max_num_seqs``, ``max_batched_tokens``,
        ``kv_tokens``."""
        return replica_envelope(**{"tpot_slo_s": self.tpot_slo_s, **self._replica(format, changes)})

    def mean_tpot_s(self, rate_per_s: float, format: str = "BF16", **changes: float) -> float:
        """The envelope's mean time per output token of one replica in ``format`` at ``rate_per_s``
        requests a second (``capacity.mean_tpot_s``; ``changes`` as for ``envelope``)."""
        args = self._replica(format, changes)
        return mean_tpot_s(args.pop("step"), rate_per_s, **args)

    def envelope_inputs(
        self, format: str = "FP8", *, target_utilization: float = 0.7, wait_probability_target: float = 0.05
    ) -> EnvelopeInputs:
        """The coarse chain of ``capacity.envelope`` for this product: a replica's slots are the sequences
        it runs when its mean TPOT is at the SLO (``envelope(format)["slo_batch"]``), and a request holds
        its slot for its prefill and its mean answer at that TPOT."""
        replica = self.envelope(format)
        if replica["slo_batch"] < 1:
            raise ValueError(f"no batch of {self.model} in {format} meets tpot_slo_s={self.tpot_slo_s}")
        return EnvelopeInputs(
            requests_per_user_per_day=self.requests_per_user_per_day,
            peak_to_mean=self.diurnal.peak,
            service_s=float(replica["lone_ttft_s"] + self.tokens_out.mean_tokens * self.tpot_slo_s),
            slots_per_replica=int(replica["slo_batch"]),
            target_utilization=target_utilization,
            gpus_per_replica=self.tensor_parallel,
            gpu_hour_usd=self.usd_per_gpu_hour,
            wait_probability_target=wait_probability_target,
        )

    @property
    def usd_per_gpu_hour(self) -> float:
        return load_prices(self.hardware).on_demand_usd_per_gpu_hour


REFERENCE = Product(
    phases=(
        Phase("Phase 1: 0–10k users", 10_000, "one replica, BF16", "BF16", 1),
        Phase("Phase 2: 10k–100k users", 100_000, "one pool of up to 4 nodes, FP8", "FP8", 8),
        Phase("Phase 3: 100k–500k users", 500_000, "a region's pool of up to 64 nodes, FP8", "FP8", 128),
        Phase("Phase 4: 500k–10M users", 10_000_000, "cells of phase 3's pool across regions", "FP8", None),
    )
)

#: One row per phase of ``phase_ladder``.
LADDER_COLUMNS: dict[str, str] = {
    "phase": "the phase's name",
    "design": "its design in words",
    "users": "daily active users of the card: the phase's top, or its gate if that comes first",
    "peak_rate_per_s": "requests per second in the busiest hour at those users",
    "replicas": "replicas serving them (all cells for the last phase)",
    "gpus": "GPUs: replicas x tensor parallel",
    "nodes": "servers of gpus_per_node GPUs holding them (each replica within one server)",
    "max_num_seqs": "the batcher's most running sequences per replica",
    "max_batched_tokens": "the batcher's token budget per iteration",
    "p99_ttft_s": "99th percentile time to first token at the peak",
    "p99_tpot_s": "99th percentile time per output token at the peak",
    "attainment": "share of the peak's requests served within both SLOs",
    "usd_per_1k_requests": "GPU cost of 1,000 requests at the peak",
    "usd_per_user_month": "the peak's fleet held for a month, per daily active user",
    "gate_users": "users at which the phase's largest fleet stops meeting the SLO (NaN: cells, none)",
}


def _attains(product: Product, phase: Phase, users: float, replicas: int, window_s: float, seed: int) -> bool:
    arrivals = product.sizing_arrivals(users, window_s, seed)
    log = simulate(arrivals, product.platform(phase, replicas), seed=seed).log
    return slo_attainment(log, product.ttft_slo_s, product.tpot_slo_s) >= product.slo_target


def gate_users(product: Product, phase: Phase, *, window_s: float, seed: int, rel_tol: float = 0.02) -> float:
    """The users at which ``phase``'s largest fleet stops meeting the SLO, to within ``rel_tol``
    (bisection on a log scale between a load it meets and one it does not)."""
    if phase.max_replicas is None:
        return math.nan
    low, high = 100.0, 100.0
    while _attains(product, phase, high, phase.max_replicas, window_s, seed):
        low, high = high, 2 * high
    if low == high:
        raise ValueError(f"{phase.name}'s largest fleet misses the SLO even at {low:g} users")
    while high / low > 1 + rel_tol:
        middle = math.sqrt(low * high)
        meets = _attains(product, phase, middle, phase.max_replicas, window_s, seed)
        low, high = (middle, high) if meets else (low, middle)
    return low


def _card(product: Product, phase: Phase, users: float, window_s: float, seed: int, cells: int = 1) -> dict:
    arrivals = product.sizing_arrivals(users / cells, window_s, seed)
    sizing = fewest_replicas(
        arrivals, product.platform(phase), ttft_slo_s=product.ttft_slo_s, tpot_slo_s=product.tpot_slo_s,
        target=product.slo_target, seed=seed, max_replicas=phase.max_replicas or 100_000,
    )  # fmt: skip
    log = sizing.result.log
    tails = token_latency_percentiles(log[log["outcome"] == "completed"], quantiles=(0.99,))["p99_s"]
    gpus = sizing.gpus * cells
    rate = product.peak_rate_per_s(users)
    return {
        "phase": phase.name,
        "design": phase.design,
        "users": users,
        "peak_rate_per_s": rate,
        "replicas": sizing.replicas * cells,
        "gpus": gpus,
        "nodes": _nodes(product, sizing.replicas) * cells,
        "max_num_seqs": product.batcher.max_num_seqs,
        "max_batched_tokens": product.batcher.max_batched_tokens,
        "p99_ttft_s": tails["ttft"],
        "p99_tpot_s": tails["tpot"],
        "attainment": sizing.attainment,
        "usd_per_1k_requests": usd_per_1k_requests(gpus, product.usd_per_gpu_hour, rate),
        "usd_per_user_month": gpus * product.usd_per_gpu_hour * HOURS_PER_MONTH / users,
    }


def _nodes(product: Product, replicas: int) -> int:
    """Servers for ``replicas`` replicas, none split across two servers."""
    per_node = max(product.gpus_per_node // product.tensor_parallel, 1)
    return math.ceil(replicas / per_node) * math.ceil(product.tensor_parallel / product.gpus_per_node)


def _gates(product: Product, upto: int, window_s: float, seed: int) -> list[float]:
    return [gate_users(product, phase, window_s=window_s, seed=seed) for phase in product.phases[: upto + 1]]


def _phase_card(
    product: Product, k: int, users: float, gates: list[float], window_s: float, seed: int
) -> dict:
    phase = product.phases[k]
    if phase.max_replicas is not None:
        return {**_card(product, phase, users, window_s, seed), "gate_users": gates[k]}
    if k == 0 or math.isnan(gates[k - 1]):
        raise ValueError(f"{phase.name} grows by cells of the previous phase, which has no gate")
    cells = math.ceil(users / gates[k - 1])  # cells of the previous phase's largest fleet
    row = _card(product, product.phases[k - 1], users, window_s, seed, cells)
    return {**row, "phase": phase.name, "design": phase.design, "gate_users": math.nan}


def phase_card(product: Product, users: float, *, window_s: float = 300.0, seed: int = 0) -> pd.Series:
    """The card of ``users`` daily active users: the phase whose range holds them and whose gate they
    have not passed (the last phase beyond), its design sized for their peak, and the phase's gate
    (``LADDER_COLUMNS``)."""
    return phase_cards(product, [check_positive("users", users)], window_s=window_s, seed=seed).iloc[0]


def phase_cards(
    product: Product, users: Sequence[float], *, window_s: float = 300.0, seed: int = 0
) -> pd.DataFrame:
    """``phase_card`` of each count in ``users``, the gates bisected once for all (``LADDER_COLUMNS``).

    A count belongs to the first phase whose range holds it and whose gate it has not passed: users
    beyond a phase's gate but within its range are the next phase's (its design no longer serves them).
    """
    if isinstance(users, (str, bytes)) or not isinstance(users, Sequence) or not users:
        raise TypeError(f"users must be a non-empty sequence of user counts, got {users!r}")
    counts = [check_positive(f"users[{i}]", u) for i, u in enumerate(users)]
    if not product.phases:
        raise ValueError("product.phases is empty: a card needs a phase")
    window_s = check_positive("window_s", window_s)
    tops = [phase.max_users for phase in product.phases]
    last = len(tops) - 1
    gates: list[float] = []

    def gate(j: int) -> float:
        while len(gates) <= j:
            gates.append(gate_users(product, product.phases[len(gates)], window_s=window_s, seed=seed))
        return gates[j]

    rows = []
    for u in counts:
        k = next((j for j, top in enumerate(tops) if u <= top), last)
        while k < last and u > gate(k):  # NaN (cells) never compares greater
            k += 1
        gate(k)
        rows.append(_phase_card(product, k, u, gates, window_s, seed))
    return pd.DataFrame(rows)[list(LADDER_COLUMNS)]


def ladder_card(product: Product, phase: int, *, window_s: float = 300.0, seed: int = 0) -> pd.Series:
    """Row ``phase`` (an index) of ``phase_ladder``, computed alone: the phase's card at the top of
    its range or at its gate, whichever comes first."""
    phase = check_int("phase", phase, minimum=0, maximum=max(len(product.phases) - 1, 0))
    if not product.phases:
        raise ValueError("product.phases is empty: a card needs a phase")
    window_s = check_positive("window_s", window_s)
    gates = _gates(product, phase, window_s, seed)
    top = product.phases[phase].max_users
    users = top if math.isnan(gates[phase]) else min(top, gates[phase])
    return pd.Series(_phase_card(product, phase, users, gates, window_s, seed))[list(LADDER_COLUMNS)]


def card_table(card: pd.Series, product: Product = REFERENCE) -> pd.DataFrame:
    """A card (a row of ``phase_ladder``) as a reader reads it: one line per figure, in words."""
    gate, tp = card["gate_users"], product.tensor_parallel
    seqs, budget = card["max_num_seqs"], card["max_batched_tokens"]
    tpot_ms = product.tpot_slo_s * 1e3
    lines = {
        "design": card["design"],
        "users (daily active)": f"{card['users']:,.0f}",
        "peak load": f"{card['peak_rate_per_s']:,.1f} requests/s",
        "GPUs": f"{card['gpus']:,.0f} {product.hardware} ({card['replicas']:,.0f} replicas × {tp})",
        "batch settings": f"up to {seqs} sequences and {budget:,} tokens an iteration",
        "p99 time to first token": f"{card['p99_ttft_s']:.2f} s (SLO {product.ttft_slo_s:g} s)",
        "p99 time per output token": f"{card['p99_tpot_s'] * 1e3:.0f} ms (SLO {tpot_ms:.0f} ms)",
        "served within the SLO at the peak": f"{card['attainment']:.1%}",
        "GPU cost": f"{card['usd_per_1k_requests']:.2f} USD per 1k requests, "
        f"{card['usd_per_user_month']:.2f} USD per user-month",
        "gate": "none: grows by cells" if math.isnan(gate) else f"{gate:,.0f} users",
    }
    return pd.Series(lines, name=card["phase"]).to_frame()


def phase_ladder(
    product: Product = REFERENCE, *, window_s: float = 300.0, seed: int = 0, progress: bool = False
) -> pd.DataFrame:
    """Every phase's card and gate (``LADDER_COLUMNS``), sized on ``window_s`` seconds of each peak."""
    if not product.phases:
        raise ValueError("product.phases is empty: a ladder needs at least one phase")
    window_s = check_positive("window_s", window_s)
    gates = _gates(product, len(product.phases) - 1, window_s, seed)
    rows = []
    for k, phase in enumerate(tqdm(product.phases, desc="phases", disable=not progress)):
        users = phase.max_users if math.isnan(gates[k]) else min(phase.max_users, gates[k])
        rows.append(_phase_card(product, k, users, gates, window_s, seed))
    return pd.DataFrame(rows)[list(LADDER_COLUMNS)]
