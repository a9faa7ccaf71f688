"""Fixtures for the site check: the browser, the built site, and a local HTTP server for it.

The site is served over HTTP rather than opened as file:// because the search page fetches
``searchindex.js`` and the pages it lists, which browsers block for file:// URLs.
"""

from __future__ import annotations

import functools
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from book_sources import site_dir
from headless_chromium import find_browser


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files without logging every request to stderr."""

    def log_message(self, format: str, *args: object) -> None:  # the base class names it format
        pass


@pytest.fixture(scope="session")
def browser() -> str:
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
def site() -> Path:
    """The built site; a missing build is an error, not a reason to skip."""
    root = site_dir()
    if not (root / "index.html").is_file():
        message = f"no built site at {root}: run `make book` first (or set SCALEPLAY_SITE_DIR)"
        pytest.fail(message, pytrace=False)
    return root


@pytest.fixture(scope="session")
def base_url(site: Path) -> Iterator[str]:
    """URL of the site, served from a thread on a free port of 127.0.0.1 for the whole session."""
    handler = functools.partial(QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="site-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
