"""Trace replay: a recorded request log as an arrivals table.

``load_trace`` reads a CSV file (or takes a DataFrame) with one row per request, checks it and
returns the arrivals table of ``schema.ARRIVAL_COLUMNS``, ready for the platform in place of a
synthetic ``workload.generate_arrivals`` table.

Times come either as **timestamps** (strings or datetimes, parsed; ``t_s`` is seconds after the
first request) or as **offsets** in seconds (numbers, kept as they are: they must already be
seconds from the start of the trace, so none may be negative). An optional window
``window_s=(start, end)`` keeps the requests with ``start <= t < end`` on the trace's own clock and
moves ``start`` to 0; then ``speedup`` divides every time (2 replays the trace twice as fast,
doubling its rate). Traces record no difficulty: unless a column gives it, each request draws one
from a uniform distribution on the named stream ``"trace.difficulty"`` of ``seed``.

Presets name the columns of known public traces; ``preset="azure_llm_2023"`` reads the Azure LLM
inference traces 2023 (columns ``TIMESTAMP``, ``ContextTokens``, ``GeneratedTokens``; Patel et al.,
"Splitwise", ISCA 2024; CC-BY 4.0). Measured with ``arrival_stats`` on the two files of that
release: the conversation trace has 19 366 requests over 3 502 s (5.53 req/s, inter-arrival CV
1.09, busiest whole minute 1.52x the mean minute); the code trace 8 819 requests over 3 436 s
(2.57 req/s, inter-arrival CV 13.2, busiest whole minute 4.18x).

``load_mooncake_trace`` reads the Mooncake (Kimi) conversation trace (JSON lines: ``timestamp`` in
milliseconds, ``input_length``, ``output_length``, ``hash_ids``; Qin et al., FAST 2025; Apache-2.0).
Each ``hash_ids`` entry names one ``MOONCAKE_BLOCK_TOKENS`` = 512-token block of the prompt, the last
one partial; requests whose leading ids agree share those prompt blocks, which a prefix cache can
reuse (``scaleplay.prefixcache``). The table gains a column ``prefix_blocks`` (a tuple of ids per
request), which the platform ignores. The package ships the trace's first 2 000 requests
(``data/traces/``, with its licence and a README saying how the slice was cut).

Bounds, each refused with the file, the column and the first bad row: token counts and priorities
at most 10**9 and 10**6 (``MAX_TOKENS``, ``MAX_PRIORITY``; they fit an int64), offsets at most
``MAX_TRACE_S`` = 1e12 s, ``speedup`` in [1e-6, 1e6]. A CSV file must be UTF-8 text with a header
row and no row longer than the header.
"""

from __future__ import annotations

import codecs
import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from importlib import resources
from numbers import Integral

import numpy as np
import pandas as pd

from ._validate import (
    MAX_PRIORITY,
    MAX_SEED,
    MAX_TOKENS,
    _kind,
    _show,
    check_in,
    check_int,
    check_numbers,
    check_positive,
    check_range,
)
from .rng import stream
from .schema import ARRIVAL_COLUMNS

__all__ = [
    "TRACE_PRESETS",
    "MAX_TRACE_S",
    "MOONCAKE_BLOCK_TOKENS",
    "MOONCAKE_SLICE",
    "load_trace",
    "load_mooncake_trace",
    "interarrival_cv",
    "arrival_stats",
]

#: The latest offset a trace may hold, in seconds (about 31 700 years).
MAX_TRACE_S = 1e12
#: The most bins ``arrival_stats`` counts.
MAX_BINS = 10**7

#: Column names of known public traces, for ``load_trace(..., preset=name)``.
TRACE_PRESETS: dict[str, dict[str, str]] = {
    "azure_llm_2023": {
        "time_column": "TIMESTAMP",
        "tokens_in_column": "ContextTokens",
        "tokens_out_column": "GeneratedTokens",
        "time_unit": "timestamp",
    },
}

