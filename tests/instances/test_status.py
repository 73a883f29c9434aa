"""The live status: snapshot() on real rows, the stream counters and their stores (a real Redis),
the websocket consumer through the real ASGI stack (auth, origin check, pushes, throttle), and
the page. Real servers: tests/instances/test_status_live.py."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta

import pytest
from channels.layers import channel_layers, get_channel_layer
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.cache import cache
from django.test import Client
from django.utils import timezone

from accounts.models import Account
from iflow2api_lib.redis_client import SharedRedis
from instances import status
from instances.models import Instance
from instances.routing import WS_PATH, trusted_origin, websocket_app
from proxy.models import RequestLog
from proxy.runtime import Runtime, with_runtime
from tests.services import REDIS_URL, require_redis

ORIGIN = "http://testserver"


@pytest.fixture(autouse=True)
def clean_state():
    """Each test: a fresh channel layer (its queues belong to one event loop)."""
    channel_layers.backends.clear()
    cache.clear()
    yield
    channel_layers.backends.clear()


@pytest.fixture
def runtime() -> Runtime:
    """The test's own Runtime (no streams counted yet)."""
    return Runtime.build()


@pytest.fixture
def publisher(runtime: Runtime) -> status.StatusPublisher:
    return runtime.status


def log_row(seconds_ago: float, status_code: int = 200, instance: str = "default",
            error: str = "", model: str = "glm-5") -> RequestLog:
    return RequestLog.objects.create(
        started_at=timezone.now() - timedelta(seconds=seconds_ago), instance=instance,
        model=model, api="openai", status=status_code, latency_ms=10, error=error)


# --- snapshot() ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_snapshot_reports_instances_traffic_accounts_and_errors():
    now = timezone.now()
    Instance.objects.create(name="alpha", port=28101, state="running")
    Instance.objects.create(name="beta", port=28102, enabled=False, state="error",
                            state_message="port in use")
    Account.objects.create(label="main", base_url="https://apis.iflow.cn/v1", api_key="k1",
                           state="cooling", cooldown_until=now + timedelta(minutes=5))
    Account.objects.create(label="gone", base_url="https://apis.iflow.cn/v1",
                           state="needs_login", last_error="log in again")
    for seconds in (5, 20, 50):
        log_row(seconds, instance="alpha")
    log_row(30, 429, instance="beta", error="busy")
    log_row(300, 502, instance="alpha", error="old failure")  # out of the minute, still an error
    for i in range(12):
        log_row(3600 + i, 500, error=f"ancient {i}")

    snap = status.snapshot()

    assert snap["requests_per_minute"] == 4
    alpha, beta = snap["instances"]
    assert (alpha["name"], alpha["state"], alpha["requests_per_minute"]) == ("alpha", "running", 3)
    assert (beta["enabled"], beta["state"], beta["state_message"]) == (False, "error",
                                                                        "port in use")
    assert beta["requests_per_minute"] == 1
    main, gone = snap["accounts"]
    assert main["state"] == "cooling" and main["cooldown_until"].startswith(
        (now + timedelta(minutes=5)).isoformat()[:16])
    assert gone["state"] == "needs_login" and gone["refresh_state"] == "none"
    assert gone["error"] == "log in again"
    assert len(snap["errors"]) == 10
    assert [e["status"] for e in snap["errors"][:3]] == [429, 502, 500]
    assert snap["errors"][0] | {"time": None} == {
        "time": None, "instance": "beta", "model": "glm-5", "status": 429, "error": "busy"}


@pytest.mark.django_db
def test_next_refresh_follows_the_refresher_rules(settings):
    settings.IFLOW2API = {**settings.IFLOW2API, "REFRESH_OAUTH_BEFORE_HOURS": 24.0,
                          "REFRESH_COOKIE_BEFORE_HOURS": 48.0}
    now = timezone.now()

    def account(**fields) -> Account:
        return Account(label="a", base_url="https://apis.iflow.cn/v1", **fields)

    expires = now + timedelta(hours=30)
    assert status.next_refresh(account(oauth_refresh_token="r", oauth_access_token="t",
                                       access_token_expires_at=expires), now) == (
        "scheduled", expires - timedelta(hours=24))
    assert status.next_refresh(account(cookie="c", api_key_expires_at=expires), now) == (
        "due", expires - timedelta(hours=48))
    later = now + timedelta(minutes=2)
    assert status.next_refresh(account(cookie="c", refresh_failures=2,
                                       next_refresh_attempt_at=later), now) == ("scheduled",
                                                                                later)
    assert status.next_refresh(account(cookie="c", refreshing_until=later), now)[0] == \
        "refreshing"
    assert status.next_refresh(account(api_key="plain key only"), now) == ("none", None)
    assert status.next_refresh(account(cookie="c", state="blocked"), now) == ("none", None)


