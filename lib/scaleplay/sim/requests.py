"""Every request of a run: the arrival columns and what the components stamp on it.

One typed numpy column per field, indexed by the request's row (8 bytes a float, 1 byte a state), so a
million requests cost tens of megabytes, not the boxed floats of Python lists. The components read and
write them through memoryviews, which index as fast as lists; the arrival columns are viewed, not
copied, and the log is built from the same buffers. A component that is off leaves its columns out
(``first_batch`` without a cascade, ``origin`` without regions).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .._validate import MAX_PRIORITY, MAX_SECONDS, MAX_TOKENS, _show
from ..schema import ARRIVAL_COLUMNS, REJECT_REASONS, check_columns

# A request's state while the model runs; outcomes are read off them at the end.
FETCHING, IN_LINE, IN_MODEL, REJECTED, TIMED_OUT, ANSWERED = range(1, 7)
QUEUE_FULL, RATE_LIMITED, SHED, OVERFLOW, TOO_LONG = (
    REJECT_REASONS.index(r) for r in ("queue_full", "rate_limited", "shed", "overflow", "too_long")
)


def view(values: np.ndarray, dtype: type) -> memoryview:
    """A memoryview of ``values`` as ``dtype`` (no copy when it already is one, contiguous)."""
    return memoryview(np.ascontiguousarray(values, dtype=dtype))


def floats(values: np.ndarray) -> memoryview:
    return view(values, np.float64)


def ints(values: np.ndarray) -> memoryview:
    return view(values, np.int64)


def filled(dtype: type, value: float, count: int) -> memoryview:
    return memoryview(np.full(count, value, dtype=dtype))


def as_numpy(values: memoryview | bytearray, dtype: type) -> np.ndarray:
    """A column as a numpy array over the same buffer."""
    return np.frombuffer(values, dtype=dtype) if len(values) else np.empty(0, dtype=dtype)


class Requests:
    """The per-request columns of one run (``n`` requests, in arrival order)."""

    def __init__(self, columns: dict[str, np.ndarray]) -> None:
        n = len(columns["t_s"])
        self.n = n
        self.t = floats(columns["t_s"])
        priority = columns["priority"]
        if n and priority.min() == priority.max():  # one class: no sort needed
            levels, rank = 1, np.zeros(n, dtype=np.int8)
        else:
            unique, rank = np.unique(priority, return_inverse=True)
            levels = max(len(unique), 1)
        self.levels = levels
        self.rank = view(rank, np.int8 if levels < 128 else np.int64)
        self.priority = ints(priority)
        self.tokens_in = ints(columns["tokens_in"])
        self.tokens_out = ints(columns["tokens_out"])
        self.state = filled(np.int8, 0, n)
        self.reason = filled(np.int8, 0, n)
        self.ready = filled(np.float64, math.nan, n)
        self.joined = self.ready  # when it joined its current line; a cascade keeps its own
        self.line_of = filled(np.int32, 0, n)
        self.batch_of = filled(np.int64, -1, n)
        # It has started once (escalated, or retried after a fault): no deadline any more.
        self.exempt = filled(np.int8, 0, n)
        service_s = columns.get("service_s")
        self.service_s = None if service_s is None else floats(service_s)
        cached = columns.get("cached_tokens")
        self.cached = None if cached is None else ints(cached)
        # Each request's prompt block hashes (a list of tuples), read only by prefix caching (``prefix``).
        self.prefix = columns.get("prefix_blocks")


def _check_class_names(names: pd.Series) -> None:
    """Every class name a non-empty string (checked in C, not one by one)."""
    values = names.cat.categories if isinstance(names.dtype, pd.CategoricalDtype) else names
    ok = pd.api.types.infer_dtype(values, skipna=False) in ("string", "empty") and not names.isna().any()
    if not ok or (names == "").any():
        bad = names.map(lambda x: not isinstance(x, str) or not x)
        row = int(np.argmax(bad.to_numpy(dtype=bool)))
        raise ValueError(
            f"arrivals['class_name'] must hold non-empty strings; row {row} holds {_show(names.iloc[row])}"
        )


def _cached_tokens(values: np.ndarray, tokens_in: np.ndarray) -> np.ndarray:
    """The optional ``cached_tokens`` column: prompt tokens whose KV is already on the replica (a KV
    transfer from a prefill pool), in ``[0, tokens_in - 1]``: at least one prompt token is computed, to
    make the next token."""
    if not np.issubdtype(values.dtype, np.integer):
        raise TypeError(f"arrivals['cached_tokens'] must hold integers, got dtype {values.dtype}")
    values = values.astype(np.int64, copy=False)
    bad = (values < 0) | (values > np.maximum(tokens_in - 1, 0))
    if bad.any():
        row = int(np.argmax(bad))
        raise ValueError(
            f"arrivals['cached_tokens'] must lie in [0, tokens_in - 1] (at least one prompt token is "
            f"computed); row {row} holds {values[row]} with tokens_in={tokens_in[row]}"
        )
    return values


def _prefix_blocks(values: np.ndarray) -> list[tuple]:
    """The optional ``prefix_blocks`` column: each request's prompt block hashes, in prompt order (the
    i-th names prompt tokens ``[i P, (i + 1) P)``, ``P = ContinuousBatcherConfig.prefix_block_tokens``),
    as a tuple of integers (a list, tuple or 1-d integer array each; empty for no shared prefix). How
    many blocks a prompt may have depends on ``P``: the prefix cache checks it (``sim.prefix``)."""
    rows: list[tuple] = []
    for row, blocks in enumerate(values.tolist()):
        if isinstance(blocks, np.ndarray) and blocks.ndim == 1:
            blocks = blocks.tolist()
        if not isinstance(blocks, tuple | list):
            raise TypeError(
                f"arrivals['prefix_blocks'] must hold a sequence of integer block hashes per request; "
                f"row {row} holds {_show(blocks)}"
            )
        rows.append(tuple(blocks))
    # every hash an integer (bools refused), checked by type over the flattened column, not one by one
    kinds = set(map(type, (h for blocks in rows for h in blocks)))
    if not all(issubclass(k, int | np.integer) and not issubclass(k, bool | np.bool_) for k in kinds):
        for row, blocks in enumerate(rows):
            for h in blocks:
                if isinstance(h, bool | np.bool_) or not isinstance(h, int | np.integer):
                    raise TypeError(
                        f"arrivals['prefix_blocks'] must hold integer block hashes; row {row} holds "
                        f"{_show(h)} ({type(h).__name__})"
                    )
    return rows


def arrival_columns(arrivals: pd.DataFrame) -> dict[str, np.ndarray]:
    """Check the arrivals table and return its columns as numpy arrays.

    Bounds: times within ``[0, MAX_SECONDS]``, token counts within ``[0, MAX_TOKENS]``, priorities within
    ``[0, MAX_PRIORITY]``, difficulties within [0, 1], class names non-empty strings, the optional
    ``cached_tokens`` within ``[0, tokens_in - 1]``, and the optional ``prefix_blocks`` sequences of
    integer hashes (``_prefix_blocks``; returned as a list of tuples).
    """
    check_columns(arrivals, ARRIVAL_COLUMNS, "arrivals")
    out: dict[str, np.ndarray] = {}
    for name in ("request_id", "priority", "tokens_in", "tokens_out"):
        values = arrivals[name].to_numpy()
        if not np.issubdtype(values.dtype, np.integer):
            raise TypeError(f"arrivals['{name}'] must hold integers, got dtype {values.dtype}")
        out[name] = values.astype(np.int64, copy=False)
    for name, most in (("priority", MAX_PRIORITY), ("tokens_in", MAX_TOKENS), ("tokens_out", MAX_TOKENS)):
        values = out[name]
        bad = (values < 0) | (values > most)
        if bad.any():
            row = int(np.argmax(bad))
            raise ValueError(f"arrivals['{name}'] must lie in [0, {most:,}]; row {row} holds {values[row]}")
    ids = out["request_id"]
    if len(ids) > 1 and not (ids[1:] > ids[:-1]).all():  # increasing ids need no sort
        ordered = np.sort(ids)
        repeats = ordered[1:] == ordered[:-1]
        if repeats.any():
            raise ValueError(
                f"arrivals['request_id'] must be unique; it holds repeats (e.g. {ordered[1:][repeats][0]})"
            )
    if "cached_tokens" in arrivals.columns:
        out["cached_tokens"] = _cached_tokens(arrivals["cached_tokens"].to_numpy(), out["tokens_in"])
    if "prefix_blocks" in arrivals.columns:
        out["prefix_blocks"] = _prefix_blocks(arrivals["prefix_blocks"].to_numpy())
    float_names = ["t_s"] + (["service_s"] if "service_s" in arrivals.columns else [])
    for name in float_names:
        values = arrivals[name].to_numpy()
        if not (np.issubdtype(values.dtype, np.floating) or np.issubdtype(values.dtype, np.integer)):
            raise TypeError(f"arrivals['{name}'] must hold numbers, got dtype {values.dtype}")
        values = values.astype(np.float64, copy=False)
        bad = ~((values >= 0) & (values <= MAX_SECONDS))  # NaN fails both
        if bad.any():
            row = int(np.argmax(bad))
            raise ValueError(
                f"arrivals['{name}'] must lie in [0, {MAX_SECONDS:g}] s; row {row} holds {values[row]!r}"
            )
        out[name] = values
    _check_class_names(arrivals["class_name"])
    # every arrivals table carries a difficulty: it must be one, whoever reads it
    values = arrivals["difficulty"].to_numpy()
    if not np.issubdtype(values.dtype, np.number):
        raise TypeError(f"arrivals['difficulty'] must hold numbers, got dtype {values.dtype}")
    values = values.astype(np.float64)
    bad = ~((values >= 0) & (values <= 1))
    if bad.any():
        row = int(np.argmax(bad))
        raise ValueError(f"arrivals['difficulty'] must lie in [0, 1]; row {row} holds {values[row]!r}")
    out["difficulty"] = values
    t = out["t_s"]
    if len(t) > 1 and (np.diff(t) < 0).any():
        row = int(np.argmax(np.diff(t) < 0))
        raise ValueError(
            f"arrivals must be sorted by t_s; row {row + 1} (t_s={t[row + 1]!r}) comes after "
            f"row {row} (t_s={t[row]!r})"
        )
    return out
