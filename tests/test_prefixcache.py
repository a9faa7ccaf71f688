"""Prefix caching: the Mooncake loader, per-replica LRU block caches, routing policies, time saved."""

from __future__ import annotations

import hashlib
import json
import math
from importlib import resources

import numpy as np
import pytest

from scaleplay.prefixcache import POLICIES, prefill_seconds_saved, prefix_hit_rates
from scaleplay.schema import ARRIVAL_COLUMNS
from scaleplay.steptime import load_step_profile
from scaleplay.trace import MOONCAKE_BLOCK_TOKENS, MOONCAKE_SLICE, load_mooncake_trace

SLICE_SHA256 = "9e81b386f0d8cea16d376b041d7a7e8fed5ba65b53e989444c76cef408442c2a"


@pytest.fixture(scope="module")
def trace():
    return load_mooncake_trace()


def _slice_path():
    return resources.files("scaleplay").joinpath("data", "traces", MOONCAKE_SLICE)


# ---------------------------------------------------------------------------------- the loader


def test_shipped_slice_is_the_documented_bytes_with_its_licence() -> None:
    assert hashlib.sha256(_slice_path().read_bytes()).hexdigest() == SLICE_SHA256
    folder = resources.files("scaleplay").joinpath("data", "traces")
    assert "Apache License" in folder.joinpath("LICENSE-Mooncake-Apache-2.0.txt").read_text(encoding="utf-8")
    assert SLICE_SHA256 in folder.joinpath("README.md").read_text(encoding="utf-8")


def test_loader_columns_counts_and_order(trace) -> None:
    assert list(trace.columns) == [*ARRIVAL_COLUMNS, "prefix_blocks"]
    assert len(trace) == 2000
    assert (np.diff(trace["t_s"]) >= 0).all()
    assert trace["t_s"].iloc[0] == 0.0 and trace["t_s"].iloc[-1] == 669.0
    assert trace.attrs["block_tokens"] == MOONCAKE_BLOCK_TOKENS == 512
    assert (trace["class_name"] == "mooncake").all() and (trace["priority"] == 0).all()
    assert trace["difficulty"].between(0, 1).all()
    first = json.loads(_slice_path().read_text(encoding="utf-8").splitlines()[0])
    assert trace["tokens_in"].iloc[0] == first["input_length"]
    assert trace["tokens_out"].iloc[0] == first["output_length"]
    assert trace["prefix_blocks"].iloc[0] == tuple(first["hash_ids"])
    blocks = trace["prefix_blocks"].map(len).to_numpy()
    assert (blocks == -(-trace["tokens_in"].to_numpy() // 512)).all()


def test_loader_is_deterministic_and_the_seed_moves_only_difficulty(trace) -> None:
    again = load_mooncake_trace()
    assert again.equals(trace)
    other = load_mooncake_trace(seed=1)
    assert not np.allclose(other["difficulty"], trace["difficulty"])
    assert other["tokens_in"].equals(trace["tokens_in"])


def test_loader_window_keeps_blocks_aligned(trace) -> None:
    part = load_mooncake_trace(window_s=(100.0, 200.0))
    keep = (trace["t_s"] >= 100) & (trace["t_s"] < 200)
    assert len(part) == keep.sum() > 0
    assert list(part["prefix_blocks"]) == list(trace.loc[keep, "prefix_blocks"])
    assert np.allclose(part["t_s"], trace.loc[keep, "t_s"] - 100.0)


def test_loader_sorts_and_aligns_a_shuffled_file(tmp_path) -> None:
    rows = [
        {"timestamp": 2000, "input_length": 600, "output_length": 5, "hash_ids": [0, 2]},
        {"timestamp": 1000, "input_length": 10, "output_length": 3, "hash_ids": [1]},
    ]
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not sorted"):
        load_mooncake_trace(path)
    table = load_mooncake_trace(path, sort=True)
    assert list(table["t_s"]) == [1.0, 2.0]
    assert list(table["prefix_blocks"]) == [(1,), (0, 2)]
    assert list(table["tokens_in"]) == [10, 600]


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("not json", "not JSON"),
        ('{"timestamp": 0, "input_length": 5}', "fields"),
        ('{"timestamp": 0, "input_length": 5, "output_length": 1, "hash_ids": [-1]}', "non-negative"),
        ('{"timestamp": 0, "input_length": 600, "output_length": 1, "hash_ids": [0]}', "needs 2"),
        ('{"timestamp": -5, "input_length": 5, "output_length": 1, "hash_ids": [0]}', "negative"),
    ],
)
def test_loader_refuses_bad_files(tmp_path, line, match) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=match):
        load_mooncake_trace(path)


