"""Measured serving results the engine is checked against: a real vLLM server under Poisson load.

``data/serving/vllm_opt13b_a100_sharegpt.csv`` (DistServe's ground truth, Apache-2.0; its README beside
it gives the source and the columns) holds one row per request of 8 experiments: OPT-13B on one
A100-80GB, ShareGPT prompts, 100 to 400 requests offered at 1 to 4 requests per second. Each row has the
request's arrival and token counts (what a simulation replays) and its measured time to first token,
time per output token and end-to-end latency (what a simulation is scored on).

``replay_arrivals`` turns one experiment into an arrivals table (``schema.ARRIVAL_COLUMNS``): the
measured arrival times and token counts, one class, priority 0, and a difficulty drawn uniformly from
the stream ``"measured.difficulty"`` (the measurements record none).

>>> int(vllm_experiments().loc[(100, 1.0), "requests"])
100
"""

from __future__ import annotations

from importlib import resources

import numpy as np
import pandas as pd

from ._validate import _show, check_finite, check_int
from .rng import stream
from .schema import ARRIVAL_COLUMNS

__all__ = ["VLLM_COLUMNS", "load_vllm_measurements", "vllm_experiments", "replay_arrivals"]

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