@pytest.mark.django_db
def test_streams_are_counted_per_instance_and_never_below_zero(publisher):
    publisher.stream_started("alpha")
    publisher.stream_started("alpha")
    publisher.stream_started("beta")
    publisher.stream_finished("alpha")
    publisher.stream_finished("gamma")  # never started: ignored
    snap = status.snapshot(publisher)
    assert snap["active_streams"] == 2
    assert snap["streams_per_instance"] == {"alpha": 1, "beta": 1}


@pytest.mark.django_db
def test_other_processes_counts_are_summed_until_their_ttl_runs_out(monkeypatch, publisher):
    publisher.stream_started("alpha")
    publisher.store.publish("other-host:1:aaaaaa", {"alpha": 2, "beta": 1})
    assert status.snapshot(publisher)["streams_per_instance"] == {"alpha": 3, "beta": 1}
    monkeypatch.setattr(status.time, "time", lambda: time.monotonic() + 10 ** 10)
    # The other one is dead.
    assert status.snapshot(publisher)["streams_per_instance"] == {"alpha": 1}


def test_open_streams_keep_their_published_counts_alive(monkeypatch, publisher):
    """The heartbeat republishes while a stream is open, so its count outlives the TTL."""
    monkeypatch.setattr(status, "STREAMS_TTL", 1)
    monkeypatch.setattr(status, "HEARTBEAT_SECONDS", 0.2)
    me = publisher.my_id()

    async def go() -> tuple[dict, dict]:
        publisher.stream_started("alpha")
        await asyncio.sleep(1.6)  # longer than the TTL
        during = publisher.store.read().get(me)
        publisher.stream_finished("alpha")
        await asyncio.sleep(0.8)
        return during, publisher.store.read().get(me)

    during, after = asyncio.run(go())
    assert during == {"alpha": 1}
    assert after == {}


def test_the_redis_store_sums_live_processes_and_forgets_dead_ones(monkeypatch):
    require_redis()
    store = status._RedisStore(SharedRedis(REDIS_URL, "iflow2api:{test-status}"))
    one, two = f"test-{uuid.uuid4().hex}", f"test-{uuid.uuid4().hex}"
    store.publish(one, {"alpha": 2})
    store.publish(two, {"alpha": 1, "beta": 4})
    seen = store.read()
    assert seen[one] == {"alpha": 2} and seen[two] == {"alpha": 1, "beta": 4}
    monkeypatch.setattr(status, "STREAMS_TTL", 1)
    store.publish(one, {"alpha": 5})  # one's key now lives one second
    time.sleep(1.2)
    seen = store.read()
    assert one not in seen and seen[two] == {"alpha": 1, "beta": 4}


# --- the websocket --------------------------------------------------------------------------------


