"""Open a page of the site with Playwright and report what its console and network said.

Each page gets its own browser context (fresh profile, fresh localStorage: what a first-time reader
sees). Everything the page logs, throws or fails to load while it loads and while it is probed ends up
in its ``PageReport``, so that one failing test shows the whole story of its page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, Request, Response
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

# The browser itself asks each server for /favicon.ico; no page links it (the book sets no favicon), and
# what that root path holds depends on where the site is hosted, so its 404 is not a page's error.
IGNORED_PATHS = frozenset({"/favicon.ico"})
# The only host a page may ask anything of: the local server of the site.
LOCAL_HOST = "127.0.0.1"


@dataclass
class PageReport:
    """What one page did between navigation and the end of its probes."""

    url: str
    problems: list[str] = field(default_factory=list)  # console errors, exceptions, failed loads
    console: list[str] = field(default_factory=list)  # every console line, for failure messages
    probes: dict[str, Any] = field(default_factory=dict)  # value of each probe, evaluated in the page

    def describe(self) -> str:
        lines = [f"page {self.url}"]
        lines += [f"  problem: {p}" for p in self.problems] or ["  no problems"]
        lines += [f"  console: {c}" for c in self.console] or ["  console: (nothing)"]
        return "\n".join(lines)


def ignored(url: str) -> bool:
    return urlsplit(url).path in IGNORED_PATHS


def watch(page: Page, report: PageReport) -> None:
    """File the page's console lines, uncaught exceptions and network trouble under ``report``."""

    def on_console(message: ConsoleMessage) -> None:
        where = message.location.get("url", "")
        if ignored(where):
            return
        line = f"[{message.type}] {message.text} {where}".rstrip()
        report.console.append(line)
        if message.type in ("error", "assert"):  # also how failed loads (HTTP 4xx/5xx) show up
            report.problems.append(f"console.{message.type}: {message.text} {where}".rstrip())

    def on_page_error(error: PlaywrightError) -> None:
        text = error.stack or error.message
        report.console.append(f"[exception] {text}")
        report.problems.append(f"uncaught exception: {text}")

    def on_request(request: Request) -> None:
        parts = urlsplit(request.url)
        if parts.scheme in ("http", "https") and parts.hostname != LOCAL_HOST:
            report.problems.append(f"requests {request.url}: the site must work offline")

    def on_request_failed(request: Request) -> None:
        if not ignored(request.url):
            report.problems.append(f"failed to load {request.url}: {request.failure}")

    def on_response(response: Response) -> None:
        if response.status >= 400 and not ignored(response.url):
            report.problems.append(f"HTTP {response.status} for {response.url}")

    page.on("console", on_console)
    page.on("pageerror", on_page_error)
    page.on("request", on_request)
    page.on("requestfailed", on_request_failed)
    page.on("response", on_response)


@dataclass
class Visit:
    """A page to open: its path relative to the site, its probes, and what tells that it is ready.

    Each probe is a JavaScript function and its argument; probes run in order, and their values are kept
    by name. ``ready_js``, if given, must become truthy (the page's own work done, e.g. a search)
    before the probes run.
    """

    path: str
    probes: dict[str, tuple[str, Any]]
    ready_js: str | None = None


@dataclass
class Loading:
    """A page on its way: its own context, the page, and the report its events go to."""

    context: BrowserContext
    page: Page
    report: PageReport
    navigated: bool


#: How Playwright words a wait that ran out of time.
TIMED_OUT = "Timeout"


def open_pages(
    browser: Browser, context_args: dict[str, Any], visits: list[Visit], parallel: int, timeout_s: float
) -> list[PageReport]:
    """Each visit in a fresh context, ``parallel`` pages loading at a time; their reports, in order.

    The sync API waits on one page at a time, but every page of a batch starts to navigate first, so
    the browser loads them side by side while the test waits on the first.
    """
    reports: list[PageReport] = []
    for first in range(0, len(visits), parallel):
        batch = visits[first : first + parallel]
        loading = [start(browser, context_args, visit, timeout_s) for visit in batch]
        reports += [finish(page, visit) for page, visit in zip(loading, batch, strict=True)]
    # A page that never settled is loaded once more, alone: on a loaded machine headless Chromium has
    # (rarely) missed a load event; a page that hangs for real times out twice and fails.
    for k, (visit, report) in enumerate(zip(visits, reports, strict=True)):
        if any(TIMED_OUT in problem for problem in report.problems):
            reports[k] = finish(start(browser, context_args, visit, timeout_s), visit)
    return reports


def start(browser: Browser, context_args: dict[str, Any], visit: Visit, timeout_s: float) -> Loading:
    """A fresh context whose page has begun to load ``visit.path``."""
    context = browser.new_context(**context_args)
    context.set_default_timeout(timeout_s * 1000)
    page = context.new_page()
    report = PageReport(visit.path)
    watch(page, report)
    try:
        response = page.goto(visit.path, wait_until="commit")
    except PlaywrightError as error:
        report.problems.append(f"browser: {error.message.splitlines()[0]}")
        return Loading(context, page, report, navigated=False)
    report.url = page.url
    if response is None or not response.ok:
        status = f"HTTP {response.status}" if response else "no response"
        report.problems.append(f"could not open {visit.path}: {status}")
    return Loading(context, page, report, navigated=True)


def finish(loading: Loading, visit: Visit) -> PageReport:
    """Wait until the page has settled and is ready, run its probes, and close its context.

    A page has settled once its load event fired and the network was then idle for 500 ms.
    """
    page, report = loading.page, loading.report
    try:
        if loading.navigated:
            page.wait_for_load_state("load")
            page.wait_for_load_state("networkidle")
            if visit.ready_js is not None:
                try:
                    page.wait_for_function(visit.ready_js)
                except PlaywrightTimeoutError:
                    report.problems.append(f"not ready in time: {visit.ready_js}")
            for name, (function_js, argument) in visit.probes.items():
                report.probes[name] = page.evaluate(function_js, argument)
    except PlaywrightError as error:  # one page's trouble should not hide the others' reports
        report.problems.append(f"browser: {error.message.splitlines()[0]}")
    finally:
        loading.context.close()
    return report
