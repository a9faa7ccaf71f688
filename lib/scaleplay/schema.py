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
# shares when the column is absent.

#: Every request that arrived ends in exactly one of these.
OUTCOMES: tuple[str, ...] = ("completed", "rejected", "timed_out", "in_flight")

#: Why the gateway refused a request ("" for requests it admitted). ``"overflow"``: the bounded queue
#: was full and the request went to the offline tier instead (``SimulationResult.offline``).
REJECT_REASONS: tuple[str, ...] = ("", "queue_full", "rate_limited", "shed", "overflow")

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


def check_columns(frame: pd.DataFrame, columns: dict[str, tuple[str, str]], name: str) -> None:
    """Raise ``ValueError`` naming every column of ``columns`` that ``frame`` lacks."""
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{name} must be a pandas DataFrame, got {_kind(frame)}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} lacks the columns {missing}; it needs {list(columns)}")