_TIME_UNITS = ("auto", "timestamp", "s", "ms")
_DEFAULTS = {
    "time_column": "t_s",
    "tokens_in_column": "tokens_in",
    "tokens_out_column": "tokens_out",
    "time_unit": "auto",
}


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _is_numeric(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)


def _floats(column: pd.Series) -> np.ndarray:
    """A numeric column as float64, missing values (``NaN``, ``pd.NA``) as ``NaN``."""
    return column.to_numpy(dtype=float, na_value=np.nan)


def _times_s(column: pd.Series, name: str, unit: str, where: str) -> tuple[np.ndarray, bool]:
    """The time column as float seconds (offsets kept, timestamps made relative to the first row),
    and whether it held timestamps."""
    numeric = _is_numeric(column)
    if unit == "auto":
        unit = "s" if numeric else "timestamp"
    if unit == "timestamp":
        if column.isna().any():
            row = _first_bad(column.isna().to_numpy())
            raise ValueError(f"{where}: time column {name!r} has missing values (first at row {row})")
        try:
            stamps = pd.to_datetime(column, format="ISO8601")
        except (ValueError, TypeError, OverflowError) as exc:
            raise ValueError(
                f"{where}: time column {name!r} holds values that are not timestamps: {_show(str(exc))}"
            ) from None
        if getattr(stamps.dt, "tz", None) is not None:
            stamps = stamps.dt.tz_convert("UTC")
        return (stamps - stamps.iloc[0]).dt.total_seconds().to_numpy(dtype=float), True
    if not numeric:
        raise ValueError(
            f"{where}: time column {name!r} must be numeric for time_unit={unit!r}, got dtype {column.dtype}"
        )
    seconds = _floats(column)
    if np.isnan(seconds).any():
        raise ValueError(
            f"{where}: time column {name!r} has NaN values (first at row {_first_bad(np.isnan(seconds))})"
        )
    if unit == "ms":
        seconds = seconds / 1000.0
    if (seconds < 0).any():
        row = _first_bad(seconds < 0)
        raise ValueError(
            f"{where}: time column {name!r} has negative times "
            f"(first at row {row}: {float(seconds[row])!r} s)"
        )
    if not (seconds <= MAX_TRACE_S).all():
        row = _first_bad(~(seconds <= MAX_TRACE_S))
        raise ValueError(
            f"{where}: time column {name!r} must hold offsets <= {MAX_TRACE_S:g} s "
            f"(row {row}: {float(seconds[row])!r} s)"
        )
    return seconds, False


def _counts(column: pd.Series, name: str, what: str, maximum: int, where: str) -> np.ndarray:
    """A column of whole numbers in [0, ``maximum``] as int64 (token counts or priorities)."""
    if column.dtype == object:  # pandas keeps integers beyond uint64 as Python ints
        converted = pd.to_numeric(column, errors="coerce")
        bad = (converted.isna() & column.notna()).to_numpy() | column.map(type).eq(bool).to_numpy()
        if not bad.any():
            column = converted
    if not _is_numeric(column):
        raise ValueError(f"{where}: {what} column {name!r} must be numeric, got dtype {column.dtype}")
    values = _floats(column)
    if np.isnan(values).any():
        raise ValueError(
            f"{where}: {what} column {name!r} has NaN values (first at row {_first_bad(np.isnan(values))})"
        )
    if (values < 0).any():
        row = _first_bad(values < 0)
        raise ValueError(
            f"{where}: {what} column {name!r} has negative {'counts' if what == 'token' else 'values'} "
            f"(first at row {row}: {float(values[row])!r})"
        )
    if not (values <= maximum).all():
        row = _first_bad(~(values <= maximum))
        raise ValueError(
            f"{where}: {what} column {name!r} must hold values <= {maximum:,} "
            f"(row {row}: {float(values[row])!r})"
        )
    if (values != np.round(values)).any():
        row = _first_bad(values != np.round(values))
        raise ValueError(
            f"{where}: {what} column {name!r} must hold whole numbers (row {row}: {float(values[row])!r})"
        )
    return values.astype(np.int64)


