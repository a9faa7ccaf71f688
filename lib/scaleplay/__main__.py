"""The command line: ``python -m scaleplay plan my.yaml`` prints a roadmap's plan table.

The scenario file is described in ``scaleplay.scenario`` (the packaged example is
``scaleplay/data/scenario_example.yaml``). A file that cannot be read, is not a scenario or holds a
value that is not allowed gives one line on stderr (at most ``MAX_MESSAGE_CHARS`` characters, values
cut short, never a traceback) and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .scenario import example_scenario_path, format_plan_table, load_scenario, plan_scenario

__all__ = ["main", "MAX_MESSAGE_CHARS"]

#: The longest error line the command prints.
MAX_MESSAGE_CHARS = 500


def _fail(scenario: str, error: BaseException) -> int:
    """Print ``error`` as one line of at most ``MAX_MESSAGE_CHARS`` characters; exit status 2."""
    message = " ".join(str(error).split()) or type(error).__name__
    if not isinstance(error, OSError | ValueError | TypeError):
        message = f"{type(error).__name__}: {message}"
    shown = " ".join(scenario.split())
    line = f"python -m scaleplay plan: error: {shown}: {message}"
    if len(line) > MAX_MESSAGE_CHARS:
        line = line[: MAX_MESSAGE_CHARS - 3] + "..."
    print(line, file=sys.stderr)
    return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m scaleplay",
        description="Size an inference fleet for each phase of a growth roadmap.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    plan = commands.add_parser(
        "plan",
        help="print the plan table of a scenario YAML file",
        description=(
            "Simulate each phase's peak and print the cheapest fleet meeting the SLO, one row per phase. "
            f"Example scenario: {example_scenario_path()}"
        ),
    )
    plan.add_argument("scenario", help="path of the scenario YAML file")
    plan.add_argument("--progress", action="store_true", help="show a progress bar of the simulations")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        scenario = load_scenario(Path(args.scenario))  # always a file, whatever its name
    except Exception as error:  # any file at all: one line, no traceback
        return _fail(args.scenario, error)
    try:
        table = plan_scenario(scenario, progress=args.progress)
    except (ValueError, TypeError, OverflowError) as error:  # a value refused once the plan runs
        return _fail(args.scenario, error)
    print(format_plan_table(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
