"""Measured serving results the engine is checked against: a real vLLM server under Poisson load.

``data/serving/vllm_opt13b_a100_sharegpt.csv`` (DistServe's ground truth, Apache-2.0; its README beside
it gives the source and the columns) holds one row per request of 8 experiments: OPT-13B on one
A100-80GB, ShareGPT prompts, 100 to 400 requests offered at 1 to 4 requests per second. Each row has the
request's arrival and token counts (what a simulation replays) and its measured time to first token,
time per output token and end-to-end latency (what a simulation is scored on).

``replay_arrivals`` turns one experiment into an arrivals table (``schema.ARRIVAL_COLUMNS``): the
measured arrival times and token counts, one class, priority 0, and a difficulty drawn uniformly from
the stream ``"measured.difficulty"`` (the measurements record none).

Which server was measured (the measurements do not record vLLM's flags):

- ``vllm_launches()``: the three ways DistServe's script launched vLLM in the week before the
  measurements were committed, each with the KV cache vLLM V0 sizes for it (``profiled_kv_tokens``).
- ``prefill_groups(requests)``: the requests whose first tokens came out in the same instant, which vLLM V0
  prefilled in one iteration, and the padding each such batch carried: the trace of ``max_paddings``.
- ``experiment_launches()``: which launch each experiment ran on, from the client's clock (which
  experiments ran back to back on one server) and the padding.

The rest replays the experiments through the engine and scores it (``book/simulator.md``, "Against a
real vLLM server"):

- ``vllm_platform(step, launch=...)``: the measured server under one launch as a ``PlatformConfig``: one
  replica batching continuously with ``VLLM_SERVER``'s settings and the launch's flags, padding and KV
  cache, no network hop; ``replay_experiment(step, requests, rate_per_s)`` replays one experiment under
  the launch it ran on. ``static_platform(step)``: the same GPU behind the static batcher, for contrast.
- ``calibrate_vllm_step()``: starts from the shipped A100 step profile (``steptime.load_step_profile``)
  and fits ``CALIBRATED`` (its two efficiencies and the fixed cost of a prompt pass) so that the
  simulated mean TTFT, the TTFT's slope over prompt tokens and the pooled TPOT (``CALIBRATION_TARGETS``)
  of one experiment (1 req/s) equal the measured ones. Nothing else is fitted, and no other experiment
  is read.
- ``vllm_validation(step)``: one row per experiment: its launch, measured and simulated mean TTFT, TPOT
  and latency with their relative errors, and the static batcher's mean latency beside them.
- ``knee_rate_per_s(table, column)``: the lowest rate whose mean TTFT passes a threshold.
- ``kv_tokens_held(requests)``: the KV cache a server held over time, reconstructed from its requests'
  times: how full the measured server's cache got.

TPOT is DistServe's: ``(latency - TTFT) / (tokens_out - 1)`` per request, then the mean.

>>> int(vllm_experiments().loc[(100, 1.0), "requests"])
100
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from importlib import resources

import numpy as np
import pandas as pd
from scipy import optimize

from ._validate import _kind, _show, check_finite, check_int, check_positive, check_range
from .config import BatcherConfig, ContinuousBatcherConfig, PlatformConfig, PoolConfig
from .profiles import RooflineServiceTime
from .rng import stream
from .schema import ARRIVAL_COLUMNS
from .sim import simulate
from .steptime import StepTimeModel, load_step_profile

__all__ = [
    "VLLM_COLUMNS",
    "VLLM_SERVER",
    "CALIBRATED",
    "CALIBRATION_EXPERIMENT",
    "load_vllm_measurements",
    "vllm_experiments",
    "replay_arrivals",
    "vllm_step_profile",
    "vllm_platform",
    "static_platform",
    "token_times",
    "VllmCalibration",
    "calibrate_vllm_step",
    "CALIBRATION_TARGETS",
    "replay_experiment",
    "pooled_tpot_s",
    "ttft_s_per_prompt_token",
    "vllm_validation",
    "knee_rate_per_s",
    "kv_tokens_held",
    "A100_REPORTED_MEMORY_BYTES",
    "V0_MAX_PADDINGS",
    "profiled_kv_tokens",
    "vllm_launches",
    "experiment_launches",
    "prefill_groups",
]

#: The measurements' columns and what they mean.
VLLM_COLUMNS: dict[str, tuple[str, str]] = {
    "engine": ("object", "the serving engine: vllm"),
    "model": ("object", "OPT-13B (fp16)"),
    "hardware": ("object", "A100-80GB"),
    "tensor_parallel": ("int64", "GPUs the model is split over: 1"),
    "requests": ("int64", "requests in the experiment"),
    "rate_per_s": ("float64", "the Poisson rate they were offered at"),
    "arrival_s": ("float64", "when the request was sent, after the experiment's first request"),
    "tokens_in": ("int64", "prompt tokens"),
    "tokens_out": ("int64", "generated tokens"),
    "ttft_s": ("float64", "measured time to first token"),
    "tpot_s": ("float64", "measured time per output token after the first"),
    "latency_s": ("float64", "measured end-to-end latency"),
}

_FILE = "vllm_opt13b_a100_sharegpt.csv"


def load_vllm_measurements() -> pd.DataFrame:
    """Every measured request (``VLLM_COLUMNS``), in the file's order: by experiment, then arrival."""
    path = resources.files("scaleplay") / "data" / "serving" / _FILE
    with resources.as_file(path) as local:
        frame = pd.read_csv(local)
    return frame.astype({name: dtype for name, (dtype, _) in VLLM_COLUMNS.items()})[list(VLLM_COLUMNS)]


