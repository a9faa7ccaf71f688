"""Fixtures for the site check: the system Chromium under pytest-playwright, the built site, and a local
HTTP server for it.

pytest-playwright provides ``browser`` (one per session) and ``browser_context_args``; the fixtures
here point it at the machine's own Chromium (Playwright's downloaded browsers are not used) and at the
local server. The site is served over HTTP rather than opened as file:// because the search page
fetches ``searchindex.js`` and the pages it lists, which browsers block for file:// URLs.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from book_sources import site_dir

# Names tried in order when SCALEPLAY_CHROMIUM is not set.
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome")

# Flags for a quiet, hermetic run: no first-run UI, no background traffic to Google (on a closed network
# its refused connections would stall the browser), no sandbox (CI runs as root), /tmp instead of a
# possibly tiny /dev/shm. Every host except the local server resolves to nothing, so a page that needs
# the network fails here as it would for an offline reader.
BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]

# A laptop's window: wide enough for the theme's three columns (navigation, article, page contents).
VIEWPORT = {"width": 1280, "height": 900}


def find_browser() -> tuple[str | None, str]:
    """The browser executable, or None, and a sentence saying what was looked for."""
    override = os.environ.get("SCALEPLAY_CHROMIUM")
    if override:
        found = shutil.which(override)
        return found, f"SCALEPLAY_CHROMIUM={override!r} ({'found' if found else 'not an executable'})"
    for name in BROWSER_NAMES:
        found = shutil.which(name)
        if found:
            return found, f"found {name} at {found}"
    return None, f"none of {', '.join(BROWSER_NAMES)} is on PATH and SCALEPLAY_CHROMIUM is not set"


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files without logging every request to stderr."""

    def log_message(self, format: str, *args: object) -> None:  # the base class names it format
        pass


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    """Path of the Chromium executable; skips the site tests on a machine without one."""
    executable, why = find_browser()
    if executable is None and os.environ.get("SCALEPLAY_CHROMIUM"):
        pytest.fail(f"site check: {why}", pytrace=False)  # asked for a browser that is not there
    if executable is None:
        pytest.skip(
            f"site check skipped: no headless browser ({why}). Install one with "
            "`apt-get install chromium` (Debian/Ubuntu), or point SCALEPLAY_CHROMIUM at a Chromium or Chrome."
        )
    return executable


@pytest.fixture(scope="session")
def browser_type_launch_args(
    browser_type_launch_args: dict[str, Any], chromium_executable: str
) -> dict[str, Any]:
    """pytest-playwright's launch options (--headed, --slowmo), on the system Chromium."""
    return {**browser_type_launch_args, "executable_path": chromium_executable, "args": BROWSER_ARGS}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict[str, Any]) -> dict[str, Any]:
    """pytest-playwright's context options (base_url is the local server's), in a laptop's window."""
    return {**browser_context_args, "viewport": VIEWPORT}


@pytest.fixture(scope="session")
def site() -> Path:
    """The built site; a missing build is an error, not a reason to skip."""
    root = site_dir()
    if not (root / "index.html").is_file():
        message = f"no built site at {root}: run `make book` first (or set SCALEPLAY_SITE_DIR)"
        pytest.fail(message, pytrace=False)
    return root


@pytest.fixture(scope="session")
def base_url(site: Path) -> Iterator[str]:
    """URL of the site, served from a thread on a free port of 127.0.0.1 for the whole session.

    It overrides pytest-playwright's fixture of the same name, so every browser context opens relative
    paths on this server (the trailing slash makes "book/x.html" resolve under it).
    """
    handler = functools.partial(QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="site-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
