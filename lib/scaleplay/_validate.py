"""Input checks shared by every public constructor and function.

Each check returns the value (as a Python number) or raises a ``ValueError``/``TypeError`` whose
message names the parameter, the value received and what is allowed. Nothing is clipped. A value is
shown by ``_show``: its repr cut to at most ``SHOW_CHARS`` characters, never expanded in full (a
nested or huge value costs no more to show than a short one).

The bounds every module shares: token counts at most ``MAX_TOKENS``, priorities at most
``MAX_PRIORITY`` and seeds at most ``MAX_SEED``, so that each fits an int64 column with room to add;
every duration or moment a config holds at most ``MAX_SECONDS``, every count (replicas, queue places,
requests per second) at most ``MAX_COUNT``, so that sums of a few stay finite and every run ends.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Mapping
from numbers import Integral, Real

import numpy as np

__all__ = [
    "MAX_TOKENS",
    "MAX_PRIORITY",
    "MAX_SEED",
    "MAX_SECONDS",
    "MAX_COUNT",
    "MAX_REPLICAS",
    "SHOW_CHARS",
    "check_finite",
    "check_positive",
    "check_non_negative",
    "check_probability",
    "check_int",
    "check_in",
    "check_range",
    "check_seconds",
    "check_numbers",
    "check_items",
    "check_real_array",
]

#: The most tokens one request may hold (prompt or output): far beyond any context window.
MAX_TOKENS = 10**9
#: The largest priority (0 is served first).
MAX_PRIORITY = 10**6
#: The largest seed (an int64).
MAX_SEED = 2**63 - 1
#: The longest duration, or the latest moment, in seconds that any config or arrival may hold (about
#: 31.7 years): far beyond any run, small enough that sums of a few stay exact to the microsecond.
MAX_SECONDS = 1e9
#: The most of anything countable a config may hold: queue places, requests per second, thresholds.
MAX_COUNT = 10**9
#: The most replicas one pool may have.
MAX_REPLICAS = 100_000
#: The most characters of a value that an error message shows.
SHOW_CHARS = 80

_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxstring = SHOW_CHARS
_REPR.maxother = SHOW_CHARS
_REPR.maxlong = 40
for _attr in ("maxlist", "maxtuple", "maxdict", "maxset", "maxfrozenset", "maxdeque", "maxarray"):
    setattr(_REPR, _attr, 6)


def _show(value: object) -> str:
    """The value's repr, at most ``SHOW_CHARS`` characters (containers and strings cut short)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        digits = int(value.bit_length() * math.log10(2)) + 1
        return f"{'-' if value < 0 else ''}<an integer of about {digits} digits>"
    try:
        text = _REPR.repr(value)
    except Exception:  # a repr that fails must not hide the error being reported
        text = f"<{type(value).__name__} object>"
    text = " ".join(text.split())  # one line, whatever the repr
    if len(text) > SHOW_CHARS:
        text = text[: SHOW_CHARS - 3] + "..."
    return text


def _kind(value: object) -> str:
    return f"{_show(value)} ({type(value).__name__})"