def vllm_experiments() -> pd.DataFrame:
    """One row per experiment, indexed by (``requests``, ``rate_per_s``): the requests and the measured
    means of ``ttft_s``, ``tpot_s`` and ``latency_s`` (arrival order kept within each)."""
    frame = load_vllm_measurements()
    keys = ["requests", "rate_per_s"]
    out = frame.groupby(keys, sort=False).agg(
        count=("arrival_s", "size"),
        ttft_s=("ttft_s", "mean"),
        tpot_s=("tpot_s", "mean"),
        latency_s=("latency_s", "mean"),
    )
    return out.rename(columns={"count": "requests"}).sort_index()


def replay_arrivals(requests: int, rate_per_s: float, *, seed: int = 0) -> pd.DataFrame:
    """The arrivals table of one measured experiment (``requests`` offered at ``rate_per_s``)."""
    requests = check_int("requests", requests, minimum=1)
    rate_per_s = check_finite("rate_per_s", rate_per_s)
    frame = load_vllm_measurements()
    mine = frame[(frame["requests"] == requests) & (frame["rate_per_s"] == rate_per_s)]
    if mine.empty:
        known = ", ".join(f"({n}, {r:g})" for n, r in vllm_experiments().index)
        raise ValueError(
            f"(requests, rate_per_s) must name a measured experiment, one of {known}; "
            f"got ({_show(requests)}, {_show(rate_per_s)})"
        )
    n = len(mine)
    table = pd.DataFrame(
        {
            "request_id": np.arange(n, dtype=np.int64),
            "t_s": mine["arrival_s"].to_numpy(dtype=np.float64),
            "class_name": np.full(n, "sharegpt", dtype=object),
            "priority": np.zeros(n, dtype=np.int64),
            "tokens_in": mine["tokens_in"].to_numpy(dtype=np.int64),
            "tokens_out": mine["tokens_out"].to_numpy(dtype=np.int64),
            "difficulty": stream(check_int("seed", seed, minimum=0), "measured.difficulty").random(n),
        }
    )
    return table[list(ARRIVAL_COLUMNS)]


# --------------------------------------------------------------------------------------------------
# The measured server, replayed
# --------------------------------------------------------------------------------------------------

#: The server that was measured, as every launch of it had it: OPT-13B (fp16) on one A100-80GB, vLLM V0
#: (v0.2.3: whole prompts first, no chunked prefill: ``"prefill_first"``), ``--block-size 16
#: --max-num-seqs 1024 -tp 1``. OPT-13B holds at most 2,048 tokens a sequence. The flags that changed
#: from launch to launch are in ``vllm_launches()``.
VLLM_SERVER: dict[str, object] = {
    "hardware": "A100 80GB SXM",
    "model": "OPT-13B",
    "dtype": "fp16",
    "tensor_parallel": 1,
    "step_profile": "a100-80gb",
    "block_tokens": 16,
    "max_num_seqs": 1024,
    "schedule": "prefill_first",
    "max_model_len_tokens": 2048,
}
#: The step-time coefficients ``calibrate_vllm_step`` fits; the others keep the shipped profile's values.
CALIBRATED: tuple[str, ...] = ("compute_efficiency", "bandwidth_efficiency", "prefill_overhead_s")
#: The one experiment the calibration reads: (requests, rate_per_s).
CALIBRATION_EXPERIMENT: tuple[int, float] = (100, 1.0)


