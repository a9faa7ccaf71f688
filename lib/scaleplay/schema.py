"""The tables that flow between the library's stages, column by column.

Every stage returns a pandas DataFrame whose columns are listed here with their dtype and meaning,
so a notebook, a test or another stage can rely on them. Times are seconds from the start of the
run; token counts are integers; ``NaN`` marks a handoff that never happened (a rejected request has
no ``model_start_s``).
"""

from __future__ import annotations

import pandas as pd

from ._validate import _kind

__all__ = [
    "ARRIVAL_COLUMNS",
    "REQUEST_LOG_COLUMNS",
    "TIMELINE_COLUMNS",
    "OUTCOMES",
    "REJECT_REASONS",
    "CONTROL_LOG_COLUMNS",
    "CONTROL_TIMELINE_COLUMNS",
    "REGION_LOG_COLUMNS",
    "ENGINE_LOG_COLUMNS",
    "PREFIX_LOG_COLUMNS",
    "ENGINE_TIMELINE_COLUMNS",
    "ENGINE_POOL_TIMELINE_COLUMNS",
    "ITERATION_COLUMNS",
    "PREEMPTION_COLUMNS",
    "check_columns",
]

#: The arrivals table the workload produces and the platform consumes, sorted by ``t_s``.
ARRIVAL_COLUMNS: dict[str, tuple[str, str]] = {
    "request_id": ("int64", "0, 1, 2, ... in order of arrival"),
    "t_s": ("float64", "arrival time, seconds from the start of the run"),
    "class_name": ("object", "traffic class, e.g. 'paid' or 'free'"),
    "priority": ("int64", "0 is served first; larger numbers are less important and shed first"),
    "tokens_in": ("int64", "prompt tokens"),
    "tokens_out": ("int64", "tokens to generate"),
    "difficulty": ("float64", "in [0, 1]: how hard the request is, used by model cascades"),
}
# Optional arrivals column: ``service_s`` (float64), a per-request service time that an unbatched
# replica uses instead of its service-time curve (the hook that lets the fast path and the simpy
# model run on the very same arrays). ``origin_region`` (object): with regions
# (``scaleplay.regions``), the name of the region the request's user is in; drawn from the regions'
# shares when the column is absent. ``cached_tokens`` (int64, in [0, tokens_in - 1]): prompt tokens
# whose KV the replica already holds (sent by a prefill pool, ``scaleplay.disagg``), which a continuous
# batcher does not prefill again; only continuous batchers read it. ``prefix_blocks`` (object: a
# sequence of integer hashes, one per ``prefix_block_tokens`` prompt tokens, as the Mooncake trace has
# them): read by a continuous batcher with ``prefix_caching=True``, which skips the prefill of the
# leading blocks its replica still holds.

#: Every request that arrived ends in exactly one of these.
OUTCOMES: tuple[str, ...] = ("completed", "rejected", "timed_out", "in_flight")

#: Why the gateway refused a request ("" for requests it admitted). ``"overflow"``: the bounded queue
#: was full and the request went to the offline tier instead (``SimulationResult.offline``).
#: ``"too_long"``: a continuous-batching replica could never hold its prompt and answer in its KV
#: cache (or, prefilling first, its prompt in one iteration's token budget).
REJECT_REASONS: tuple[str, ...] = ("", "queue_full", "rate_limited", "shed", "overflow", "too_long")

#: One row per arrived request: the handoff timestamps and the outcome.
REQUEST_LOG_COLUMNS: dict[str, tuple[str, str]] = {
    "request_id": ("int64", "from the arrivals table"),
    "class_name": ("object", "from the arrivals table"),
    "priority": ("int64", "from the arrivals table"),
    "tokens_in": ("int64", "from the arrivals table"),
    "tokens_out": ("int64", "from the arrivals table"),
    "arrived_s": ("float64", "reached the gateway (the arrivals' t_s: the inbound hop is folded in)"),
    "admitted_s": ("float64", "admitted by the gateway, at once: equals arrived_s (NaN if rejected)"),
    "features_ready_s": ("float64", "ingestion done: features fetched or read from cache"),
    "model_start_s": ("float64", "its batch started on a replica"),
    "model_end_s": ("float64", "its batch finished"),
    "responded_s": ("float64", "model_end_s + the network hop back to the client (NaN unless completed)"),
    "replica": ("int64", "replica that served it (-1 if none)"),
    "batch_size": ("int64", "size of the batch it was served in (0 if none)"),
    "outcome": ("object", "one of OUTCOMES; completed means the response arrived by the horizon"),
    "reject_reason": ("object", "one of REJECT_REASONS"),
    "latency_s": ("float64", "responded_s - arrived_s (NaN unless completed)"),
}

