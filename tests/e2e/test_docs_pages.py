"""/docs, /redoc, the status page and the login pages (the admin's, the iFlow cookie and
OAuth-paste pages) in headless Chromium (issue 17): no console error, no request that fails or
leaves this server (ReDoc's Redocly logo included), the favicon answered, and the API reference
in the chosen language and theme.

Needs /usr/bin/chromium (Debian `chromium`) and the `playwright` pip package; skipped otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.e2e.browser import ACTION_TIMEOUT_MS, chromium, missing_reason
from tests.servers import GatewayServer

_reason = missing_reason()
if _reason:
    pytest.skip(_reason, allow_module_level=True)

pytestmark = pytest.mark.e2e

ADMIN, PASSWORD = "docs-admin", "docs-Test-only-8c2d"  # a throw-away admin


@pytest.fixture(scope="module")
def server() -> Iterator[GatewayServer]:
    gateway = GatewayServer({"DJANGO_SUPERUSER_USERNAME": ADMIN,
                             "DJANGO_SUPERUSER_PASSWORD": PASSWORD,
                             "DJANGO_SUPERUSER_EMAIL": "docs@example.com"})
    gateway.cli("migrate", "--noinput")
    gateway.cli("createsuperuser", "--noinput")
    with gateway:
        yield gateway


@pytest.fixture(scope="module")
def browser():
    with chromium() as launched:
        yield launched


@dataclass
class Visit:
    page: Any
    origin: str
    problems: list[str] = field(default_factory=list)  # console errors, failed requests
    requested: list[str] = field(default_factory=list)

    def watch(self) -> None:
        self.page.on("console", lambda m: m.type in ("error", "warning") and
                     self.problems.append(f"console {m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("request", lambda r: self.requested.append(r.url))
        self.page.on("requestfailed", lambda r: self.problems.append(
            f"failed: {r.url} {r.failure}"))
        self.page.on("response", lambda r: r.status >= 400 and self.problems.append(
            f"{r.status}: {r.url}"))

    def foreign(self) -> list[str]:
        return [u for u in self.requested
                if not u.startswith((self.origin, "data:", "blob:", "about:"))]


@contextmanager
def visit(browser: Any, server: GatewayServer, *, locale: str = "en-US",
          theme: str | None = None, color_scheme: str = "light") -> Iterator[Visit]:
    context = browser.new_context(locale=locale, color_scheme=color_scheme,
                                  viewport={"width": 1366, "height": 768})
    try:
        context.set_default_timeout(ACTION_TIMEOUT_MS)
        if theme is not None:  # the admin's toggle keeps it here, on this origin
            context.add_init_script(f"localStorage.setItem('theme', {theme!r})")
        seen = Visit(context.new_page(), server.url)
        seen.watch()
        yield seen
    finally:
        context.close()


def log_in(seen: Visit) -> None:
    seen.page.goto(seen.origin + "/admin/login/")
    seen.page.fill("input[name=username]", ADMIN)
    seen.page.fill("input[name=password]", PASSWORD)
    seen.page.click("input[type=submit]")
    seen.page.wait_for_url("**/admin/")


def settle(seen: Visit) -> None:
    seen.page.wait_for_load_state("networkidle")


def test_no_console_errors_on_the_docs_status_and_login_pages(browser, server):
    for locale, theme in (("en-US", "light"), ("zh-CN", "dark")):
        with visit(browser, server, locale=locale, theme=theme) as seen:
            seen.page.goto(server.url + "/admin/login/")
            settle(seen)
            log_in(seen)
            for path in ("/admin/status/", "/accounts/cookie/", "/accounts/oauth/paste/",
                         "/docs", "/redoc"):
                seen.page.goto(server.url + path)
                settle(seen)
            seen.page.wait_for_selector("#redoc-ui .menu-content", state="attached")
            seen.page.goto(server.url + "/docs")
            seen.page.wait_for_selector("#swagger-ui .opblock", state="attached")
            assert seen.problems == [], (locale, theme, seen.problems)
            assert seen.foreign() == [], seen.foreign()


def test_redoc_draws_without_the_redocly_logo_from_the_internet(browser, server):
    with visit(browser, server) as seen:
        seen.page.goto(server.url + "/redoc")
        seen.page.wait_for_selector("#redoc-ui .menu-content", state="attached")
        settle(seen)
        assert seen.page.locator("img[src*='redoc.ly']").count() == 0
        assert not [u for u in seen.requested if "redoc.ly" in u]
        assert seen.problems == []


def test_the_docs_follow_the_language_and_the_theme(browser, server):
    with visit(browser, server, locale="zh-CN", theme="dark") as seen:
        for path, ready in (("/docs", "#swagger-ui .opblock"),
                            ("/redoc", "#redoc-ui .menu-content")):
            seen.page.goto(server.url + path)
            seen.page.wait_for_selector(ready, state="attached")
            assert seen.page.evaluate("document.documentElement.lang") == "zh-hans"
            assert "API 参考" in seen.page.title()
            assert seen.page.evaluate("document.documentElement.dataset.theme") == "dark"
            background = seen.page.evaluate("getComputedStyle(document.body).backgroundColor")
            assert background == "rgb(18, 18, 18)", (path, background)
        redoc_text = seen.page.evaluate(
            "getComputedStyle(document.querySelector('#redoc-ui h1')).color")
        assert redoc_text == "rgb(230, 230, 230)"  # ReDoc drawn with the dark theme
    with visit(browser, server, theme="auto", color_scheme="dark") as seen:  # the system's
        seen.page.goto(server.url + "/docs")
        assert seen.page.evaluate("document.documentElement.dataset.theme") == "dark"
    with visit(browser, server, theme="light", color_scheme="dark") as seen:
        seen.page.goto(server.url + "/docs")
        assert seen.page.evaluate("document.documentElement.dataset.theme") == "light"
        assert "API reference" in seen.page.title()


def test_the_favicon_is_served(server):
    icon = httpx.get(server.url + "/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/svg+xml"
    assert icon.content.startswith(b"<svg")
    for path in ("/docs", "/redoc"):
        page = httpx.get(server.url + path)
        assert "content-security-policy" in page.headers
        assert "'unsafe-inline'" not in page.headers["content-security-policy"].split(
            "script-src")[1].split(";")[0]



def test_swagger_ui_takes_a_key_and_lists_the_error_answers(browser, server):
    """/docs has a way to enter a client key (the API-key security schemes: Authorize), sends
    it with "Try it out", and shows each operation's error answers with their body's schema
    (the OpenAI error shape on OpenAI routes, Anthropic's on Anthropic routes)."""
    key = "sk-i2a-docs-page-key-0123456789"
    with visit(browser, server) as seen:
        sent: list[dict[str, str]] = []
        seen.page.on("request", lambda r: sent.append(r.headers)
                     if r.url.endswith("/v1/models") else None)
        seen.page.goto(server.url + "/docs")
        seen.page.click("button.authorize")
        dialog = seen.page.locator(".modal-ux")
        assert "bearer" in dialog.text_content() and "x-api-key" in dialog.text_content()
        dialog.locator("input").first.fill(key)
        dialog.locator("button.authorize").first.click()
        dialog.locator("button.btn-done").first.click()

        models = seen.page.locator("#operations-OpenAI-list_models")
        models.locator(".opblock-summary").click()
        assert '"error"' in models.locator("tr.response[data-code='401']").text_content()
        models.locator("button.try-out__btn").click()
        models.locator("button.execute").click()
        models.locator(".live-responses-table").wait_for()
        assert sent and sent[-1].get("authorization") == f"Bearer {key}", sent

        for operation, shape in (("OpenAI-chat_completions", '"message"'),
                                 ("Anthropic-create_message", '"type": "error"')):
            block = seen.page.locator(f"#operations-{operation}")
            block.locator(".opblock-summary").click()
            for code in ("400", "401", "403", "404", "413", "429", "502", "503"):
                row = block.locator(f"tr.response[data-code='{code}']")
                assert shape in row.text_content(), (operation, code)
        assert seen.problems == []