def vllm_step_profile() -> StepTimeModel:
    """The shipped A100 step profile (``data/step_profiles.csv``, fitted on llama2-70b at TP 2 and 8)
    applied to OPT-13B in fp16 on one GPU: the calibration's starting point."""
    return load_step_profile(
        str(VLLM_SERVER["step_profile"]), str(VLLM_SERVER["model"]), int(VLLM_SERVER["tensor_parallel"])
    )


def _check_step(step: object) -> StepTimeModel:
    if not isinstance(step, StepTimeModel):
        raise TypeError(f"step must be a StepTimeModel (e.g. vllm_step_profile()), got {_kind(step)}")
    return step


def vllm_platform(
    step: StepTimeModel, *, launch: str | None = None, kv_tokens: int | None = None
) -> PlatformConfig:
    """The measured server under one of its launches (``vllm_launches()``; by default the one the
    calibration experiment ran on, ``experiment_launches()``): one replica timed by ``step``, batching
    continuously with ``VLLM_SERVER``'s settings and the launch's ``max_batched_tokens`` and
    ``max_paddings``, its KV cache the ``kv_tokens`` vLLM V0 sizes for the launch (or ``kv_tokens``, to
    see what the cache's size does), and no network hop (the measurements' client ran beside the server).
    ``--worker-use-ray`` is not modelled."""
    step = _check_step(step)
    launches = vllm_launches()
    if launch is None:
        launch = str(_experiment_launches().loc[CALIBRATION_EXPERIMENT, "launch"])
    if launch not in launches.index:
        raise ValueError(f"launch must be one of {list(launches.index)}, got {_show(launch)}")
    flags = launches.loc[launch]
    block_tokens = int(VLLM_SERVER["block_tokens"])
    if kv_tokens is None:
        kv_tokens = int(flags["kv_tokens"])
    kv_tokens = check_int("kv_tokens", kv_tokens, minimum=block_tokens, maximum=1 << 30)
    batcher = ContinuousBatcherConfig(
        max_num_seqs=int(VLLM_SERVER["max_num_seqs"]),
        max_batched_tokens=int(flags["max_batched_tokens"]),
        block_tokens=block_tokens,
        schedule=str(VLLM_SERVER["schedule"]),
        max_paddings=int(flags["max_paddings"]),
        kv_cache_blocks=kv_tokens // block_tokens,
    )
    return PlatformConfig(pool=PoolConfig(1, step, batcher), network_hop_s=0.0)


