"""Scenario files: the loader's checks, the plan table and the ``python -m scaleplay plan`` command."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from scaleplay.scenario import (
    PLAN_COLUMNS,
    ModelChoice,
    Phase,
    PriceOverrides,
    RequestSizes,
    Scenario,
    SearchSettings,
    Traffic,
    example_scenario_path,
    format_plan_table,
    load_scenario,
    plan_phases,
    plan_scenario,
    plan_table,
)

TINY = """\
name: tiny
seed: 7
phases:
  - {name: small, calls_per_day: 200000, days: 30}
  - {name: large, calls_per_day: 3000000, days: 60}
traffic: {peak_to_mean: 1.5}
requests:
  tokens_in: {median: 300, sigma: 0.3, maximum: 2000}
  tokens_out: {median: 100, sigma: 0.3, maximum: 400}
slo: {p99_s: 8.0, max_rejected_share: 0.01}
models:
  - {model: Llama-3.1-8B, dtype: bf16, hardware: H100 SXM}
search: {duration_s: 30, batch_sizes: [16, 32], max_replicas: 16, gpus_per_node: 8}
"""


def _replace(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new)


def test_example_loads_with_three_phases() -> None:
    scenario = load_scenario(example_scenario_path())
    assert isinstance(scenario, Scenario)
    assert [p.calls_per_day for p in scenario.phases] == [500_000, 2_000_000, 5_000_000]
    assert all(p.days == 90 for p in scenario.phases)
    assert load_scenario(str(example_scenario_path())) == scenario


def test_book_copy_matches_the_example() -> None:
    book = Path(__file__).resolve().parents[1] / "book" / "my-scenario.yaml"
    assert load_scenario(book) == load_scenario(example_scenario_path())


def test_text_and_defaults() -> None:
    scenario = load_scenario("phases: [{calls_per_day: 1000}]\nmodels: [{model: Llama-3.1-8B}]\n")
    assert scenario.phases[0].name == "phase 1" and scenario.phases[0].days == 90
    assert scenario.models[0].hardware == "H100 SXM" and scenario.slo.p99_s == 10.0


@pytest.mark.parametrize(
    ("old", "new", "error", "words"),
    [
        ("seed: 7", "seed: 7\ncolour: red", ValueError, ["'colour'", "allowed", "phases"]),
        ("days: 30}", "days: 30, users: 5}", ValueError, ["phases[0]", "'users'", "calls_per_day"]),
        ("calls_per_day: 200000", "calls_per_day: -5", ValueError, ["small.calls_per_day", "-5", "> 0"]),
        ("peak_to_mean: 1.5", "peak_to_mean: 3", ValueError, ["traffic.peak_to_mean", "3", "[1, 2]"]),
        ("p99_s: 8.0", "p99_s: fast", TypeError, ["slo.p99_s", "'fast'", "real number"]),
        ("max_rejected_share: 0.01", "max_rejected_share: 1.5", ValueError, ["max_rejected_share", "[0, 1]"]),
        ("hardware: H100 SXM", "hardware: TPU", ValueError, ["models[].hardware", "'TPU'", "'H100 SXM'"]),
        ("model: Llama-3.1-8B", "model: Llama-9", ValueError, ["models[0]", "'Llama-9'", "Llama-3.1-8B"]),
        ("batch_sizes: [16, 32]", "batch_sizes: [16, 16]", ValueError, ["search.batch_sizes", "repeat"]),
        ("batch_sizes: [16, 32]", "batch_sizes: [0]", ValueError, ["search.batch_sizes[0]", ">= 1"]),
        ("name: large", "name: small", ValueError, ["phase names", "unique"]),
        ("seed: 7", "seed: -1", ValueError, ["seed", ">= 0", "-1"]),
        ("models:\n", "prices: {purchase: lease}\nmodels:\n", ValueError, ["prices.purchase", "'lease'"]),
    ],
)
def test_validation_names_the_field(old: str, new: str, error: type, words: list[str]) -> None:
    with pytest.raises(error) as caught:
        load_scenario(_replace(TINY, old, new))
    for word in words:
        assert word in str(caught.value), (word, str(caught.value))


def test_structure_errors() -> None:
    with pytest.raises(ValueError, match="lacks required key"):
        load_scenario("phases: [{calls_per_day: 1000}]\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_scenario("phases: [unclosed\nmodels: x\n")
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_scenario("missing.yaml")
    with pytest.raises(TypeError, match="the scenario must be a mapping"):
        load_scenario("- just\n- a list\n")


def test_plan_is_deterministic_and_meets_the_slo() -> None:
    scenario = load_scenario(TINY)
    results = plan_phases(scenario, executor=ThreadPoolExecutor(2))
    table = plan_table(scenario, results)
    again = plan_scenario(scenario, executor=ThreadPoolExecutor(1))
    pd.testing.assert_frame_equal(table, again)
    assert list(table.columns) == list(PLAN_COLUMNS)[1:] and list(table.index) == ["small", "large"]
    for (_, row), result in zip(table.iterrows(), results, strict=True):
        feasible = result.candidates[result.candidates["meets_slo"]]
        assert len(feasible) and row["model option"] == feasible.iloc[0]["option"]
        # The chosen row is the cheapest feasible candidate, and it does meet the SLO.
        assert row["cost (USD/month)"] == pytest.approx(feasible["cost_usd_per_month"].min())
        assert row["p99 (s)"] <= scenario.slo.p99_s
        assert row["rejected (%)"] <= 100 * scenario.slo.max_rejected_share
        assert row["GPU nodes"] == -(-row["GPUs"] // scenario.search.gpus_per_node)
        per_1k = row["cost (USD/month)"] / (row["calls/day"] * 730 / 24) * 1000
        assert row["cost (USD per 1k requests)"] == pytest.approx(per_1k)
        assert row["phase cost (USD)"] == pytest.approx(row["cost (USD/month)"] / 730 * 24 * row["days"])
    # Fifteen times the traffic needs more replicas.
    assert table.loc["large", "replicas"] > table.loc["small", "replicas"]


def test_price_override_scales_cost() -> None:
    base = load_scenario(TINY)
    cheap = load_scenario(TINY + "prices: {on_demand_usd_per_gpu_hour: {H100 SXM: 1.0}}\n")
    assert cheap.options()[0].usd_per_replica_hour == 1.0
    assert base.options()[0].usd_per_replica_hour > 1.0


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "scaleplay", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_cli_prints_the_plan_table(tmp_path: Path) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY, encoding="utf-8")
    done = _cli("plan", str(path))
    assert done.returncode == 0, done.stderr
    expected = format_plan_table(plan_scenario(load_scenario(path), executor=ThreadPoolExecutor(2)))
    assert done.stdout.rstrip("\n") == expected
    assert "cost (USD/month)" in done.stdout and "GPU nodes" in done.stdout


def test_cli_help_and_errors(tmp_path: Path) -> None:
    done = _cli("--help")
    assert done.returncode == 0 and "plan" in done.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(_replace(TINY, "p99_s: 8.0", "p99_s: -1"), encoding="utf-8")
    done = _cli("plan", str(bad))
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "slo.p99_s" in lines[0] and "-1" in lines[0], done.stderr
    done = _cli("plan", str(tmp_path / "absent.yaml"))
    assert done.returncode == 2 and "does not exist" in done.stderr


# ---- hostile files: one line on stderr, exit status 2, quickly, whatever the file holds ---------------


def _laughs(key: str) -> str:
    """The "billion laughs": nine levels of nine aliases, 9**9 strings once expanded, in 400 bytes."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [{','.join([f'*{previous}'] * 9)}]")
    return "\n".join([*lines, f"{key}: *i", ""])


