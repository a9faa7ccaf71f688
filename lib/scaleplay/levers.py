"""The serving levers as design choices: each design sized on the same traffic, at the same token SLO.

A **design** is a way to serve the same model: a ``PlatformConfig`` whose pool is a continuous-batching
pool (weights in bf16, INT8 or FP8; a speculative-decoding service; a balancing policy such as prefix
affinity), or a ``disagg.DisaggregatedConfig`` (separate prefill and decode pools). ``size_designs``
finds, for each, the fewest replicas that serve ``target`` of the requests within both token SLOs
(``experiments.fewest_replicas``; for a disaggregated design the cheapest prefill/decode split,
``disagg.best_split``) on the *same* arrivals and seed, and prices the fleet: the lever's worth is the
GPUs it saves at equal service, which is how the planner compares designs.

A lever whose worth depends on the load gets its trade-off swept: ``speculation_under_load`` serves the
same arrivals at each offered load with the target model alone and with a draft model
(``speculative.SpeculativeStepTime``) at each acceptance rate. At low load the batch is small, decode
steps memory-bound, and the draft cuts the time per output token; as the load grows so does the batch,
the verify pass turns compute-bound, and from about ``speculative.break_even_batch`` on speculation
costs more than it saves, and with it the capacity: the queue, and the time to first token, grow
sooner.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from ._validate import _kind, _show, check_int, check_positive, check_probability
from .disagg import DisaggregatedConfig
from .experiments import fewest_replicas, usd_per_1k_requests
from .metrics import token_latency_percentiles
from .simulator import ContinuousBatcherConfig, PlatformConfig, PoolConfig, simulate
from .speculative import SpeculativeStepTime, break_even_batch
from .steptime import StepTimeModel

__all__ = ["DESIGN_COLUMNS", "size_designs", "UNDER_LOAD_COLUMNS", "speculation_under_load"]

#: One row per design.
DESIGN_COLUMNS: dict[str, str] = {
    "replicas": "replicas of the design's pool (prefill + decode for a disaggregated one)",
    "split": "a disaggregated design's prefill:decode replicas ('' for one pool)",
    "gpus": "GPUs: replicas x tensor parallel",
    "attainment": "share of the requests completed within both token SLOs",
    "p99_ttft_s": "99th percentile of time to first token, completed requests",
    "p99_tpot_s": "99th percentile of time per output token, completed requests",
    "output_tokens_per_s_per_gpu": "generated tokens per second per GPU over the arrivals' span",
    "usd_per_1k_requests": "GPU cost of 1,000 requests at the arrivals' mean rate",
}


def size_designs(
    arrivals: pd.DataFrame,
    designs: Mapping[str, PlatformConfig | DisaggregatedConfig],
    *,
    ttft_slo_s: float,
    tpot_slo_s: float,
    target: float,
    usd_per_gpu_hour: float,
    seed: int = 0,
    max_replicas: int = 1024,
    progress: bool = False,
) -> pd.DataFrame:
    """The fewest replicas of each design in ``designs`` (name -> ``PlatformConfig`` or
    ``DisaggregatedConfig``) meeting the token SLO for ``target`` of ``arrivals``, one row per design
    (``DESIGN_COLUMNS``), priced at ``usd_per_gpu_hour``."""
    if not isinstance(designs, Mapping) or not designs:
        raise TypeError(f"designs must be a non-empty mapping of name -> design, got {_kind(designs)}")
    for name, design in designs.items():
        if not isinstance(design, (PlatformConfig, DisaggregatedConfig)):
            raise TypeError(
                f"designs[{name!r}] must be a PlatformConfig or a DisaggregatedConfig, got {_kind(design)}"
            )
    usd_per_gpu_hour = check_positive("usd_per_gpu_hour", usd_per_gpu_hour)
    span_s = float(arrivals["t_s"].max()) if len(arrivals) else 0.0
    if span_s <= 0:
        raise ValueError("arrivals must span some time: their last t_s must be > 0")
    rows = {}
    for name, design in tqdm(designs.items(), desc="designs", disable=not progress):
        sizing = fewest_replicas(
            arrivals, design, ttft_slo_s=ttft_slo_s, tpot_slo_s=tpot_slo_s, target=target, seed=seed,
            max_replicas=max_replicas,
        )  # fmt: skip
        log = sizing.result.log
        completed = log[log["outcome"] == "completed"]
        tails = token_latency_percentiles(completed, quantiles=(0.99,))["p99_s"]
        rows[name] = {
            "replicas": sizing.replicas,
            "split": "" if sizing.split is None else "{}:{}".format(*sizing.split),
            "gpus": sizing.gpus,
            "attainment": sizing.attainment,
            "p99_ttft_s": tails["ttft"],
            "p99_tpot_s": tails["tpot"],
            "output_tokens_per_s_per_gpu": float(np.sum(completed["tokens_out"])) / span_s / sizing.gpus,
            "usd_per_1k_requests": usd_per_1k_requests(sizing.gpus, usd_per_gpu_hour, len(arrivals) / span_s),
        }
    return pd.DataFrame.from_dict(rows, orient="index")[list(DESIGN_COLUMNS)].rename_axis("design")


#: One row per offered load and speculation setting.
UNDER_LOAD_COLUMNS: dict[str, str] = {
    "rate_per_s": "offered load, requests per second (the arrivals' key)",
    "acceptance": "the draft's acceptance rate alpha; NaN: the target alone",
    "requests": "requests offered",
    "completed": "share of them completed",
    "mean_ttft_s": "mean time to first token, completed requests",
    "p99_ttft_s": "99th percentile of time to first token",
    "mean_tpot_s": "mean time per output token after the first",
    "p99_tpot_s": "99th percentile of time per output token",
    "output_tokens_per_s": "tokens of the completed answers per second, first arrival to last answer",
    "mean_decode_batch": "sequences per decode iteration, averaged over the iterations",
    "tpot_speedup": "the target alone's mean_tpot_s / this row's (above 1 speculation pays)",
    "break_even_batch": "speculative.break_even_batch at the arrivals' mean context (inf: never)",
}


def _under_load_row(result: object, arrivals: pd.DataFrame) -> dict[str, float]:
    log = result.log
    done = log[log["outcome"] == "completed"]
    ttft, tpot = done["ttft_s"].to_numpy(), done["tpot_s"].to_numpy()
    ttft, tpot = ttft[~np.isnan(ttft)], tpot[~np.isnan(tpot)]
    span_s = float(done["responded_s"].max() - log["arrived_s"].min()) if len(done) else np.nan
    runs = result.iterations
    steps = runs["steps"].to_numpy(dtype=float)

    def stats(values: np.ndarray) -> tuple[float, float]:
        return (float(values.mean()), float(np.percentile(values, 99))) if len(values) else (np.nan, np.nan)

    mean_ttft, p99_ttft = stats(ttft)
    mean_tpot, p99_tpot = stats(tpot)
    return {
        "requests": len(arrivals),
        "completed": len(done) / len(arrivals) if len(arrivals) else np.nan,
        "mean_ttft_s": mean_ttft,
        "p99_ttft_s": p99_ttft,
        "mean_tpot_s": mean_tpot,
        "p99_tpot_s": p99_tpot,
        "output_tokens_per_s": float(done["tokens_out"].sum()) / span_s if span_s > 0 else np.nan,
        "mean_decode_batch": float((steps * runs["decode_seqs"]).sum() / steps.sum())
        if steps.sum()
        else np.nan,
    }


def speculation_under_load(
    arrivals: Mapping[float, pd.DataFrame],
    target: StepTimeModel,
    draft: StepTimeModel,
    *,
    draft_tokens: int,
    acceptances: Sequence[float],
    batcher: ContinuousBatcherConfig | None = None,
    replicas: int = 1,
    seed: int = 0,
    progress: bool = False,
) -> pd.DataFrame:
    """One pool of ``replicas`` replicas per offered load, without and with speculation.

    ``arrivals`` maps each offered load (requests/s, the table's ``rate_per_s``) to its arrivals
    table; each is served by ``target`` alone, then by ``SpeculativeStepTime(target, draft,
    draft_tokens, alpha)`` for each ``alpha`` in ``acceptances``, with ``batcher`` (vLLM's defaults
    when None) and ``seed``. One row per load and setting, target alone first (``UNDER_LOAD_COLUMNS``).
    """
    if not isinstance(arrivals, Mapping) or not arrivals:
        raise TypeError(
            f"arrivals must be a non-empty mapping of rate_per_s -> arrivals, got {_kind(arrivals)}"
        )
    rates = {
        check_positive("rate_per_s (a key of arrivals)", rate): table for rate, table in arrivals.items()
    }
    for rate, table in rates.items():
        if not isinstance(table, pd.DataFrame):
            raise TypeError(f"arrivals[{rate!r}] must be an arrivals DataFrame, got {_kind(table)}")
    if isinstance(acceptances, (str, bytes)) or not isinstance(acceptances, Sequence) or not acceptances:
        raise ValueError(f"acceptances must be a non-empty list of rates in [0, 1], got {_show(acceptances)}")
    alphas = [check_probability("acceptances", alpha) for alpha in acceptances]
    batcher = ContinuousBatcherConfig() if batcher is None else batcher
    if not isinstance(batcher, ContinuousBatcherConfig):
        raise TypeError(f"batcher must be a ContinuousBatcherConfig or None, got {_kind(batcher)}")
    replicas = check_int("replicas", replicas, minimum=1)
    services: list[tuple[float, StepTimeModel | SpeculativeStepTime]] = [(np.nan, target)]
    services += [(alpha, SpeculativeStepTime(target, draft, draft_tokens, alpha)) for alpha in alphas]
    rows = []
    runs = [(rate, alpha, service) for rate in sorted(rates) for alpha, service in services]
    for rate, alpha, service in tqdm(runs, desc="loads x settings", disable=not progress):
        table = rates[rate]
        config = PlatformConfig(pool=PoolConfig(replicas, service, batcher), network_hop_s=0.0)
        result = simulate(table, config, seed=seed)
        row = {"rate_per_s": rate, "acceptance": alpha, **_under_load_row(result, table)}
        if np.isnan(alpha):
            alone_tpot = row["mean_tpot_s"]
            row["break_even_batch"] = np.nan
        else:
            context = float(table["tokens_in"].mean() + table["tokens_out"].mean() / 2) if len(table) else 0.0
            first = break_even_batch(
                target, draft, draft_tokens=draft_tokens, acceptance=alpha, context_tokens=context
            )
            row["break_even_batch"] = np.inf if first is None else float(first)
        row["tpot_speedup"] = alone_tpot / row["mean_tpot_s"]
        rows.append(row)
    return pd.DataFrame(rows, columns=list(UNDER_LOAD_COLUMNS))