def _column_name(name: str, value: object) -> None:
    """A column label: a string or an integer."""
    if isinstance(value, bool) or not isinstance(value, str | Integral):
        raise TypeError(f"{name} must be a column name (a string), got {_kind(value)}")


def _read_csv(source: str | os.PathLike[str]) -> tuple[pd.DataFrame, str]:
    """A UTF-8 CSV file with a header row; every refusal names the file."""
    try:
        label = os.fspath(source)
        if isinstance(label, bytes):
            label = os.fsdecode(label)
        exists, is_file = os.path.exists(label), os.path.isfile(label)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"source {_show(source)} is not a usable path: {_show(str(exc))}") from None
    shown = _show(label)
    if not exists:
        raise FileNotFoundError(f"trace file {shown} does not exist")
    if not is_file:
        raise ValueError(f"trace file {shown} is not a file (a directory?)")
    with open(label, "rb") as stream:
        head = stream.read(1 << 16)
    if b"\x00" in head:
        raise ValueError(f"trace file {shown} is binary (it holds NUL bytes), not CSV text")
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"trace file {shown} is not UTF-8 text (byte {head[exc.start]:#04x} at offset {exc.start}): "
            "text in another encoding such as Latin-1, or a binary file; save it as UTF-8"
        ) from None
    if os.path.getsize(label) == 0:
        raise ValueError(
            f"trace file {shown} is empty: a CSV file needs a header row and one row per request"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(label, encoding="utf-8", index_col=False, on_bad_lines="error")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"trace file {shown} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
            f"{exc.start}): a binary file, or text in another encoding such as Latin-1; save it as UTF-8"
        ) from None
    except pd.errors.EmptyDataError:
        raise ValueError(f"trace file {shown} holds no header row (only blank lines)") from None
    except pd.errors.ParserWarning:
        raise ValueError(f"trace file {shown} has a row with more fields than its header row") from None
    except (pd.errors.ParserError, ValueError) as exc:
        message = " ".join(str(exc).split())[:200]
        raise ValueError(f"trace file {shown} is not a readable CSV table: {message}") from None
    return frame, label


