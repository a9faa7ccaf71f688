"""The command line: ``python -m scaleplay plan my.yaml`` prints a roadmap's plan table.

The scenario file is described in ``scaleplay.scenario`` (the packaged example is
``scaleplay/data/scenario_example.yaml``). A file that cannot be read or holds a value that is not
allowed gives a one-line error on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import yaml

from .scenario import example_scenario_path, format_plan_table, load_scenario, plan_scenario

__all__ = ["main"]


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
        scenario = load_scenario(args.scenario)
    except (OSError, ValueError, TypeError, yaml.YAMLError) as error:
        message = " ".join(str(error).split())
        print(f"python -m scaleplay plan: error: {args.scenario}: {message}", file=sys.stderr)
        return 2
    table = plan_scenario(scenario, progress=args.progress)
    print(format_plan_table(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