def session_of(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


def make_user(staff: bool = True, may_view: bool = True):
    """A user; `may_view`: with the status page's permission (view the request log)."""
    user = get_user_model().objects.create_user(
        f"user-{uuid.uuid4().hex[:8]}", password="x-unused-password", is_staff=staff)
    if may_view:
        user.user_permissions.add(Permission.objects.get(codename="view_requestlog"))
    return user


def communicator(session: str | None = None, origin: str | None = ORIGIN,
                 host: str = "testserver", runtime: Runtime | None = None,
                 ) -> WebsocketCommunicator:
    headers = [(b"host", host.encode())]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    if session:
        headers.append((b"cookie", f"sessionid={session}".encode()))
    app = websocket_app() if runtime is None else with_runtime(runtime, websocket_app())
    return WebsocketCommunicator(app, WS_PATH, headers=headers)


async def next_snapshot(ws: WebsocketCommunicator, timeout: float = 3) -> dict:
    message = await ws.receive_json_from(timeout=timeout)
    assert message["type"] == "snapshot"
    return message["data"]


@pytest.mark.django_db(transaction=True)
def test_staff_get_a_snapshot_then_a_push_after_each_group_message():
    Instance.objects.create(name="alpha", port=28101, state="running")
    session = session_of(make_user())

    async def go() -> None:
        ws = communicator(session)
        connected, _ = await ws.connect(timeout=5)
        assert connected
        first = await next_snapshot(ws)
        assert [i["name"] for i in first["instances"]] == ["alpha"]
        assert first["requests_per_minute"] == 0
        await asyncio.to_thread(log_row, 1, 503, "alpha", "upstream down")
        await get_channel_layer().group_send(status.GROUP, {"type": "status.changed"})
        pushed = await next_snapshot(ws)
        assert pushed["requests_per_minute"] == 1
        assert pushed["errors"][0]["error"] == "upstream down"
        await ws.disconnect()

    asyncio.run(go())


@pytest.mark.django_db(transaction=True)
def test_a_burst_of_changes_is_throttled_to_one_push():
    session = session_of(make_user())

    async def go() -> None:
        ws = communicator(session)
        assert (await ws.connect(timeout=5))[0]
        await next_snapshot(ws)
        started = time.monotonic()
        for _ in range(20):
            await get_channel_layer().group_send(status.GROUP, {"type": "status.changed"})
        await next_snapshot(ws)
        assert time.monotonic() - started >= 0.3  # waited for the throttle
        assert await ws.receive_nothing(timeout=0.8)
        await ws.disconnect()

    asyncio.run(go())


@pytest.mark.django_db(transaction=True)
def test_notify_changed_and_the_stream_counters_push_to_the_page(runtime):
    session = session_of(make_user())
    publisher = runtime.status

    async def go() -> None:
        ws = communicator(session, runtime=runtime)  # the page reads the runtime's counts
        assert (await ws.connect(timeout=5))[0]
        assert (await next_snapshot(ws))["active_streams"] == 0
        publisher.stream_started("alpha")  # notifies: coalesced with the next call
        publisher.notify_changed()
        pushed = await next_snapshot(ws)
        assert pushed["active_streams"] == 1 and pushed["streams_per_instance"] == {"alpha": 1}
        publisher.stream_finished("alpha")
        assert (await next_snapshot(ws))["active_streams"] == 0
        await ws.disconnect()

    asyncio.run(go())


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("who", ["anonymous", "not staff", "inactive", "without permission"])
def test_only_active_staff_with_the_permission_may_connect(who):
    session = None
    if who != "anonymous":
        user = make_user(staff=who != "not staff", may_view=who != "without permission")
        session = session_of(user)
        if who == "inactive":
            user.is_active = False
            user.save()

    async def go() -> None:
        ws = communicator(session)
        await ws.connect(timeout=5)
        closed = await ws.receive_output(timeout=3)
        assert closed == {"type": "websocket.close", "code": 4403}

    asyncio.run(go())


@pytest.mark.django_db(transaction=True)
def test_a_logout_elsewhere_ends_the_connection_at_the_next_push():
    user = make_user()
    client = Client()
    client.force_login(user)
    session = client.cookies["sessionid"].value

    async def go() -> None:
        ws = communicator(session)
        assert (await ws.connect(timeout=5))[0]
        await next_snapshot(ws)
        await asyncio.to_thread(client.logout)
        await get_channel_layer().group_send(status.GROUP, {"type": "status.changed"})
        closed = await ws.receive_output(timeout=3)
        assert closed == {"type": "websocket.close", "code": 4403}

    asyncio.run(go())


@pytest.mark.django_db(transaction=True)
def test_a_permission_taken_away_ends_the_connection_at_the_next_push():
    user = make_user()
    session = session_of(user)

    async def go() -> None:
        ws = communicator(session)
        assert (await ws.connect(timeout=5))[0]
        await next_snapshot(ws)
        await asyncio.to_thread(user.user_permissions.clear)
        await get_channel_layer().group_send(status.GROUP, {"type": "status.changed"})
        closed = await ws.receive_output(timeout=3)
        assert closed == {"type": "websocket.close", "code": 4403}

    asyncio.run(go())


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("origin", ["http://evil.example", "http://testserver.evil.example",
                                    "null", None])
def test_a_cross_origin_handshake_is_refused(origin):
    session = session_of(make_user())

    async def go() -> None:
        ws = communicator(session, origin=origin)
        connected, _ = await ws.connect(timeout=5)
        assert not connected

    asyncio.run(go())


def test_trusted_origins(settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://admin.example.com", "https://*.corp.example"]
    assert trusted_origin("http://127.0.0.1:28000", "127.0.0.1:28000")
    assert not trusted_origin("http://127.0.0.1:28001", "127.0.0.1:28000")
    assert trusted_origin("https://admin.example.com", "internal:28000")  # a proxy's Host
    assert not trusted_origin("http://admin.example.com", "internal:28000")  # scheme differs
    assert trusted_origin("https://ops.corp.example", "internal:28000")
    assert not trusted_origin("https://corp.example.evil", "internal:28000")


# --- the page -------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_page_renders_a_snapshot_for_staff(admin_client):
    Instance.objects.create(name="alpha", port=28101, state="running")
    Account.objects.create(label="main-iflow", base_url="https://apis.iflow.cn/v1")
    log_row(2, 429, instance="alpha", error="slow down <b>now</b>")
    page = admin_client.get("/admin/status/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'data-ws-path="/admin/status/ws/"' in html
    assert "instances/status.js" in html and 'id="status-labels"' in html
    for text in ("alpha", "127.0.0.1:28101", "main-iflow", "slow down &lt;b&gt;now&lt;/b&gt;",
                 'id="status-rpm">1<'):
        assert text in html


@pytest.mark.django_db
def test_the_page_is_for_staff_only(client):
    assert client.get("/admin/status/").status_code == 302
    client.force_login(make_user(staff=False))
    answer = client.get("/admin/status/")
    assert answer.status_code == 302 and "/admin/login/" in answer["Location"]


@pytest.mark.django_db
def test_the_page_needs_the_usage_pages_permission(client):
    """Account labels and errors, recent errors: not for a staff user without a single right."""
    client.force_login(make_user(may_view=False))
    assert client.get("/admin/status/").status_code == 403
    assert "/admin/status/" not in client.get("/admin/").content.decode()
    client.force_login(make_user())
    assert client.get("/admin/status/").status_code == 200
    assert "/admin/status/" in client.get("/admin/").content.decode()
