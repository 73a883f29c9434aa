"""Headless Chromium for end-to-end tests: a static page site and a Playwright-driven browser.

Needs the Debian `chromium` package (/usr/bin/chromium) and the `playwright` pip package. The
browser bundled by `playwright install` is never used (nothing is downloaded): Playwright only
drives the system Chromium through its own driver, which ships inside the pip wheel.
"""

from __future__ import annotations

import functools
import http.server
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("IFLOW2API_TEST_CHROMIUM", "/usr/bin/chromium")
PAGES = Path(__file__).resolve().parent / "pages"
# --headless comes from headless=True; Playwright gives every launch a fresh temporary
# --user-data-dir (and removes it on close) and adds --no-sandbox unless told otherwise.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
LAUNCH_TIMEOUT_MS = 20_000
ACTION_TIMEOUT_MS = 10_000


def missing_reason() -> str | None:
    """Why browser tests cannot run here, or None."""
    if not Path(CHROMIUM).exists():
        return (f"{CHROMIUM} not found: install Chromium (Debian: apt-get install -y chromium) "
                "to run the browser tests")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the `playwright` package is not installed (pip install playwright)"
    return None


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class PageSite:
    """tests/e2e/pages served by http.server on a free loopback port: one browser origin."""

    def __init__(self, directory: Path = PAGES) -> None:
        handler = functools.partial(_QuietHandler, directory=str(directory))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.1}, daemon=True)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> PageSite:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@contextmanager
def chromium() -> Iterator[Any]:
    """The system Chromium, headless, driven by Playwright; closed (and its profile removed)
    on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            timeout=LAUNCH_TIMEOUT_MS,
        )
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class OpenPage:
    page: Any
    log: list[str] = field(default_factory=list)  # DevTools Log entries (CORS errors land here)
    # (method, url, status, headers) of every response the page received: what the browser saw
    # on the wire, including headers a page script may not read (Access-Control-Allow-Origin).
    responses: list[tuple[str, str, int, dict[str, str]]] = field(default_factory=list)

    def call(self, function: str, *args: Any) -> dict[str, Any]:
        """``window.gateway.<function>(*args)`` in the page; bounded by the page's own timeout."""
        return self.page.evaluate(f"(args) => window.gateway.{function}(...args)", list(args))

    def response_headers(self, url: str, method: str = "POST") -> dict[str, str]:
        """Headers of the last ``method`` response for ``url`` (lower-case names)."""
        found = [h for m, u, _, h in self.responses if m == method and u == url]
        assert found, f"no {method} response for {url} in {self.responses}"
        return found[-1]


@contextmanager
def open_page(browser: Any, url: str) -> Iterator[OpenPage]:
    """A fresh context and page on ``url`` with bounded timeouts; closed on exit."""
    context = browser.new_context()
    try:
        context.set_default_timeout(ACTION_TIMEOUT_MS)
        context.set_default_navigation_timeout(ACTION_TIMEOUT_MS)
        opened = OpenPage(context.new_page())
        opened.page.on("response", lambda r: opened.responses.append(
            (r.request.method, r.url, r.status, r.headers)))
        cdp = context.new_cdp_session(opened.page)
        cdp.on("Log.entryAdded", lambda event: opened.log.append(event["entry"].get("text", "")))
        cdp.send("Log.enable")
        opened.page.goto(url)
        opened.page.wait_for_function("() => window.gateway !== undefined")
        yield opened
    finally:
        context.close()
