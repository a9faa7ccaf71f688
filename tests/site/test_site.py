"""The built site as a reader's browser shows it: every page, its figures, a clean console, and search.

Each page of ``_toc.yml`` is opened in headless Chromium (a fresh profile per page, as a first visit)
from a local HTTP server. A page passes when its heading is the chapter's title, every figure the
chapter's source declares is on the page with an image the browser decoded, no math failed to
typeset, and nothing went wrong in its console: no console.error, no uncaught exception, no resource
that failed to load, no request that left the machine. Pages load in parallel in one session fixture;
the per-page tests then read their page's report, so a failure names the page and shows its console.

Search is checked end to end: a word taken from one chapter's text must find that chapter.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import pytest
from book_sources import chapter_title, declared_figures, page_source, project_dir, toc_pages
from headless_chromium import BrowserError, PageReport, run_page, site_url

pytestmark = pytest.mark.site

# Pages at a time, one browser each: a browser keeps about one core busy, so more pages than cores
# gains nothing (measured on two cores: 23 s at two, 28 s at four).
PARALLEL_PAGES = max(2, min(4, os.cpu_count() or 2))
# Per page, from browser start to probe; a page takes 2–4 s here.
PAGE_TIMEOUT_S = 60.0

# A word from one chapter's text (Halfin–Whitt, the square-root staffing regime) and that chapter.
SEARCH_WORD = "Halfin"
SEARCH_CHAPTER = "book/envelope"

# What the page shows, asked of the page itself once it has settled (MathJax included).
PAGE_PROBE_JS = """
(async (figureIds) => {
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
})(%s)
"""

# The search page is done when its summary line ("Search finished, found ...") is filled in.
SEARCH_READY_JS = '(document.querySelector("#search-results .search-summary")?.textContent || "") !== ""'
SEARCH_PROBE_JS = """
({
  summary: document.querySelector("#search-results .search-summary")?.textContent || "",
  hits: Array.from(document.querySelectorAll("#search-results ul.search > li > a:first-of-type"))
    .map((a) => new URL(a.href).pathname),
})
"""


PAGES = toc_pages(project_dir() / "_toc.yml")


# -- running the browser --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def page_reports(request: pytest.FixtureRequest, browser: str, base_url: str) -> dict[str, PageReport]:
    """The toc pages this session tests (all, unless -k or a test id picked some), a few at a time."""
    items = request.session.items
    selected = {item.callspec.params.get("name") for item in items if hasattr(item, "callspec")}
    pages = [name for name in PAGES if name in selected]

    def visit(name: str) -> PageReport:
        url = site_url(base_url, f"{name}.html")
        names, _ = declared_figures(page_source(name))
        try:
            return run_page(browser, url, PAGE_PROBE_JS % json.dumps(names), timeout_s=PAGE_TIMEOUT_S)
        except BrowserError as error:  # one page's trouble should not hide the others' reports
            return PageReport(url, problems=[f"browser: {error}"])

    with ThreadPoolExecutor(max_workers=PARALLEL_PAGES) as pool:
        return dict(zip(pages, pool.map(visit, pages), strict=True))


def test_toc_lists_pages() -> None:
    assert len(PAGES) > 1, f"{project_dir() / '_toc.yml'} lists no pages"
    assert SEARCH_CHAPTER in PAGES, f"{SEARCH_CHAPTER} (searched for {SEARCH_WORD!r}) is not in the toc"


def check(ok: bool, message: str) -> None:
    """Fail with just ``message``: the page report it carries says more than an assertion rewrite."""
    if not ok:
        pytest.fail(message, pytrace=False)


@pytest.mark.parametrize("name", PAGES)
def test_page(name: str, page_reports: dict[str, PageReport], site: Path) -> None:
    report = page_reports[name]
    context = f"\n{report.describe()}\nprobe: {json.dumps(report.probe, indent=1)}"
    check(not report.problems, f"{name}.html: the browser reported problems\n{report.describe()}")

    probe = report.probe
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


def test_search_finds_chapter_by_word(browser: str, base_url: str) -> None:
    # The word must still be in the chapter's text: a stale index must not be what makes this pass.
    check(SEARCH_WORD in page_source(SEARCH_CHAPTER), f"{SEARCH_WORD!r} is no longer in {SEARCH_CHAPTER}.md")
    url = site_url(base_url, f"search.html?q={quote(SEARCH_WORD)}")
    report = run_page(browser, url, SEARCH_PROBE_JS, ready_js=SEARCH_READY_JS, timeout_s=PAGE_TIMEOUT_S)
    context = f"\n{report.describe()}\nprobe: {json.dumps(report.probe, indent=1)}"
    check(not report.problems, f"search page: the browser reported problems{context}")
    check(
        any(hit.endswith(f"/{SEARCH_CHAPTER}.html") for hit in report.probe["hits"]),
        f"searching {SEARCH_WORD!r} did not list {SEARCH_CHAPTER}.html{context}",
    )
