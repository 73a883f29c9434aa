"""accounts/oauth.py against the fake iflow.cn / platform.iflow.cn: every protocol quirk."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest

from accounts.oauth import (
    CookieKey,
    OAuthClient,
    OAuthConfig,
    OAuthError,
    TokenSet,
    UserInfo,
    normalize_bxauth,
    parse_expire_time,
)
from tests.fakes.oauth import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, FakeOAuth

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
REDIRECT = "http://127.0.0.1:28000/accounts/oauth/callback/"


@pytest.fixture
def fake() -> Iterator[FakeOAuth]:
    with FakeOAuth() as server:
        yield server


def make_client(fake: FakeOAuth, **config: object) -> OAuthClient:
    conf = OAuthConfig(client_id=DEFAULT_CLIENT_ID, client_secret=DEFAULT_CLIENT_SECRET,
                       oauth_base_url=fake.oauth_base_url,
                       platform_base_url=fake.platform_base_url, **config)  # type: ignore[arg-type]
    return OAuthClient(conf, now=lambda: NOW)


@pytest.fixture
def client(fake: FakeOAuth) -> Iterator[OAuthClient]:
    with make_client(fake) as oauth:
        yield oauth


def login(fake: FakeOAuth, client: OAuthClient) -> TokenSet:
    callback = fake.approve(client.authorize_url(REDIRECT, "st-1"))
    code = parse_qs(urlsplit(callback).query)["code"][0]
    return client.exchange_code(code, REDIRECT)


def assert_clean(exc: OAuthError, *secrets: str) -> None:
    for secret in (*secrets, DEFAULT_CLIENT_SECRET):
        assert secret not in str(exc) and secret not in repr(exc)


# --- authorize -----------------------------------------------------------------------------


def test_authorize_url_is_exactly_what_iflow_expects(client, fake):
    url = client.authorize_url("http://h:1/cb/?x=1", "s t&=")
    assert url == (f"{fake.oauth_base_url}/oauth?client_id={DEFAULT_CLIENT_ID}"
                   "&loginMethod=phone&type=phone"
                   f"&redirect={quote('http://h:1/cb/?x=1', safe='')}&state={quote('s t&=')}")
    assert "redirect_uri" not in url
    callback = fake.approve(url)
    assert callback.startswith("http://h:1/cb/?x=1&code=") and "state=s+t%26%3D" in callback


def test_fake_authorize_page_redirects_with_a_code(client, fake):
    url = client.authorize_url(REDIRECT, "st-9")
    page = httpx.get(url)
    assert page.status_code == 200 and "auto=1" in page.text
    answer = httpx.get(url + "&auto=1", follow_redirects=False)
    assert answer.status_code == 302
    location = answer.headers["location"]
    assert location.startswith(REDIRECT + "?code=") and location.endswith("&state=st-9")
    assert httpx.get(url.replace("loginMethod=phone&", "")).status_code == 400


# --- tokens --------------------------------------------------------------------------------


def test_code_exchange_and_user_info(client, fake):
    tokens = login(fake, client)
    assert tokens.access_token.startswith("at-") and tokens.refresh_token.startswith("rt-")
    assert tokens.expires_at == NOW + timedelta(seconds=172800)
    assert tokens.expires_at.tzinfo is not None
    assert tokens.token_type == "bearer" and tokens.scope == "read"
    assert tokens.access_token not in repr(tokens) and tokens.refresh_token not in repr(tokens)

    (request,) = fake.requests_of("token")
    basic = base64.b64encode(f"{DEFAULT_CLIENT_ID}:{DEFAULT_CLIENT_SECRET}".encode()).decode()
    assert request.header("authorization") == f"Basic {basic}"
    assert request.header("content-type") == "application/x-www-form-urlencoded"
    assert request.form["client_id"] == DEFAULT_CLIENT_ID
    assert request.form["client_secret"] == DEFAULT_CLIENT_SECRET
    assert request.form["grant_type"] == "authorization_code"
    assert request.form["redirect_uri"] == REDIRECT

    info = client.user_info(tokens.access_token)
    assert info == UserInfo(api_key=fake.user.api_key, email="user@example.com",
                            phone="13800000000")
    assert fake.user.api_key not in repr(info)
    (request,) = fake.requests_of("userinfo")
    assert request.method == "GET" and request.header("authorization") is None
    assert request.query["accessToken"] == tokens.access_token  # "+/=" survived: URL-encoded


def test_a_code_works_once(client, fake):
    callback = fake.approve(client.authorize_url(REDIRECT, "st"))
    code = parse_qs(urlsplit(callback).query)["code"][0]
    client.exchange_code(code, REDIRECT)
    with pytest.raises(OAuthError) as err:
        client.exchange_code(code, REDIRECT)
    assert err.value.kind == "invalid_grant" and not err.value.retryable
    assert_clean(err.value, code)


def test_the_token_exchange_needs_the_authorize_redirect(client, fake):
    callback = fake.approve(client.authorize_url(REDIRECT, "st"))
    code = parse_qs(urlsplit(callback).query)["code"][0]
    with pytest.raises(OAuthError) as err:
        client.exchange_code(code, "http://127.0.0.1:1/oauth2callback")
    assert err.value.kind == "invalid_grant"


def test_wrong_client_credentials_are_unauthorized(fake):
    with make_client(fake) as good:
        callback = fake.approve(good.authorize_url(REDIRECT, "st"))
    conf = OAuthConfig("10009311001", "wrong-secret-123", fake.oauth_base_url,
                       fake.platform_base_url)
    with OAuthClient(conf) as bad, pytest.raises(OAuthError) as err:
        bad.exchange_code(parse_qs(urlsplit(callback).query)["code"][0], REDIRECT)
    assert err.value.kind == "unauthorized" and not err.value.retryable
    assert "wrong-secret-123" not in str(err.value)


def test_rotating_refresh_tokens_are_single_use(client, fake):
    first = login(fake, client)
    second = client.refresh(first.refresh_token)
    assert second.refresh_token != first.refresh_token
    assert second.access_token != first.access_token
    assert client.user_info(second.access_token).api_key == fake.user.api_key
    request = fake.requests_of("refresh")[0]
    assert request.form["grant_type"] == "refresh_token"
    assert request.form["refresh_token"] == first.refresh_token
    assert request.header("authorization", "").startswith("Basic ")
    assert request.form["client_secret"] == DEFAULT_CLIENT_SECRET
    with pytest.raises(OAuthError) as err:
        client.refresh(first.refresh_token)  # reused: dead
    assert err.value.kind == "invalid_grant" and not err.value.retryable
    assert_clean(err.value, first.refresh_token)
    assert fake.calls("refresh") == 2


def test_a_non_rotating_refresh_keeps_the_old_refresh_token(client, fake):
    fake.rotate_refresh_tokens = False
    first = login(fake, client)
    second = client.refresh(first.refresh_token)
    assert second.refresh_token == first.refresh_token
    assert second.access_token != first.access_token
    third = client.refresh(second.refresh_token)  # still valid
    assert third.refresh_token == first.refresh_token


def test_overloaded_is_retryable(client, fake):
    tokens = login(fake, client)
    fake.fail_next("refresh", "overloaded")
    with pytest.raises(OAuthError) as err:
        client.refresh(tokens.refresh_token)
    assert err.value.kind == "overloaded" and err.value.retryable
    assert "太多" in str(err.value)
    assert_clean(err.value, tokens.refresh_token)
    assert client.refresh(tokens.refresh_token).access_token  # the token survived


def test_200_without_access_token_is_never_a_success(client, fake):
    tokens = login(fake, client)
    fake.fail_next("refresh", "no_access_token")
    with pytest.raises(OAuthError) as err:
        client.refresh(tokens.refresh_token)
    assert err.value.kind == "invalid_response" and not err.value.retryable


def test_invalid_grant_quirk(client, fake):
    fake.fail_next("refresh", "invalid_grant")
    with pytest.raises(OAuthError) as err:
        client.refresh("rt-whatever")
    assert err.value.kind == "invalid_grant" and err.value.status == 400


@pytest.mark.parametrize("quirk", ["server_error"])
def test_5xx_is_transient(client, fake, quirk):
    fake.fail_next("refresh", quirk)
    with pytest.raises(OAuthError) as err:
        client.refresh("rt-x-1234")
    assert err.value.kind == "transient" and err.value.retryable and err.value.status == 500


def test_a_non_json_answer_is_invalid(client, fake):
    fake.fail_next("token", "not_json")
    with pytest.raises(OAuthError) as err:
        client.exchange_code("code-1", REDIRECT)
    assert err.value.kind == "invalid_response"


def test_network_errors_are_transient_and_never_show_the_url():
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot connect to {request.url}", request=request)

    conf = OAuthConfig("id", "secret-abcdef", "https://iflow.test", "https://platform.test")
    with OAuthClient(conf, transport=httpx.MockTransport(refuse)) as client:
        for call in (lambda: client.user_info("at-SECRET-TOKEN"),
                     lambda: client.refresh("rt-SECRET-TOKEN"),
                     lambda: client.cookie_api_key("bx-SECRET-COOKIE")):
            with pytest.raises(OAuthError) as err:
                call()
            assert err.value.kind == "transient" and err.value.retryable
            assert "SECRET" not in str(err.value)


def test_closed_port_is_transient(fake):
    conf = OAuthConfig("id", "secret", "http://127.0.0.1:9", "http://127.0.0.1:9", timeout=2)
    with OAuthClient(conf) as client, pytest.raises(OAuthError) as err:
        client.refresh("rt-1234567")
    assert err.value.kind == "transient"


def test_injected_transport_expiry_and_scrubbed_server_text():
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        form = parse_qs(request.content.decode())
        if form["refresh_token"][0] == "rt-DEAD-TOKEN":
            return httpx.Response(400, json={"error": "invalid_grant",
                                             "error_description": "rt-DEAD-TOKEN expired"})
        if form["refresh_token"][0] == "rt-NO-EXPIRY":
            return httpx.Response(200, json={"access_token": "at-2"})
        return httpx.Response(200, json={"success": True, "data": {
            "access_token": "at-1", "expires_in": "3600"}})

    conf = OAuthConfig("id", "secret-abcdef", "https://iflow.test/", "https://platform.test")
    with OAuthClient(conf, transport=httpx.MockTransport(answer), now=lambda: NOW) as client:
        tokens = client.refresh("rt-GOOD-TOKEN")
        assert tokens.access_token == "at-1"
        assert tokens.refresh_token == "rt-GOOD-TOKEN"  # none returned: the old one is kept
        assert tokens.expires_at == NOW + timedelta(hours=1)
        assert client.refresh("rt-NO-EXPIRY").expires_at == NOW + timedelta(hours=1)
        with pytest.raises(OAuthError) as err:
            client.refresh("rt-DEAD-TOKEN")
    assert err.value.kind == "invalid_grant"
    assert "rt-DEAD-TOKEN" not in str(err.value) and "[redacted]" in str(err.value)
    assert str(seen[0].url) == "https://iflow.test/oauth/token"


def test_user_info_failures(client, fake):
    tokens = login(fake, client)
    fake.fail_next("userinfo", "failure")
    with pytest.raises(OAuthError) as err:
        client.user_info(tokens.access_token)
    assert err.value.kind == "invalid_response"
    fake.fail_next("userinfo", "no_api_key")
    with pytest.raises(OAuthError) as err:
        client.user_info(tokens.access_token)
    assert err.value.kind == "invalid_response"
    with pytest.raises(OAuthError) as err:
        client.user_info("at-unknown-token")
    assert err.value.kind == "invalid_response"
    assert_clean(err.value, tokens.access_token, "at-unknown-token")


# --- cookie --------------------------------------------------------------------------------


def test_cookie_key_with_china_time_expiry_and_browser_headers(client, fake):
    bxauth, record = fake.add_cookie(name="work", expire_time="2026-05-01 08:00")
    key = client.cookie_api_key(bxauth)
    assert key == CookieKey(api_key=record.api_key, name="work", has_expired=False,
                            expires_at=datetime(2026, 5, 1, 0, 0, tzinfo=UTC))
    assert record.api_key not in repr(key)
    (request,) = fake.requests_of("apikey")
    assert request.method == "GET" and request.path == "/api/openapi/apikey"
    assert request.header("cookie") == f"BXAuth={bxauth};"
    assert "Mozilla/5.0" in request.header("user-agent")
    assert request.header("accept-language", "").startswith("zh-CN")
    assert fake.calls("apikey") == 1 and fake.calls("token") == 0  # the platform host


def test_cookie_key_mask_only(client, fake):
    bxauth, record = fake.add_cookie(masked=True)
    key = client.cookie_api_key(bxauth)
    assert key.api_key == "" and key.mask == record.mask and "*" in key.mask


def test_dead_cookie_is_unauthorized(client, fake):
    with pytest.raises(OAuthError) as err:
        client.cookie_api_key("bx-not-a-login")
    assert err.value.kind == "unauthorized" and not err.value.retryable
    assert_clean(err.value, "bx-not-a-login")
    bxauth, _ = fake.add_cookie()
    fake.fail_next("apikey", "server_error")
    with pytest.raises(OAuthError) as err:
        client.cookie_api_key(bxauth)
    assert err.value.kind == "transient"


def test_reissue_posts_the_name_with_the_platform_origin(client, fake):
    bxauth, record = fake.add_cookie(name="work", has_expired=True)
    old = record.api_key
    key = client.reissue_cookie_api_key(bxauth, "work")
    assert key.api_key == record.api_key != old and not key.has_expired
    assert key.expires_at > datetime.now(UTC) + timedelta(days=29)
    (request,) = fake.requests_of("apikey_reissue")
    assert request.method == "POST" and request.json == {"name": "work"}
    assert request.header("origin") == fake.platform_base_url
    assert request.header("cookie") == f"BXAuth={bxauth};"
    with pytest.raises(OAuthError) as err:
        client.reissue_cookie_api_key(bxauth, "other-name")
    assert err.value.kind == "invalid_response"
    fake.fail_next("apikey_reissue", "masked")
    with pytest.raises(OAuthError) as err:  # a re-issue must hand over the whole key
        client.reissue_cookie_api_key(bxauth, "work")
    assert err.value.kind == "invalid_response"


def test_overloaded_platform_answer():
    def busy(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"success": False, "code": "500",
                                         "message": "请求太多"})

    conf = OAuthConfig("id", "secret", "https://iflow.test", "https://platform.test")
    with OAuthClient(conf, transport=httpx.MockTransport(busy)) as client:
        with pytest.raises(OAuthError) as err:
            client.cookie_api_key("bx-1")
        assert err.value.kind == "overloaded" and err.value.retryable
        with pytest.raises(OAuthError) as err:
            client.user_info("at-1")
        assert err.value.kind == "invalid_response"  # getUserInfo success:false


# --- helpers -------------------------------------------------------------------------------


def test_parse_expire_time_is_china_time():
    assert parse_expire_time("2026-01-02 03:04") == datetime(2026, 1, 1, 19, 4, tzinfo=UTC)
    assert parse_expire_time("2026-01-02 03:04:05") == datetime(2026, 1, 1, 19, 4, 5,
                                                                tzinfo=UTC)
    assert parse_expire_time("2026-01-02T03:04:00Z") == datetime(2026, 1, 2, 3, 4, tzinfo=UTC)
    assert parse_expire_time(1767225600000) == datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_expire_time("") is None and parse_expire_time("soon") is None
    assert parse_expire_time(None) is None and parse_expire_time(True) is None


@pytest.mark.parametrize("text", ["abc123", " abc123 ", "BXAuth=abc123;", "BXAuth=abc123",
                                  "Cookie: a=1; BXAuth=abc123; b=2", "x=1;BXAuth=abc123"])
def test_normalize_bxauth(text):
    assert normalize_bxauth(text) == "abc123"


@pytest.mark.parametrize("text", ["", "  ", "a=1; b=2", "abc\r\nX-Evil: 1", "abc def"])
def test_normalize_bxauth_refuses(text):
    with pytest.raises(ValueError):
        normalize_bxauth(text)


def test_from_settings(settings):
    settings.IFLOW2API = {**settings.IFLOW2API, "IFLOW_OAUTH_BASE_URL": "http://o.test/",
                          "IFLOW_PLATFORM_BASE_URL": "http://p.test"}
    conf = OAuthConfig.from_settings()
    assert conf.oauth_base_url == "http://o.test" and conf.platform_base_url == "http://p.test"
    assert conf.client_id == "10009311001" and conf.timeout == 15.0
    assert conf.client_secret not in repr(conf)


def test_request_logs_never_show_the_access_token(client, fake, caplog):
    tokens = login(fake, client)
    with caplog.at_level("DEBUG"):
        client.user_info(tokens.access_token)
        client.refresh(tokens.refresh_token)
    assert "getUserInfo?accessToken=[redacted]" in caplog.text
    for secret in (tokens.access_token, quote(tokens.access_token, safe=""),
                   tokens.refresh_token, quote(tokens.refresh_token, safe="")):
        assert secret not in caplog.text