HOSTILE_FILES = {
    "laughs in seed": (_laughs("seed"), ["anchors and aliases"]),
    "laughs in name": (_laughs("name"), ["anchors and aliases"]),
    "one alias": (_replace(TINY, "seed: 7", "seed: &s 7\nname2: *s"), ["anchors and aliases"]),
    "deep nesting": ("seed: " + "[" * 5000 + "]" * 5000 + "\n", ["nesting deeper than 50"]),
    "deep mappings": ("a: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n", ["nesting deeper than 50"]),
    "huge calls": (_replace(TINY, "calls_per_day: 200000", "calls_per_day: 1.0e+308"), ["calls_per_day"]),
    "huge window": (_replace(TINY, "duration_s: 30", "duration_s: 1.0e+9"), ["search.duration_s"]),
    "window too busy": (
        _replace(TINY, "calls_per_day: 3000000", "calls_per_day: 9.0e+9"),
        ["search.duration_s"],
    ),
    "duplicate key": (TINY + "seed: 8\n", ["duplicate key 'seed'", "line 14"]),
    "duplicate nested key": (
        _replace(TINY, "p99_s: 8.0", "p99_s: 8.0, p99_s: 1.0"),
        ["duplicate key 'p99_s'"],
    ),
    "merge key": (_replace(TINY, "traffic: {", "traffic: {<<: {peak_hour: 3}, "), ["merge keys"]),
    "huge seed": (
        _replace(TINY, "seed: 7", "seed: " + "9" * 5000),
        ["integer of 5,000 characters", "seed: 999"],
    ),
    "huge name": (_replace(TINY, "name: tiny", "name: " + "x" * 100_000), ["name", "at most 100 characters"]),
    "inf": (_replace(TINY, "p99_s: 8.0", "p99_s: .inf"), ["slo.p99_s", "inf"]),
    "list key": (TINY + "? [a, b]\n: 1\n", ["plain value"]),
    "not a mapping": ("just a string\n", ["must be a mapping"]),
    "too many phases": (
        TINY.replace("phases:\n", "phases:\n" + "  - {calls_per_day: 1}\n" * 101),
        ["phases"],
    ),
    "latin-1": (TINY.replace("tiny", "caf\u00e9").encode("latin-1"), ["not UTF-8", "0xe9"]),
    "binary": (bytes(range(256)) * 8, ["not UTF-8"]),
    "nul bytes": (b"seed: \x00\x00\n", ["not valid YAML"]),
    "empty": (b"", ["must be a mapping"]),
    "over a megabyte": ("# " + "x" * 1_000_001 + "\n" + TINY, ["more than 1,000,000 bytes"]),
}


