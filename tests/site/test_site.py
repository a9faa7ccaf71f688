"""The built site as a reader's browser shows it: every page, its figures, a clean console, search, and
tables and code that fit the article's column.

Each page of ``_toc.yml`` is opened with Playwright in the system's headless Chromium (a fresh context
per page, as a first visit) from a local HTTP server. A page passes when its heading is the chapter's
title, every figure the chapter's source declares is on the page with an image the browser decoded, no
math failed to typeset, and nothing went wrong in its console: no console.error, no uncaught exception,
no resource that failed to load, no request that left the machine. It fits its column when no table,
code cell or preformatted block in the article is wider than the article's text column. Each page is
loaded once, in one session fixture; the per-page tests then read their page's report, so a failure
names the page and shows its console.

Search is checked end to end: a word taken from one chapter's text must find that chapter.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from book_sources import chapter_title, declared_figures, page_source, project_dir, toc_pages
from page_report import PageReport, Visit, open_pages
from playwright.sync_api import Browser

pytestmark = pytest.mark.site

# Pages loading at a time, each in its own context of one browser: the browser keeps about one core
# busy per loading page, so more pages than cores gains nothing.
PARALLEL_PAGES = max(2, min(4, os.cpu_count() or 2))
# Per step of a page (navigation, settling, each probe); a page takes 1–3 s here.
PAGE_TIMEOUT_S = 60.0

# A word from one chapter's text (Halfin–Whitt, the square-root staffing regime) and that chapter.
SEARCH_WORD = "Halfin"
SEARCH_CHAPTER = "book/envelope"

# How far past the column an element may reach before it overflows: sub-pixel layout and rounding of
# scrollWidth to whole pixels, not content.
OVERFLOW_TOLERANCE_PX = 2

# Whether a table or code block that fits the column only by scrolling sideways (inside itself, or in
# the theme's scrolling wrapper) overflows. It does: the column shows only part of it at a time, and
# the reader must scroll to read a line or a row. False would count only what spills past the column
# or is cut off.
SCROLLING_OVERFLOWS = True

# What the page shows, asked of the page itself once it has settled (MathJax included).
PAGE_PROBE_JS = """
async (figureIds) => {
  if (window.MathJax?.startup?.promise) await window.MathJax.startup.promise;
  const article = document.querySelector("article.bd-article") || document.querySelector("main")
    || document.body;
  const heading = article.querySelector("h1");
  let title = null;
  if (heading) {
    const copy = heading.cloneNode(true);
    copy.querySelectorAll(".headerlink, .section-number").forEach((e) => e.remove());
    title = copy.textContent.trim();
  }
  const image = (img) => ({
    src: img.getAttribute("src"),
    loaded: img.complete && img.naturalWidth > 0 && img.naturalHeight > 0,
    width_px: img.naturalWidth,
  });
  const figures = {};
  for (const id of figureIds) {
    const node = document.getElementById(id);
    figures[id] = node ? Array.from(node.querySelectorAll("img")).map(image) : null;
  }
  return {
    title,
    images: Array.from(article.querySelectorAll("img")).map(image),
    figures,
    math_errors: Array.from(document.querySelectorAll("mjx-merror"))
      .map((e) => e.getAttribute("data-mjx-error") || e.textContent),
  };
}
"""

# Tables, code cells and preformatted blocks of the article (cell outputs included) that are wider than
# its text column: an element whose box reaches past the column, or whose content is wider than its box
# (a code line behind the block's own scrollbar). Each says how the reader meets it: it spills over the
# column's edge, it scrolls sideways (inside itself or inside a wrapper such as the theme's), or it is
# cut off. Collapsed blocks (a hidden cell's output, a dropdown) are opened first: a reader may open them.
OVERFLOW_PROBE_JS = """
(tolerancePx) => {
  const article = document.querySelector("article.bd-article") || document.querySelector("main")
    || document.body;
  article.querySelectorAll("details:not([open])").forEach((d) => { d.open = true; });
  const style = getComputedStyle(article);
  const box = article.getBoundingClientRect();
  const left = box.left + parseFloat(style.borderLeftWidth) + parseFloat(style.paddingLeft);
  const right = box.right - parseFloat(style.borderRightWidth) - parseFloat(style.paddingRight);
  const clipping = (element) => {  // the nearest box between element and article that clips sideways
    for (let node = element.parentElement; node && node !== article; node = node.parentElement) {
      if (getComputedStyle(node).overflowX !== "visible") return node;
    }
    return null;
  };
  const scrolls = (node) => ["auto", "scroll"].includes(getComputedStyle(node).overflowX);
  const name = (node) => node.tagName.toLowerCase()
    + Array.from(node.classList).filter((c) => !["docutils", "container", "notranslate"].includes(c))
      .map((c) => "." + c).join("");
  const kind = (element) => {
    const where = element.closest("div.cell_input") ? "code cell"
      : element.closest("div.cell_output") ? "cell output" : null;
    if (element.matches("div.cell_input")) return "code cell";
    if (element.tagName === "TABLE") return where === "cell output" ? "table (cell output)" : "table";
    return where || "code block";
  };
  const overflows = [];
  for (const element of article.querySelectorAll("table, div.cell_input, pre")) {
    const rect = element.getBoundingClientRect();
    if (rect.width === 0 && rect.height === 0) continue;  // not rendered
    const hiddenPx = element.scrollWidth - element.clientWidth;  // content wider than its own box
    const pastPx = Math.max(rect.right - right, left - rect.left);  // box past the column's edges
    if (hiddenPx <= tolerancePx && pastPx <= tolerancePx) continue;
    let how;
    if (pastPx > tolerancePx) {
      const wrapper = clipping(element);
      how = !wrapper ? "spills past the column"
        : scrolls(wrapper) ? `scrolls sideways inside ${name(wrapper)}` : `is cut off by ${name(wrapper)}`;
    } else {
      how = scrolls(element) ? "scrolls sideways inside itself" : "is cut off at its own edge";
    }
    overflows.push({
      element: kind(element),
      section: element.closest("section[id]")?.id || null,
      text: element.textContent.trim().replace(/\\s+/g, " ").slice(0, 50),
      width_px: Math.round(Math.max(rect.width, element.scrollWidth)),
      column_px: Math.round(right - left),
      how,
      scrolls: how.startsWith("scrolls"),  // the reader can scroll to the rest
    });
  }
  return overflows;
}
"""

# The search page is done when its summary line ("Search finished, found ...") is filled in.
SEARCH_READY_JS = '(document.querySelector("#search-results .search-summary")?.textContent || "") !== ""'
SEARCH_PROBE_JS = """
() => ({
  summary: document.querySelector("#search-results .search-summary")?.textContent || "",
  hits: Array.from(document.querySelectorAll("#search-results ul.search > li > a:first-of-type"))
    .map((a) => new URL(a.href).pathname),
})
"""


PAGES = toc_pages(project_dir() / "_toc.yml")

# Pages known to overflow their column, with what overflows (measured at 1280x900, where the article's
# column is 688 px: about 77 characters of code, fewer in a cell's output). Strict: a page's test fails
# once it fits, so that the fix takes it off this list. Empty since issue 14 made every page fit; a page
# that overflows again fails its test until it is fixed or listed here with the reason.
OVERFLOWING_PAGES: dict[str, str] = {}


class ColumnOverflow(AssertionError):
    """A page's tables or code do not fit its column (the only failure its known offenders may show)."""


