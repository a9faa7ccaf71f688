"""Keep notebooks/*.ipynb paired with the chapters in book/*.md (the source of truth).

    python tools/notebooks.py check   # fail if a notebook's inputs differ from its chapter's
    python tools/notebooks.py write   # re-execute every chapter and rewrite its notebook
    python tools/notebooks.py write envelope roadmap   # only these chapters

A chapter is a book/*.md with a ``kernelspec`` in its front matter. ``check`` compares cell types,
sources and metadata, so it does not depend on file times (which mean nothing after a checkout,
unlike ``jupytext --sync``). ``write`` keeps text outputs, which nbval compares, and drops images,
so re-executing a chapter does not grow the repository.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
NOTEBOOKS = ROOT / "notebooks"
IMAGE_MIME_TYPES = ("image/png", "image/jpeg", "image/svg+xml", "application/pdf")
CELL_TIMEOUT_S = 300


def chapters() -> list[Path]:
    """The executable chapters: MyST files whose front matter names a kernel."""
    return sorted(p for p in BOOK.glob("*.md") if "kernelspec" in jupytext.read(p).metadata)


def notebook_path(chapter: Path) -> Path:
    return NOTEBOOKS / f"{chapter.stem}.ipynb"


def _inputs(notebook: nbformat.NotebookNode) -> list[str]:
    """A text rendering of what pairing must preserve: each cell's type, metadata and source."""
    lines = [f"kernelspec: {dict(notebook.metadata.get('kernelspec', {}))}"]
    for index, cell in enumerate(notebook.cells):
        metadata = {k: v for k, v in cell.metadata.items() if k not in ("execution", "ExecuteTime")}
        lines.append(f"--- cell {index}: {cell.cell_type} {metadata}")
        lines.extend(cell.source.splitlines())
    return lines


def check() -> int:
    problems = []
    expected = {notebook_path(c) for c in chapters()}
    for orphan in sorted(set(NOTEBOOKS.glob("*.ipynb")) - expected):
        problems.append(f"{orphan.relative_to(ROOT)} has no chapter book/{orphan.stem}.md")
    for chapter in chapters():
        paired = notebook_path(chapter)
        if not paired.exists():
            problems.append(f"{chapter.relative_to(ROOT)} has no notebook: run `make notebooks`")
            continue
        want, have = _inputs(jupytext.read(chapter)), _inputs(nbformat.read(paired, as_version=4))
        if want != have:
            diff = difflib.unified_diff(
                have, want, str(paired.relative_to(ROOT)), str(chapter.relative_to(ROOT))
            )
            problems.append("\n".join(list(diff)[:60]))
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print("notebooks/ is out of step with book/: run `make notebooks` and commit both.", file=sys.stderr)
        return 1
    print(f"pairing: {len(expected)} notebooks match their chapters")
    return 0


def _strip_images(notebook: nbformat.NotebookNode) -> None:
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)
        for output in cell.get("outputs", []):
            for mime in IMAGE_MIME_TYPES:
                output.get("data", {}).pop(mime, None)


def write(names: list[str]) -> int:
    NOTEBOOKS.mkdir(exist_ok=True)
    known = {c.stem: c for c in chapters()}
    unknown = sorted(set(names) - set(known))
    if unknown:
        print(f"no chapter named {', '.join(unknown)}; chapters: {', '.join(known)}", file=sys.stderr)
        return 2
    for chapter in [known[n] for n in names] if names else known.values():
        notebook = jupytext.read(chapter)
        # Keep the kernel and the pairing; drop what churns between runs and machines.
        notebook.metadata = nbformat.from_dict(
            {
                "kernelspec": notebook.metadata["kernelspec"],
                "jupytext": {"formats": "book///md:myst,notebooks///ipynb"},
            }
        )
        NotebookClient(
            notebook, timeout=CELL_TIMEOUT_S, resources={"metadata": {"path": str(NOTEBOOKS)}}
        ).execute()
        notebook.metadata.pop("language_info", None)
        _strip_images(notebook)
        nbformat.write(notebook, notebook_path(chapter))
        print(f"wrote {notebook_path(chapter).relative_to(ROOT)}")
    return check()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", choices=("check", "write"))
    parser.add_argument("chapters", nargs="*", help="write only these chapters (names without .md)")
    args = parser.parse_args()
    if args.action == "check":
        return check()
    return write(args.chapters)


if __name__ == "__main__":
    sys.exit(main())
