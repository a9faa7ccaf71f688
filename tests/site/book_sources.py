"""What the book's sources say the site must show: its pages, their titles, their figures.

The site check compares the browser's view of each page with these, so a chapter that lost a figure
or a title fails even when the build itself passed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]

# A code cell's option block (```{code-cell} then YAML between --- lines), and figure directives with
# their option lines.
CELL_OPTIONS = re.compile(r"^```\{code-cell\}[^\n]*\n---\n(.*?)\n---\n", re.MULTILINE | re.DOTALL)
FIGURE_DIRECTIVE = re.compile(
    r"^(?:`{3,}|:{3,})\{(?:glue:)?figure\}[^\n]*\n((?::[\w-]+:[^\n]*\n)*)", re.MULTILINE
)
DIRECTIVE_NAME = re.compile(r"^:name:\s*(\S+)", re.MULTILINE)
FENCE = re.compile(r"^(`{3,}|~{3,})")


def site_dir() -> Path:
    """The built HTML site: SCALEPLAY_SITE_DIR, or this checkout's ``_build/html``."""
    return Path(os.environ.get("SCALEPLAY_SITE_DIR", REPO / "_build" / "html")).resolve()


def project_dir() -> Path:
    """The sources the site was built from: the project around ``<project>/_build/html``, else this one."""
    candidate = site_dir().parents[1]
    return candidate if (candidate / "_toc.yml").is_file() else REPO


def toc_pages(toc_path: Path) -> list[str]:
    """Document names of ``_toc.yml`` in reading order: the root, then every ``file:`` entry."""
    toc = yaml.safe_load(toc_path.read_text(encoding="utf-8"))
    names = [toc["root"]]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "file" in node:
                names.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk({key: value for key, value in toc.items() if key != "root"})
    return [Path(name).with_suffix("").as_posix() for name in names]


def page_source(name: str) -> str:
    """The MyST source of a page, or "" when it has none (e.g. a notebook-only page)."""
    path = project_dir() / f"{name}.md"
    return path.read_text(encoding="utf-8") if path.is_file() else ""


def chapter_title(source: str) -> str | None:
    """The first level-1 heading outside code fences, without inline markup marks."""
    fence: str | None = None
    for line in source.splitlines():
        marker = FENCE.match(line)
        if marker:
            if fence is None:
                fence = marker.group(1)
            elif marker.group(1).startswith(fence):
                fence = None
            continue
        if fence is None and line.startswith("# "):
            return re.sub(r"[`*]", "", line[2:]).strip()
    return None


def declared_figures(source: str) -> tuple[list[str], int]:
    """Names of the figures a page declares, and how many it declares, named or not."""
    names: list[str] = []
    count = 0
    for block in CELL_OPTIONS.findall(source):
        options = yaml.safe_load(block) or {}
        figure = (options.get("mystnb") or {}).get("figure") if isinstance(options, dict) else None
        if figure is not None:
            count += 1
            if isinstance(figure, dict) and figure.get("name"):
                names.append(str(figure["name"]))
    for directive_options in FIGURE_DIRECTIVE.findall(source):
        count += 1
        names += DIRECTIVE_NAME.findall(directive_options)
    return names, count