def static_platform(step: StepTimeModel, *, max_batch_size: int | None = None) -> PlatformConfig:
    """The same GPU behind the static batcher: a batch of up to ``max_batch_size`` waiting requests runs
    until its longest answer is done, timed by the roofline (``profiles.RooflineServiceTime``) with
    ``step``'s efficiencies and overhead. By default ``max_batch_size`` is what a static batcher can
    promise memory for: the KV cache of ``vllm_platform(step)`` over the longest sequence (2,048 tokens),
    since every member of the batch may grow that long."""
    step = _check_step(step)
    if max_batch_size is None:
        batcher = vllm_platform(step).pool.batcher
        kv_tokens = batcher.kv_blocks(step) * batcher.block_tokens
        max_batch_size = max(1, kv_tokens // int(VLLM_SERVER["max_model_len_tokens"]))
    service = RooflineServiceTime(
        step.hardware,
        step.model,
        overhead_s=step.overhead_s,
        compute_efficiency=step.compute_efficiency,
        bandwidth_efficiency=step.bandwidth_efficiency,
        tensor_parallel=step.tensor_parallel,
    )
    return PlatformConfig(
        pool=PoolConfig(1, service, BatcherConfig(max_batch_size=max_batch_size)), network_hop_s=0.0
    )


def token_times(log: pd.DataFrame) -> pd.DataFrame:
    """Each completed request's ``ttft_s``, ``tpot_s`` (DistServe's: ``(latency_s - ttft_s) /
    (tokens_out - 1)``), ``latency_s`` and ``tokens_out``, from a RequestLog of a continuous-batching
    run."""
    if not isinstance(log, pd.DataFrame):
        raise TypeError(f"log must be a RequestLog (a DataFrame), got {_kind(log)}")
    missing = [c for c in ("ttft_s", "latency_s", "tokens_out", "outcome") if c not in log.columns]
    if missing:
        raise ValueError(
            f"log lacks the columns {missing}: token times need a RequestLog of a continuous-batching "
            "pool (its ttft_s column)"
        )
    done = log[log["outcome"] == "completed"]
    ttft, latency = done["ttft_s"].to_numpy(float), done["latency_s"].to_numpy(float)
    later_tokens = done["tokens_out"].to_numpy(float) - 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        tpot = np.where(later_tokens >= 1, (latency - ttft) / later_tokens, np.nan)
    columns = {"ttft_s": ttft, "tpot_s": tpot, "latency_s": latency}
    columns |= {name: done[name].to_numpy() for name in ("tokens_in", "tokens_out")}
    return pd.DataFrame(columns, index=done.index)


def _experiment_key(requests: object, rate_per_s: object) -> tuple[int, float]:
    requests = check_int("requests", requests, minimum=1)
    rate_per_s = check_finite("rate_per_s", rate_per_s)
    if (requests, rate_per_s) not in vllm_experiments().index:
        replay_arrivals(requests, rate_per_s)  # names the experiments there are
    return requests, rate_per_s


def pooled_tpot_s(times: pd.DataFrame) -> float:
    """All requests' time after their first token over all their tokens after the first: the TPOT
    weighted by tokens. ``times`` has ``ttft_s``, ``latency_s`` and ``tokens_out`` (``token_times`` of a
    run, or measured requests)."""
    _check_requests(times, ["ttft_s", "latency_s", "tokens_out"])
    decode_s = (times["latency_s"] - times["ttft_s"]).to_numpy(float)
    return float(decode_s.sum() / (times["tokens_out"].to_numpy(float) - 1.0).sum())


def ttft_s_per_prompt_token(times: pd.DataFrame) -> float:
    """The least-squares slope of the requests' TTFT over their prompt tokens: what one more prompt
    token adds to a first token. ``times`` has ``ttft_s`` and ``tokens_in``."""
    _check_requests(times, ["ttft_s", "tokens_in"])
    return float(np.polyfit(times["tokens_in"].to_numpy(float), times["ttft_s"].to_numpy(float), 1)[0])


def _means(frame: pd.DataFrame) -> dict[str, float]:
    """Mean ``ttft_s``, ``tpot_s`` and ``latency_s``, ``tpot_pooled_s`` (``pooled_tpot_s``) and
    ``ttft_s_per_prompt_token``."""
    means = {name: float(frame[name].mean()) for name in ("ttft_s", "tpot_s", "latency_s")}
    means["tpot_pooled_s"] = pooled_tpot_s(frame)
    means["ttft_s_per_prompt_token"] = ttft_s_per_prompt_token(frame)
    return means


def replay_experiment(
    step: StepTimeModel,
    requests: int,
    rate_per_s: float,
    *,
    kv_tokens: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """One measured experiment replayed on ``vllm_platform(step)`` under the launch it ran on
    (``experiment_launches()``), its KV cache ``kv_tokens`` if given: the ``token_times`` of its
    requests."""
    step = _check_step(step)
    key = _experiment_key(requests, rate_per_s)
    launch = str(_experiment_launches().loc[key, "launch"])
    config = vllm_platform(step, launch=launch, kv_tokens=kv_tokens)
    return token_times(simulate(replay_arrivals(*key, seed=seed), config, seed=seed).log)


@dataclass(frozen=True)
class VllmCalibration:
    """What ``calibrate_vllm_step`` fitted, on what, and how close it came.

    ``step`` is the calibrated model; ``fitted`` and ``start`` hold the ``CALIBRATED`` coefficients
    after and before; ``experiment`` is the (requests, rate_per_s) it read; ``measured`` and
    ``simulated`` that experiment's ``_means`` (``CALIBRATION_TARGETS`` are fitted, the others are
    checks); ``simulations`` the runs the fit took.
    """

    step: StepTimeModel
    fitted: dict[str, float]
    start: dict[str, float]
    experiment: tuple[int, float]
    measured: dict[str, float]
    simulated: dict[str, float]
    simulations: int


#: What the calibration matches: the mean TTFT and its slope over prompt tokens (the prefill: its fixed
#: cost and its compute-bound multiplies) and the pooled TPOT (the decode, memory-bound). Not the mean
#: TPOT: a request of 2 or 3 tokens whose second token waits behind another's prefill has a TPOT ten
#: times the others', so the mean of 100 jumps by several percent as an efficiency moves by a fraction
#: of one; the pooled TPOT weighs each request by its tokens and moves smoothly.
CALIBRATION_TARGETS: tuple[str, ...] = ("ttft_s", "ttft_s_per_prompt_token", "tpot_pooled_s")


def calibrate_vllm_step(
    step: StepTimeModel | None = None,
    *,
    requests: int = CALIBRATION_EXPERIMENT[0],
    rate_per_s: float = CALIBRATION_EXPERIMENT[1],
    seed: int = 0,
) -> VllmCalibration:
    """Fit ``step``'s two efficiencies and its prefill overhead (``CALIBRATED``) on one measured
    experiment.

    ``step`` (default ``vllm_step_profile()``) gives the start and every other coefficient. The
    experiment (default 100 requests at 1 req/s) is replayed under the launch it ran on
    (``replay_experiment``); Nelder-Mead (``scipy.optimize.minimize``, from the start, a fixed simplex)
    minimises the squared logarithms of simulated over measured ``CALIBRATION_TARGETS``. A prompt pass
    costs a fixed ``prefill_overhead_s`` plus its compute-bound multiplies, so the TTFT's level and its
    slope over prompt tokens set those two; the decode step (hence TPOT) is memory-bound and sets the
    bandwidth efficiency. Deterministic: the same arguments give the same fit.
    """
    step = vllm_step_profile() if step is None else _check_step(step)
    key = _experiment_key(requests, rate_per_s)
    frame = load_vllm_measurements()
    measured = _means(frame[(frame["requests"] == key[0]) & (frame["rate_per_s"] == key[1])])
    start = np.array([getattr(step, name) for name in CALIBRATED])
    runs = 0

    def model(x: np.ndarray) -> StepTimeModel:
        return dataclasses.replace(step, **dict(zip(CALIBRATED, (float(v) for v in x), strict=True)))

    def replay(x: np.ndarray) -> dict[str, float]:
        nonlocal runs
        runs += 1
        return _means(replay_experiment(model(x), *key, seed=seed))

    low, high = np.array([1e-6, 1e-6, 0.0]), np.array([1.0, 1.0, 1.0])

    def loss(x: np.ndarray) -> float:
        if not np.all((x >= low) & (x <= high)):  # an efficiency is a fraction of the peak
            return 1e6 * (1.0 + float(np.abs(x - np.clip(x, low, high)).sum()))
        simulated = replay(x)
        return sum(math.log(simulated[n] / measured[n]) ** 2 for n in CALIBRATION_TARGETS)

    simplex = np.array([start, start * [0.9, 1, 1], start * [1, 0.9, 1], start + [0, 0, 0.01]])
    result = optimize.minimize(
        loss, start, method="Nelder-Mead",
        options={"initial_simplex": simplex, "xatol": 1e-4, "fatol": 1e-10, "maxiter": 400},
    )  # fmt: skip
    fitted = model(result.x)
    return VllmCalibration(
        step=fitted,
        fitted={name: getattr(fitted, name) for name in CALIBRATED},
        start={name: getattr(step, name) for name in CALIBRATED},
        experiment=key,
        measured=measured,
        simulated=replay(result.x),
        simulations=runs,
    )


def vllm_validation(
    step: StepTimeModel,
    *,
    seed: int = 0,
    static_max_batch_size: int | None = None,
) -> pd.DataFrame:
    """Every measured experiment replayed under the launch it ran on (``replay_experiment``) and on
    ``static_platform(step)``.

    One row per experiment, indexed by (``requests``, ``rate_per_s``), ordered by rate: its ``launch``,
    the measured and simulated mean ``ttft``, ``tpot`` and ``latency`` (``measured_ttft_s``,
    ``simulated_ttft_s``, ``ttft_error`` = simulated / measured - 1, and so on), ``completed`` (requests
    the engine finished), and the static batcher's ``static_latency_s`` and ``static_latency_error`` (it
    makes no first token, so only its latency). Means are over completed requests.
    """
    step = _check_step(step)
    static = static_platform(step, max_batch_size=static_max_batch_size)
    launches = experiment_launches()["launch"]
    rows = []
    for key, measured in vllm_experiments().iterrows():
        times = replay_experiment(step, *key, seed=seed)
        simulated = _means(times)
        static_log = simulate(replay_arrivals(*key, seed=seed), static, seed=seed).log
        static_latency_s = float(static_log.loc[static_log["outcome"] == "completed", "latency_s"].mean())
        row: dict[str, object] = {"requests": key[0], "rate_per_s": key[1], "launch": launches[key]}
        for name in ("ttft", "tpot", "latency"):
            row[f"measured_{name}_s"] = float(measured[f"{name}_s"])
            row[f"simulated_{name}_s"] = simulated[f"{name}_s"]
            row[f"{name}_error"] = simulated[f"{name}_s"] / float(measured[f"{name}_s"]) - 1.0
        row["completed"] = len(times)
        row["static_latency_s"] = static_latency_s
        row["static_latency_error"] = static_latency_s / float(measured["latency_s"]) - 1.0
        rows.append(row)
    table = pd.DataFrame(rows).sort_values(["rate_per_s", "requests"], kind="stable")
    return table.set_index(["requests", "rate_per_s"])


def knee_rate_per_s(
    table: pd.DataFrame, column: str = "simulated_ttft_s", *, threshold_s: float = 1.0
) -> float:
    """The lowest ``rate_per_s`` (an index level of ``table``) whose ``column`` passes ``threshold_s``;
    NaN when none does."""
    if not isinstance(table, pd.DataFrame) or "rate_per_s" not in table.index.names:
        raise TypeError(
            f"table must be a DataFrame indexed by rate_per_s (vllm_validation()), got {_kind(table)}"
        )
    if not isinstance(column, str) or column not in table.columns:
        raise ValueError(f"column must be one of table's columns {list(table.columns)}, got {_show(column)}")
    threshold_s = check_positive("threshold_s", threshold_s)
    rates = table.index.get_level_values("rate_per_s")
    over = rates[table[column].to_numpy(float) > threshold_s]
    return float(over.min()) if len(over) else math.nan


def _check_requests(requests: object, columns: list[str]) -> None:
    if not isinstance(requests, pd.DataFrame):
        raise TypeError(f"requests must be a DataFrame with the columns {columns}, got {_kind(requests)}")
    missing = [c for c in columns if c not in requests.columns]
    if missing:
        raise ValueError(f"requests lacks the columns {missing}")


def kv_tokens_held(requests: pd.DataFrame, *, step_s: float = 0.1) -> pd.Series:
    """The KV-cache tokens a server held over time, reconstructed from its requests' times alone.

    ``requests`` has one row per request with ``arrival_s``, ``ttft_s``, ``latency_s``, ``tokens_in``
    and ``tokens_out`` (``load_vllm_measurements()`` filtered to one experiment, for instance). A request
    is taken to hold its prompt and the tokens made so far from its first token to its end, making them
    at a steady pace; a preempted request, which really gave its blocks back for a while, is counted as
    holding them. Returns the tokens held every ``step_s`` seconds (at most 10**6 points), indexed by
    ``t_s``.
    """
    _check_requests(requests, ["arrival_s", "ttft_s", "latency_s", "tokens_in", "tokens_out"])
    step_s = check_positive("step_s", step_s)
    start = requests["arrival_s"].to_numpy(float) + requests["ttft_s"].to_numpy(float)
    end = requests["arrival_s"].to_numpy(float) + requests["latency_s"].to_numpy(float)
    points = int(np.ceil(end.max() / step_s)) + 1 if len(end) else 1
    if not points <= 10**6:
        raise ValueError(f"step_s={_show(step_s)} cuts {end.max():g} s into more than 10**6 points")
    t_s = np.arange(points) * step_s
    held = np.zeros(points)
    made_per_s = (requests["tokens_out"].to_numpy(float) - 1.0) / np.maximum(end - start, 1e-12)
    for begin, finish, prompt, pace in zip(
        start, end, requests["tokens_in"].to_numpy(float), made_per_s, strict=True
    ):
        lo, hi = np.searchsorted(t_s, [begin, finish])
        held[lo:hi] += prompt + 1.0 + pace * (t_s[lo:hi] - begin)
    return pd.Series(held, index=pd.Index(t_s, name="t_s"), name="kv_tokens")


# --------------------------------------------------------------------------------------------------
# Which server was measured
# --------------------------------------------------------------------------------------------------

#: The memory CUDA reports for an A100-SXM4-80GB (deviceQuery under CUDA 12.1: 84,987,740,160 bytes),
#: from which vLLM V0 sizes its cache; the engine's hardware table holds the datasheet's 80 GB.
A100_REPORTED_MEMORY_BYTES = 84_987_740_160
#: OPT-13B's widths (its config.json): the activations vLLM V0's profiling pass holds per token.
_OPT13B_HIDDEN, _OPT13B_FFN = 5120, 20480
#: vLLM V0's default ``max_paddings`` (v0.2.3 ``EngineArgs``): the padding a prefill batch may carry.
V0_MAX_PADDINGS = 256

#: DistServe's launch script for its vLLM baseline (``evaluation/2-benchmark-serving/2-start-api-server.py``,
#: LLMServe/DistServe) in the week before the measurements were committed (2024-04-23 16:38 -0700, commit
#: 20a1633): from which commit (dates +0800), and the flags that changed. ``max_paddings`` is vLLM's default
#: where the script set none; ``workers_through_ray`` is ``--worker-use-ray``.
_LAUNCHES: tuple[dict[str, object], ...] = (
    {"launch": "2024-04-17", "commit": "36306b0", "gpu_memory_utilization": 0.92,
     "max_batched_tokens": 65536, "max_paddings": V0_MAX_PADDINGS, "workers_through_ray": False},
    {"launch": "2024-04-20", "commit": "bde5424", "gpu_memory_utilization": 0.95,
     "max_batched_tokens": 65536, "max_paddings": 524288, "workers_through_ray": True},
    {"launch": "2024-04-23", "commit": "8f13114", "gpu_memory_utilization": 0.95,
     "max_batched_tokens": 16384, "max_paddings": 256, "workers_through_ray": True},
)  # fmt: skip


def profiled_kv_tokens(
    gpu_memory_utilization: float,
    max_batched_tokens: int,
    *,
    block_tokens: int = int(VLLM_SERVER["block_tokens"]),
) -> int:
    """The KV cache (tokens, whole blocks) vLLM V0 gives OPT-13B on the measured A100 under these flags.

    vLLM V0 (v0.2.3, ``Worker.profile_num_available_blocks``) runs one profiling pass over
    ``max_batched_tokens`` prompt tokens, then keeps for the cache ``A100_REPORTED_MEMORY_BYTES x
    gpu_memory_utilization`` less the peak PyTorch allocated: the weights and the pass's activations. Those
    are counted at the decoder's peak, inside the MLP, as V0's OPT code keeps them: the token and position
    embeddings, the layer's input and its residual (4 x hidden) and the MLP's two intermediate tensors
    (2 x ffn), per token, in fp16. The sampler's sort over the vocabulary, which comes after and can
    peak higher when ``max_batched_tokens`` is small, is not counted: the result is an upper bound there.
    """
    gpu_memory_utilization = check_range("gpu_memory_utilization", gpu_memory_utilization, 1e-6, 1.0)
    max_batched_tokens = check_int("max_batched_tokens", max_batched_tokens, minimum=1, maximum=1 << 24)
    block_tokens = check_int("block_tokens", block_tokens, minimum=1, maximum=1 << 20)
    model = vllm_step_profile().model
    activation_bytes = max_batched_tokens * (4 * _OPT13B_HIDDEN + 2 * _OPT13B_FFN) * 2
    free_bytes = A100_REPORTED_MEMORY_BYTES * gpu_memory_utilization - model.weight_bytes - activation_bytes
    block_bytes = model.kv_bytes_per_token * block_tokens
    if free_bytes < block_bytes:
        raise ValueError(
            f"gpu_memory_utilization={_show(gpu_memory_utilization)} with max_batched_tokens="
            f"{max_batched_tokens} leaves no block for the KV cache after OPT-13B's weights "
            f"({model.weight_bytes / 1e9:.1f} GB) and the profiling pass's activations "
            f"({activation_bytes / 1e9:.1f} GB); vLLM would refuse to start"
        )
    return int(free_bytes // block_bytes) * block_tokens


def vllm_launches() -> pd.DataFrame:
    """The launches of ``_LAUNCHES``, indexed by ``launch`` (the day it began, +0800), with ``commit``,
    ``gpu_memory_utilization``, ``max_batched_tokens``, ``max_paddings``, ``workers_through_ray`` and
    ``kv_tokens``: the cache vLLM V0 sizes for it (``profiled_kv_tokens``). The last is the script as
    published; ``experiment_launches`` says which each experiment ran on."""
    frame = pd.DataFrame(list(_LAUNCHES)).set_index("launch")
    frame["kv_tokens"] = [
        profiled_kv_tokens(row.gpu_memory_utilization, row.max_batched_tokens) for row in frame.itertuples()
    ]
    return frame


_CLOCKS_FILE = "vllm_opt13b_a100_sharegpt_clocks.csv"
#: Experiments less than this apart ran on one server: the sweep's longest gap (130 s, between 1.5 and
#: 2.5 req/s) is the length of its 2 req/s run, whose results a later run replaced; vLLM was next
#: relaunched 77 minutes after the sweep.
_SAME_SERVER_GAP_S = 150.0


def experiment_launches() -> pd.DataFrame:
    """Which launch (``vllm_launches()``) each experiment ran on, from what the measurements record.

    One row per experiment, in the order they ran, indexed by (``requests``, ``rate_per_s``):

    - ``started_s`` and ``ended_s``: when its first request was sent and its last one done, on the
      client's clock (``time.perf_counter``, one clock for all eight: the source files keep it; the
      clocks file beside the measurements), in seconds after the first experiment began;
    - ``gap_s``: seconds since the experiment before it ended;
    - ``largest_padding``: the most padding one of its prefill batches carried (``prefill_groups``);
    - ``server``: experiments less than ``_SAME_SERVER_GAP_S`` apart ran on one server, numbered from 1;
    - ``launch``: each server's: the padding its batches carried is the trace of its ``max_paddings``
      (the smallest limit that allows the largest of them: where V0 pads without limit, most batches of
      two or more prompts pass 256 tokens), and of the launches with that limit the one the clock
      allows, launches following each other in date order.
    """
    return _experiment_launches().copy()


@functools.cache
def _experiment_launches() -> pd.DataFrame:
    path = resources.files("scaleplay") / "data" / "serving" / _CLOCKS_FILE
    with resources.as_file(path) as local:
        clocks = pd.read_csv(local).set_index(["requests", "rate_per_s"])
    clocks = clocks.sort_values("first_sent_clock_s")
    origin = float(clocks["first_sent_clock_s"].iloc[0])
    frame = pd.DataFrame(
        {
            "started_s": clocks["first_sent_clock_s"] - origin,
            "ended_s": clocks["last_done_clock_s"] - origin,
        }
    )
    frame["gap_s"] = frame["started_s"] - frame["ended_s"].shift()
    largest = {
        key: int(prefill_groups(group)["padding_tokens"].max())
        for key, group in load_vllm_measurements().groupby(["requests", "rate_per_s"])
    }
    frame["largest_padding"] = [largest[key] for key in frame.index]
    frame["server"] = (frame["gap_s"].fillna(math.inf) > _SAME_SERVER_GAP_S).cumsum()
    launches = vllm_launches()
    order = list(launches.index)  # dates, in order
    servers = frame.groupby("server")["largest_padding"].max()
    candidates = {}
    for server, padding in servers.items():  # the padding is the trace of the limit
        limit = launches.loc[launches["max_paddings"] >= padding, "max_paddings"].min()
        candidates[server] = [d for d in order if launches.loc[d, "max_paddings"] == limit]
    known = {k: c[0] for k, c in candidates.items() if len(c) == 1}
    launch_of = {}
    for server, dates in candidates.items():
        earliest = max((order.index(d) for k, d in known.items() if k < server), default=0)
        latest = min((order.index(d) for k, d in known.items() if k > server), default=len(order) - 1)
        fits = [d for d in dates if earliest <= order.index(d) <= latest]
        if len(fits) != 1:
            runs = list(frame.index[frame["server"] == server])
            raise RuntimeError(f"the server of the experiments {runs} may have run any launch of {fits}")
        launch_of[server] = fits[0]
    frame["launch"] = frame["server"].map(launch_of)
    return frame


def prefill_groups(requests: pd.DataFrame, *, tolerance_s: float = 0.002) -> pd.DataFrame:
    """The requests whose first tokens came out together: vLLM V0 prefilled them in one iteration.

    ``requests`` has ``arrival_s``, ``ttft_s`` and ``tokens_in`` (one measured experiment). First tokens
    less than ``tolerance_s`` apart share an iteration (a server stamps a batch's within a millisecond;
    its iterations are tens of milliseconds apart). One row per group of two or more, in time order:
    ``first_token_s``, ``prompts``, ``longest_prompt`` and ``padding_tokens``, what V0 padded the batch
    with (each prompt to the longest: ``prompts x longest - sum``), which its ``max_paddings`` bounds.
    """
    _check_requests(requests, ["arrival_s", "ttft_s", "tokens_in"])
    tolerance_s = check_positive("tolerance_s", tolerance_s)
    first = (requests["arrival_s"] + requests["ttft_s"]).to_numpy(float)
    order = np.argsort(first, kind="stable")
    first, prompts = first[order], requests["tokens_in"].to_numpy(np.int64)[order]
    group = np.cumsum(np.diff(first, prepend=-np.inf) > tolerance_s)
    frame = pd.DataFrame({"group": group, "first_token_s": first, "prompt": prompts})
    out = frame.groupby("group").agg(
        first_token_s=("first_token_s", "min"),
        prompts=("prompt", "size"),
        longest_prompt=("prompt", "max"),
        prompt_tokens=("prompt", "sum"),
    )
    out = out[out["prompts"] >= 2].reset_index(drop=True)
    out["padding_tokens"] = out["prompts"] * out["longest_prompt"] - out.pop("prompt_tokens")
    return out
