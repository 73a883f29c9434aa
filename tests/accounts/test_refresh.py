"""Token refresh (accounts/refresh.py) against the fake iflow.cn / platform.iflow.cn, with a
controllable clock: what is due when, what is stored, how failures back off."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
from asgiref.sync import async_to_sync
from django.db import connection
from django.utils import timezone

from accounts import refresh
from accounts.models import Account
from accounts.oauth import OAuthClient, OAuthConfig
from accounts.services import routing_snapshot
from accounts.workers import AccountWorkers
from tests.fakes.oauth import FakeOAuth, china_time

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeOAuth]:
    with FakeOAuth() as fake:
        yield fake


@pytest.fixture
def fake(fake_server: FakeOAuth) -> Iterator[FakeOAuth]:
    fake_server.reset()
    fake_server.refresh_delay = 0.0
    fake_server.rotate_refresh_tokens = True
    fake_server.expires_in = 172800
    fake_server.user.api_key = "sk-fake-oauth-key-0123456789abcdef"
    yield fake_server
    fake_server.reset()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def client(fake: FakeOAuth, clock: Clock) -> Iterator[OAuthClient]:
    config = OAuthConfig(client_id=fake.client_id, client_secret=fake.client_secret,
                         oauth_base_url=fake.oauth_base_url,
                         platform_base_url=fake.platform_base_url, timeout=5)
    with OAuthClient(config, now=clock) as oauth:
        yield oauth


@pytest.fixture
def fake_settings(settings, fake: FakeOAuth):
    """The default client (OAuthConfig.from_settings) points at the fake."""
    settings.IFLOW2API = {**settings.IFLOW2API, "IFLOW_OAUTH_BASE_URL": fake.oauth_base_url,
                          "IFLOW_PLATFORM_BASE_URL": fake.platform_base_url}
    return settings


def oauth_account(fake: FakeOAuth, expires_in: timedelta, **fields) -> Account:
    access, refresh_token = fake.issue_tokens()
    values = {"label": "oauth", "base_url": "https://apis.iflow.cn/v1", "api_key": "sk-old-key",
              "oauth_access_token": access, "oauth_refresh_token": refresh_token,
              "access_token_expires_at": T0 + expires_in, **fields}
    return Account.objects.create(**values)


def cookie_account(fake: FakeOAuth, key_expires_in: timedelta | None, **cookie) -> Account:
    bxauth, record = fake.add_cookie(**cookie)
    return Account.objects.create(
        label="cookie", base_url="https://apis.iflow.cn/v1", api_key=record.api_key,
        cookie=bxauth, api_key_name=record.name,
        api_key_expires_at=T0 + key_expires_in if key_expires_in is not None else None)


def reload(account: Account) -> Account:
    return Account.objects.get(pk=account.pk)


# --- what is due -------------------------------------------------------------------------------


def test_due_at_the_thresholds(fake):
    minute = timedelta(minutes=1)
    oauth_due = oauth_account(fake, 24 * HOUR - minute)
    oauth_fresh = oauth_account(fake, 24 * HOUR + minute)
    cookie_due = cookie_account(fake, 48 * HOUR - minute)
    cookie_fresh = cookie_account(fake, 48 * HOUR + minute)
    assert refresh.due_accounts(T0) == [oauth_due.pk, cookie_due.pk]
    # Time passes: the fresh ones become due too.
    assert refresh.due_accounts(T0 + 2 * minute) == [
        oauth_due.pk, oauth_fresh.pk, cookie_due.pk, cookie_fresh.pk]
    assert oauth_fresh.pk not in refresh.due_accounts(T0 + minute - timedelta(seconds=1))


def test_not_due_when_disabled_blocked_needing_login_backing_off_or_not_refreshable(fake):
    expired = -HOUR
    oauth_account(fake, expired, enabled=False)
    oauth_account(fake, expired, state=Account.State.BLOCKED)
    oauth_account(fake, expired, state=Account.State.NEEDS_LOGIN)
    waiting = oauth_account(fake, expired, next_refresh_attempt_at=T0 + 10 * HOUR)
    oauth_account(fake, expired, provider="openai")
    oauth_account(fake, expired, oauth_refresh_token="")  # no way to refresh
    Account.objects.create(label="plain key", base_url="https://apis.iflow.cn/v1",
                           api_key="sk-plain")
    assert refresh.due_accounts(T0) == []
    assert refresh.due_accounts(T0 + 10 * HOUR) == [waiting.pk]
    # Cooling down (rate limit, or waiting for a reactive refresh) does not stop a refresh.
    Account.objects.filter(pk=waiting.pk).update(state=Account.State.COOLING)
    assert refresh.due_accounts(T0 + 10 * HOUR) == [waiting.pk]


def test_a_failed_attempt_is_due_again_after_its_backoff_even_with_a_fresh_token(fake):
    account = oauth_account(fake, 30 * HOUR, refresh_failures=1,
                            next_refresh_attempt_at=T0 + timedelta(seconds=30))
    assert refresh.due_accounts(T0) == []
    assert refresh.due_accounts(T0 + timedelta(seconds=30)) == [account.pk]


# --- OAuth -------------------------------------------------------------------------------------


def test_oauth_refresh_stores_tokens_then_fetches_the_key_after_every_refresh(fake, client, clock):
    account = oauth_account(fake, HOUR)
    old_access, old_refresh = account.oauth_access_token, account.oauth_refresh_token

    result = refresh.refresh_account(account.pk, now=clock.now, client=client)
    assert result.status == refresh.REFRESHED, result
    account = reload(account)
    assert fake.calls("refresh") == 1 and fake.calls("userinfo") == 1
    assert account.oauth_access_token not in ("", old_access)
    assert account.oauth_refresh_token not in ("", old_refresh)  # rotated
    assert account.access_token_expires_at == T0 + timedelta(seconds=fake.expires_in)
    assert account.api_key == fake.user.api_key != account.oauth_access_token
    assert (account.email, account.phone) == (fake.user.email, fake.user.phone)
    assert account.state == Account.State.ACTIVE and account.last_error == ""
    assert account.last_refreshed_at == T0 and account.refresh_failures == 0
    assert account.refreshing_until is None  # lease released
    assert fake.requests_of("userinfo")[-1].query["accessToken"] == account.oauth_access_token

    # Not due any more: nothing is called.
    assert refresh.refresh_account(account.pk, now=clock.now, client=client).status == "not_due"
    assert fake.calls("refresh") == 1

    # iFlow hands out another key; the next refresh (token within 24 h of expiry) fetches it.
    fake.refresh_tokens[account.oauth_refresh_token]["user"].api_key = "sk-rotated-key-42"
    clock.now = account.access_token_expires_at - 23 * HOUR
    assert refresh.refresh_due_accounts(clock.now, client=client)[0].ok
    account = reload(account)
    assert fake.calls("refresh") == 2 and fake.calls("userinfo") == 2
    assert account.api_key == "sk-rotated-key-42" != account.oauth_access_token
    assert account.last_refreshed_at == clock.now


def test_the_old_refresh_token_is_kept_when_none_is_returned(fake, client):
    fake.rotate_refresh_tokens = False
    account = oauth_account(fake, HOUR)
    old_refresh = account.oauth_refresh_token
    assert refresh.refresh_account(account.pk, now=T0, client=client).ok
    account = reload(account)
    assert account.oauth_refresh_token == old_refresh
    assert account.api_key == fake.user.api_key


def test_a_token_living_less_than_the_threshold_is_not_refreshed_every_cycle(fake, client):
    fake.expires_in = 3600  # shorter than the 24 h threshold: due again at once
    account = oauth_account(fake, HOUR)
    assert refresh.refresh_account(account.pk, now=T0, client=client).ok
    account = reload(account)
    assert account.access_token_expires_at == T0 + HOUR
    assert account.next_refresh_attempt_at == T0 + HOUR / 2  # half its life
    assert refresh.due_accounts(T0 + timedelta(minutes=29)) == []
    assert refresh.due_accounts(T0 + timedelta(minutes=30)) == [account.pk]


def test_transient_failures_back_off_30_60_120_240_then_300_and_show_error_after_5(fake, client):
    account = oauth_account(fake, HOUR)
    fake.fail_next("refresh", "server_error", times=6)
    now = T0
    for attempt, delay in enumerate([30, 60, 120, 240, 300, 300], start=1):
        assert refresh.due_accounts(now) == [account.pk]
        result = refresh.refresh_account(account.pk, now=now, client=client)
        assert result.status == refresh.FAILED
        account = reload(account)
        assert account.refresh_failures == attempt
        assert account.next_refresh_attempt_at == result.next_attempt_at == now + timedelta(
            seconds=delay)
        expected = Account.State.ERROR if attempt >= 5 else Account.State.ACTIVE
        assert account.state == expected, attempt
        assert "transient" in account.last_error and "HTTP 500" in account.last_error
        assert account.api_key == "sk-old-key"  # untouched
        # Not before its time, due again at it.
        assert refresh.due_accounts(now + timedelta(seconds=delay - 1)) == []
        now += timedelta(seconds=delay)
    assert fake.calls("refresh") == 6 and fake.calls("userinfo") == 0
    # Still tried at the cap; the next success clears everything.
    assert refresh.refresh_account(account.pk, now=now, client=client).ok
    account = reload(account)
    assert account.state == Account.State.ACTIVE and account.last_error == ""
    assert account.refresh_failures == 0 and account.next_refresh_attempt_at is None


def test_overloaded_is_retried_later(fake, client):
    account = oauth_account(fake, HOUR)
    fake.fail_next("refresh", "overloaded")
    result = refresh.refresh_account(account.pk, now=T0, client=client)
    assert result.status == refresh.FAILED
    account = reload(account)
    assert account.state == Account.State.ACTIVE and "overloaded" in account.last_error
    assert account.next_refresh_attempt_at == T0 + timedelta(seconds=30)
    assert refresh.refresh_due_accounts(T0 + timedelta(seconds=29), client=client) == []
    later = refresh.refresh_due_accounts(T0 + timedelta(seconds=30), client=client)
    assert [r.status for r in later] == [refresh.REFRESHED]
    assert reload(account).api_key == fake.user.api_key


def test_invalid_grant_needs_a_login_and_is_never_retried(fake, client):
    account = oauth_account(fake, HOUR)
    fake.fail_next("refresh", "invalid_grant")
    result = refresh.refresh_account(account.pk, now=T0, client=client)
    assert result.status == refresh.NEEDS_LOGIN
    account = reload(account)
    assert account.state == Account.State.NEEDS_LOGIN
    assert "invalid_grant" in account.last_error and "log in again" in account.last_error
    assert account.next_refresh_attempt_at is None
    assert refresh.due_accounts(T0 + 100 * HOUR) == []
    assert refresh.refresh_due_accounts(T0 + 100 * HOUR, client=client) == []
    assert fake.calls("refresh") == 1


def test_a_refresh_token_spent_elsewhere_is_invalid_grant(fake, client):
    account = oauth_account(fake, HOUR)
    client.refresh(account.oauth_refresh_token)  # someone else used the single-use token
    assert refresh.refresh_account(account.pk, now=T0, client=client).status == "needs_login"
    assert reload(account).state == Account.State.NEEDS_LOGIN


def test_http_200_without_access_token_is_a_failure_not_a_success(fake, client):
    account = oauth_account(fake, HOUR)
    before = (account.oauth_access_token, account.oauth_refresh_token, account.api_key)
    fake.fail_next("refresh", "no_access_token")
    result = refresh.refresh_account(account.pk, now=T0, client=client)
    assert result.status == refresh.FAILED and not result.ok
    account = reload(account)
    assert (account.oauth_access_token, account.oauth_refresh_token, account.api_key) == before
    assert account.last_refreshed_at is None and account.refresh_failures == 1
    assert "without access_token" in account.last_error
    assert account.next_refresh_attempt_at == T0 + timedelta(seconds=30)
    assert fake.calls("userinfo") == 0


def test_a_failed_key_fetch_keeps_the_new_tokens_and_retries_only_the_key(fake, client):
    account = oauth_account(fake, HOUR)
    fake.fail_next("userinfo", "no_api_key")
    assert refresh.refresh_account(account.pk, now=T0, client=client).status == "failed"
    account = reload(account)
    # The old refresh token is spent: the new one must have been stored.
    assert fake.refresh_tokens[account.oauth_refresh_token]["used"] is False
    assert account.api_key == "sk-old-key" and account.refresh_failures == 1
    assert refresh.due_accounts(T0 + timedelta(seconds=30)) == [account.pk]
    assert refresh.refresh_account(account.pk, now=T0 + timedelta(seconds=30), client=client).ok
    assert fake.calls("refresh") == 1 and fake.calls("userinfo") == 2
    assert reload(account).api_key == fake.user.api_key


# --- cookie accounts ---------------------------------------------------------------------------


def test_cookie_key_is_read_when_it_is_fresh_and_reissued_when_near_expiry(fake, client):
    fresh = cookie_account(fake, None, expire_time=china_time(T0 + timedelta(days=20)))
    expiring = cookie_account(fake, 47 * HOUR, expire_time=china_time(T0 + 47 * HOUR))
    old_expiring_key = expiring.api_key

    results = refresh.refresh_due_accounts(T0, client=client)
    assert [r.status for r in results] == ["refreshed", "refreshed"]
    fresh, expiring = reload(fresh), reload(expiring)
    assert fake.calls("apikey") == 2 and fake.calls("apikey_reissue") == 1
    assert fresh.api_key_expires_at == T0 + timedelta(days=20)
    assert expiring.api_key != old_expiring_key
    assert expiring.api_key == fake.cookies[expiring.cookie].api_key
    assert expiring.api_key_expires_at > T0 + timedelta(days=29)
    assert fake.requests_of("apikey_reissue")[0].json == {"name": "iflow2api"}
    assert refresh.due_accounts(T0) == []


@pytest.mark.parametrize("cookie", [{"masked": True}, {"has_expired": True}])
def test_cookie_key_is_reissued_when_masked_or_expired(fake, client, cookie):
    account = cookie_account(fake, HOUR, **cookie)
    old_key = account.api_key
    assert refresh.refresh_account(account.pk, now=T0, client=client).ok
    account = reload(account)
    assert fake.calls("apikey_reissue") == 1
    assert account.api_key != old_key and "*" not in account.api_key
    assert account.api_key == fake.cookies[account.cookie].api_key


def test_a_refused_cookie_needs_a_login(fake, client):
    account = Account.objects.create(label="dead cookie", base_url="https://apis.iflow.cn/v1",
                                     cookie="bx-logged-out", api_key="sk-x")
    assert refresh.refresh_account(account.pk, now=T0, client=client).status == "needs_login"
    account = reload(account)
    assert account.state == Account.State.NEEDS_LOGIN
    assert "cookie" in account.last_error and "log in again" in account.last_error


# --- single flight, secrets --------------------------------------------------------------------


def test_a_held_lease_skips_and_an_expired_one_is_taken_over(fake, client):
    account = oauth_account(fake, HOUR, refreshing_until=T0 + timedelta(minutes=2))
    assert refresh.refresh_account(account.pk, now=T0, client=client).status == "skipped"
    assert fake.calls("refresh") == 0
    assert reload(account).refreshing_until == T0 + timedelta(minutes=2)  # not ours to clear
    later = T0 + timedelta(minutes=3)
    assert refresh.refresh_account(account.pk, now=later, client=client).ok
    assert reload(account).refreshing_until is None


def test_secrets_are_encrypted_at_rest_and_never_logged(fake, client, caplog):
    caplog.set_level(logging.DEBUG)
    account = oauth_account(fake, HOUR)
    fake.fail_next("refresh", "overloaded")
    refresh.refresh_account(account.pk, now=T0, client=client)
    refresh.refresh_account(account.pk, now=T0 + HOUR, client=client)
    cookie = cookie_account(fake, HOUR, masked=True)
    refresh.refresh_account(cookie.pk, now=T0, client=client)
    account, cookie = reload(account), reload(cookie)
    secrets = [account.oauth_access_token, account.oauth_refresh_token, account.api_key,
               cookie.cookie, cookie.api_key]
    assert all(secrets)
    with connection.cursor() as cursor:
        cursor.execute("SELECT api_key, oauth_access_token, oauth_refresh_token, cookie, "
                       "last_error FROM accounts_account")
        rows = cursor.fetchall()
    raw = repr(rows) + caplog.text + account.last_error + cookie.last_error
    assert "getUserInfo" in caplog.text  # the key fetch was logged (its URL carries the token)
    for secret in secrets:
        assert secret not in raw and quote(secret, safe="") not in raw
    for row in rows:
        assert all(value == "" or value.startswith("fernet:") for value in row[:4])


# --- the reactive path -------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_request_refresh_now_returns_at_once_cools_down_then_refreshes(
        fake, fake_settings, monkeypatch):
    account = oauth_account(fake, 100 * HOUR)  # not due: a 401 forces it
    seen_states = []
    real_refresh = OAuthClient.refresh

    def spying_refresh(self, token):
        seen_states.append(Account.objects.values_list("state", "cooldown_until")
                           .get(pk=account.pk))
        return real_refresh(self, token)

    monkeypatch.setattr(OAuthClient, "refresh", spying_refresh)
    fake.refresh_delay = 0.5
    workers, routing = AccountWorkers(), routing_snapshot()  # a Runtime's
    routing.ttl_seconds = 3600.0  # stale only when marked so, never by the clock
    async_to_sync(routing.get)()
    started = time.monotonic()
    future = refresh.request_refresh_now(account.pk, workers, routing=routing)
    assert time.monotonic() - started < 0.2  # the caller (async code) never waits
    result = future.result(timeout=15)
    assert result is not None and result.ok, result
    assert not routing.fresh()  # the Runtime's snapshot is read again at once
    state, cooldown = seen_states[0]
    assert state == Account.State.COOLING  # cooled down meanwhile, for AUTH_COOLDOWN_SECONDS
    assert cooldown > timezone.now() + timedelta(seconds=250)
    account = reload(account)
    assert account.state == Account.State.ACTIVE and account.cooldown_until is None
    assert account.api_key == fake.user.api_key and fake.calls("refresh") == 1

    # More 401s from requests that still carried the old key: no second refresh.
    fake.refresh_delay = 0.0
    again = refresh.request_refresh_now(account.pk, workers).result(timeout=15)
    assert again.status == refresh.NOT_DUE and fake.calls("refresh") == 1


def test_admin_refresh_now_action(fake, fake_settings, admin_client):
    account = oauth_account(fake, timedelta(days=10))  # not due: the action forces it
    before = fake.calls("refresh")
    response = admin_client.post("/admin/accounts/account/", {
        "action": "refresh_now", "index": 0, "_selected_action": [account.pk]}, follow=True)
    shown = [str(m) for m in response.context["messages"]]
    assert fake.calls("refresh") == before + 1
    assert any("refreshed" in m for m in shown), shown
    account.refresh_from_db()
    assert account.api_key == fake.user.api_key
    assert account.api_key not in response.content.decode()