#: Extra RequestLog columns, appended after ``REQUEST_LOG_COLUMNS`` only when the platform has a cascade
#: or a time-box (``scaleplay.controls``). With a cascade, ``model_start_s`` is the start of the first
#: model's batch and ``model_end_s`` the end of the answering one; ``replica`` and ``batch_size`` are
#: the answering model's.
CONTROL_LOG_COLUMNS: dict[str, tuple[str, str]] = {
    "difficulty": ("float64", "from the arrivals table"),
    "model": ("object", "what answered a completed request: a pool's name, 'cache' or 'human' ('' if none)"),
    "escalated_s": ("float64", "the small model passed it on to the large one (NaN if it did not)"),
    "large_start_s": (
        "float64",
        "an escalated request left the large model's line: its batch started, or its budget ran out "
        "(NaN if it did not escalate or still waited at the horizon)",
    ),
    "degraded": ("bool", "answered by a fallback (small model or cache) because its time budget ran short"),
}

#: Extra RequestLog columns, appended only when a pool of the platform batches continuously
#: (``config.ContinuousBatcherConfig``): after ``CONTROL_LOG_COLUMNS`` (if any), before
#: ``REGION_LOG_COLUMNS`` (if any). ``ttft_s`` and ``tpot_s`` are the client's view of the answer's own
#: tokens, so they are NaN when the recorded first token is not the answer's: a request not completed,
#: one a static pool answered (no first token), a time-box's fallback (``degraded``), one whose first
#: token was made before its answer's batch started (a batch a fault cut short) or before it escalated
#: (the small model's: the engine keeps a request's first first token only). The narrow log
#: (``log_columns="narrow"``) gains ``ttft_s`` and ``tpot_s``.
ENGINE_LOG_COLUMNS: dict[str, tuple[str, str]] = {
    "first_token_s": (
        "float64",
        "its prefill ended and its first token was made, on the model side (NaN if it never was)",
    ),
    "ttft_s": (
        "float64",
        "time to first token as the client sees it: first_token_s + the answer's way back "
        "(responded_s - model_end_s) - arrived_s (NaN unless completed; see above)",
    ),
    "tpot_s": (
        "float64",
        "time per output token after the first: (model_end_s - first_token_s) / (tokens_out - 1) "
        "(NaN unless completed with tokens_out >= 2; see above)",
    ),
    "preemptions": ("int64", "times the KV cache ran out and it gave its blocks back to recompute later"),
}

#: Extra RequestLog column, appended right after ``ENGINE_LOG_COLUMNS`` only when a pool has prefix
#: caching (``ContinuousBatcherConfig(prefix_caching=True)``, ``sim.prefix``).
PREFIX_LOG_COLUMNS: dict[str, tuple[str, str]] = {
    "cached_tokens": (
        "int64",
        "prompt tokens it found in its replica's prefix cache when last admitted, not prefilled then "
        "(min(hit blocks x prefix_block_tokens, tokens_in - 1); a preempted request recomputes them; "
        "0 if never admitted)",
    ),
}

#: Extra RequestLog columns, appended last only when the platform has regions (``scaleplay.regions``).
#: With regions ``responded_s`` adds the round trip between the two regions to the network hop.
REGION_LOG_COLUMNS: dict[str, tuple[str, str]] = {
    "origin_region": ("object", "the region of the request's user"),
    "region": ("object", "the region that served it, or holds it still ('' if rejected)"),
    "rtt_s": ("float64", "round trip between origin_region and region, in responded_s (NaN if rejected)"),
    "retries": ("int64", "batches it lost to failed replicas before the one that answered it"),
}