def fits_column_param(name: str) -> Any:
    if name not in OVERFLOWING_PAGES:
        return name
    reason = f"{name} overflows its column: {OVERFLOWING_PAGES[name]}"
    return pytest.param(name, marks=pytest.mark.xfail(raises=ColumnOverflow, strict=True, reason=reason))


# -- loading the pages ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def page_reports(
    request: pytest.FixtureRequest, browser: Browser, browser_context_args: dict[str, Any]
) -> dict[str, PageReport]:
    """The toc pages this session tests (all, unless -k or a test id picked some), each loaded once."""
    items = request.session.items
    selected = {item.callspec.params.get("name") for item in items if hasattr(item, "callspec")}
    pages = [name for name in PAGES if name in selected]
    visits = [
        Visit(
            f"{name}.html",
            {
                "page": (PAGE_PROBE_JS, declared_figures(page_source(name))[0]),
                "overflow": (OVERFLOW_PROBE_JS, OVERFLOW_TOLERANCE_PX),
            },
        )
        for name in pages
    ]
    reports = open_pages(browser, browser_context_args, visits, PARALLEL_PAGES, PAGE_TIMEOUT_S)
    return dict(zip(pages, reports, strict=True))


def check(ok: bool, message: str) -> None:
    """Fail with just ``message``: the page report it carries says more than an assertion rewrite."""
    if not ok:
        pytest.fail(message, pytrace=False)


