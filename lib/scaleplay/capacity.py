"""From users to GPUs: the back-of-the-envelope chain every scaling plan starts with.

daily active users x requests per user per day -> requests per day -> mean requests per second ->
peak requests per second (x a peak-to-mean factor) -> requests in flight at the peak (Little's law,
L = lambda W) -> replicas, each holding ``slots_per_replica`` requests at once (its batch), sized so
the peak keeps them at ``target_utilization`` -> Erlang C's chance of waiting and mean wait for that
fleet -> the monthly GPU bill when the fleet is provisioned for the peak all month. Beside the
fixed-utilization rule it sizes the fleet by Erlang C for a target chance of waiting, which is where
square-root staffing shows: the bigger the fleet, the hotter it can run.

``replica_envelope`` is the same first step for a continuous-batching replica of an LLM, on tokens:
its KV cache, the batch it can hold, what its prompts cost the iterations they ride in, and the load
at which the mean time per output token reaches an SLO (``mean_tpot_s``).

Each replica is modelled as ``slots_per_replica`` servers of an M/M/c queue whose service time is the
request's time on the model, so ``slots_per_replica / service_s`` is a replica's throughput. That is
the coarse model of this first step; the simulator refines it (batches, bursts, classes).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize

from . import queueing
from ._validate import (
    _kind,
    _show,
    check_int,
    check_non_negative,
    check_positive,
    check_probability,
    check_range,
)
from .queueing import MAX_SERVERS
from .steptime import StepTimeModel

__all__ = [
    "EnvelopeInputs",
    "envelope",
    "fleet_at_load",
    "envelope_table",
    "staffing_table",
    "REPLICA_ENVELOPE_FIELDS",
    "prefill_s_per_request",
    "mean_tpot_s",
    "replica_envelope",
    "SECONDS_PER_DAY",
    "HOURS_PER_MONTH",
]

SECONDS_PER_DAY = 86_400.0
#: 365 days x 24 h / 12 months: the hours a cloud bill counts in an average month.
HOURS_PER_MONTH = 730.0


def _numbers(name: str, values: object) -> list[object]:
    """The entries of an iterable of numbers (each checked by the caller), or a TypeError naming it."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise TypeError(
            f"{name} must be an iterable of numbers, got {_show(values)} ({_kind(values)})"
        )
    return list(values)


@dataclass(frozen=True)
class EnvelopeInputs:
    """The assumptions of the envelope, one per link of the chain.

    ``slots_per_replica`` and ``gpus_per_replica`` are at most ``queueing.MAX_SERVERS`` (10**9).
    """

    requests_per_user_per_day: float = 10.0
    peak_to_mean: float = 3.0
    service_s: float = 2.0
    slots_per_replica: int = 16
    target_utilization: float = 0.7
    gpus_per_replica: int = 1
    gpu_hour_usd: float = 3.0
    wait_probability_target: float = 0.05

    def __post_init__(self) -> None:
        check_positive("requests_per_user_per_day", self.requests_per_user_per_day)
        check_positive("service_s", self.service_s)
        check_positive("gpu_hour_usd", self.gpu_hour_usd)
        if check_positive("peak_to_mean", self.peak_to_mean) < 1:
            raise ValueError(
                f"peak_to_mean must be >= 1 (the peak is at least the mean), got {self.peak_to_mean!r}"
            )
        check_int("slots_per_replica", self.slots_per_replica, minimum=1, maximum=MAX_SERVERS)
        check_int("gpus_per_replica", self.gpus_per_replica, minimum=1, maximum=MAX_SERVERS)
        if not math.isfinite(self.slots_per_replica / self.service_s):
            raise ValueError(
                f"service_s={self.service_s!r} is too short: a replica's throughput, slots_per_replica / "
                "service_s, overflows a float"
            )
        check_probability("target_utilization", self.target_utilization, open_low=True, open_high=True)
        check_probability(
            "wait_probability_target", self.wait_probability_target, open_low=True, open_high=True
        )

    @property
    def replica_throughput_per_s(self) -> float:
        """Requests per second one replica completes when all its slots are busy."""
        return self.slots_per_replica / self.service_s