def test_loader_refuses_missing_and_empty(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        load_mooncake_trace(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no requests"):
        load_mooncake_trace(tmp_path / "empty.jsonl")
    with pytest.raises(TypeError, match="source"):
        load_mooncake_trace(42)


# ---------------------------------------------------------------------------------- LRU caches


def test_hits_are_the_leading_cached_run() -> None:
    seq = [(1, 2, 3), (1, 2, 4), (1, 9, 3), (5, 2, 3), (1, 2, 3)]
    r = prefix_hit_rates(seq, 1, 100, "round_robin")
    assert list(r.hit_blocks) == [0, 2, 1, 0, 3]
    assert r.hit_rate == pytest.approx(6 / 15)
    assert list(r.tokens_saved) == [0, 1024, 512, 0, 1536]


def test_lru_evicts_least_recent_and_tails_before_roots() -> None:
    # Capacity 3: (1, 2) touches its tail 2 before its root 1, so adding 3 then 4 evicts 2 first.
    r = prefix_hit_rates([(1, 2), (3,), (4,), (1,)], 1, 3, "round_robin")
    assert list(r.hit_blocks) == [0, 0, 0, 1]
    r = prefix_hit_rates([(1, 2), (3,), (4,), (1, 2)], 1, 3, "round_robin")
    assert list(r.hit_blocks) == [0, 0, 0, 1]  # 2 was evicted, 1 kept
    r = prefix_hit_rates([(1, 2), (3,), (4,), (5,), (1,)], 1, 3, "round_robin")
    assert list(r.hit_blocks) == [0, 0, 0, 0, 0]  # then 1 went too


def test_capacity_bounds_the_hits() -> None:
    seq = [(0, 1, 2, 3)] * 3
    assert list(prefix_hit_rates(seq, 1, 4, "round_robin").hit_blocks) == [0, 4, 4]
    # A prompt larger than the cache keeps only its leading blocks (the roots are most recent).
    assert list(prefix_hit_rates(seq, 1, 2, "round_robin").hit_blocks) == [0, 2, 2]


def test_tokens_in_caps_the_saving_below_the_prompt() -> None:
    r = prefix_hit_rates([(7, 8), (7, 8)], 1, 10, "round_robin", block_tokens=512, tokens_in=[700, 700])
    assert list(r.tokens_saved) == [0, 699]


def test_routing_policies_on_a_hand_built_sequence() -> None:
    seq = [(1,), (2,), (1,), (2,)]
    rr = prefix_hit_rates(seq, 2, 10, "round_robin")
    assert list(rr.replica) == [0, 1, 0, 1] and list(rr.hit_blocks) == [0, 0, 1, 1]
    aff = prefix_hit_rates([(1,), (2,), (2,), (1,)], 2, 10, "prefix_affinity", slack=0.0)
    assert list(aff.replica) == [0, 1, 1, 0] and list(aff.hit_blocks) == [0, 0, 1, 1]
    rr2 = prefix_hit_rates([(1,), (2,), (2,), (1,)], 2, 10, "round_robin")
    assert rr2.hit_rate == 0.0
    ll = prefix_hit_rates([(1, 2, 3), (4,), (5,), (6,)], 2, 10, "least_loaded")
    assert list(ll.replica) == [0, 1, 1, 1]  # replica 1 holds fewer blocks until the fourth request
    assert list(ll.blocks_per_replica) == [3, 3] and ll.imbalance == pytest.approx(1.5)


# ---------------------------------------------------------------------------------- on the trace


def test_repeat_fraction_matches_a_direct_count(trace) -> None:
    seen: set[int] = set()
    repeats = total = 0
    for blocks in trace["prefix_blocks"]:
        repeats += sum(h in seen for h in blocks)
        total += len(blocks)
        seen.update(blocks)
    unbounded = prefix_hit_rates(trace["prefix_blocks"], 1, total, "round_robin")
    assert unbounded.hit_rate == pytest.approx(repeats / total)
    assert repeats / total == pytest.approx(0.289, abs=0.001)


def test_affinity_raises_hits_and_imbalance_and_slack_trades_them(trace) -> None:
    capacity = load_step_profile("h100-80gb", "Llama-3.1-70B", 4).kv_capacity_tokens // 512
    blocks = trace["prefix_blocks"]
    rr = prefix_hit_rates(blocks, 8, capacity, "round_robin")
    aff = prefix_hit_rates(blocks, 8, capacity, "prefix_affinity", slack=0.25)
    assert aff.hit_rate > 2 * rr.hit_rate
    assert rr.imbalance == 1.0 < aff.imbalance
    sweep = [
        prefix_hit_rates(blocks, 8, capacity, "prefix_affinity", slack=s) for s in (0.0, 0.25, 1.0, math.inf)
    ]
    imbalance = [r.imbalance for r in sweep]
    assert imbalance == sorted(imbalance) and imbalance[-1] == 8.0  # every prompt starts with block 0
    one = prefix_hit_rates(blocks, 1, capacity, "round_robin")
    assert sweep[-1].hit_rate == pytest.approx(one.hit_rate)  # all on one replica: its cache alone


def test_every_policy_assigns_every_request_once(trace) -> None:
    for policy in POLICIES:
        r = prefix_hit_rates(trace["prefix_blocks"], 4, 500, policy)
        assert r.requests_per_replica.sum() == len(trace)
        assert np.bincount(r.replica, minlength=4).tolist() == r.requests_per_replica.tolist()
        assert (r.hit_blocks <= r.blocks).all()


def test_prefill_seconds_saved(trace) -> None:
    step = load_step_profile("h100-80gb", "Llama-3.1-70B", 4)
    tokens_in = trace["tokens_in"].to_numpy()
    none = prefill_seconds_saved(step, tokens_in, np.zeros_like(tokens_in))
    assert (none == 0).all()
    everything = prefill_seconds_saved(step, tokens_in, tokens_in)
    assert np.allclose(everything, step.prefill_time_s(1, tokens_in))
    r = prefix_hit_rates(trace["prefix_blocks"], 1, 10**6, "round_robin", tokens_in=tokens_in)
    saved = prefill_seconds_saved(step, tokens_in, r.tokens_saved)
    assert (saved >= 0).all() and (saved[r.hit_blocks == 0] == 0).all() and saved.max() > 0


# ---------------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"blocks_per_request": []}, ValueError, "blocks_per_request"),
        ({"blocks_per_request": "abc"}, TypeError, "blocks_per_request"),
        ({"blocks_per_request": [(1,), 5]}, TypeError, r"blocks_per_request\[1\]"),
        ({"blocks_per_request": [(1.5,)]}, TypeError, r"blocks_per_request\[0\]"),
        ({"replicas": 0}, ValueError, "replicas"),
        ({"capacity_blocks": 0}, ValueError, "capacity_blocks"),
        ({"policy": "random"}, ValueError, "policy"),
        ({"slack": -0.1}, ValueError, "slack"),
        ({"slack": math.nan}, ValueError, "slack"),
        ({"block_tokens": 0}, ValueError, "block_tokens"),
        ({"tokens_in": [1, 2]}, ValueError, "tokens_in"),
    ],
)
def test_prefix_hit_rates_refuses_bad_inputs(kwargs, error, match) -> None:
    args = {"blocks_per_request": [(1, 2)], "replicas": 1, "capacity_blocks": 4, "policy": "round_robin"}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        prefix_hit_rates(**args)


def test_prefill_seconds_saved_refuses_bad_inputs() -> None:
    step = load_step_profile("h100-80gb", "Llama-3.1-70B", 4)
    with pytest.raises(TypeError, match="step"):
        prefill_seconds_saved(object(), [10], [5])
    with pytest.raises(ValueError, match="tokens_saved must not exceed"):
        prefill_seconds_saved(step, [10], [11])
    with pytest.raises(ValueError, match="same length"):
        prefill_seconds_saved(step, [10, 20], [5])
    with pytest.raises(ValueError, match="tokens_in"):
        prefill_seconds_saved(step, [1.5], [1])
