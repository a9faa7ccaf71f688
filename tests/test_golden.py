"""The golden master: every platform in ``golden_master.cases()`` gives the recorded tables, bit for bit.

A change that moves a result on purpose says so in its commit and re-records that entry only
(``python tests/golden_master.py NAME``)."""

from __future__ import annotations

import pytest

import golden_master

RECORD = golden_master.recorded()


@pytest.mark.parametrize("seed", golden_master.SEEDS)
@pytest.mark.parametrize("name", list(golden_master.cases()))
def test_run_matches_the_golden_master(name: str, seed: int) -> None:
    assert golden_master.fingerprint(name, seed) == RECORD[f"{name}/{seed}"]


def test_every_recorded_entry_has_a_case() -> None:
    names = {f"{name}/{seed}" for name in golden_master.cases() for seed in golden_master.SEEDS}
    assert names == set(RECORD)
