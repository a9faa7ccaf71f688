"""Input checks shared by every public constructor and function.

Each check returns the value (as a Python number) or raises a ``ValueError``/``TypeError`` whose
message names the parameter, the value received and what is allowed. Nothing is clipped.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

__all__ = [
    "check_finite",
    "check_positive",
    "check_non_negative",
    "check_probability",
    "check_int",
    "check_in",
]


def check_finite(name: str, value: object) -> float:
    """A real, finite number (bools are refused: ``True`` is not a rate)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return out


def check_positive(name: str, value: object) -> float:
    """A finite number > 0."""
    out = check_finite(name, value)
    if out <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return out


def check_non_negative(name: str, value: object) -> float:
    """A finite number >= 0."""
    out = check_finite(name, value)
    if out < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return out


def check_probability(name: str, value: object, *, open_low: bool = False, open_high: bool = False) -> float:
    """A number in [0, 1]; ``open_low``/``open_high`` exclude the end points."""
    out = check_finite(name, value)
    low_ok = out > 0 if open_low else out >= 0
    high_ok = out < 1 if open_high else out <= 1
    if not (low_ok and high_ok):
        interval = f"{'(' if open_low else '['}0, 1{')' if open_high else ']'}"
        raise ValueError(f"{name} must lie in {interval}, got {value!r}")
    return out


def check_int(name: str, value: object, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """An integer (bools refused) within optional bounds, inclusive."""
    if type(value) is not int:  # the common case skips the slow ABC check (this runs per batch)
        if isinstance(value, bool) or not isinstance(value, Integral):
            raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    out = int(value)
    if minimum is not None and out < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    if maximum is not None and out > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value!r}")
    return out


def check_in(name: str, value: object, allowed: tuple[str, ...]) -> str:
    """One of a fixed set of names."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
    return value  # type: ignore[return-value]
