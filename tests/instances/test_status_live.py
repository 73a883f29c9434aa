"""The live status on real servers: an admin logs in through the login form, a real websocket
client (aiohttp) connects with that session, and API requests push fresh snapshots to it; in
one process (in-memory channel layer) and across two processes sharing Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from threading import Thread

import aiohttp
import httpx
import pytest
from cryptography.fernet import Fernet

from tests.conftest import FAKE_KEY
from tests.fakes import scenarios as sc
from tests.servers import GatewayServer
from tests.services import fresh_postgres_database, require_redis

pytestmark = pytest.mark.e2e

WS_PATH = "/admin/status/ws/"
ADMIN = "ops"
PASSWORD = "status-Page-test-9f3a"  # a throw-away admin on a throw-away server
CHAT = {"model": "glm-5", "messages": [{"role": "user", "content": "hi"}]}
STATUS_REDIS_URL = "redis://127.0.0.1:6379/9"  # its own database: other tests' streams stay out


def add_admin(server: GatewayServer) -> None:
    server.env.update({"DJANGO_SUPERUSER_USERNAME": ADMIN, "DJANGO_SUPERUSER_PASSWORD": PASSWORD,
                       "DJANGO_SUPERUSER_EMAIL": "ops@example.com"})
    server.cli("createsuperuser", "--noinput")


def log_in(server: GatewayServer) -> str:
    """The admin login form, as a browser posts it; returns the session cookie."""
    with httpx.Client(base_url=server.url, timeout=10) as http:
        form = http.get("/admin/login/", params={"next": "/admin/status/"})
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)
        assert token, form.text[:500]
        answer = http.post("/admin/login/?next=/admin/status/", data={
            "csrfmiddlewaretoken": token.group(1), "username": ADMIN, "password": PASSWORD,
            "next": "/admin/status/"})
        assert answer.status_code == 302, answer.text[:500]
        page = http.get("/admin/status/")
        assert page.status_code == 200 and 'id="status-page"' in page.text
        return http.cookies["sessionid"]


def ws_url(server: GatewayServer) -> str:
    return f"ws://127.0.0.1:{server.port}{WS_PATH}"


async def open_status(client: aiohttp.ClientSession, server: GatewayServer, session: str | None,
                      origin: str | None = None) -> aiohttp.ClientWebSocketResponse:
    headers = {"Origin": origin or server.url}
    if session:
        headers["Cookie"] = f"sessionid={session}"
    return await client.ws_connect(ws_url(server), headers=headers, heartbeat=None)


async def wait_for(ws: aiohttp.ClientWebSocketResponse, want: Callable[[dict], bool],
                   timeout: float = 8.0) -> dict:
    """The first snapshot pushed that satisfies `want`."""
    deadline = time.monotonic() + timeout
    seen = []
    while (left := deadline - time.monotonic()) > 0:
        try:
            message = await ws.receive_json(timeout=left)
        except TimeoutError:
            break
        assert message["type"] == "snapshot"
        seen.append(message["data"])
        if want(message["data"]):
            return message["data"]
    raise AssertionError(f"no matching snapshot within {timeout} s; got {seen[-3:]}")


def post_in_background(url: str, body: dict) -> Thread:
    thread = Thread(target=lambda: httpx.post(url, json=body, timeout=30), daemon=True)
    thread.start()
    return thread


@pytest.fixture(scope="module")
def gateway_with_admin(fake_iflow) -> Iterator[GatewayServer]:
    """One server for this module's single-process tests (they measure changes, not totals)."""
    env = {"IFLOW_API_KEY": FAKE_KEY, "IFLOW_BASE_URL": fake_iflow.base_url}
    with GatewayServer(env) as server:
        add_admin(server)
        yield server


def test_a_request_pushes_a_snapshot_to_the_admins_websocket(gateway_with_admin, upstream):
    server = gateway_with_admin
    session = log_in(server)
    upstream.script(sc.text("one"), sc.slow(sc.text("a b c d"), chunk_delay=0.4))

    async def go() -> None:
        async with aiohttp.ClientSession() as client:
            ws = await open_status(client, server, session)
            first = await wait_for(ws, lambda s: True)
            before = first["requests_per_minute"]
            assert first["active_streams"] == 0
            answer = await asyncio.to_thread(
                httpx.post, server.url + "/v1/chat/completions", json=CHAT, timeout=30)
            assert answer.status_code == 200
            pushed = await wait_for(ws, lambda s: s["requests_per_minute"] > before)
            assert [a["label"] for a in pushed["accounts"]]  # the account from the environment
            # A stream shows while it runs, and is gone when it ends.
            stream = post_in_background(server.url + "/v1/chat/completions",
                                        {**CHAT, "stream": True})
            await wait_for(ws, lambda s: s["active_streams"] == 1)
            await asyncio.to_thread(stream.join, 30)
            await wait_for(ws, lambda s: s["active_streams"] == 0 and
                           s["requests_per_minute"] > before + 1)
            await ws.close()

    asyncio.run(go())