def check_finite(name: str, value: object) -> float:
    """A real, finite number (bools are refused: ``True`` is not a rate)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {_kind(value)}")
    try:
        out = float(value)
    except OverflowError:  # an int or fraction beyond the largest float
        out = math.inf
    if not math.isfinite(out):
        raise ValueError(f"{name} must be a finite number, got {_show(value)}")
    return out


def check_positive(name: str, value: object) -> float:
    """A finite number > 0."""
    out = check_finite(name, value)
    if out <= 0:
        raise ValueError(f"{name} must be > 0, got {_show(value)}")
    return out


def check_non_negative(name: str, value: object) -> float:
    """A finite number >= 0."""
    out = check_finite(name, value)
    if out < 0:
        raise ValueError(f"{name} must be >= 0, got {_show(value)}")
    return out


def check_range(
    name: str, value: object, low: float, high: float, *, open_low: bool = False, unit: str = ""
) -> float:
    """A finite number in ``[low, high]`` (``(low, high]`` with ``open_low``)."""
    out = check_finite(name, value)
    if not ((out > low if open_low else out >= low) and out <= high):
        allowed = f"be > {low:g} and <= {high:g}" if open_low else f"lie in [{low:g}, {high:g}]"
        raise ValueError(f"{name} must {allowed}{unit}, got {_show(value)}")
    return out


def check_seconds(name: str, value: object, *, positive: bool = False) -> float:
    """A duration or moment in seconds: in ``[0, MAX_SECONDS]`` (``(0, MAX_SECONDS]`` if ``positive``)."""
    return check_range(name, value, 0.0, MAX_SECONDS, open_low=positive, unit=" s")


def check_probability(name: str, value: object, *, open_low: bool = False, open_high: bool = False) -> float:
    """A number in [0, 1]; ``open_low``/``open_high`` exclude the end points."""
    out = check_finite(name, value)
    low_ok = out > 0 if open_low else out >= 0
    high_ok = out < 1 if open_high else out <= 1
    if not (low_ok and high_ok):
        interval = f"{'(' if open_low else '['}0, 1{')' if open_high else ']'}"
        raise ValueError(f"{name} must lie in {interval}, got {_show(value)}")
    return out


def check_int(name: str, value: object, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """An integer (bools refused) within optional bounds, inclusive."""
    if type(value) is not int:  # the common case skips the slow ABC check (this runs per batch)
        if isinstance(value, bool) or not isinstance(value, Integral):
            raise TypeError(f"{name} must be an integer, got {_kind(value)}")
    out = int(value)
    if minimum is not None and out < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {_show(value)}")
    if maximum is not None and out > maximum:
        raise ValueError(f"{name} must be <= {maximum:,}, got {_show(value)}")
    return out


def check_in(name: str, value: object, allowed: tuple[str, ...]) -> str:
    """One of a fixed set of names."""
    if not (isinstance(value, str) and value in allowed):
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {_show(value)}")
    return value


def _is_sequence(value: object) -> bool:
    """A list, tuple or one-dimensional array (not a string, mapping or set)."""
    if isinstance(value, list | tuple):
        return True
    ndim = getattr(value, "ndim", None)
    return ndim == 1 and hasattr(value, "__len__") and hasattr(value, "tolist")


def check_numbers(name: str, value: object, *, size: int | None = None, max_size: int = 10**6) -> list[float]:
    """A list, tuple or 1-d array of real numbers (bools refused), as floats; ``size`` fixes its length.

    Values are not range-checked here (NaN and inf pass); the caller says what is allowed.
    """
    if not _is_sequence(value):
        what = f"{size} numbers" if size is not None else "a list of numbers"
        raise TypeError(f"{name} must be {what}, got {_kind(value)}")
    count = len(value)  # type: ignore[arg-type]
    if size is not None and count != size:
        raise ValueError(f"{name} must hold {size} numbers, got {count}: {_show(value)}")
    if count > max_size:
        raise ValueError(f"{name} must hold at most {max_size:,} numbers, got {count:,}")
    items = value.tolist() if not isinstance(value, list | tuple) else value  # type: ignore[union-attr]
    out = []
    for i, item in enumerate(items):
        if isinstance(item, bool) or not isinstance(item, Real):
            raise TypeError(f"{name}[{i}] must be a real number, got {_kind(item)}")
        try:
            out.append(float(item))
        except OverflowError:
            out.append(math.copysign(math.inf, item))  # type: ignore[arg-type]
    return out


def check_real_array(name: str, values: object) -> np.ndarray:
    """``values`` (a number or an array-like of numbers) as a float array; strings, bools, ``None``,
    ragged nests and numbers beyond a float refused. Finiteness is the caller's to check."""
    problem = f"{name} must be a real number or an array of them, got {_show(values)}"
    if isinstance(values, str | bytes | bool) or values is None:
        raise TypeError(problem)
    try:
        raw = np.asarray(values)
    except (ValueError, TypeError) as error:  # ragged nests
        raise TypeError(problem) from error
    if raw.dtype.kind == "O":  # e.g. Python ints too large for int64: each must be a real number
        if not all(isinstance(v, Real) and not isinstance(v, bool) for v in raw.ravel()):
            raise TypeError(problem)
        try:
            raw = raw.astype(np.float64)
        except OverflowError as error:
            raise ValueError(problem + " (an entry overflows a float)") from error
    elif raw.dtype.kind not in "iuf":
        raise TypeError(problem + f" (of dtype {raw.dtype})")
    return raw.astype(np.float64)


def check_items(name: str, value: object, kind: type | tuple[type, ...], *, max_size: int = 10_000) -> tuple:
    """One ``kind`` object, or a list or tuple of them, as a tuple."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    label = " or ".join(k.__name__ for k in kinds)
    if isinstance(value, kinds):
        return (value,)
    if not isinstance(value, list | tuple) or isinstance(value, Mapping):
        raise TypeError(f"{name} must be a {label} or a list of them, got {_kind(value)}")
    if len(value) > max_size:
        raise ValueError(f"{name} must hold at most {max_size:,} items, got {len(value):,}")
    for i, item in enumerate(value):
        if not isinstance(item, kinds):
            raise TypeError(f"{name}[{i}] must be a {label}, got {_kind(item)}")
    return tuple(value)
