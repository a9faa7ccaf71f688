"""Helpers for chapters: hand computed numbers to the book's prose.

A chapter computes a number, glues it under a name, and the prose shows it with
``{glue:text}`name:format```. MyST-NB formats the glued value from its ``repr``, so NumPy scalars
(whose repr is ``np.float64(...)`` since NumPy 2) are turned into plain Python numbers first.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["glue_value", "readable"]


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
