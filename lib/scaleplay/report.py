"""Helpers for chapters: hand computed numbers to the book's prose.

A chapter computes a number, glues it under a name, and the prose shows it with
``{glue:text}`name:format```. MyST-NB formats the glued value from its ``repr``, so NumPy scalars
(whose repr is ``np.float64(...)`` since NumPy 2) are turned into plain Python numbers first.

Tables use ``readable`` for any number and ``readable_probability`` for a probability: below one in a
million a probability reads "< 10⁻⁶" rather than digits such as ``3.6e-249``, which no reader can act
on and which the queueing formulas do not earn that far into the tail. A chapter that quotes such a
probability in prose glues the string ``readable_probability`` returns.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["PROBABILITY_FLOOR", "glue_value", "readable", "readable_probability"]

PROBABILITY_FLOOR = 1e-6  # below this a probability reads "< 10⁻⁶"


def glue_value(name: str, value: Any) -> Any:
    """Glue ``value`` under ``name`` for the prose, without displaying it; returns the plain value."""
    from myst_nb import glue  # noqa: PLC0415 - only chapters need the book toolchain

    plain = value.item() if isinstance(value, np.generic) else value
    glue(name, plain, display=False)
    return plain


def readable(value: float) -> str:
    """A number as a reader wants it in a table: thousands separators, three significant digits.

    >>> [readable(x) for x in (1e8, 347.2222, 11.574, 0.0023811, 4.6e-29, float("inf"))]
    ['100,000,000', '347', '11.6', '0.00238', '4.6e-29', '∞']
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        return str(value)
    value = float(value)
    if np.isnan(value):
        return "–"
    if np.isinf(value):
        return "∞" if value > 0 else "-∞"
    if value == 0 or abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def readable_probability(probability: float) -> str:
    """A probability (a fraction in [0, 1]) for a reader: "< 10⁻⁶" below one in a million, else ``readable``.

    Zero stays "0": a share counted in a simulation that never happened is exactly zero.

    >>> [readable_probability(p) for p in (0.05, 0.0123456, 1.7e-6, 9.99e-7, 3.6e-249, 0, 1, float("nan"))]
    ['0.05', '0.0123', '1.7e-06', '< 10⁻⁶', '< 10⁻⁶', '0', '1', '–']
    """
    if isinstance(probability, (bool, np.bool_)) or not isinstance(probability, (int, float, np.number)):
        raise TypeError(
            f"probability must be a number in [0, 1], got {probability!r} ({type(probability).__name__})"
        )
    value = float(probability)
    if np.isnan(value):
        return "–"
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"probability must be in [0, 1], got {value!r}")
    if 0.0 < value < PROBABILITY_FLOOR:
        return "< 10⁻⁶"
    return readable(value)
