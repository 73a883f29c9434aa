"""The admin's login pages, through the real views and the fake iFlow over HTTP."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html import unescape
from urllib.parse import urlsplit

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client

from accounts.models import Account, OAuthLogin
from tests.fakes.oauth import FakeOAuth

pytestmark = pytest.mark.django_db

START = "/accounts/oauth/start/"
CALLBACK = "/accounts/oauth/callback/"
PASTE = "/accounts/oauth/paste/"
COOKIE = "/accounts/cookie/"


@pytest.fixture
def fake(settings) -> Iterator[FakeOAuth]:
    with FakeOAuth() as server:
        settings.IFLOW2API = {**settings.IFLOW2API,
                              "IFLOW_OAUTH_BASE_URL": server.oauth_base_url,
                              "IFLOW_PLATFORM_BASE_URL": server.platform_base_url,
                              "PUBLIC_BASE_URL": ""}
        yield server


@pytest.fixture(autouse=True)
def fast_passwords(settings) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def secrets_of(fake: FakeOAuth) -> list[str]:
    values = [*fake.access_tokens, *fake.refresh_tokens, fake.user.api_key, *fake.codes,
              *fake.cookies, *(c.api_key for c in fake.cookies.values())]
    return [v for v in values if v]


def assert_no_secrets(fake: FakeOAuth, *pages: str) -> None:
    for page in pages:
        for secret in secrets_of(fake):
            assert secret not in page and secret not in unescape(page)


def browser_approve(authorize_url: str) -> str:
    """What a browser does on the fake's authorize page: follow the Approve link."""
    page = httpx.get(authorize_url)
    assert page.status_code == 200
    link = unescape(re.search(r'href="([^"]+)"', page.text).group(1))
    answer = httpx.get(httpx.URL(authorize_url).join(link), follow_redirects=False)
    assert answer.status_code == 302
    return answer.headers["location"]


def test_full_admin_oauth_flow(admin_client: Client, fake: FakeOAuth):
    start = admin_client.get(START)
    assert start.status_code == 302
    authorize = start["Location"]
    assert authorize.startswith(fake.oauth_base_url + "/oauth?")
    assert "redirect=http%3A%2F%2Ftestserver%2Faccounts%2Foauth%2Fcallback%2F" in authorize

    callback = browser_approve(authorize)
    parts = urlsplit(callback)
    assert parts.netloc == "testserver" and parts.path == CALLBACK
    done = admin_client.get(f"{parts.path}?{parts.query}")
    account = Account.objects.get()
    assert done.status_code == 302
    assert done["Location"] == f"/admin/accounts/account/{account.pk}/change/"
    assert account.api_key == fake.user.api_key and account.email == "user@example.com"
    assert account.oauth_refresh_token in fake.refresh_tokens

    page = admin_client.get(done["Location"])
    html = page.content.decode()
    assert "Logged in to iFlow as user@example.com" in html
    assert "sk-…cdef" in html and "Log in again with iFlow" in html

    # The callback again: refused cleanly, nothing new, no second token exchange.
    replay = admin_client.get(f"{parts.path}?{parts.query}", follow=True)
    assert replay.status_code == 200
    assert "already completed" in replay.content.decode()
    assert Account.objects.count() == 1 and fake.calls("token") == 1
    assert_no_secrets(fake, html, replay.content.decode())


def test_change_list_links(admin_client: Client, fake):
    html = admin_client.get("/admin/accounts/account/").content.decode()
    assert "Log in with iFlow" in html and "Add with BXAuth cookie" in html
    assert START in html and COOKIE in html and PASTE in html


def test_relogin_of_an_account(admin_client: Client, fake):
    account = Account.objects.create(label="mine", base_url="https://apis.iflow.cn/v1",
                                     provider="iflow", api_key="sk-old-000000000")
    start = admin_client.get(f"{START}?account={account.pk}")
    assert OAuthLogin.objects.get().account == account
    parts = urlsplit(browser_approve(start["Location"]))
    admin_client.get(f"{parts.path}?{parts.query}")
    account.refresh_from_db()
    assert account.api_key == fake.user.api_key and Account.objects.count() == 1
    assert admin_client.get(f"{START}?account=999").status_code == 404
    assert admin_client.get(f"{START}?account=x").status_code == 404


