"""Every admin page, listed from the URLconf (tests/e2e/admin_pages.py), answers a superuser
in English and Chinese: the list the browser's console-error check opens
(tests/e2e/test_admin_browser.py), checked here without a browser."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.test import Client
from django.utils import translation

from tests.e2e.admin_pages import EXCUSED, admin_pages, make_rows, rows_of, url_patterns

pytestmark = pytest.mark.django_db

# Pages issue 17 names: the derived list must hold them (with a row of each model).
NAMED = ("/admin/", "/accounts/add/", "/accounts/add/?preset=deepseek",
         "/admin/accounts/account/add/?expert=1", "/admin/connect/", "/admin/usage/",
         "/admin/status/", "/admin/proxy/requestlog/", "/admin/instances/clientkey/add/",
         "/admin/axes/accessattempt/", "/admin/django_celery_beat/crontabschedule/",
         "/accounts/cookie/", "/accounts/oauth/paste/", "/accounts/oauth/callback/",
         "/admin/password_change/", "/admin/auth/")


@pytest.fixture(autouse=True)
def fast_passwords(settings) -> Iterator[None]:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    yield
    translation.deactivate()  # the middleware leaves the last page's language active


def test_the_list_holds_every_admin_page(admin_client: Client, admin_user):
    make_rows()
    rows = rows_of(admin_user.username)
    pages = admin_pages(rows)
    assert set(NAMED) <= set(pages), set(NAMED) - set(pages)
    key, account = rows["instances.clientkey"]["pk"], rows["accounts.account"]["pk"]
    for page in (f"/admin/instances/clientkey/{key}/created/",
                 f"/admin/instances/clientkey/{key}/change/",
                 f"/admin/instances/clientkey/{key}/history/",
                 f"/admin/instances/clientkey/{key}/delete/",
                 f"/accounts/add/{account}/models/",
                 f"/admin/auth/user/{admin_user.pk}/password/"):
        assert page in pages, page
    names = {name for _route, name in url_patterns()}
    assert set(EXCUSED) <= names, "an excused page that no longer exists"


@pytest.mark.parametrize("language", ["en", "zh-hans"])
def test_every_admin_page_answers(admin_client: Client, admin_user, language):
    make_rows()
    failed = []
    for page in admin_pages(rows_of(admin_user.username)):
        answer = admin_client.get(page, follow=True, HTTP_ACCEPT_LANGUAGE=language)
        if answer.status_code != 200:
            failed.append(f"{page}: HTTP {answer.status_code}")
        elif 'lang="' + language + '"' not in answer.content.decode()[:600]:
            failed.append(f"{page}: not in {language}")
    assert failed == []
