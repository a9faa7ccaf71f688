"""Trace replay: parsing, validation, windows, speed-up and arrival statistics."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from scaleplay.schema import ARRIVAL_COLUMNS
from scaleplay.trace import TRACE_PRESETS, arrival_stats, interarrival_cv, load_trace


def _azure_like() -> pd.DataFrame:
    """A few rows in the layout of the Azure LLM inference traces 2023."""
    return pd.DataFrame(
        {
            "TIMESTAMP": [
                "2023-11-16 18:15:46.6805900",
                "2023-11-16 18:15:50.9951690",
                "2023-11-16 18:15:51.2224670",
                "2023-11-16 18:16:51.2224670",
            ],
            "ContextTokens": [374, 396, 879, 91],
            "GeneratedTokens": [44, 109, 55, 16],
        }
    )


def _offsets() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "t_s": [0.0, 0.5, 1.5, 3.0, 7.0],
            "tokens_in": [10, 20, 30, 40, 50],
            "tokens_out": [1, 2, 3, 4, 5],
            "tier": ["paid", "free", "free", "paid", "free"],
        }
    )


def _check_schema(frame: pd.DataFrame) -> None:
    assert list(frame.columns) == list(ARRIVAL_COLUMNS)
    for name, (dtype, _) in ARRIVAL_COLUMNS.items():
        assert str(frame[name].dtype) == dtype, name
    assert (frame["request_id"].to_numpy() == np.arange(len(frame))).all()
    assert frame["t_s"].is_monotonic_increasing


def test_azure_preset_from_csv(tmp_path) -> None:
    path = tmp_path / "azure.csv"
    _azure_like().to_csv(path, index=False)
    a = load_trace(path, preset="azure_llm_2023")
    _check_schema(a)
    assert a["t_s"].to_numpy() == pytest.approx([0.0, 4.314579, 4.541877, 64.541877])
    assert a["tokens_in"].tolist() == [374, 396, 879, 91]
    assert a["tokens_out"].tolist() == [44, 109, 55, 16]
    assert (a["class_name"] == "trace").all()
    assert (a["priority"] == 0).all()
    assert a["difficulty"].between(0, 1).all()
    assert a.attrs["duration_s"] == pytest.approx(64.541877)
    assert a.attrs["source"] == str(path)
    assert "azure_llm_2023" in TRACE_PRESETS


def test_explicit_columns_override_preset() -> None:
    frame = _azure_like().rename(columns={"ContextTokens": "prompt"})
    a = load_trace(frame, preset="azure_llm_2023", tokens_in_column="prompt")
    assert a["tokens_in"].tolist() == [374, 396, 879, 91]


def test_offsets_are_kept_and_ms_converted() -> None:
    frame = _offsets()
    frame["t_s"] += 2.0
    a = load_trace(frame)
    _check_schema(a)
    assert a["t_s"].tolist() == [2.0, 2.5, 3.5, 5.0, 9.0]
    ms = pd.DataFrame({"when": [0, 250, 1000], "tokens_in": [1, 1, 1], "tokens_out": [1, 1, 1]})
    b = load_trace(ms, time_column="when", time_unit="ms")
    assert b["t_s"].tolist() == [0.0, 0.25, 1.0]


def test_classes_and_priorities() -> None:
    a = load_trace(_offsets(), class_column="tier", class_priorities={"paid": 0, "free": 3})
    assert a["class_name"].tolist() == ["paid", "free", "free", "paid", "free"]
    assert a["priority"].tolist() == [0, 3, 3, 0, 3]
    b = load_trace(_offsets(), class_name="chat", priority=2)
    assert (b["class_name"] == "chat").all() and (b["priority"] == 2).all()
    with pytest.raises(ValueError, match=r"class_priorities lacks the classes \['free'\]"):
        load_trace(_offsets(), class_column="tier", class_priorities={"paid": 0})


def test_difficulty_seeded_or_from_column() -> None:
    a = load_trace(_offsets(), seed=4)
    b = load_trace(_offsets(), seed=4)
    c = load_trace(_offsets(), seed=5)
    assert np.array_equal(a["difficulty"], b["difficulty"])
    assert not np.array_equal(a["difficulty"], c["difficulty"])
    frame = _offsets().assign(hard=[0.0, 0.25, 0.5, 0.75, 1.0])
    d = load_trace(frame, difficulty_column="hard")
    assert d["difficulty"].tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    with pytest.raises(ValueError, match="difficulty column 'hard'"):
        load_trace(frame.assign(hard=[0, 0, 2, 0, 0]), difficulty_column="hard")


def test_speedup_and_window() -> None:
    a = load_trace(_offsets(), speedup=2.0)
    assert a["t_s"].tolist() == [0.0, 0.25, 0.75, 1.5, 3.5]
    assert a.attrs["duration_s"] == 3.5
    b = load_trace(_offsets(), window_s=(1.0, 5.0))
    assert b["t_s"].tolist() == [0.5, 2.0]
    assert b["tokens_in"].tolist() == [30, 40]
    assert b["request_id"].tolist() == [0, 1]
    assert b.attrs["duration_s"] == 4.0
    c = load_trace(_offsets(), window_s=(1.0, 5.0), speedup=4.0)
    assert c["t_s"].tolist() == [0.125, 0.5]
    assert c.attrs["duration_s"] == 1.0


def test_sort_option() -> None:
    frame = _offsets().iloc[[0, 2, 1, 3, 4]].reset_index(drop=True)
    with pytest.raises(ValueError, match=r"not sorted: row 2 \(0\.5 s\) comes before row 1"):
        load_trace(frame)
    a = load_trace(frame, sort=True)
    assert a["t_s"].tolist() == [0.0, 0.5, 1.5, 3.0, 7.0]
    assert a["tokens_in"].tolist() == [10, 20, 30, 40, 50]
    stamps = _azure_like().iloc[[1, 0, 2, 3]]
    b = load_trace(stamps, preset="azure_llm_2023", sort=True)
    assert b["t_s"].iloc[0] == 0.0
    assert b["tokens_in"].tolist() == [374, 396, 879, 91]


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda f: f.drop(columns=["tokens_out"]), r"lacks the columns \['tokens_out'\]"),
        (lambda f: f.drop(columns=["t_s", "tokens_in"]), r"lacks the columns \['t_s', 'tokens_in'\]"),
        (lambda f: f.assign(t_s=[-1.0, 0.5, 1.5, 3.0, 7.0]), "negative times .*row 0"),
        (lambda f: f.assign(t_s=[0.0, np.nan, 1.5, 3.0, 7.0]), "NaN .*row 1"),
        (lambda f: f.assign(tokens_in=[1, 2, -3, 4, 5]), "'tokens_in' has negative counts .*row 2"),
        (lambda f: f.assign(tokens_out=[1.0, 2.0, np.nan, 4.0, 5.0]), "'tokens_out' has NaN"),
        (lambda f: f.assign(tokens_out=[1.0, 2.5, 3.0, 4.0, 5.0]), "whole numbers"),
        (lambda f: f.assign(tokens_in=["a"] * 5), "must be numeric"),
        (lambda f: f.iloc[:0], "no rows"),
    ],
)
def test_validation_errors(change, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load_trace(change(_offsets()))


def test_bad_timestamps_and_arguments(tmp_path) -> None:
    bad = _azure_like()
    bad.loc[2, "TIMESTAMP"] = "not a time"
    with pytest.raises(ValueError, match="'TIMESTAMP' holds values that are not timestamps"):
        load_trace(bad, preset="azure_llm_2023")
    missing = _azure_like()
    missing.loc[1, "TIMESTAMP"] = None
    with pytest.raises(ValueError, match=r"'TIMESTAMP' has missing values \(first at row 1\)"):
        load_trace(missing, preset="azure_llm_2023")
    with pytest.raises(ValueError, match="preset"):
        load_trace(_offsets(), preset="nope")
    with pytest.raises(ValueError, match="speedup"):
        load_trace(_offsets(), speedup=0)
    with pytest.raises(ValueError, match="window_s"):
        load_trace(_offsets(), window_s=(5.0, 1.0))
    with pytest.raises(ValueError, match="time_unit"):
        load_trace(_offsets(), time_unit="hours")
    with pytest.raises(TypeError, match="source"):
        load_trace(42)  # type: ignore[arg-type]


def test_interarrival_cv_and_stats() -> None:
    assert interarrival_cv(np.arange(100.0)) == pytest.approx(0.0)
    rng = np.random.default_rng(0)
    poisson = np.cumsum(rng.exponential(0.1, 200_000))
    assert interarrival_cv(poisson) == pytest.approx(1.0, abs=0.01)
    assert math.isnan(interarrival_cv([1.0, 2.0]))
    with pytest.raises(ValueError, match="sorted"):
        interarrival_cv([2.0, 1.0, 3.0])
    frame = pd.DataFrame({"t_s": np.r_[np.linspace(0, 59, 60), np.full(60, 90.0)]})
    frame.attrs["duration_s"] = 120.0
    s = arrival_stats(frame, bin_s=60)
    assert s["arrivals"] == 120
    assert s["mean_rate_per_s"] == pytest.approx(1.0)
    assert s["peak_bin_to_mean"] == pytest.approx(1.0)
    frame.attrs["duration_s"] = 180.0
    assert arrival_stats(frame, bin_s=60)["peak_bin_to_mean"] == pytest.approx(1.5)


# ---- hostile inputs ------------------------------------------------------------------------------


def _write(path, text: str | bytes):
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("rows", "column", "row"),
    [
        ("0,1e20,5\n", "tokens_in", 0),  # regression: wrapped to -9223372036854775808
        ("0,5,5\n1,5,100000000000000000000\n", "tokens_out", 1),
        ("0,9223372036854775808,5\n", "tokens_in", 0),  # read as uint64 by pandas
        ("0,1000000001,5\n", "tokens_in", 0),
    ],
)
def test_token_counts_beyond_the_bound_name_file_column_and_row(tmp_path, rows: str, column: str, row: int):
    path = _write(tmp_path / "huge.csv", "t_s,tokens_in,tokens_out\n" + rows)
    with pytest.raises(ValueError, match=r"<= 1,000,000,000") as caught:
        load_trace(path)
    message = str(caught.value)
    assert "huge.csv" in message and repr(column) in message and f"row {row}" in message, message


def test_priorities_beyond_the_bound_are_refused(tmp_path) -> None:
    path = _write(tmp_path / "p.csv", "t_s,tokens_in,tokens_out,prio\n0,1,1,0\n1,1,1,1e20\n")
    with pytest.raises(ValueError, match=r"p\.csv.*priority column 'prio'.*row 1"):
        load_trace(path, priority_column="prio")
    with pytest.raises(ValueError, match="priority"):
        load_trace(_offsets(), priority=2**63)
    with pytest.raises(ValueError, match=r"class_priorities\['paid'\]"):
        load_trace(_offsets(), class_column="tier", class_priorities={"paid": 10**30, "free": 1})


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"", ["empty"]),
        (b"\n\n\n", ["no header row"]),
        (bytes(range(256)) * 4, ["binary"]),
        (bytes(range(1, 256)) * 4, ["not UTF-8"]),
        ("t_s,tokens_in,tokens_out\n0,1,2,caf\u00e9\n".encode("latin-1"), ["not UTF-8", "0xe9"]),
        (b"t_s,tokens_in\n0,1,2,3,4\n", ["more fields than its header"]),
        (b'"t_s,tokens_in\n0,1\n', ["not a readable CSV"]),
    ],
)
def test_unreadable_files_name_the_file_and_the_problem(tmp_path, content: bytes, words: list[str]) -> None:
    # Regression: pandas' own words ("No columns to parse from file", "'utf-8' codec can't decode").
    path = _write(tmp_path / "trace.csv", content)
    with pytest.raises(ValueError) as caught:
        load_trace(path)
    for word in ["trace.csv", *words]:
        assert word in str(caught.value), str(caught.value)


def test_missing_file_and_directory(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="absent.csv"):
        load_trace(tmp_path / "absent.csv")
    with pytest.raises(ValueError, match="not a file"):
        load_trace(tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"window_s": 1}, "window_s"),  # regression: "object of type 'int' has no len()"
        ({"window_s": (0, 1, 2)}, "window_s"),
        ({"window_s": ("a", 1)}, "window_s[0]"),
        ({"window_s": (5, math.inf)}, "window_s"),
        ({"time_column": ["t_s"]}, "time_column"),  # regression: "unhashable type: 'list'"
        ({"tokens_in_column": None, "tokens_out_column": {"a": 1}}, "tokens_out_column"),
        ({"class_column": 1.5}, "class_column"),
        ({"class_priorities": [1, 2]}, "class_priorities"),
        ({"speedup": 1e-300}, "speedup"),
        ({"speedup": math.nan}, "speedup"),
        ({"seed": 10**30}, "seed"),
        ({"time_unit": ["s"]}, "time_unit"),
        ({"preset": ["azure_llm_2023"]}, "preset"),
        ({"sort": "yes"}, "sort"),
    ],
)
def test_arguments_of_the_wrong_kind_name_the_argument(kwargs: dict, field: str) -> None:
    with pytest.raises((TypeError, ValueError)) as caught:
        load_trace(_offsets(), **kwargs)
    assert field in str(caught.value), str(caught.value)


def test_offsets_beyond_the_bound_and_bad_difficulties() -> None:
    frame = _offsets().assign(t_s=[0.0, 1.0, 2.0, 3.0, 1e300])
    with pytest.raises(ValueError, match=r"offsets <= 1e\+12 s \(row 4"):
        load_trace(frame)
    with pytest.raises(ValueError, match="difficulty column 'tier' must be numeric"):
        load_trace(_offsets(), difficulty_column="tier")


def test_arrival_stats_refuse_unbounded_bins_and_bad_times() -> None:
    # Regression: 1e300 s of trace or a 1e-300 s bin asked numpy for that many bins.
    with pytest.raises(ValueError, match="bin_s"):
        arrival_stats(np.array([0.0, 1.0, 1e6]), bin_s=1e-300)
    with pytest.raises(ValueError, match="arrivals"):
        arrival_stats(np.array([0.0, 1e300]))
    with pytest.raises(ValueError, match="finite"):
        interarrival_cv([0.0, 1.0, math.inf])
    with pytest.raises(TypeError, match="arrivals"):
        interarrival_cv(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"arrivals\[1\]"):
        interarrival_cv([0.0, "x"])  # type: ignore[list-item]
