"""API docs: Swagger UI at /docs and ReDoc at /redoc, served by `iflow2api serve` with every
asset from the server itself (no CDN)."""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from tests.e2e.browser import chromium, missing_reason

ATTRIBUTES = re.compile(r"""\b(?:src|href)\s*=\s*["']([^"']*)["']""", re.IGNORECASE)


def local_assets(base: str, html: str) -> list[str]:
    """Every src/href of the page as an absolute URL; all must be on the server itself."""
    origin = urlsplit(base)
    urls = [urljoin(base, value) for value in ATTRIBUTES.findall(html)]
    assert urls
    for url in urls:
        parts = urlsplit(url)
        assert (parts.scheme, parts.netloc) == (origin.scheme, origin.netloc), url
    return urls


@pytest.mark.parametrize(("path", "script"), [("/redoc", "redoc.standalone.js"),
                                              ("/docs", "swagger-ui-bundle.js")])
def test_docs_pages_load_everything_from_the_server(gateway, path, script):
    page = httpx.get(gateway.url + path)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assets = local_assets(gateway.url + path, page.text)
    assert any(url.endswith(script) for url in assets)
    for url in assets:
        assert httpx.get(url).status_code == 200, url


def test_redoc_forbids_outside_resources(gateway):
    csp = httpx.get(gateway.url + "/redoc").headers["content-security-policy"]
    assert "default-src 'self'" in csp and "img-src 'self' data:" in csp
    assert "http" not in csp


def test_redoc_reads_the_schema_with_both_apis(gateway):
    html = httpx.get(gateway.url + "/redoc").text
    url = re.search(r"Redoc\.init\('([^']+)'", html)[1]
    schema = httpx.get(urljoin(gateway.url, url)).json()
    operations = {op["summary"] for item in schema["paths"].values() for op in item.values()}
    assert {"Chat Completions (OpenAI)", "Messages (Anthropic)", "List models"} <= operations
    assert {"OpenAI", "Anthropic"} <= {tag for item in schema["paths"].values()
                                      for op in item.values() for tag in op.get("tags", [])}


@pytest.mark.e2e
@pytest.mark.skipif(missing_reason() is not None, reason=str(missing_reason()))
@pytest.mark.parametrize(("path", "expect"), [
    ("/redoc", "Messages (Anthropic)"), ("/docs", "Chat Completions (OpenAI)")])
def test_docs_in_a_browser_touch_no_other_origin(gateway, path, expect):
    requested: list[str] = []
    blocked: list[str] = []  # refused by the page's Content-Security-Policy: never sent
    problems: list[str] = []
    with chromium() as browser:
        context = browser.new_context()
        page = context.new_page()
        page.on("request", lambda request: requested.append(request.url))
        page.on("requestfailed", lambda request: blocked.append(request.url)
                if request.failure == "csp" else None)
        page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
        page.goto(gateway.url + path)
        page.locator(f"h2:has-text('{expect}'), .opblock-summary-description:has-text('{expect}')"
                     ).first.wait_for(timeout=15_000)
        page.wait_for_timeout(500)  # late images (the Redocly logo) would show up here
        context.close()
    outside = [url for url in requested
               if not url.startswith((gateway.url + "/", "data:", "blob:")) and url not in blocked]
    assert not outside
    # ReDoc's sidebar asks for the Redocly logo on cdn.redoc.ly: the CSP refuses it (and the
    # logo hides itself). Nothing else may fail.
    assert set(blocked) <= {"https://cdn.redoc.ly/redoc/logo-mini.svg"}
    assert not [text for text in problems if "cdn.redoc.ly" not in text]
