"""accounts/logins.py: OAuth logins into accounts, the cookie login, plain key accounts."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core.exceptions import DisallowedHost
from django.db import connection
from django.test import RequestFactory
from django.utils import timezone

from accounts.logins import (
    LoginError,
    add_api_key_account,
    add_cookie_account,
    callback_url,
    finish_oauth_login,
    mask_secret,
    parse_callback,
    start_oauth_login,
)
from accounts.models import Account, ModelInfo, OAuthLogin
from tests.fakes.oauth import FakeOAuth

pytestmark = pytest.mark.django_db

REDIRECT = "http://127.0.0.1:28000/accounts/oauth/callback/"


@pytest.fixture
def fake(settings) -> Iterator[FakeOAuth]:
    with FakeOAuth() as server:
        settings.IFLOW2API = {**settings.IFLOW2API,
                              "IFLOW_OAUTH_BASE_URL": server.oauth_base_url,
                              "IFLOW_PLATFORM_BASE_URL": server.platform_base_url}
        yield server


def raw_row(account: Account) -> dict[str, str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT api_key, oauth_access_token, oauth_refresh_token, cookie "
                       "FROM accounts_account WHERE id = %s", [account.pk])
        return dict(zip(["api_key", "oauth_access_token", "oauth_refresh_token", "cookie"],
                        cursor.fetchone(), strict=True))


def all_secrets(fake: FakeOAuth) -> list[str]:
    return [*fake.access_tokens, *fake.refresh_tokens, fake.user.api_key,
            *(c.api_key for c in fake.cookies.values()), *fake.cookies]


def oauth_login(fake: FakeOAuth, **approve: str) -> Account:
    _, url = start_oauth_login(REDIRECT)
    return finish_oauth_login(fake.approve(url, **approve))


# --- OAuth ---------------------------------------------------------------------------------


def test_start_stores_a_random_single_use_state(fake):
    login, url = start_oauth_login(REDIRECT)
    other, _ = start_oauth_login(REDIRECT)
    assert len(login.state) >= 40 and login.state != other.state
    assert login.redirect_uri == REDIRECT and login.used_at is None and login.account is None
    query = parse_qs(urlsplit(url).query)
    assert url.startswith(fake.oauth_base_url + "/oauth?")
    assert query["state"] == [login.state] and query["redirect"] == [REDIRECT]


def test_a_login_creates_an_iflow_account_with_encrypted_secrets(fake):
    before = timezone.now()
    account = oauth_login(fake)
    assert account.provider == "iflow" and account.base_url == "https://apis.iflow.cn/v1"
    assert account.label == "iFlow user@example.com"
    assert account.email == "user@example.com" and account.phone == "13800000000"
    assert account.state == Account.State.ACTIVE
    account.refresh_from_db()
    assert account.api_key == fake.user.api_key  # the chat key, not the access token
    assert account.oauth_access_token in fake.access_tokens
    assert account.oauth_refresh_token in fake.refresh_tokens
    expected = before + timedelta(seconds=fake.expires_in)
    assert abs(account.access_token_expires_at - expected) < timedelta(seconds=30)
    raw = raw_row(account)
    for name in ("api_key", "oauth_access_token", "oauth_refresh_token"):
        assert raw[name].startswith("fernet:")
        assert getattr(account, name) not in raw[name]
    assert raw["cookie"] == ""
    assert OAuthLogin.objects.get().used_at is not None


def test_a_state_works_once(fake):
    _, url = start_oauth_login(REDIRECT)
    callback = fake.approve(url)
    finish_oauth_login(callback)
    with pytest.raises(LoginError, match="already completed"):
        finish_oauth_login(callback)
    assert fake.calls("token") == 1 and Account.objects.count() == 1


def test_query_only_and_login_page_urls_are_accepted(fake):
    _, url = start_oauth_login(REDIRECT)
    query = urlsplit(fake.approve(url)).query
    assert finish_oauth_login(query).pk
    _, url = start_oauth_login(REDIRECT)
    query = urlsplit(fake.approve(url, email="b@example.com")).query
    assert finish_oauth_login("?" + query).email == "b@example.com"
    _, url = start_oauth_login(REDIRECT)
    from urllib.parse import quote

    query = urlsplit(fake.approve(url, email="c@example.com")).query
    pasted = ("http://127.0.0.1:28000/admin/login/?next="
              + quote("/accounts/oauth/callback/?" + query, safe=""))
    assert finish_oauth_login(pasted).email == "c@example.com"


def test_unknown_expired_and_foreign_states_are_refused(fake):
    with pytest.raises(LoginError, match="Unknown login"):
        finish_oauth_login("code=abc&state=nope")
    login, url = start_oauth_login(REDIRECT)
    callback = fake.approve(url)
    OAuthLogin.objects.filter(pk=login.pk).update(
        created_at=timezone.now() - timedelta(minutes=16))
    with pytest.raises(LoginError, match="expired"):
        finish_oauth_login(callback)
    login, url = start_oauth_login(REDIRECT)
    callback = fake.approve(url)
    with pytest.raises(LoginError, match="not started from this browser"):
        finish_oauth_login(callback, allowed_states=["someone-else"])
    assert finish_oauth_login(callback, allowed_states=[login.state]).pk  # not used up
    assert fake.calls("token") == 1


def test_missing_code_and_provider_errors(fake):
    with pytest.raises(LoginError, match="no code and state"):
        finish_oauth_login("http://x/accounts/oauth/callback/")
    with pytest.raises(LoginError, match="did not approve"):
        finish_oauth_login("/cb?error=access_denied&state=x")


def test_relogin_with_the_same_email_updates_the_account(fake):
    first = oauth_login(fake)
    Account.objects.filter(pk=first.pk).update(label="my label", state="needs_login",
                                               refresh_failures=3, last_error="dead")
    second = oauth_login(fake, api_key="sk-second-key-000011112222")
    assert second.pk == first.pk and Account.objects.count() == 1
    second.refresh_from_db()
    assert second.api_key == "sk-second-key-000011112222"
    assert second.label == "my label" and second.state == "active"
    assert second.refresh_failures == 0 and second.last_error == ""
    third = oauth_login(fake, email="other@example.com")
    assert third.pk != first.pk and Account.objects.count() == 2


def test_relogin_of_a_chosen_account(fake):
    account = Account.objects.create(label="old", base_url="https://compat.example/v1",
                                     provider="iflow", api_key="sk-old")
    _, url = start_oauth_login(REDIRECT, account)
    updated = finish_oauth_login(fake.approve(url))
    assert updated.pk == account.pk and updated.base_url == "https://compat.example/v1"
    assert Account.objects.get(pk=account.pk).api_key == fake.user.api_key


def test_failures_become_login_errors_without_secrets(fake):
    _, url = start_oauth_login(REDIRECT)
    callback = fake.approve(url)
    code = parse_qs(urlsplit(callback).query)["code"][0]
    fake.fail_next("token", "overloaded")
    with pytest.raises(LoginError, match="overloaded") as err:
        finish_oauth_login(callback)
    assert code not in err.value.message
    _, url = start_oauth_login(REDIRECT)
    fake.fail_next("userinfo", "no_api_key")
    with pytest.raises(LoginError, match="unexpectedly"):
        finish_oauth_login(fake.approve(url))
    assert Account.objects.count() == 0


def test_callback_url(settings, rf: RequestFactory):
    conf = settings.IFLOW2API
    settings.IFLOW2API = {**conf, "PUBLIC_BASE_URL": "", "HOST": "0.0.0.0", "PORT": 8080}
    assert callback_url() == "http://127.0.0.1:8080/accounts/oauth/callback/"
    request = rf.get("/", HTTP_HOST="gw.example:9000")
    with pytest.raises(DisallowedHost):  # never built from a Host header that is not allowed
        callback_url(request)
    settings.ALLOWED_HOSTS = ["gw.example"]
    assert callback_url(request) == "http://gw.example:9000/accounts/oauth/callback/"
    settings.IFLOW2API = {**conf, "PUBLIC_BASE_URL": "https://gw.example.com/"}
    assert callback_url(request) == "https://gw.example.com/accounts/oauth/callback/"


def test_parse_callback_and_mask():
    assert parse_callback("http://h/cb?code=1&state=2") == {"code": "1", "state": "2"}
    assert parse_callback("  code=1&state=2 ") == {"code": "1", "state": "2"}
    assert mask_secret("sk-0123456789abcdef") == "sk-…cdef"
    assert mask_secret("short") == "…" and mask_secret("") == "(none)"


# --- cookie --------------------------------------------------------------------------------


def test_cookie_login_stores_the_key(fake):
    bxauth, record = fake.add_cookie(name="work", expire_time="2026-07-01 08:00")
    account = add_cookie_account(f"BXAuth={bxauth};")
    account.refresh_from_db()
    assert account.provider == "iflow" and account.cookie == bxauth
    assert account.api_key == record.api_key and account.api_key_name == "work"
    assert account.api_key_expires_at.isoformat() == "2026-07-01T00:00:00+00:00"
    assert account.label == "iFlow work (cookie)"
    assert fake.calls("apikey_reissue") == 0
    raw = raw_row(account)
    assert raw["cookie"].startswith("fernet:") and bxauth not in raw["cookie"]
    again = add_cookie_account(bxauth)
    assert again.pk == account.pk and Account.objects.count() == 1


@pytest.mark.parametrize("state", [{"masked": True}, {"has_expired": True}])
def test_cookie_login_reissues_a_masked_or_expired_key(fake, state):
    bxauth, record = fake.add_cookie(name="team", **state)
    old = record.api_key
    account = add_cookie_account(bxauth)
    assert fake.calls("apikey_reissue") == 1
    assert account.api_key == record.api_key != old and account.api_key_name == "team"


def test_cookie_login_errors(fake):
    with pytest.raises(LoginError, match="refused") as err:
        add_cookie_account("bx-dead-cookie-value")
    assert "bx-dead-cookie-value" not in err.value.message
    with pytest.raises(LoginError, match="does not look like"):
        add_cookie_account("a=1; b=2")
    bxauth, _ = fake.add_cookie(name="", masked=True)
    with pytest.raises(LoginError, match="no key name"):
        add_cookie_account(bxauth)
    assert Account.objects.count() == 0


# --- plain key -----------------------------------------------------------------------------


def test_api_key_account_with_models():
    account = add_api_key_account("openai", "DeepSeek", "https://api.deepseek.com/v1/",
                                  "sk-deepseek-123456", ["deepseek-chat", "glm-5", " "])
    account.refresh_from_db()
    assert account.provider == "openai" and account.base_url == "https://api.deepseek.com/v1"
    assert account.api_key == "sk-deepseek-123456" and account.max_concurrency == 0
    assert raw_row(account)["api_key"].startswith("fernet:")
    chat = ModelInfo.objects.get(model_id="deepseek-chat")
    assert chat.provider == "openai" and list(chat.accounts.all()) == [account]
    assert account in ModelInfo.objects.get(model_id="glm-5").accounts.all()  # seeded one
    iflow = add_api_key_account("iflow", "iFlow key", "", "sk-iflow-1")
    assert iflow.base_url == "https://apis.iflow.cn/v1" and iflow.max_concurrency == 1


def test_api_key_account_validation():
    with pytest.raises(LoginError, match="provider"):
        add_api_key_account("bogus", "x", "https://a.test/v1", "k")
    with pytest.raises(LoginError, match="base_url"):
        add_api_key_account("openai", "x", "ftp://a.test", "k")
    with pytest.raises(LoginError, match="label"):
        add_api_key_account("openai", "", "https://a.test/v1", "k")
    assert Account.objects.count() == 0
