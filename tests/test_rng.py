"""Named streams: reproducible, independent, insensitive to the order components ask."""

import numpy as np
import pytest

from scaleplay.rng import stream


def test_same_seed_and_name_give_the_same_draws():
    assert np.array_equal(stream(3, "arrivals").random(5), stream(3, "arrivals").random(5))


def test_names_seeds_and_replications_give_different_draws():
    base = stream(3, "arrivals").random(5)
    assert not np.array_equal(base, stream(3, "sizes").random(5))
    assert not np.array_equal(base, stream(4, "arrivals").random(5))
    assert not np.array_equal(base, stream(3, "arrivals", replication=1).random(5))


def test_streams_are_uncorrelated():
    a = stream(1, "a").standard_normal(20_000)
    b = stream(1, "b").standard_normal(20_000)
    assert abs(np.corrcoef(a, b)[0, 1]) < 4 / np.sqrt(20_000)


@pytest.mark.parametrize(("seed", "name"), [(-1, "x"), (1, ""), (1, None)])
def test_bad_seed_or_name(seed, name):
    with pytest.raises(ValueError):
        stream(seed, name)
