"""The production stack for real (tests/production/stack.py): PostgreSQL, Redis, two web
processes behind nginx, a Celery worker and beat. One stack for the module; the tests run in
file order and the last ones take it down: SIGTERM to web A, then a clean stop of the rest.

- nginx spreads requests over both web processes, and carries the status websocket;
- a rate rule holds exactly across both web processes;
- the admin's live status on web A follows a stream on web B;
- the worker refreshes an OAuth token (beat schedules it) and both web processes send the new
  key upstream;
- SIGTERM to web A while it streams: the stream finishes, web B (and nginx) keep serving;
- stopping leaves no process behind and every process exits 0."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import aiohttp
import httpx
import psycopg
import pytest
from django.utils import timezone

from tests.fakes import scenarios as sc
from tests.fakes.oauth import FakeOAuth
from tests.fakes.upstream import FakeUpstream
from tests.instances.test_status_live import add_admin, log_in, open_status, wait_for
from tests.production.stack import ProductionStack, require_stack
from tests.sse import data_payloads

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MAIN_KEY = "sk-stack-main-key-0001"
OLD_KEY = "sk-stack-oauth-old-0002"
NEW_KEY = "sk-stack-oauth-new-0003"
CHAT = {"model": "glm-5", "messages": [{"role": "user", "content": "hi"}]}
# Each web process rereads the accounts from the database at most every 2 s
# (accounts/services.py, SNAPSHOT_TTL_SECONDS): nothing else tells it about the worker's work.
ROUTING_TTL = 2.5
SLOW = sc.slow(sc.text("one two three four five six", chunks=6), chunk_delay=0.4)


@pytest.fixture(scope="module")
def oauth() -> Iterator[FakeOAuth]:
    with FakeOAuth(api_key=NEW_KEY) as fake:
        yield fake


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream(api_key=MAIN_KEY, extra_keys=[OLD_KEY, NEW_KEY], flavor="iflow") as up:
        yield up


@pytest.fixture(scope="module")
def stack(fake: FakeUpstream, oauth: FakeOAuth) -> Iterator[ProductionStack]:
    require_stack()
    env = {"IFLOW_API_KEY": MAIN_KEY, "IFLOW_BASE_URL": fake.base_url,
           "IFLOW_OAUTH_BASE_URL": oauth.oauth_base_url,
           "IFLOW_PLATFORM_BASE_URL": oauth.platform_base_url}
    stack = ProductionStack(env, redis_db=13, refresh_check_seconds=1).start()
    try:
        # iFlow accounts take one request at a time (across processes, through Redis): this
        # module's streams must not make the other requests queue behind them.
        stack.shell("from accounts.models import Account\n"
                    "Account.objects.update(max_concurrency=0)")
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def upstream(fake: FakeUpstream) -> Iterator[FakeUpstream]:
    fake.reset()
    yield fake
    fake.reset()


def chat(url: str, **headers: str) -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", json=CHAT, headers=headers, timeout=30)


def set_rule(stack: ProductionStack, code: str) -> None:
    stack.shell("from instances.models import Instance, RateRule\n"
                "RateRule.objects.all().delete()\n" + code)
    time.sleep(2.5)  # every web process rereads its instance directory within 2 s


def account_row(stack: ProductionStack, account_id: int) -> dict:
    with psycopg.connect(stack.database_url, row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute("SELECT * FROM accounts_account WHERE id = %s",
                            [account_id]).fetchone()


def test_nginx_spreads_requests_over_both_web_processes(stack, upstream):
    if stack.nginx_port is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light): no front proxy")
    ids = [f"spread-{i}" for i in range(6)]
    assert [chat(stack.url, **{"x-request-id": i}).status_code for i in ids] == [200] * 6
    time.sleep(0.5)  # access lines are written after the response
    served = [[i for i in ids if f"[{i}]" in web.output()] for web in stack.web]
    assert all(served), served  # least_conn with equal counts: round robin
    assert sorted(served[0] + served[1]) == ids


def test_a_rate_rule_counts_exactly_across_both_web_processes(stack, upstream):
    limit = 5
    set_rule(stack, f"RateRule.objects.create(scope='instance', requests_per_day={limit}, "
                    "instance=Instance.objects.get(name='default'))")
    try:
        statuses = [chat(stack.urls[i % 2]).status_code for i in range(2 * limit)]
    finally:
        set_rule(stack, "")
    # A, B, A, B, A pass; then B and A both refuse: one count, shared through Redis.
    assert statuses == [200] * limit + [429] * limit
    assert len(upstream.chat_requests) == limit


def test_the_live_status_on_web_a_follows_a_stream_on_web_b(stack, upstream):
    web_a, web_b = stack.web
    add_admin(web_a)
    session = log_in(web_a)
    # The same page through nginx: a login served by either process, the websocket upgraded.
    front_session = log_in(stack) if stack.nginx_port is not None else None
    upstream.script(SLOW)

    async def go() -> None:
        async with aiohttp.ClientSession() as client:
            sockets = [await open_status(client, web_a, session)]
            if front_session:
                sockets.append(await open_status(client, stack, front_session))
            for ws in sockets:
                first = await wait_for(ws, lambda s: True)
                assert first["active_streams"] == 0
            body = {**CHAT, "stream": True}
            stream = threading.Thread(target=lambda: httpx.post(
                web_b.url + "/v1/chat/completions", json=body, timeout=30), daemon=True)
            stream.start()
            for ws in sockets:  # counted in web B, published through Redis
                await wait_for(ws, lambda s: s["active_streams"] == 1)
            await asyncio.to_thread(stream.join, 30)
            for ws in sockets:
                await wait_for(ws, lambda s: s["active_streams"] == 0)
                await ws.close()

    asyncio.run(go())


def test_a_token_refreshed_by_the_worker_is_used_by_both_web_processes(stack, upstream, oauth):
    oauth.reset()
    access, refresh = oauth.issue_tokens()
    created = stack.shell(
        "import json, datetime\n"
        "from django.utils import timezone\n"
        "from accounts.models import Account\n"
        "Account.objects.update(enabled=False)  # only the OAuth account serves now\n"
        "account = Account.objects.create(\n"
        f"    label='oauth', provider='iflow', base_url={upstream.base_url!r}, max_concurrency=0,\n"
        f"    api_key={OLD_KEY!r}, oauth_access_token={access!r},\n"
        f"    oauth_refresh_token={refresh!r},\n"
        "    access_token_expires_at=timezone.now() + datetime.timedelta(days=30))\n"
        "print('ID', account.pk)")
    account_id = int(created.split("ID ")[-1].split()[0])
    try:
        time.sleep(ROUTING_TTL)
        assert chat(stack.urls[0]).status_code == 200
        assert chat(stack.urls[1]).status_code == 200
        assert [r.bearer for r in upstream.chat_requests] == [OLD_KEY, OLD_KEY]

        # Due now (less than REFRESH_OAUTH_BEFORE_HOURS left): beat sends the task every
        # second, the worker refreshes, and nothing tells the web processes but the database.
        with psycopg.connect(stack.database_url) as conn:
            conn.execute("UPDATE accounts_account SET access_token_expires_at = %s "
                         "WHERE id = %s", [timezone.now() + timedelta(hours=1), account_id])
        deadline = time.monotonic() + 30
        while (row := account_row(stack, account_id))["last_refreshed_at"] is None \
                or row["refreshing_until"] is not None:
            assert time.monotonic() < deadline, stack.output()[-6000:]
            time.sleep(0.1)
        assert row["state"] == "active"
        assert oauth.calls("refresh") == 1 and oauth.calls("userinfo") == 1
        worker_log = stack.roles["worker"].output()
        assert f"refreshed account {account_id} (oauth)" in worker_log
        assert not any(f"refreshed account {account_id}" in web.output() for web in stack.web)

        upstream.reset()
        time.sleep(ROUTING_TTL)
        answers = [chat(url) for url in (*stack.urls, stack.url, stack.url)]
        assert [a.status_code for a in answers] == [200] * 4
        assert [r.bearer for r in upstream.chat_requests] == [NEW_KEY] * 4
        assert oauth.calls("refresh") == 1  # fresh now: beat's next runs leave it alone
    finally:
        stack.shell("from accounts.models import Account\n"
                    "Account.objects.update(enabled=True)\n"
                    f"Account.objects.filter(pk={account_id}).update(enabled=False)")


def test_sigterm_to_web_a_lets_its_stream_finish_while_web_b_serves(stack, upstream):
    web_a, web_b = stack.web
    upstream.script(SLOW)
    result: list[bytes] = []

    def stream() -> None:
        with httpx.stream("POST", web_a.url + "/v1/chat/completions", timeout=30,
                          json={**CHAT, "stream": True}) as response:
            result.append(response.read())

    thread = threading.Thread(target=stream)
    thread.start()
    assert upstream.wait_for(lambda: len(upstream.chat_requests) == 1, timeout=10)
    time.sleep(0.5)  # a few chunks are through
    web_a.process.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    during = [chat(web_b.url).status_code for _ in range(3)]
    if stack.nginx_port is not None:  # web A refuses or answers 503: nginx goes to web B
        during += [chat(stack.url).status_code for _ in range(4)]
    thread.join(30)
    assert web_a.process.wait(30) == 0, web_a.output()[-4000:]
    assert during == [200] * len(during)
    payloads = data_payloads(result[0])
    assert payloads[-1] == "[DONE]" and payloads.count("[DONE]") == 1
    text = "".join(json.loads(p)["choices"][0]["delta"].get("content", "")
                   for p in payloads[:-1] if json.loads(p).get("choices"))
    assert text == "one two three four five six"
    assert chat(web_b.url).status_code == 200  # after web A is gone too


def test_the_stack_stops_cleanly(stack):
    codes = stack.stop()
    assert stack.orphans == [], stack.orphans
    assert codes == dict.fromkeys(codes, 0), codes
    assert set(codes) >= {"web-a", "web-b", "worker", "beat"}