def probe_of(report: PageReport, probe: str) -> Any:
    check(probe in report.probes, f"{report.url}: the {probe} probe did not run\n{report.describe()}")
    return report.probes[probe]


# -- the tests ------------------------------------------------------------------------------------


def test_toc_lists_pages() -> None:
    assert len(PAGES) > 1, f"{project_dir() / '_toc.yml'} lists no pages"
    assert SEARCH_CHAPTER in PAGES, f"{SEARCH_CHAPTER} (searched for {SEARCH_WORD!r}) is not in the toc"
    unknown = set(OVERFLOWING_PAGES) - set(PAGES)
    assert not unknown, f"OVERFLOWING_PAGES names pages the toc does not list: {sorted(unknown)}"


@pytest.mark.parametrize("name", PAGES)
def test_page(name: str, page_reports: dict[str, PageReport], site: Path) -> None:
    report = page_reports[name]
    check(not report.problems, f"{name}.html: the browser reported problems\n{report.describe()}")
    probe = probe_of(report, "page")
    context = f"\n{report.describe()}\nprobe: {json.dumps(probe, indent=1)}"

    source = page_source(name)
    title = chapter_title(source)
    check(title is not None, f"no '# ' heading found in the source of {name}")
    check(probe["title"] == title, f"{name}.html shows heading {probe['title']!r}, not {title!r}{context}")

    broken = [image["src"] for image in probe["images"] if not image["loaded"]]
    check(not broken, f"{name}.html: images the browser could not show: {broken}{context}")

    _, count = declared_figures(source)
    missing = [figure for figure, images in probe["figures"].items() if not images]
    check(not missing, f"{name}.html lacks figures its source declares: {missing}{context}")
    blank = [figure for figure, images in probe["figures"].items() if not all(i["loaded"] for i in images)]
    check(not blank, f"{name}.html: figures whose image did not load: {blank}{context}")
    check(
        len(probe["images"]) >= count,
        f"{name}.html shows {len(probe['images'])} images for {count} declared figures{context}",
    )
    for image in probe["images"]:
        if "://" in image["src"] or image["src"].startswith("data:"):
            continue
        path = (site / name).parent / image["src"]
        check(path.is_file() and path.stat().st_size > 0, f"{name}.html: {image['src']} is not in {site}")

    check(not probe["math_errors"], f"{name}.html: MathJax could not typeset: {probe['math_errors']}")


@pytest.mark.parametrize("name", [fits_column_param(name) for name in PAGES])
def test_page_fits_column(name: str, page_reports: dict[str, PageReport]) -> None:
    overflows = [
        o for o in probe_of(page_reports[name], "overflow") if SCROLLING_OVERFLOWS or not o["scrolls"]
    ]
    lines = [
        f"  {o['element']} in #{o['section']}: {o['width_px']} px wide in a {o['column_px']} px column, "
        f"{o['how']} ({o['text']!r})"
        for o in overflows
    ]
    if overflows:
        raise ColumnOverflow(f"{name}.html: tables or code that do not fit the column\n" + "\n".join(lines))


def test_search_finds_chapter_by_word(browser: Browser, browser_context_args: dict[str, Any]) -> None:
    # The word must still be in the chapter's text: a stale index must not be what makes this pass.
    check(SEARCH_WORD in page_source(SEARCH_CHAPTER), f"{SEARCH_WORD!r} is no longer in {SEARCH_CHAPTER}.md")
    visit = Visit(f"search.html?q={quote(SEARCH_WORD)}", {"search": (SEARCH_PROBE_JS, None)}, SEARCH_READY_JS)
    [report] = open_pages(browser, browser_context_args, [visit], 1, PAGE_TIMEOUT_S)
    check(not report.problems, f"search page: the browser reported problems\n{report.describe()}")
    probe = probe_of(report, "search")
    context = f"\n{report.describe()}\nprobe: {json.dumps(probe, indent=1)}"
    check(
        any(hit.endswith(f"/{SEARCH_CHAPTER}.html") for hit in probe["hits"]),
        f"searching {SEARCH_WORD!r} did not list {SEARCH_CHAPTER}.html{context}",
    )
