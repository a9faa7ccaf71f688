"""Open a page in headless Chromium and report what its console and network said, with the stdlib only.

Why the DevTools protocol and not ``--dump-dom`` with ``--enable-logging=stderr``: Chromium writes every
console message of a web page to stderr at INFO, whatever its level (``console.log`` and
``console.error`` look the same there), and it does not log resources that failed to load at all. The
DevTools protocol reports both, and lets the test ask the page itself whether its images decoded.

The protocol runs over ``--remote-debugging-pipe``: Chromium reads JSON commands from its fd 3 and
writes replies and events to its fd 4, each message ended by a NUL byte. One browser process per page
keeps pages independent (fresh profile, fresh localStorage: what a first-time reader sees).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

# Names tried in order when SCALEPLAY_CHROMIUM is not set.
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome")

# Flags for a quiet, hermetic run: no first-run UI, no background traffic to Google, no sandbox (CI
# runs as root), /tmp instead of a possibly tiny /dev/shm. Every host except the local server resolves
# to nothing, so a page that needs the network fails here as it would for an offline reader.
BROWSER_FLAGS = (
    "--headless",
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
    "--window-size=1280,900",
)

# The browser itself asks each server for /favicon.ico; no page links it (the book sets no favicon), and
# what that root path holds depends on where the site is hosted, so its 404 is not a page's error.
IGNORED_PATHS = frozenset({"/favicon.ico"})

# A page has settled once, after its load event, no request is in flight and the network has been
# silent for this long.
QUIET_S = 0.5


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


@dataclass
class PageReport:
    """What one page did between navigation and the end of the probe."""

    url: str
    problems: list[str] = field(default_factory=list)  # console errors, exceptions, failed loads
    console: list[str] = field(default_factory=list)  # every console line, for failure messages
    probe: Any = None  # value of the probe expression, evaluated in the page

    def describe(self) -> str:
        lines = [f"page {self.url}"]
        lines += [f"  problem: {p}" for p in self.problems] or ["  no problems"]
        lines += [f"  console: {c}" for c in self.console] or ["  console: (nothing)"]
        return "\n".join(lines)


class BrowserError(RuntimeError):
    """The browser did not start, died, or did not answer in time."""


class Chromium:
    """One headless Chromium process driven over its DevTools pipe; use as a context manager."""

    def __init__(self, executable: str, timeout_s: float = 30.0) -> None:
        self.executable = executable
        self.timeout_s = timeout_s
        self._next_id = 0
        self._buffer = b""
        self._events: list[dict[str, Any]] = []

    def __enter__(self) -> Chromium:
        # A crashed browser's helpers may still write to the profile; leftovers must not mask the crash.
        self._profile = tempfile.TemporaryDirectory(prefix="site-check-chromium-", ignore_cleanup_errors=True)
        self._stderr = tempfile.TemporaryFile()  # kept for the message if the browser dies
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        args = [*BROWSER_FLAGS, f"--user-data-dir={self._profile.name}", "--remote-debugging-pipe"]
        # The pipe goes in as the shell's stdin and stdout, which it moves to fds 3 and 4 before it
        # execs the browser: subprocess cannot place fds itself, and preexec_fn may deadlock when the
        # tests run pages in threads.
        try:
            self._process = subprocess.Popen(
                ["/bin/sh", "-c", 'exec "$0" "$@" 3<&0 4>&1 0</dev/null 1>/dev/null', self.executable, *args],
                stdin=to_browser_r,
                stdout=from_browser_w,
                stderr=self._stderr,
            )
        except OSError:
            for fd in (self._to_browser, self._from_browser):
                os.close(fd)
            self._profile.cleanup()
            self._stderr.close()
            raise
        finally:
            os.close(to_browser_r)  # the browser holds its own copies now
            os.close(from_browser_w)
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(BrowserError, OSError):
            self._send("Browser.close")
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)
        self._profile.cleanup()
        self._stderr.close()

    def _last_words(self) -> str:
        """Exit code and end of stderr of a browser that quit (fatal lines first, no D-Bus noise)."""
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return " (still running)"
        self._stderr.seek(0)
        lines = self._stderr.read().decode(errors="replace").splitlines()
        lines = [line for line in lines if "dbus" not in line.lower()]
        tail = lines[-8:]
        fatal = [line for line in lines if ":FATAL:" in line and line not in tail]  # usually the cause
        return f" (exit code {self._process.returncode}); its stderr ends:\n" + "\n".join(fatal + tail)

    # -- protocol plumbing ------------------------------------------------------------------------

    def _send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> int:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        return self._next_id

    def _receive(self, deadline: float) -> dict[str, Any] | None:
        """The next message, or None at the deadline."""
        while b"\0" not in self._buffer:
            left_s = deadline - time.monotonic()
            if left_s <= 0:
                return None
            ready, _, _ = select.select([self._from_browser], [], [], left_s)
            if not ready:
                return None
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                raise BrowserError(f"{self.executable} closed its DevTools pipe{self._last_words()}")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> Any:
        """Send a command and return its result; events read meanwhile are kept for ``_drain``."""
        wanted = self._send(method, params, session)
        deadline = time.monotonic() + self.timeout_s
        while True:
            message = self._receive(deadline)
            if message is None:
                raise BrowserError(f"no answer to {method} within {self.timeout_s:.0f} s")
            if message.get("id") == wanted:
                if "error" in message:
                    raise BrowserError(f"{method} failed: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self._events.append(message)

    def _drain(self, deadline: float) -> list[dict[str, Any]]:
        """Events already read, then events arriving until the deadline (a zero wait reads what is there)."""
        events, self._events = self._events, []
        while (message := self._receive(deadline)) is not None:
            if "method" in message:
                events.append(message)
        return events

    # -- one page ---------------------------------------------------------------------------------

    def open_page(self, url: str, probe_js: str, ready_js: str = "true") -> PageReport:
        """Load ``url``, let it settle, wait for ``ready_js`` to be truthy, then evaluate ``probe_js``."""
        report = PageReport(url)
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=session)
        self.call("Page.navigate", {"url": url}, session=session)

        deadline = time.monotonic() + self.timeout_s
        loaded = False
        in_flight: dict[str, str] = {}  # request id -> URL
        quiet_since = time.monotonic()
        while True:
            now = time.monotonic()
            if now > deadline:
                report.problems.append(f"did not finish loading within {self.timeout_s:.0f} s")
                break
            if loaded and not in_flight and now - quiet_since >= QUIET_S:
                break
            for event in self._drain(min(deadline, now + 0.1)):
                if event.get("sessionId") != session:
                    continue
                loaded |= event["method"] == "Page.loadEventFired"
                self._record(event, report, in_flight)
                if event["method"].startswith("Network."):
                    quiet_since = time.monotonic()

        # Wait for the page's own work (e.g. a search) to finish, then ask it what it shows.
        ready = self._evaluate(ready_js, session)
        while not ready and time.monotonic() < deadline:
            time.sleep(0.1)
            ready = self._evaluate(ready_js, session)
        if not ready:
            report.problems.append(f"not ready within {self.timeout_s:.0f} s: {ready_js}")
        report.probe = self._evaluate(probe_js, session)
        for event in self._drain(time.monotonic()):
            if event.get("sessionId") == session:
                self._record(event, report, in_flight)
        self.call("Target.closeTarget", {"targetId": target})
        return report

    def _evaluate(self, expression: str, session: str) -> Any:
        result = self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            session=session,
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"probe raised: {result['exceptionDetails']}")
        return result["result"].get("value")

    @staticmethod
    def _record(event: dict[str, Any], report: PageReport, in_flight: dict[str, str]) -> None:
        """File one protocol event under console lines, problems, or requests in flight."""
        method, params = event["method"], event.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            report.console.append(f"[{params['type']}] {text}")
            if params["type"] in ("error", "assert"):
                report.problems.append(f"console.{params['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text", "")
            where = f"{details.get('url', '')}:{details.get('lineNumber', 0) + 1}"
            report.console.append(f"[exception] {text} ({where})")
            report.problems.append(f"uncaught exception: {text} ({where})")
        elif method == "Log.entryAdded":
            entry = params["entry"]
            if urlsplit(entry.get("url", "")).path in IGNORED_PATHS:
                return
            line = f"[{entry['level']} {entry['source']}] {entry['text']} {entry.get('url', '')}".rstrip()
            report.console.append(line)
            if entry["level"] == "error":  # also how failed loads (HTTP 4xx/5xx, net::ERR_*) show up
                report.problems.append(line)
        elif method == "Network.requestWillBeSent":
            request_url = params["request"]["url"]
            if urlsplit(request_url).scheme in ("http", "https"):
                in_flight[params["requestId"]] = request_url
                if urlsplit(request_url).hostname != "127.0.0.1":
                    report.problems.append(f"requests {request_url}: the site must work offline")
        elif method in ("Network.loadingFinished", "Network.loadingFailed"):
            in_flight.pop(params["requestId"], None)


def run_page(
    executable: str, url: str, probe_js: str, ready_js: str = "true", timeout_s: float = 30.0
) -> PageReport:
    """One page in a fresh browser (the unit of work the tests run in parallel)."""
    with Chromium(executable, timeout_s=timeout_s) as browser:
        return browser.open_page(url, probe_js, ready_js)


def site_url(base_url: str, page: Path | str) -> str:
    """URL of a file of the site, given the server's base URL and the path inside the site."""
    return f"{base_url.rstrip('/')}/{Path(page).as_posix().lstrip('/')}"
