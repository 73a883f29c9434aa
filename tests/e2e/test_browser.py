"""A real page on one loopback origin calls the gateway on another, from headless Chromium.

Covers what plain-HTTP CORS tests (tests/proxy/test_cors.py) cannot: that a browser's
preflight + fetch actually succeed with the headers real clients send, that a streamed answer
reaches `response.body.getReader()` chunk by chunk (nothing buffers it on the way), and that a
disallowed origin is really blocked by the browser.

Needs /usr/bin/chromium (Debian `chromium`) and the `playwright` pip package; skipped otherwise.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest

from tests.conftest import FAKE_KEY
from tests.e2e.browser import PageSite, chromium, missing_reason, open_page
from tests.fakes import scenarios as sc
from tests.servers import GatewayServer

_reason = missing_reason()
if _reason:
    pytest.skip(_reason, allow_module_level=True)

pytestmark = pytest.mark.e2e

CLIENT_KEY = "sk-browser-client-0123"  # the gateway's own client key (IFLOW2API_API_KEYS)
OPENAI_HEADERS = {"Authorization": f"Bearer {CLIENT_KEY}", "Content-Type": "application/json"}
ANTHROPIC_HEADERS = {"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01",
                     "anthropic-dangerous-direct-browser-access": "true",
                     "content-type": "application/json"}
CHAT = {"model": "glm-5", "messages": [{"role": "user", "content": "Hello from a browser"}]}
MESSAGE = {"model": "claude-sonnet-4-6", "max_tokens": 256,
           "messages": [{"role": "user", "content": "Hello from a browser"}]}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def gateway_env(fake_iflow, **extra: str) -> dict[str, str]:
    return {"IFLOW_API_KEY": FAKE_KEY, "IFLOW_BASE_URL": fake_iflow.base_url,
            "IFLOW2API_API_KEYS": CLIENT_KEY, **extra}


@pytest.fixture(scope="module")
def site() -> Iterator[PageSite]:
    with PageSite() as served:
        yield served


@pytest.fixture(scope="module")
def other_site() -> Iterator[PageSite]:
    """The same pages on a second port: a second origin."""
    with PageSite() as served:
        yield served


@pytest.fixture(scope="module")
def browser():
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def open_gateway(fake_iflow) -> Iterator[GatewayServer]:
    """Default CORS: any origin."""
    with GatewayServer(gateway_env(fake_iflow)) as server:
        yield server


@pytest.fixture(scope="module")
def restricted_gateway(fake_iflow, other_site) -> Iterator[GatewayServer]:
    """Only `other_site` (and an unrelated origin) may call it; `site` may not."""
    allowed = f"http://good.example, {other_site.origin}"
    with GatewayServer(gateway_env(fake_iflow, CORS_ALLOWED_ORIGINS=allowed)) as server:
        yield server


@pytest.fixture
def tab(browser, site):
    with open_page(browser, site.origin + "/index.html") as opened:
        yield opened


def test_openai_non_stream(tab, open_gateway, upstream):
    upstream.script(sc.text("Hello from the fake iFlow!"))
    url = open_gateway.url + "/v1/chat/completions"
    result = tab.call("callJson", url, OPENAI_HEADERS, CHAT)
    assert result["ok"], result
    assert result["status"] == 200, result
    assert tab.response_headers(url)["access-control-allow-origin"] == "*"
    assert result["answer"] == "Hello from the fake iFlow!"
    assert tab.page.text_content("#out") == "Hello from the fake iFlow!"
    assert upstream.chat_requests[-1].bearer == FAKE_KEY


def test_errors_are_readable_cross_origin(tab, open_gateway, upstream):
    headers = {**OPENAI_HEADERS, "Authorization": "Bearer wrong-key"}
    url = open_gateway.url + "/v1/chat/completions"
    result = tab.call("callJson", url, headers, CHAT)
    assert result["ok"], result  # the browser lets the page read the 401, not a CORS failure
    assert result["status"] == 401
    assert "invalid API key" in result["text"]
    assert upstream.chat_requests == []


def test_openai_stream_arrives_chunk_by_chunk(tab, open_gateway, upstream, tmp_path):
    words = ["one ", "two ", "three ", "four ", "five"]
    upstream.script(sc.slow(sc.text("".join(words)), chunk_delay=0.3))  # word by word
    url = open_gateway.url + "/v1/chat/completions"
    result = tab.call("callStream", url, OPENAI_HEADERS, {**CHAT, "stream": True})
    assert result["ok"], result
    assert result["status"] == 200
    assert tab.response_headers(url)["access-control-allow-origin"] == "*"
    assert result["contentType"].startswith("text/event-stream")
    deltas = [e for e in result["events"] if e["delta"]]
    assert [e["delta"] for e in deltas] == words
    assert result["answer"] == "one two three four five"
    assert result["events"][-1]["raw"] == "[DONE]"

    # Upstream sends a part every 0.3 s: the page must see the words spread over ~1.2 s, not
    # in one lump at the end.
    times = [e["t"] for e in deltas]  # ms after fetch()
    assert times[-1] - times[0] >= 800, times
    distinct = [times[0]]
    for t in times[1:]:
        if t - distinct[-1] >= 100:
            distinct.append(t)
    assert len(distinct) >= 3, times
    assert times[0] <= result["total"] - 800, (times, result["total"])
    assert len(result["chunks"]) >= 3, result["chunks"]

    shot = tmp_path / "stream.png"
    tab.page.screenshot(path=str(shot), full_page=True)
    data = shot.read_bytes()
    assert data.startswith(PNG_MAGIC) and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width > 0 and height > 0 and len(data) > 1000


def test_anthropic_non_stream(tab, open_gateway, upstream):
    upstream.script(sc.text("Bonjour from Claude's stand-in"))
    url = open_gateway.url + "/v1/messages"
    result = tab.call("callJson", url, ANTHROPIC_HEADERS, MESSAGE)
    assert result["ok"], result
    assert result["status"] == 200
    assert tab.response_headers(url)["access-control-allow-origin"] == "*"
    assert result["json"]["type"] == "message"
    assert result["json"]["content"][0]["text"] == "Bonjour from Claude's stand-in"
    assert result["answer"] == "Bonjour from Claude's stand-in"


def test_anthropic_stream(tab, open_gateway, upstream):
    upstream.script(sc.slow(sc.text("alpha beta gamma"), chunk_delay=0.1))
    url = open_gateway.url + "/v1/messages"
    result = tab.call("callStream", url, ANTHROPIC_HEADERS, {**MESSAGE, "stream": True})
    assert result["ok"], result
    assert result["status"] == 200
    assert tab.response_headers(url)["access-control-allow-origin"] == "*"
    names = [e["event"] for e in result["events"]]
    assert names[0] == "message_start" and names[-1] == "message_stop", names
    assert "content_block_delta" in names
    assert result["answer"] == "alpha beta gamma"


def test_disallowed_origin_is_blocked_by_the_browser(tab, restricted_gateway, upstream):
    url = restricted_gateway.url + "/v1/chat/completions"
    result = tab.call("callJson", url, OPENAI_HEADERS, CHAT)
    assert not result["ok"], result
    assert result["name"] == "TypeError", result
    assert "blocked by CORS policy" in " ".join(tab.log), tab.log
    assert tab.page.text_content("#status") == "failed: TypeError"
    assert upstream.chat_requests == []  # the preflight failed: the POST was never sent


def test_allowed_origin_on_the_restricted_gateway(browser, other_site, restricted_gateway,
                                                  upstream):
    upstream.script(sc.text("allowed"))
    with open_page(browser, other_site.origin + "/index.html") as other:
        url = restricted_gateway.url + "/v1/chat/completions"
        result = other.call("callJson", url, OPENAI_HEADERS, CHAT)
    assert result["ok"], result
    allow = other.response_headers(url)
    assert allow["access-control-allow-origin"] == other_site.origin
    assert allow["vary"] == "Origin"
    assert result["answer"] == "allowed"