def _refused(done: subprocess.CompletedProcess, words: list[str]) -> None:
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert done.stdout == ""
    assert len(done.stderr) <= 520 and done.stderr.count("\n") == 1, done.stderr[:2000]
    assert "Traceback" not in done.stderr
    for word in words:
        assert word in done.stderr, (word, done.stderr)


def test_cli_refuses_hostile_files_in_one_line(tmp_path: Path) -> None:
    # Regression: the laughs ran 57 s, reached 6 GB and wrote 2 GB to stderr; deep nesting printed a
    # RecursionError traceback; 1.0e+308 calls an IndexError; duration_s 1.0e+9 a MemoryError;
    # duplicate keys were accepted (the last won). One command per file, run side by side.
    paths = {}
    for i, (case, (content, _)) in enumerate(HOSTILE_FILES.items()):
        paths[case] = tmp_path / f"hostile-{i}.yaml"
        if isinstance(content, bytes):
            paths[case].write_bytes(content)
        else:
            paths[case].write_text(content, encoding="utf-8")
    with ThreadPoolExecutor(8) as pool:
        done = dict(zip(paths, pool.map(lambda path: _cli("plan", str(path)), paths.values()), strict=True))
    failures = {}
    for case, (_, words) in HOSTILE_FILES.items():
        try:
            _refused(done[case], words)
        except AssertionError as error:
            failures[case] = str(error)[:500]
    assert not failures, failures


