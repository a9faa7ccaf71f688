"""The package's layering, checked from its imports (``make lint`` runs this).

    python tools/check_layers.py            # checks lib/scaleplay; exit 1 and one line per breach

A module may import only from its own layer or the layers below it; the top-level modules and
packages must not import each other in a cycle when they run; and no two modules may import each
other in a cycle at all, annotations under ``if TYPE_CHECKING:`` included (inside a package, the parts
depend on a contract such as ``sim.run.Run``, not on the module that wires them). The layers, lowest
first:
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

#: Each layer's top-level modules and packages of ``scaleplay``.
LAYERS: tuple[tuple[str, frozenset[str]], ...] = (
    (
        "base",
        frozenset(
            {
                "_validate",
                "backend",
                "schema",
                "rng",
                "report",
                "queueing",
                "profiles",
                "roofline",
                "kernels",
                "workload",
                "trace",
                "capacity",
                "fastpath",
                "steptime",
                "speculative",
            }
        ),
    ),
    ("config", frozenset({"config"})),
    ("engine", frozenset({"sim"})),
    (
        "analysis",
        frozenset(
            {
                "metrics",
                "alerting",
                "cost",
                "controls",
                "regions",
                "simulator",
                "measured",
                "disagg",
                "prefixcache",
            }
        ),
    ),
    ("plan", frozenset({"planner", "experiments", "levers", "reference", "scenario", "__main__",
                        "__init__"})),  # fmt: skip
)
__doc__ += "\n".join(f"    {name}: {', '.join(sorted(units))}" for name, units in LAYERS) + "\n"

PACKAGE = "scaleplay"


def _unit(path: Path, root: Path) -> str:
    """The top-level module or package a file belongs to (``sim`` for ``sim/pool.py``)."""
    parts = path.relative_to(root).with_suffix("").parts
    return parts[0]


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path, root: Path) -> list[tuple[str, str, bool, int]]:
    """(imported top-level unit, imported module as a dotted path, under TYPE_CHECKING, line) for each
    import of the package."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = path.relative_to(root).with_suffix("").parts  # e.g. ("sim", "pool")
    if here[-1] == "__init__":
        here = here[:-1] + ("__init__",)
    found: list[tuple[str, str, bool, int]] = []

    def visit(node: ast.AST, typing_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for inner in child.body:
                    visit_one(inner, True)
                for inner in child.orelse:
                    visit_one(inner, typing_only)
            else:
                visit_one(child, typing_only)

    def visit_one(node: ast.AST, typing_only: bool) -> None:
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this file's package
                base = list(here[:-1])
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target = base + (node.module.split(".") if node.module else [])
                if node.module is None:  # "from . import x": the names are modules
                    for alias in node.names:
                        module = target + [alias.name]
                        found.append((module[0], ".".join(module), typing_only, node.lineno))
                else:
                    found.append((target[0], ".".join(target), typing_only, node.lineno))
            elif node.module and node.module.split(".")[0] == PACKAGE:
                parts = node.module.split(".")[1:]
                for module in [parts] if parts else [[alias.name] for alias in node.names]:
                    found.append((module[0], ".".join(module), typing_only, node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == PACKAGE and len(parts) > 1:
                    found.append((parts[1], ".".join(parts[1:]), typing_only, node.lineno))
        visit(node, typing_only)

    visit(tree, False)
    return found


def check(root: Path) -> list[str]:
    """Every breach of the layering under ``root`` (the package folder), one line each."""
    layer_of = {unit: k for k, (_, units) in enumerate(LAYERS) for unit in units}
    problems: list[str] = []
    graph: dict[str, set[str]] = {}
    modules: dict[str, set[str]] = {}  # every import between modules, annotations' included
    for path in sorted(root.rglob("*.py")):
        source = _unit(path, root)
        if source not in layer_of:
            problems.append(f"{path}: {source!r} is in no layer; add it to tools/check_layers.py")
            continue
        module = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix("__init__").rstrip(".")
        for target, target_module, typing_only, line in _imports(path, root):
            modules.setdefault(module, set()).add(target_module)
            if target not in layer_of or target == source:
                continue
            if layer_of[target] > layer_of[source]:
                problems.append(
                    f"{path}:{line}: {source} ({LAYERS[layer_of[source]][0]}) imports {target} "
                    f"({LAYERS[layer_of[target]][0]}), a higher layer"
                )
            if not typing_only:
                graph.setdefault(source, set()).add(target)
    problems.extend(_cycles(graph))
    problems.extend(line.replace("import cycle", "import cycle between modules") for line in _cycles(modules))
    return problems


def _cycles(graph: dict[str, set[str]]) -> list[str]:
    """One line per import cycle between top-level units."""
    out, state, stack = [], {}, []

    def walk(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycle = stack[stack.index(nxt) :] + [nxt]
                out.append("import cycle: " + " -> ".join(cycle))
            elif nxt not in state:
                walk(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            walk(node)
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0]) if args else Path(__file__).resolve().parents[1] / "lib" / PACKAGE
    problems = check(root)
    for line in problems:
        print(line)
    if not problems:
        print(f"layers: {root} keeps {' < '.join(name for name, _ in LAYERS)}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