def load_trace(
    source: str | os.PathLike[str] | pd.DataFrame,
    *,
    preset: str | None = None,
    time_column: str | None = None,
    tokens_in_column: str | None = None,
    tokens_out_column: str | None = None,
    time_unit: str | None = None,
    class_column: str | None = None,
    priority_column: str | None = None,
    difficulty_column: str | None = None,
    class_name: str = "trace",
    priority: int = 0,
    class_priorities: dict[str, int] | None = None,
    sort: bool = False,
    speedup: float = 1.0,
    window_s: Sequence[float] | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Read a request trace into the arrivals table (``schema.ARRIVAL_COLUMNS``).

    ``source``: a CSV path or a DataFrame. ``preset`` (a key of ``TRACE_PRESETS``) fills in the
    column names and time unit of a known trace; explicit arguments override it. Without either,
    the columns are ``t_s``, ``tokens_in`` and ``tokens_out``.

    ``time_unit``: ``"timestamp"`` (parsed; ``t_s`` counts from the first request), ``"s"`` or
    ``"ms"`` (offsets, kept), or ``"auto"`` (numbers are seconds, anything else timestamps).

    Classes: ``class_column`` names a column of class names, else every request is
    ``class_name``. Priorities: ``priority_column``, else ``class_priorities[class]`` (a class
    missing from it is an error), else ``priority``. ``difficulty_column`` gives difficulties in
    [0, 1]; without it they are drawn uniformly from the stream ``"trace.difficulty"`` of ``seed``.

    Checks, each raising ``ValueError`` that names the file (or "DataFrame"), the column and the
    first bad row: missing columns, missing/NaN values, negative times or offsets above
    ``MAX_TRACE_S``, times out of order (``sort=True`` sorts them instead, stably), negative,
    fractional or too large token counts (at most ``MAX_TOKENS`` = 10**9) and priorities (at most
    ``MAX_PRIORITY`` = 10**6). A file that is empty, not UTF-8 or not a CSV table is refused by name.

    ``window_s=(start, end)``: keep ``start <= t < end`` (seconds on the trace's clock, before the
    speed-up), then shift ``start`` to 0. ``speedup`` in [1e-6, 1e6]: divide all times by it.

    ``frame.attrs``: ``source``, ``duration_s`` (the window's length, or the last arrival's time,
    over ``speedup``) and ``speedup``.
    """
    if preset is not None:
        check_in("preset", preset, tuple(TRACE_PRESETS))
    for name, value in (
        ("time_column", time_column),
        ("tokens_in_column", tokens_in_column),
        ("tokens_out_column", tokens_out_column),
        ("class_column", class_column),
        ("priority_column", priority_column),
        ("difficulty_column", difficulty_column),
    ):
        if value is not None:
            _column_name(name, value)
    if time_unit is not None:
        check_in("time_unit", time_unit, _TIME_UNITS)
    given = {
        "time_column": time_column,
        "tokens_in_column": tokens_in_column,
        "tokens_out_column": tokens_out_column,
        "time_unit": time_unit,
    }
    base = TRACE_PRESETS[preset] if preset is not None else _DEFAULTS
    cfg = {k: (v if v is not None else base.get(k, _DEFAULTS[k])) for k, v in given.items()}
    check_in("time_unit", cfg["time_unit"], _TIME_UNITS)
    speedup = check_range("speedup", speedup, 1e-6, 1e6)
    seed = check_int("seed", seed, minimum=0, maximum=MAX_SEED)
    priority = check_int("priority", priority, minimum=0, maximum=MAX_PRIORITY)
    if not isinstance(sort, bool):
        raise TypeError(f"sort must be a bool, got {_kind(sort)}")
    if class_column is None and (not isinstance(class_name, str) or not class_name):
        raise ValueError(f"class_name must be a non-empty string, got {_kind(class_name)}")
    if class_priorities is not None:
        if not isinstance(class_priorities, Mapping):
            raise TypeError(
                f"class_priorities must map class names to priorities, got {_kind(class_priorities)}"
            )
        for k, v in class_priorities.items():
            check_int(f"class_priorities[{_show(k)}]", v, minimum=0, maximum=MAX_PRIORITY)
    window = None
    if window_s is not None:
        window = check_numbers("window_s", window_s, size=2)
        start, end = window
        if not (math.isfinite(start) and math.isfinite(end) and 0 <= start < end):
            raise ValueError(
                f"window_s must be (start, end) with 0 <= start < end, finite, got {_show(window_s)}"
            )

    if isinstance(source, pd.DataFrame):
        frame, label = source, "DataFrame"
    elif isinstance(source, str | bytes | os.PathLike):
        frame, label = _read_csv(source)
    else:
        raise TypeError(f"source must be a CSV path or a DataFrame, got {_kind(source)}")
    where = f"trace {_show(label)}" if label != "DataFrame" else "trace DataFrame"

    columns = {k: cfg[k] for k in ("time_column", "tokens_in_column", "tokens_out_column")}
    columns.update(
        class_column=class_column, priority_column=priority_column, difficulty_column=difficulty_column
    )
    needed = [c for c in columns.values() if c is not None]
    missing = {k: c for k, c in columns.items() if c is not None and c not in frame.columns}
    if missing:
        asked = ", ".join(f"{k}={_show(c)}" for k, c in missing.items())
        raise ValueError(
            f"{where} lacks the columns {_show(list(missing.values()))} ({asked}); "
            f"it has {_show(list(frame.columns))} "
            "(set time_column=, tokens_in_column=, tokens_out_column= or a preset)"
        )
    repeated = [c for c in needed if not isinstance(frame[c], pd.Series)]
    if repeated:
        raise ValueError(f"{where} has more than one column named {_show(repeated[0])}")
    if len(frame) == 0:
        raise ValueError(f"{where} has no rows")

    time_column = cfg["time_column"]
    t, from_timestamps = _times_s(frame[time_column], time_column, cfg["time_unit"], where)
    tokens_in = _counts(frame[cfg["tokens_in_column"]], cfg["tokens_in_column"], "token", MAX_TOKENS, where)
    tokens_out = _counts(
        frame[cfg["tokens_out_column"]], cfg["tokens_out_column"], "token", MAX_TOKENS, where
    )

    n = t.size
    if class_column is not None:
        classes = frame[class_column]
        if classes.isna().any():
            row = _first_bad(classes.isna().to_numpy())
            raise ValueError(
                f"{where}: class column {class_column!r} has missing values (first at row {row})"
            )
        names = classes.astype(str).to_numpy(dtype=object)
    else:
        names = np.full(n, class_name, dtype=object)

    if priority_column is not None:
        prio = _counts(frame[priority_column], priority_column, "priority", MAX_PRIORITY, where)
    elif class_priorities is not None:
        unknown = sorted(set(names) - set(class_priorities))
        if unknown:
            raise ValueError(
                f"class_priorities lacks the classes {_show(unknown)}; "
                f"it has {_show(sorted(map(str, class_priorities)))}"
            )
        prio = np.array([class_priorities[c] for c in names], dtype=np.int64)
    else:
        prio = np.full(n, priority, dtype=np.int64)

    if difficulty_column is not None:
        column = frame[difficulty_column]
        if not _is_numeric(column):
            raise ValueError(
                f"{where}: difficulty column {difficulty_column!r} must be numeric, got dtype {column.dtype}"
            )
        difficulty = _floats(column)
        bad = ~((difficulty >= 0) & (difficulty <= 1))
        if bad.any():
            row = _first_bad(bad)
            raise ValueError(
                f"{where}: difficulty column {difficulty_column!r} must lie in [0, 1] "
                f"(row {row}: {float(difficulty[row])!r})"
            )
    else:
        difficulty = stream(seed, "trace.difficulty").random(n)

    order = np.arange(n)
    backwards = np.diff(t) < 0
    if backwards.any():
        if not sort:
            row = _first_bad(backwards) + 1
            raise ValueError(
                f"{where}: time column {time_column!r} is not sorted: row {row} ({float(t[row])!r} s) "
                f"comes before row {row - 1} ({float(t[row - 1])!r} s); pass sort=True to sort the trace"
            )
        order = np.argsort(t, kind="stable")
        if from_timestamps:
            t = t - t[order[0]]  # relative to the earliest request, not the first row

    if window is not None:
        start, end = window
        order = order[(t[order] >= start) & (t[order] < end)]
        t = t - start
        duration = (end - start) / speedup
    else:
        duration = (float(t[order].max()) if order.size else 0.0) / speedup

    result = pd.DataFrame(
        {
            "request_id": np.arange(order.size, dtype=np.int64),
            "t_s": t[order] / speedup,
            "class_name": pd.Series(names[order], dtype=object),
            "priority": prio[order],
            "tokens_in": tokens_in[order],
            "tokens_out": tokens_out[order],
            "difficulty": difficulty[order],
        },
        columns=list(ARRIVAL_COLUMNS),
    )
    result.attrs.update({"source": label, "duration_s": duration, "speedup": speedup})
    return result


#: Prompt tokens per block of a Mooncake trace's ``hash_ids``.
MOONCAKE_BLOCK_TOKENS = 512
#: The shipped slice of the Mooncake conversation trace (its first 2 000 lines), in ``data/traces/``.
MOONCAKE_SLICE = "mooncake_conversation_2000.jsonl"
_MOONCAKE_FIELDS = ("timestamp", "input_length", "output_length", "hash_ids")


def _read_mooncake(source: str | os.PathLike[str] | None) -> tuple[list[dict], str]:
    """The JSON objects of a Mooncake trace file, one per non-blank line, and the file's label."""
    if source is None:
        path = resources.files("scaleplay").joinpath("data", "traces", MOONCAKE_SLICE)
        label = f"scaleplay/data/traces/{MOONCAKE_SLICE}"
        text = path.read_text(encoding="utf-8")
    else:
        if not isinstance(source, str | os.PathLike):
            raise TypeError(f"source must be a path to a JSON-lines file or None, got {_kind(source)}")
        label = os.fspath(source)
        if not os.path.isfile(label):
            raise FileNotFoundError(f"trace file {_show(label)} does not exist or is not a file")
        try:
            with open(label, encoding="utf-8") as f:
                text = f.read()
        except UnicodeDecodeError:
            raise ValueError(f"trace file {_show(label)} is not UTF-8 text") from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"trace file {_show(label)} line {number} is not JSON: {exc.msg}") from None
        if not isinstance(row, dict) or any(k not in row for k in _MOONCAKE_FIELDS):
            raise ValueError(
                f"trace file {_show(label)} line {number} must be an object with the fields "
                f"{list(_MOONCAKE_FIELDS)}, got {_show(line[:120])}"
            )
        rows.append(row)
    if not rows:
        raise ValueError(f"trace file {_show(label)} holds no requests")
    return rows, label