def fleet_at_load(
    replicas: int, peak_rps: float, inputs: EnvelopeInputs = EnvelopeInputs()
) -> dict[str, float]:
    """What a fleet of ``replicas`` does at ``peak_rps``: utilization and Erlang C waits.

    A fleet loaded past its capacity has no steady state: ``stable`` is 0 and the waits are infinite
    (the queue grows for as long as the peak lasts). The fleet holds at most ``queueing.MAX_SERVERS``
    (10**9) slots, ``replicas x slots_per_replica``.
    """
    if not isinstance(inputs, EnvelopeInputs):
        raise TypeError(f"inputs must be EnvelopeInputs, got {_kind(inputs)}")
    replicas = check_int("replicas", replicas, minimum=1, maximum=MAX_SERVERS // inputs.slots_per_replica)
    peak_rps = check_non_negative("peak_rps", peak_rps)
    servers = replicas * inputs.slots_per_replica
    in_flight = peak_rps * inputs.service_s
    if not math.isfinite(in_flight):
        raise ValueError(
            f"peak_rps={_show(peak_rps)} x service_s={inputs.service_s!r} (requests in flight) "
            "overflows a float"
        )
    out = {"utilization_at_peak": in_flight / servers, "stable": float(in_flight < servers)}
    if in_flight >= servers:
        return out | {"p_wait": 1.0, "mean_wait_s": math.inf, "p99_wait_s": math.inf}
    service_rate = 1.0 / inputs.service_s
    return out | {
        "p_wait": queueing.erlang_c(servers, in_flight),
        "mean_wait_s": queueing.mmc_mean_wait_s(peak_rps, service_rate, servers),
        "p99_wait_s": queueing.mmc_wait_quantile_s(peak_rps, service_rate, servers, 0.99),
    }


def envelope(daily_active_users: float, inputs: EnvelopeInputs = EnvelopeInputs()) -> dict[str, float]:
    """Every link of the chain for one user count, as a flat dict with units in the keys."""
    users = check_positive("daily_active_users", daily_active_users)
    if not isinstance(inputs, EnvelopeInputs):
        raise TypeError(f"inputs must be EnvelopeInputs, got {_kind(inputs)}")
    requests_per_day = users * inputs.requests_per_user_per_day
    mean_rps = requests_per_day / SECONDS_PER_DAY
    peak_rps = mean_rps * inputs.peak_to_mean
    in_flight = peak_rps * inputs.service_s
    slots_needed = in_flight / inputs.target_utilization
    if not slots_needed <= MAX_SERVERS / 2:  # room for the wait-target sizing too; False for inf
        raise ValueError(
            f"daily_active_users={_show(daily_active_users)} needs {slots_needed:.3g} slots at the peak; "
            f"the envelope sizes at most {MAX_SERVERS // 2} (queueing.MAX_SERVERS / 2)"
        )
    replicas = max(1, math.ceil(in_flight / (inputs.slots_per_replica * inputs.target_utilization)))
    gpus = replicas * inputs.gpus_per_replica
    # Erlang C sizing instead of a fixed utilization: fewest replicas meeting the P(wait) target.
    servers_at_target = queueing.min_servers_for_wait_probability(in_flight, inputs.wait_probability_target)
    replicas_at_target = max(1, math.ceil(servers_at_target / inputs.slots_per_replica))
    monthly_usd = gpus * inputs.gpu_hour_usd * HOURS_PER_MONTH
    requests_per_month = requests_per_day * HOURS_PER_MONTH / 24.0
    fleet = fleet_at_load(replicas, peak_rps, inputs)
    row = {
        "users": users,
        "requests_per_day": requests_per_day,
        "mean_rps": mean_rps,
        "peak_rps": peak_rps,
        "in_flight_at_peak": in_flight,
        "replicas": replicas,
        "gpus": gpus,
        "utilization_at_peak": fleet["utilization_at_peak"],
        "p_wait": fleet["p_wait"],
        "mean_wait_s": fleet["mean_wait_s"],
        "p99_wait_s": fleet["p99_wait_s"],
        "monthly_gpu_usd": monthly_usd,
        "usd_per_1k_requests": monthly_usd / requests_per_month * 1000.0,
        "replicas_at_wait_target": replicas_at_target,
        "utilization_at_wait_target": in_flight / (replicas_at_target * inputs.slots_per_replica),
    }
    overflowed = [key for key, value in row.items() if not math.isfinite(value)]
    if overflowed:
        raise ValueError(
            f"{', '.join(overflowed)} overflow a float for daily_active_users={_show(daily_active_users)} "
            f"and {inputs}; use inputs of a sensible scale"
        )
    return row


def envelope_table(users: Iterable[float], inputs: EnvelopeInputs = EnvelopeInputs()) -> pd.DataFrame:
    """``envelope`` for several user counts, one row each, indexed by users."""
    entries = _numbers("users", users)
    for i, u in enumerate(entries):
        check_positive(f"users[{i}]", u)
    rows = [envelope(u, inputs) for u in entries]
    if not rows:
        raise ValueError("users must hold at least one user count")
    frame = pd.DataFrame(rows).set_index("users")
    return frame.astype({"replicas": "int64", "gpus": "int64", "replicas_at_wait_target": "int64"})


def staffing_table(offered_loads: Iterable[float], wait_probability: float) -> pd.DataFrame:
    """Square-root staffing in numbers: the servers Erlang C needs for P(wait) <= ``wait_probability``.

    Columns: ``servers`` (exact, from Erlang C), ``headroom`` (servers - load), ``headroom_per_sqrt_load``
    (compare with the Halfin-Whitt ``beta``), ``utilization`` and ``sqrt_staffing_servers``, the
    a + beta sqrt(a) rule with that beta. Each load is below ``queueing.MAX_SERVERS`` (10**9).
    """
    loads = [
        check_positive(f"offered_loads[{i}]", v)
        for i, v in enumerate(_numbers("offered_loads", offered_loads))
    ]
    for i, load in enumerate(loads):
        if load >= MAX_SERVERS:
            raise ValueError(
                f"offered_loads[{i}] must be < {MAX_SERVERS} (queueing.MAX_SERVERS), got {_show(load)}"
            )
    beta = queueing.halfin_whitt_beta(wait_probability)
    rows = []
    for load in loads:
        servers = queueing.min_servers_for_wait_probability(load, wait_probability)
        rows.append(
            {
                "offered_load": load,
                "servers": servers,
                "headroom": servers - load,
                "headroom_per_sqrt_load": (servers - load) / math.sqrt(load),
                "utilization": load / servers,
                "sqrt_staffing_servers": queueing.square_root_staffing(load, beta),
            }
        )
    if not rows:
        raise ValueError("offered_loads must hold at least one load")
    return pd.DataFrame(rows).set_index("offered_load")


#: What ``replica_envelope`` returns, by name.
REPLICA_ENVELOPE_FIELDS: dict[str, str] = {
    "kv_tokens": "tokens of KV cache the replica holds",
    "tokens_per_sequence": "KV tokens the mean request holds while it decodes (prompt + half its answer)",
    "kv_sequences": "sequences that fit in the KV cache at that size",
    "batch_limit": "the most sequences a replica runs: the smaller of kv_sequences and max_num_seqs",
    "lone_ttft_s": "time to first token of a lone request: its prompt's prefill",
    "lone_tpot_s": "time per output token of a lone request: a decode step of one",
    "decode_slo_batch": "the largest batch whose decode step alone stays within tpot_slo_s (0: none)",
    "decode_only_rate_per_s": "requests a second that batch would serve if prompts cost nothing",
    "prefill_s_per_request": "seconds the mean prompt adds to the iterations it rides in",
    "slo_rate_per_s": "requests a second at which the mean time per output token reaches tpot_slo_s",
    "slo_batch": "sequences decoding at that load (Little's law: rate x tokens_out x tpot_slo_s)",
    "slo_output_tokens_per_s": "output tokens a second at that load",
    "max_rate_per_s": "requests a second at which the batch reaches batch_limit, whatever the TPOT",
}


def _shape(step: object, tokens_in: object, tokens_out: object) -> tuple[float, float]:
    if not isinstance(step, StepTimeModel):
        raise TypeError(f"step must be a StepTimeModel, got {_kind(step)}")
    return check_positive("tokens_in", tokens_in), check_positive("tokens_out", tokens_out)


def prefill_s_per_request(
    step: StepTimeModel, *, tokens_in: float, tokens_out: float, max_batched_tokens: int = 8192
) -> float:
    """Seconds a prompt of ``tokens_in`` tokens adds to the iterations it rides in. A continuous
    batcher fills each iteration's spare token budget (``max_batched_tokens``) with waiting prompt
    tokens, so a prompt goes in budget-sized chunks, each costing the step with the chunk less the
    step without it (a big chunk is compute-bound: it does not hide under the weight read)."""
    tokens_in, tokens_out = _shape(step, tokens_in, tokens_out)
    budget = check_int("max_batched_tokens", max_batched_tokens, minimum=2, maximum=10**7)
    chunk = budget - 1  # beside one decoding sequence
    context = tokens_in + tokens_out / 2
    per_token = (step.step_time_s(chunk, 1, context + chunk) - step.step_time_s(0, 1, context)) / chunk
    return float(tokens_in * per_token)


def _decode_steps_s(step: StepTimeModel, limit: int, per_sequence: float) -> np.ndarray:
    batches = np.arange(1, limit + 1, dtype=float)
    return np.asarray(step.decode_step_time_s(batches, batches * per_sequence))


def _limit(kv_tokens: int, per_sequence: float, max_num_seqs: int) -> tuple[int, int]:
    kv_sequences = int(kv_tokens // per_sequence)
    return kv_sequences, min(kv_sequences, max_num_seqs)


def mean_tpot_s(
    step: StepTimeModel,
    rate_per_s: float,
    *,
    kv_tokens: int,
    tokens_in: float,
    tokens_out: float,
    max_num_seqs: int = 256,
    max_batched_tokens: int = 8192,
) -> float:
    """The mean time per output token of one replica at ``rate_per_s`` requests a second of the mean
    request: the fixed point of ``T = decode_step(B) / (1 - rate x prefill_s_per_request)`` with
    ``B = rate x tokens_out x T`` sequences decoding (Little's law), the prompts taking their share of
    every second. ``inf`` when the load needs more sequences than the replica holds or more prefill
    than a second has."""
    tokens_in, tokens_out = _shape(step, tokens_in, tokens_out)
    rate_per_s = check_range("rate_per_s", rate_per_s, 0.0, 1e9, unit=" requests/s")
    kv_tokens = check_int("kv_tokens", kv_tokens, minimum=1, maximum=10**12)
    max_num_seqs = check_int("max_num_seqs", max_num_seqs, minimum=1, maximum=100_000)
    per_sequence = tokens_in + tokens_out / 2
    _, limit = _limit(kv_tokens, per_sequence, max_num_seqs)
    prefill_s = prefill_s_per_request(
        step, tokens_in=tokens_in, tokens_out=tokens_out, max_batched_tokens=max_batched_tokens
    )
    spare = 1.0 - rate_per_s * prefill_s
    if limit < 1 or spare <= 0:
        return math.inf
    steps_s = _decode_steps_s(step, limit, per_sequence)
    batches = np.arange(1, limit + 1, dtype=float)

    def excess(tpot_s: float) -> float:
        batch = min(max(rate_per_s * tokens_out * tpot_s, 1.0), float(limit))
        return float(np.interp(batch, batches, steps_s)) / spare - tpot_s

    low, high = steps_s[0] / spare, steps_s[-1] / spare
    if high <= low or excess(high) >= 0:  # the batch is at its limit: the step can grow no more
        tpot = high
    else:  # excess(low) >= 0 > excess(high), one root: the step is convex in the batch
        tpot = optimize.brentq(excess, low, high, xtol=1e-12)
    return math.inf if rate_per_s * tokens_out * tpot > limit * (1 + 1e-9) else float(tpot)


def replica_envelope(
    step: StepTimeModel,
    *,
    kv_tokens: int,
    tokens_in: float,
    tokens_out: float,
    tpot_slo_s: float,
    max_num_seqs: int = 256,
    max_batched_tokens: int = 8192,
) -> pd.Series:
    """The back of the envelope of a continuous-batching replica serving the mean request
    (``tokens_in`` prompt tokens, ``tokens_out`` answer tokens) in steady state (``REPLICA_ENVELOPE_FIELDS``).

    A decoding request holds its prompt and on average half its answer in the KV cache, which bounds
    the batch. Each iteration decodes one token of every running sequence and fills its spare token
    budget with prompt chunks (``prefill_s_per_request``); ``mean_tpot_s`` balances the two, and the
    load at which the mean time per output token reaches ``tpot_slo_s`` is what the replica serves at
    the SLO. It is a mean: a p99 over requests that meet long prompt chunks binds at a lower load, and
    queueing for the first token is left out; the simulation adds both.
    """
    tokens_in, tokens_out = _shape(step, tokens_in, tokens_out)
    kv_tokens = check_int("kv_tokens", kv_tokens, minimum=1, maximum=10**12)
    tpot_slo_s = check_positive("tpot_slo_s", tpot_slo_s)
    max_num_seqs = check_int("max_num_seqs", max_num_seqs, minimum=1, maximum=100_000)
    prefill_s = prefill_s_per_request(
        step, tokens_in=tokens_in, tokens_out=tokens_out, max_batched_tokens=max_batched_tokens
    )
    per_sequence = tokens_in + tokens_out / 2
    kv_sequences, limit = _limit(kv_tokens, per_sequence, max_num_seqs)
    shape = {"kv_tokens": kv_tokens, "tokens_in": tokens_in, "tokens_out": tokens_out,
             "max_num_seqs": max_num_seqs, "max_batched_tokens": max_batched_tokens}  # fmt: skip
    lone_tpot_s = float(step.decode_step_time_s(1, per_sequence))
    rate = max_rate = decode_only = 0.0
    decode_batch = 0
    if limit >= 1:  # at the batch limit B: B (1 - r p) = r tokens_out step(B)
        steps_s = _decode_steps_s(step, limit, per_sequence)
        within = np.flatnonzero(steps_s <= tpot_slo_s)
        if len(within):
            decode_batch = int(within[-1]) + 1
            decode_only = decode_batch / (tokens_out * float(steps_s[decode_batch - 1]))
        last_step_s = float(steps_s[-1])
        max_rate = limit / (tokens_out * last_step_s + limit * prefill_s)
        if lone_tpot_s <= tpot_slo_s:

            def gap(r: float) -> float:
                return min(mean_tpot_s(step, r, **shape), 2 * tpot_slo_s) - tpot_slo_s

            rate = max_rate if gap(max_rate) <= 0 else optimize.brentq(gap, 0.0, max_rate, xtol=1e-9)
    return pd.Series(
        {
            "kv_tokens": float(kv_tokens),
            "tokens_per_sequence": per_sequence,
            "kv_sequences": float(kv_sequences),
            "batch_limit": float(limit),
            "lone_ttft_s": float(step.prefill_time_s(1, round(tokens_in))),
            "lone_tpot_s": lone_tpot_s,
            "decode_slo_batch": float(decode_batch),
            "decode_only_rate_per_s": decode_only,
            "prefill_s_per_request": prefill_s,
            "slo_rate_per_s": rate,
            "slo_batch": rate * tokens_out * tpot_slo_s,
            "slo_output_tokens_per_s": rate * tokens_out,
            "max_rate_per_s": max_rate,
        }
    )