def test_callback_errors_never_500(admin_client: Client, fake):
    for query in ("", "?code=abc&state=unknown", "?error=access_denied&state=x"):
        answer = admin_client.get(CALLBACK + query, follow=True)
        assert answer.status_code == 200
        assert answer.redirect_chain[-1][0] == "/admin/accounts/account/"
    assert Account.objects.count() == 0
    start = admin_client.get(START)
    parts = urlsplit(fake.approve(start["Location"]))
    fake.fail_next("token", "overloaded")
    answer = admin_client.get(f"{parts.path}?{parts.query}", follow=True)
    assert "overloaded" in answer.content.decode() and Account.objects.count() == 0


def test_a_callback_from_another_session_is_refused(admin_client: Client, admin_user, fake):
    start = admin_client.get(START)
    parts = urlsplit(fake.approve(start["Location"]))
    other = Client()
    other.force_login(get_user_model().objects.create_superuser("other", "o@x.test", "pw-1234"))
    answer = other.get(f"{parts.path}?{parts.query}", follow=True)
    assert "not started from this browser session" in answer.content.decode()
    assert Account.objects.count() == 0 and OAuthLogin.objects.get().used_at is None
    admin_client.get(f"{parts.path}?{parts.query}")  # the session that started it
    assert Account.objects.count() == 1


def test_paste_fallback(admin_client: Client, fake):
    page = admin_client.get(PASTE)
    assert page.status_code == 200
    html = page.content.decode()
    assert "http://testserver/accounts/oauth/callback/" in html and START in html
    assert 'name="csrfmiddlewaretoken"' in html

    start = admin_client.get(START)
    landed = fake.approve(start["Location"])  # the page that did not load
    done = admin_client.post(PASTE, {"url": landed})
    account = Account.objects.get()
    assert done.status_code == 302 and done["Location"].endswith(f"/{account.pk}/change/")

    again = admin_client.post(PASTE, {"url": landed})  # used up: the form again, empty
    html = again.content.decode()
    assert again.status_code == 200 and "already completed" in html
    assert parse_code(landed) not in html
    bad = admin_client.post(PASTE, {"url": "hello"})
    assert "no code and state" in bad.content.decode()
    assert_no_secrets(fake, html, bad.content.decode())


def parse_code(url: str) -> str:
    return re.search(r"code=([^&]+)", url).group(1)


def test_cookie_form(admin_client: Client, fake):
    page = admin_client.get(COOKIE)
    assert page.status_code == 200 and 'type="password"' in page.content.decode()
    bxauth, record = fake.add_cookie(name="work", masked=True)
    done = admin_client.post(COOKIE, {"bxauth": f"BXAuth={bxauth};"})
    account = Account.objects.get()
    assert done.status_code == 302
    assert account.cookie == bxauth and account.api_key == record.api_key
    shown = admin_client.get(done["Location"]).content.decode()
    assert "platform name “work”" in shown

    dead = admin_client.post(COOKIE, {"bxauth": "bx-dead-cookie-9876"})
    html = dead.content.decode()
    assert dead.status_code == 200 and "was refused" in html
    assert "bx-dead-cookie-9876" not in html
    assert_no_secrets(fake, shown, html)


def test_csrf_is_enforced(admin_user, fake):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    bxauth, _ = fake.add_cookie()
    assert client.post(COOKIE, {"bxauth": bxauth}).status_code == 403
    assert client.post(PASTE, {"url": "code=1&state=2"}).status_code == 403
    assert Account.objects.count() == 0


@pytest.mark.parametrize("path", [START, CALLBACK + "?code=1&state=2", PASTE, COOKIE])
def test_non_staff_go_to_the_admin_login(client: Client, django_user_model, fake, path):
    answer = client.get(path)
    assert answer.status_code == 302 and answer["Location"].startswith("/admin/login/")
    client.force_login(django_user_model.objects.create_user("plain", password="pw-12345"))
    answer = client.get(path)
    assert answer.status_code == 302 and answer["Location"].startswith("/admin/login/")
    assert OAuthLogin.objects.count() == 0


def test_staff_without_account_rights_are_forbidden(client: Client, django_user_model, fake):
    user = django_user_model.objects.create_user("staff", password="pw-12345", is_staff=True)
    client.force_login(user)
    assert client.get(START).status_code == 403
    assert client.get(COOKIE).status_code == 403
    user.user_permissions.add(*Permission.objects.filter(
        codename__in=["add_account", "change_account"]))
    client.force_login(get_user_model().objects.get(pk=user.pk))
    assert client.get(COOKIE).status_code == 200
