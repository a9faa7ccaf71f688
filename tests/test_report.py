"""Numbers for readers: scaleplay.report.readable and readable_probability."""

import math

import numpy as np
import pytest

from scaleplay.report import PROBABILITY_FLOOR, readable, readable_probability


@pytest.mark.parametrize(
    ("probability", "shown"),
    [
        (3.5948166537490204e-249, "< 10⁻⁶"),  # P(wait) of the 10M-user fleet in the envelope chapter
        (4.6e-29, "< 10⁻⁶"),
        (np.float64(9.99e-7), "< 10⁻⁶"),
        (PROBABILITY_FLOOR, readable(PROBABILITY_FLOOR)),  # the floor itself is shown as a number
        (0.0169, "0.0169"),
        (0.05, "0.05"),
        (1.0, "1"),
        (0.0, "0"),
        (math.nan, "–"),
    ],
)
def test_readable_probability_floors_tiny_probabilities(probability, shown):
    assert readable_probability(probability) == shown


def test_readable_probability_matches_readable_above_the_floor():
    for p in np.geomspace(PROBABILITY_FLOOR, 1.0, 25):
        assert readable_probability(p) == readable(p)


@pytest.mark.parametrize("bad", [-0.1, 1.5, math.inf])
def test_readable_probability_rejects_values_outside_the_unit_interval(bad):
    with pytest.raises(ValueError, match=r"probability must be in \[0, 1\]"):
        readable_probability(bad)


@pytest.mark.parametrize("bad", ["0.1", None, True])
def test_readable_probability_rejects_non_numbers(bad):
    with pytest.raises(TypeError, match="probability must be a number"):
        readable_probability(bad)


def test_readable_keeps_its_behaviour_for_other_numbers():
    assert [readable(x) for x in (1e8, 347.2222, 11.574, 0.0023811, 4.6e-29, float("inf"), 0)] == [
        "100,000,000",
        "347",
        "11.6",
        "0.00238",
        "4.6e-29",
        "∞",
        "0",
    ]