def _hash_ids(value: object, row: int, label: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
        isinstance(h, int) and not isinstance(h, bool) and h >= 0 for h in value
    ):
        raise ValueError(
            f"trace {_show(label)}: hash_ids of row {row} must be a list of non-negative integers, "
            f"got {_show(value)}"
        )
    return tuple(value)


def load_mooncake_trace(
    source: str | os.PathLike[str] | None = None,
    *,
    class_name: str = "mooncake",
    priority: int = 0,
    sort: bool = False,
    speedup: float = 1.0,
    window_s: Sequence[float] | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Read a Mooncake trace (JSON lines) into the arrivals table, plus its prefix blocks.

    ``source``: a ``.jsonl`` path, or ``None`` for the shipped slice (``MOONCAKE_SLICE``: the first
    2 000 requests of the conversation trace). ``t_s`` is ``timestamp`` / 1000, ``tokens_in`` and
    ``tokens_out`` are ``input_length`` and ``output_length``; every request is ``class_name`` at
    ``priority``, with a difficulty drawn from the stream ``"trace.difficulty"`` of ``seed``.
    ``sort``, ``speedup`` and ``window_s`` act as in ``load_trace``, which checks the columns.

    The extra column ``prefix_blocks`` holds each request's ``hash_ids`` as a tuple: one id per
    ``MOONCAKE_BLOCK_TOKENS`` (512) prompt tokens, so ``ceil(tokens_in / 512)`` of them (checked).
    ``frame.attrs`` adds ``block_tokens`` = 512 to ``load_trace``'s.
    """
    rows, label = _read_mooncake(source)
    blocks = [_hash_ids(r["hash_ids"], i, label) for i, r in enumerate(rows)]
    frame = pd.DataFrame({k: [r[k] for r in rows] for k in _MOONCAKE_FIELDS[:3]})
    table = load_trace(
        frame,
        time_column="timestamp",
        tokens_in_column="input_length",
        tokens_out_column="output_length",
        time_unit="ms",
        class_name=class_name,
        priority=priority,
        sort=sort,
        speedup=speedup,
        window_s=window_s,
        seed=seed,
    )
    tokens_in = frame["input_length"].to_numpy(dtype=np.int64)
    needed = -(-tokens_in // MOONCAKE_BLOCK_TOKENS)
    counts = np.array([len(b) for b in blocks], dtype=np.int64)
    if (counts != needed).any():
        row = _first_bad(counts != needed)
        raise ValueError(
            f"trace {_show(label)}: row {row} has {int(counts[row])} hash_ids for {int(tokens_in[row])} "
            f"input tokens; a {MOONCAKE_BLOCK_TOKENS}-token block each needs {int(needed[row])}"
        )
    # The rows load_trace kept, in its order: a stable sort by time, then the window (as it does).
    t = frame["timestamp"].to_numpy(dtype=float) / 1000.0
    order = np.argsort(t, kind="stable")
    if window_s is not None:
        start, end = (float(x) for x in window_s)
        order = order[(t[order] >= start) & (t[order] < end)]
    table["prefix_blocks"] = pd.Series([blocks[i] for i in order], index=table.index, dtype=object)
    table.attrs.update({"block_tokens": MOONCAKE_BLOCK_TOKENS, "source": label})
    return table


def _arrival_times(arrivals: pd.DataFrame | np.ndarray | Sequence[float]) -> np.ndarray:
    """Sorted, finite arrival times from a table's ``t_s`` or a list or 1-d array of numbers."""
    if isinstance(arrivals, pd.DataFrame):
        if "t_s" not in arrivals.columns:
            raise ValueError(f"arrivals lacks the column 't_s'; it has {_show(list(arrivals.columns))}")
        column = arrivals["t_s"]
        if not isinstance(column, pd.Series) or not _is_numeric(column):
            raise ValueError("arrivals' column 't_s' must be one numeric column")
        t = _floats(column)
    else:
        t = np.asarray(check_numbers("arrivals", arrivals, max_size=10**9), dtype=float)
    if not np.isfinite(t).all():
        row = _first_bad(~np.isfinite(t))
        raise ValueError(f"arrivals' times must be finite numbers (row {row}: {float(t[row])!r})")
    if (np.diff(t) < 0).any():
        raise ValueError("arrivals' times must be sorted")
    return t


def interarrival_cv(arrivals: pd.DataFrame | np.ndarray | Sequence[float]) -> float:
    """Coefficient of variation (std / mean, ``ddof=1``) of the gaps between arrivals.

    ``arrivals``: an arrivals table (its ``t_s``) or sorted times. Poisson arrivals give about 1.
    ``NaN`` with fewer than three arrivals. Times must be finite and sorted.
    """
    gaps = np.diff(_arrival_times(arrivals))
    if gaps.size < 2 or gaps.mean() == 0:
        return math.nan
    return float(gaps.std(ddof=1) / gaps.mean())


def arrival_stats(arrivals: pd.DataFrame | np.ndarray | Sequence[float], *, bin_s: float = 60.0) -> pd.Series:
    """Shape of an arrival stream: count, span, mean rate, inter-arrival CV, busiest bin.

    ``duration_s`` is ``arrivals.attrs["duration_s"]`` when a table carries it, else the time of
    the last arrival. ``peak_bin_to_mean``: the busiest ``bin_s``-second bin's count over the mean
    count per bin (bins from 0, the last partial bin left out unless it is the only one). Times lie
    in [0, ``MAX_TRACE_S``]; at most ``MAX_BINS`` = 10**7 bins.
    """
    bin_s = check_positive("bin_s", bin_s)
    t = _arrival_times(arrivals)
    duration = None
    if isinstance(arrivals, pd.DataFrame):
        duration = arrivals.attrs.get("duration_s")
    if duration is None:
        duration = float(t[-1]) if t.size else 0.0
    duration = check_range("arrivals.attrs['duration_s']", duration, 0.0, MAX_TRACE_S, unit=" s")
    if t.size and (t[0] < 0 or t[-1] > MAX_TRACE_S):
        raise ValueError(f"arrivals' times must lie in [0, {MAX_TRACE_S:g}] s, got {t[0]!r} .. {t[-1]!r}")
    if duration / bin_s > MAX_BINS:
        raise ValueError(
            f"bin_s={_show(bin_s)} cuts {duration:g} s into more than {MAX_BINS:,} bins; "
            "choose a larger bin_s"
        )
    n_bins = max(1, int(duration // bin_s))
    counts = np.bincount(np.minimum((t // bin_s).astype(np.int64), n_bins), minlength=n_bins + 1)[:n_bins]
    mean_count = counts.mean() if counts.size else math.nan
    return pd.Series(
        {
            "arrivals": float(t.size),
            "duration_s": float(duration),
            "mean_rate_per_s": t.size / duration if duration > 0 else math.nan,
            "interarrival_cv": interarrival_cv(t),
            "peak_bin_to_mean": float(counts.max() / mean_count) if mean_count > 0 else math.nan,
        },
        name="arrival_stats",
    )