def test_cli_refuses_directories_and_missing_files(tmp_path: Path) -> None:
    # Regression: a directory named x.yaml was reported as "does not exist".
    (tmp_path / "x.yaml").mkdir()
    _refused(_cli("plan", str(tmp_path / "x.yaml")), ["is a directory"])
    _refused(_cli("plan", str(tmp_path / "absent.yaml")), ["does not exist"])
    # Regression: a path without .yaml was parsed as YAML text ("the scenario must be a mapping").
    bad = tmp_path / "scenario.txt"
    bad.write_text(_replace(TINY, "p99_s: 8.0", "p99_s: -1"), encoding="utf-8")
    _refused(_cli("plan", str(bad)), ["slo.p99_s", "-1"])
    _refused(_cli("plan", str(tmp_path / "no-such-file")), ["does not exist"])


def test_paths_without_yaml_suffix_are_files(tmp_path: Path) -> None:
    path = tmp_path / "roadmap"
    path.write_text(TINY, encoding="utf-8")
    assert load_scenario(str(path)) == load_scenario(TINY) == load_scenario(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_scenario("roadmap-that-is-not-here")


def test_yaml_12_floats_are_numbers() -> None:
    # Regression: PyYAML (YAML 1.1) read 1.0e15 and 1e9 as strings, and the error blamed the user.
    text = _replace(TINY, "calls_per_day: 200000", "calls_per_day: 2.0e5")
    text = _replace(text, "calls_per_day: 3000000", "calls_per_day: 3e6")
    text = _replace(text, "p99_s: 8.0", "p99_s: 8E+0")
    scenario = load_scenario(text)
    assert [p.calls_per_day for p in scenario.phases] == [200_000.0, 3_000_000.0]
    assert scenario.slo.p99_s == 8.0
    assert scenario == load_scenario(TINY)
    assert load_scenario(_replace(TINY, "name: tiny", "name: 1e9x")).name == "1e9x"  # still a string


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: load_scenario(TINY).__class__(phases=None, models=load_scenario(TINY).models), "phases"),
        (lambda: replace(load_scenario(TINY), traffic=None), "traffic"),
        (lambda: replace(load_scenario(TINY), seed=2**63), "seed"),
        (lambda: replace(load_scenario(TINY), models=[1]), "models[0]"),
        (lambda: PriceOverrides(on_demand_usd_per_gpu_hour=[("H100 SXM",)]), "on_demand_usd_per_gpu_hour"),
        (lambda: PriceOverrides(on_demand_usd_per_gpu_hour=None), "on_demand_usd_per_gpu_hour"),
        (
            lambda: PriceOverrides(on_demand_usd_per_gpu_hour=[("H100 SXM", 1e308)]),
            "on_demand_usd_per_gpu_hour",
        ),
        (lambda: SearchSettings(batch_sizes=None), "search.batch_sizes"),
        (lambda: SearchSettings(batch_sizes=(10**30,)), "search.batch_sizes[0]"),
        (lambda: SearchSettings(max_replicas=10**30), "search.max_replicas"),
        (lambda: SearchSettings(replications=1000), "search.replications"),
        (lambda: RequestSizes(tokens_in_median=1e19, tokens_in_max=10**19), "requests.tokens_in"),
        (lambda: Traffic(interarrival_cv=1e-300), "traffic.interarrival_cv"),
        (lambda: Phase("p", 1e308), "p.calls_per_day"),
        (lambda: Phase("p", 1.0, days=10**30), "p.days"),
        (lambda: ModelChoice("Llama-3.1-8B", dtype="bf17"), "models[].dtype"),
        (lambda: load_scenario(42), "path_or_text"),
        (lambda: plan_table(load_scenario(TINY), None), "results"),
        (lambda: format_plan_table(None), "table"),
    ],
)
def test_direct_construction_names_the_field(build, field: str) -> None:
    with pytest.raises((TypeError, ValueError)) as caught:
        build()
    assert field in str(caught.value), str(caught.value)