#: Platform state on a regular time grid; counts are per interval, levels are time averages.
TIMELINE_COLUMNS: dict[str, tuple[str, str]] = {
    "t_s": ("float64", "start of the interval"),
    "queue_length": ("float64", "time-average number of requests in a line: features ready, no replica yet"),
    "busy_replicas": ("float64", "time-average number of replicas running a batch"),
    "replicas": ("float64", "time-average number of replicas provisioned"),
    "mean_batch_size": ("float64", "mean size of the batches started in the interval (NaN if none)"),
    "arrived": ("int64", "requests that arrived in the interval"),
    "admitted": ("int64", "requests admitted in the interval"),
    "rejected": ("int64", "requests rejected in the interval"),
    "completed": ("int64", "requests completed in the interval"),
    "timed_out": ("int64", "requests that timed out in the interval"),
}

#: Extra Timeline columns, appended only when the platform has a surge-mode controller.
CONTROL_TIMELINE_COLUMNS: dict[str, tuple[str, str]] = {
    "mode": ("object", "the most severe of controls.MODES in force during the interval"),
}

#: Extra Timeline columns, appended last only when a pool batches continuously; they cover every
#: continuous pool together (``metrics.engine_timeline`` splits them by pool). Each replica's KV cache
#: holds ``total_blocks x block_tokens`` tokens; the cache in use over a run of iterations is taken as
#: the ``kv_tokens`` the run ended with, held over the whole run (a decode run's contexts grow through
#: it, and sequences that finish leave at its end), and as empty while the replica is idle. A run
#: still going at the horizon is not recorded, so it is missing from the last moments of a run with
#: ``horizon_s``.
ENGINE_TIMELINE_COLUMNS: dict[str, tuple[str, str]] = {
    "kv_cache_utilization": (
        "float64",
        "time-average share of the KV-cache capacity of the ready continuous replicas in use "
        "(NaN if none was ready)",
    ),
    "running_seqs": ("float64", "time-average number of sequences decoding (decode_seqs of the runs)"),
    "preemptions": ("int64", "sequences preempted in the interval (KV cache full)"),
}

#: ``metrics.engine_timeline``: one row per continuous pool and interval, in pool then time order.
ENGINE_POOL_TIMELINE_COLUMNS: dict[str, tuple[str, str]] = {
    "pool": ("object", "the pool's name (with regions 'region' or 'region/small')"),
    "t_s": ("float64", "start of the interval"),
    "kv_cache_utilization": ("float64", "as in ENGINE_TIMELINE_COLUMNS, for this pool's replicas"),
    "running_seqs": ("float64", "as in ENGINE_TIMELINE_COLUMNS, for this pool's replicas"),
    "waiting_seqs": (
        "float64",
        "time-average number of requests in this pool's line: joined it, not started yet "
        "(the Timeline's queue_length, split by pool; not the preempted ones waiting to recompute)",
    ),
    "preemptions": ("int64", "this pool's sequences preempted in the interval"),
}

#: ``SimulationResult.iterations``: one row per run of iterations of a continuous-batching replica
#: (a prefill iteration, or decode iterations while the batch stays the same), in order of their end.
ITERATION_COLUMNS: dict[str, tuple[str, str]] = {
    "pool": ("object", "the pool's name"),
    "replica": ("int64", "the replica within its pool"),
    "start_s": ("float64", "the run's first iteration started"),
    "end_s": ("float64", "its last iteration ended"),
    "steps": ("int64", "decode iterations in the run (0: a prefill iteration without decodes)"),
    "decode_seqs": ("int64", "sequences decoding one token an iteration throughout the run"),
    "prefill_tokens": ("int64", "prompt tokens computed in the run"),
    "kv_tokens": ("int64", "tokens held in the replica's KV cache at the run's end"),
}

#: ``SimulationResult.preemptions``: one row per preemption (a sequence gave back its KV blocks).
PREEMPTION_COLUMNS: dict[str, tuple[str, str]] = {
    "t_s": ("float64", "when"),
    "pool": ("object", "the pool's name"),
}


def check_columns(frame: pd.DataFrame, columns: dict[str, tuple[str, str]], name: str) -> None:
    """Raise ``ValueError`` naming every column of ``columns`` that ``frame`` lacks."""
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{name} must be a pandas DataFrame, got {_kind(frame)}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} lacks the columns {missing}; it needs {list(columns)}")
