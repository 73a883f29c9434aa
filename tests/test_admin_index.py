"""The admin index in the order a user needs it, and django-axes' section in Chinese
(iflow2api_site/admin_site.py)."""

from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fast_passwords(settings) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def test_the_index_puts_what_a_user_needs_first(admin_client: Client):
    html = admin_client.get("/admin/").content.decode()
    order = [html.index(marker) for marker in (
        "/accounts/add/", "/admin/connect/", "/admin/accounts/account/",
        "/admin/instances/instance/", "/admin/instances/clientkey/",
        "/admin/proxy/requestlog/", "/admin/auth/", "/admin/axes/",
        "/admin/django_celery_beat/")]
    assert order == sorted(order), order
    zh = admin_client.get("/admin/", HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    order = [zh.index(marker) for marker in ("/admin/auth/", "/admin/axes/",
                                             "/admin/django_celery_beat/")]
    assert order == sorted(order), "the same order in every language"
    sidebar = admin_client.get("/admin/proxy/requestlog/").content.decode()
    assert sidebar.index("/admin/accounts/") < sidebar.index("/admin/auth/")


def test_axes_in_chinese(admin_client: Client):
    from axes.models import AccessAttempt

    AccessAttempt.objects.create(user_agent="curl", ip_address="127.0.0.1", username="x",
                                 http_accept="*/*", path_info="/admin/login/", get_data="",
                                 post_data="", failures_since_start=1)
    html = admin_client.get("/admin/", HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    assert "登录锁定（Axes）" in html and "访问尝试" in html
    page = admin_client.get("/admin/axes/accessattempt/",
                            HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    assert "IP 地址" in page and "尝试时间" in page
