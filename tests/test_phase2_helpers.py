"""The feature fetch behind a cache: the database's load and the fetch it gives the engine."""

from __future__ import annotations

import numpy as np
import pytest

from scaleplay import queueing
from scaleplay.experiments import database_utilization, feature_fetch
from scaleplay.simulator import IngestionConfig


def test_the_database_serves_the_misses_and_the_other_readers():
    # 20 requests/s, a quarter missed, 5 reads/s from others, 40 ms a read
    assert database_utilization(20.0, hit_ratio=0.75, read_s=0.04, other_reads_per_s=5.0) == pytest.approx(
        (20.0 * 0.25 + 5.0) * 0.04
    )
    loads = [database_utilization(20.0, hit_ratio=h, read_s=0.04) for h in (0.0, 0.5, 0.9, 1.0)]
    assert loads == sorted(loads, reverse=True) and loads[-1] == 0.0


def test_the_fetch_is_the_mm1_time_in_system_at_that_load():
    fetch = feature_fetch(20.0, hit_ratio=0.8, read_s=0.05, other_reads_per_s=6.0, cache_latency_s=0.002)
    arrivals_per_s = 20.0 * 0.2 + 6.0
    # queueing's M/M/1 wait plus the read itself: an independent route to the same mean
    expected_s = queueing.mmc_mean_wait_s(arrivals_per_s, 1 / 0.05, 1) + 0.05
    assert isinstance(fetch, IngestionConfig)
    assert fetch.fetch_mean_s == pytest.approx(expected_s)
    assert (fetch.fetch_cv, fetch.cache_hit_ratio, fetch.cache_latency_s) == (1.0, 0.8, 0.002)


def test_the_drawn_fetches_have_the_hit_ratio_and_the_mean():
    fetch = feature_fetch(10.0, hit_ratio=0.6, read_s=0.05, cache_latency_s=0.001)
    delays = fetch.delays_s(200_000, np.random.default_rng(5))
    hits = delays == 0.001
    assert hits.mean() == pytest.approx(0.6, abs=0.005)
    assert delays[~hits].mean() == pytest.approx(0.05 / (1 - 0.2), rel=0.02)


def test_a_cache_that_absorbs_every_read_leaves_the_bare_read_time():
    assert feature_fetch(50.0, hit_ratio=1.0, read_s=0.03).fetch_mean_s == pytest.approx(0.03)


def test_a_database_that_cannot_keep_up_has_no_fetch():
    with pytest.raises(ValueError, match="cannot keep up"):
        feature_fetch(20.0, hit_ratio=0.0, read_s=0.05)  # utilization exactly 1
    with pytest.raises(ValueError, match="cannot keep up"):
        feature_fetch(10.0, hit_ratio=0.5, read_s=0.05, other_reads_per_s=20.0)


@pytest.mark.parametrize(
    ("changes", "name"),
    [
        ({"requests_per_s": -1.0}, "requests_per_s"),
        ({"hit_ratio": 1.5}, "hit_ratio"),
        ({"read_s": 0.0}, "read_s"),
        ({"other_reads_per_s": -2.0}, "other_reads_per_s"),
        ({"hit_ratio": float("nan")}, "hit_ratio"),
    ],
)
def test_bad_inputs_name_the_parameter(changes, name):
    kwargs = {"requests_per_s": 10.0, "hit_ratio": 0.5, "read_s": 0.01, **changes}
    with pytest.raises(ValueError, match=name):
        database_utilization(**kwargs)
    with pytest.raises(ValueError, match=name):
        feature_fetch(**kwargs)


def test_a_negative_cache_latency_is_refused():
    with pytest.raises(ValueError, match="cache_latency_s"):
        feature_fetch(10.0, hit_ratio=0.5, read_s=0.01, cache_latency_s=-0.001)
