"""The time to first token's budget (``metrics.ttft_breakdown``): the stages of hand-made requests
against hand computations, the stages of a simulated continuous-batching run adding up to its TTFT,
and bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import make_arrivals
from scaleplay.metrics import TTFT_STAGES, ttft_breakdown
from scaleplay.simulator import ContinuousBatcherConfig, IngestionConfig, PlatformConfig, PoolConfig, simulate
from scaleplay.steptime import load_step_profile


def stamped(rows: list[tuple[float, float, float, float, float, float, float]]) -> pd.DataFrame:
    """Requests from (arrived, admitted, features ready, model start, first token, model end,
    responded) stamps, completed, with the client's TTFT as the engine defines it."""
    names = ["arrived_s", "admitted_s", "features_ready_s", "model_start_s", "first_token_s"]
    frame = pd.DataFrame(rows, columns=[*names, "model_end_s", "responded_s"])
    frame["ttft_s"] = (
        frame["first_token_s"] + frame["responded_s"] - frame["model_end_s"] - frame["arrived_s"]
    )
    return frame.assign(outcome="completed", tokens_out=10, tpot_s=0.01)


def test_the_stages_of_hand_made_requests():
    log = stamped(
        [
            (0.0, 0.0, 0.1, 0.3, 0.4, 2.0, 2.05),  # fetch 0.1, queue 0.2, prefill 0.1, hop 0.05
            (1.0, 1.0, 1.3, 1.4, 1.9, 3.0, 3.05),  # fetch 0.3, queue 0.1, prefill 0.5, hop 0.05
        ]
    )
    table = ttft_breakdown(log, quantiles=(0.5,))
    assert list(table.index) == list(TTFT_STAGES)
    assert table["mean_s"].tolist() == pytest.approx([0.0, 0.2, 0.15, 0.3, 0.05])
    assert table["p50_s"].tolist() == pytest.approx([0.0, 0.2, 0.15, 0.3, 0.05])
    assert table["mean_s"].sum() == pytest.approx(log["ttft_s"].mean())  # 0.45 and 0.95
    assert table["share_of_mean"].sum() == pytest.approx(1.0)
    # Decoding (first token to last) is not in the budget: a longer answer changes nothing.
    longer = log.assign(model_end_s=log["model_end_s"] + 9.0, responded_s=log["responded_s"] + 9.0)
    pd.testing.assert_frame_equal(ttft_breakdown(longer, quantiles=(0.5,)), table)


def test_requests_without_their_own_first_token_are_left_out():
    log = stamped([(0.0, 0.0, 0.1, 0.3, 0.4, 2.0, 2.05), (1.0, 1.0, 1.3, 1.4, 1.9, 3.0, 3.05)])
    log.loc[1, ["ttft_s", "outcome"]] = [np.nan, "timed_out"]
    assert ttft_breakdown(log)["mean_s"].tolist() == pytest.approx([0.0, 0.1, 0.2, 0.1, 0.05])
    none = ttft_breakdown(log.assign(ttft_s=np.nan))
    assert none[["mean_s", "p50_s", "p99_s"]].isna().all().all()


def test_the_stages_of_a_simulated_run_add_up_to_its_ttft():
    step = load_step_profile("h100-80gb", "Llama-3.1-8B", 1)
    arrivals = make_arrivals(
        np.sort(np.random.default_rng(3).uniform(0, 60, 300)), tokens_in=800, tokens_out=50
    )
    platform = PlatformConfig(
        PoolConfig(1, step, ContinuousBatcherConfig()),
        ingestion=IngestionConfig(
            fetch_mean_s=0.05, fetch_cv=2.0, cache_hit_ratio=0.5, cache_latency_s=0.001
        ),
        network_hop_s=0.03,
    )
    log = simulate(arrivals, platform, seed=5).log
    table = ttft_breakdown(log, quantiles=(0.5, 0.99))
    answered = log[log["ttft_s"].notna()]
    assert len(answered) > 250
    assert table["mean_s"].sum() == pytest.approx(answered["ttft_s"].mean(), rel=1e-12)
    assert table.loc["return_hop", "p99_s"] == pytest.approx(0.03)
    assert table.loc["ingestion", "p50_s"] < table.loc["ingestion", "p99_s"]  # half are 1 ms hits
    assert (table[["mean_s", "p50_s", "p99_s"]] >= 0).all().all()
    # The p99s of the stages overstate the p99 of the whole.
    assert table["p99_s"].sum() > answered["ttft_s"].quantile(0.99)


@pytest.mark.parametrize(
    ("log", "kwargs", "error", "match"),
    [
        ("not a log", {}, TypeError, "log must be a pandas DataFrame"),
        (stamped([]).drop(columns="first_token_s"), {}, ValueError, r"lacks the columns \['first_token_s'\]"),
        (
            stamped([]).drop(columns="features_ready_s"),
            {},
            ValueError,
            r"lacks the columns \['features_ready_s'\]",
        ),
        (
            stamped([(0, 0, 0, 0, 0, 0, 0)]).assign(ttft_s="fast"),
            {},
            TypeError,
            r"log\['ttft_s'\] must be a real",
        ),
        (stamped([]), {"quantiles": (0.5, 1.0)}, ValueError, r"quantiles\[1\]"),
        (stamped([]), {"quantiles": "p99"}, ValueError, "quantiles must be a non-empty sequence"),
    ],
)
def test_bad_input_is_refused_by_name(log, kwargs, error, match):
    with pytest.raises(error, match=match):
        ttft_breakdown(log, **kwargs)
