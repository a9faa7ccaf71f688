"""The package's layering (``tools/check_layers.py``, run by ``make lint``): the package keeps it, and
the checker catches an upward import, a cycle and a module in no layer."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import check_layers  # noqa: E402


def test_the_package_keeps_its_layers():
    assert check_layers.check(ROOT / "lib" / "scaleplay") == []


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "scaleplay"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_an_upward_import_is_caught(tmp_path):
    root = _package(
        tmp_path,
        {
            "config/__init__.py": "",
            "config/pool.py": "from ..sim.engine import Platform\n",
            "sim/__init__.py": "",
            "sim/engine.py": "from ..config import pool\n",
        },
    )
    problems = check_layers.check(root)
    assert any("config (config) imports sim (engine), a higher layer" in p for p in problems), problems


def test_an_upward_import_only_for_annotations_is_still_caught(tmp_path):
    root = _package(
        tmp_path,
        {
            "metrics.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .planner import plan\n"
            ),
            "planner.py": "from . import metrics\n",
        },
    )
    problems = check_layers.check(root)
    assert len(problems) == 2 and "metrics (analysis) imports planner (plan)" in problems[0]
    assert problems[1] == "import cycle between modules: metrics -> planner -> metrics"


def test_a_cycle_and_a_stray_module_are_caught(tmp_path):
    root = _package(
        tmp_path,
        {
            "queueing.py": "from . import capacity\n",
            "capacity.py": "from .queueing import erlang_c\n",
            "x.py": "",
        },
    )
    problems = check_layers.check(root)
    assert any(p.startswith("import cycle: capacity -> queueing -> capacity") for p in problems), problems
    assert any("'x' is in no layer" in p for p in problems), problems


def test_a_cycle_inside_a_package_is_caught_even_for_annotations(tmp_path):
    root = _package(
        tmp_path,
        {
            "sim/__init__.py": "",
            "sim/engine.py": "from .pool import Pool\n",
            "sim/pool.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .engine import Platform\n"
            ),
        },
    )
    problems = check_layers.check(root)
    assert problems == ["import cycle between modules: sim.engine -> sim.pool -> sim.engine"], problems