def test_a_responses_stream_shows_on_the_live_status(gateway_with_admin, upstream):
    """POST /v1/responses (Codex's API) counts like the others: its stream while it runs, the
    finished request in the requests per minute."""
    server = gateway_with_admin
    session = log_in(server)
    upstream.script(sc.slow(sc.text("a b c d"), chunk_delay=0.4))

    async def go() -> None:
        async with aiohttp.ClientSession() as client:
            ws = await open_status(client, server, session)
            first = await wait_for(ws, lambda s: s["active_streams"] == 0)
            before = first["requests_per_minute"]
            stream = post_in_background(server.url + "/v1/responses", {
                "model": "glm-5", "input": "hi", "stream": True, "store": False})
            await wait_for(ws, lambda s: s["active_streams"] == 1)
            await asyncio.to_thread(stream.join, 30)
            await wait_for(ws, lambda s: s["active_streams"] == 0 and
                           s["requests_per_minute"] > before)
            await ws.close()

    asyncio.run(go())


def test_the_real_server_refuses_strangers_and_other_origins(gateway_with_admin):
    server = gateway_with_admin
    session = log_in(server)

    async def go() -> None:
        async with aiohttp.ClientSession() as client:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await open_status(client, server, session, origin="http://evil.example")
            assert refused.value.status == 403
            ws = await open_status(client, server, None)  # no session: closed with 4403
            message = await ws.receive(timeout=5)
            assert message.type == aiohttp.WSMsgType.CLOSE and message.data == 4403

    asyncio.run(go())


def test_a_request_on_one_process_pushes_to_a_page_on_another(upstream):
    require_redis()
    upstream.script(sc.text("one"), sc.slow(sc.text("a b c d"), chunk_delay=0.4))
    with fresh_postgres_database() as database_url:
        env = {"DATABASE_URL": database_url, "REDIS_URL": STATUS_REDIS_URL,
               "FIELD_ENCRYPTION_KEY": Fernet.generate_key().decode(),
               "IFLOW_API_KEY": FAKE_KEY, "IFLOW_BASE_URL": upstream.base_url}
        first = GatewayServer(env).start()
        second = GatewayServer(env)
        try:
            second.start()
            add_admin(first)
            session = log_in(first)

            async def go() -> None:
                async with aiohttp.ClientSession() as client:
                    ws = await open_status(client, first, session)
                    await wait_for(ws, lambda s: True)
                    answer = await asyncio.to_thread(
                        httpx.post, second.url + "/v1/chat/completions", json=CHAT, timeout=30)
                    assert answer.status_code == 200
                    await wait_for(ws, lambda s: s["requests_per_minute"] >= 1)
                    stream = post_in_background(second.url + "/v1/chat/completions",
                                                {**CHAT, "stream": True})
                    # The stream runs in the other process: its count comes through Redis.
                    await wait_for(ws, lambda s: s["active_streams"] >= 1)
                    await asyncio.to_thread(stream.join, 30)
                    await wait_for(ws, lambda s: s["active_streams"] == 0)
                    await ws.close()

            asyncio.run(go())
        finally:
            first.stop()
            second.stop()


SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "screenshots" / "status.png"
DEMO_DATA = """
import datetime as dt
from django.utils import timezone
from accounts.models import Account
from instances.models import Instance
Account.objects.create(label="backup-deepseek", provider="openai", state="cooling",
                       base_url="https://api.deepseek.com/v1", api_key="sk-demo-not-real",
                       cooldown_until=timezone.now() + dt.timedelta(seconds=50))
Instance.objects.create(name="staging", port=28090, enabled=False)
"""


def test_the_page_goes_live_in_a_browser_and_follows_requests(gateway_with_admin, upstream):
    """status.js in headless Chromium: logs in through the form, goes live, and redraws the
    tables on each push. IFLOW2API_SCREENSHOTS=1 also saves docs/screenshots/status.png."""
    from tests.e2e.browser import chromium, missing_reason

    if reason := missing_reason():
        pytest.skip(reason)
    server = gateway_with_admin
    server.shell(DEMO_DATA)
    upstream.script(sc.text("one"), sc.http_error(429, {"error": {"message": "rate limited"}}),
                    sc.slow(sc.text("a long answer, word by word"), chunk_delay=0.5))
    chat = server.url + "/v1/chat/completions"
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        context.set_default_timeout(15_000)
        page = context.new_page()
        page.goto(server.url + "/admin/login/?next=/admin/status/")
        page.fill("#id_username", ADMIN)
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        page.wait_for_url("**/admin/status/")
        page.wait_for_selector("#status-page[data-connection=live]")
        assert page.text_content("#status-connection") == "live"
        before = int(page.text_content("#status-rpm"))

        assert httpx.post(chat, json=CHAT, timeout=30).status_code == 200
        assert httpx.post(chat, json=CHAT, timeout=30).status_code == 429
        page.wait_for_function(
            "(n) => Number(document.getElementById('status-rpm').textContent) >= n", arg=before + 2)
        errors = page.text_content("#status-errors")
        assert "429" in errors and "rate limited" in errors
        assert "backup-deepseek" in page.text_content("#status-accounts")
        assert "staging" in page.text_content("#status-instances")

        stream = post_in_background(chat, {**CHAT, "stream": True})
        page.wait_for_function(
            "document.getElementById('status-streams').textContent === '1'")
        if os.environ.get("IFLOW2API_SCREENSHOTS"):
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT))
        stream.join(30)
        page.wait_for_function(
            "document.getElementById('status-streams').textContent === '0'")
        context.close()
