"""The usage page and the request log admin (Django test client, rows created directly)."""

from __future__ import annotations

import re
import warnings
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.utils import timezone

from accounts.models import Account
from proxy.models import RequestLog

pytestmark = pytest.mark.django_db
USAGE = "/admin/usage/"
CHANGELIST = "/admin/proxy/requestlog/"


@pytest.fixture
def rows() -> list[RequestLog]:
    now = timezone.now()
    main = Account.objects.create(label="main-iflow", base_url="https://apis.iflow.cn/v1")
    other = Account.objects.create(label="backup-deepseek", provider="openai",
                                   base_url="https://api.deepseek.com/v1")

    def row(days_ago: int, model: str, account: Account | None, status: int = 200,
            key: str = "", **extra) -> RequestLog:
        fields = {"api": "openai", "latency_ms": 120, "tokens_in": 100, "tokens_out": 10,
                  **extra}
        return RequestLog(started_at=now - timedelta(days=days_ago, minutes=1), model=model,
                          requested_model=model, account=account, status=status, key_label=key,
                          **fields)

    made = [
        row(0, "glm-5", main, key="laptop"),
        row(0, "glm-5", main, stream=True, ttft_ms=80),
        row(1, "glm-5", main, status=429, error="rate limited", tokens_in=None, tokens_out=None),
        row(2, "deepseek-chat", other, key="ci", api="responses"),
        row(20, "kimi-k2", other),  # only in the 30-day range
        row(45, "ancient-model", other),  # in no range
    ]
    return RequestLog.objects.bulk_create(made)


def test_the_usage_page_renders_charts_for_7_days(admin_client: Client, rows):
    page = admin_client.get(USAGE)
    assert page.status_code == 200
    html = page.content.decode()
    assert '<div id="site-name">' in html  # the admin's frame (admin/base_site.html)
    for name in ("glm-5", "deepseek-chat", "main-iflow", "backup-deepseek", "laptop", "ci",
                 "Per API", "OpenAI Responses"):
        assert name in html
    assert "kimi-k2" not in html and "ancient-model" not in html
    assert html.count('class="usage-bar"') >= 7 + 2  # one column per day, bars per group
    assert 'class="usage-error"' in html  # the 429
    assert re.search(r"<strong>4</strong><span>requests since", html)
    assert "<script" not in html.split('id="content-main"')[1]  # server-rendered SVG only
    link = re.search(r'href="([^"]*)">Rows in the request log', html)[1].replace("&amp;", "&")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. a naive datetime in the filter
        assert "deepseek-chat" in results(admin_client, link.split("?", 1)[1])


def test_the_30_day_range_and_the_token_metric(admin_client: Client, rows):
    html = admin_client.get(USAGE + "?days=30&metric=tokens").content.decode()
    assert "kimi-k2" in html and "ancient-model" not in html
    assert "Tokens (in + out)" in html
    assert '<td class="num">220</td>' in html  # glm-5: 2 × 110 tokens, the 429 had none
    assert re.search(r"<strong>5</strong><span>requests since", html)


def test_no_data_and_bad_parameters(admin_client: Client):
    html = admin_client.get(USAGE + "?days=9999&metric=evil").content.decode()
    assert "No requests in this range." in html
    assert "last 7 days" in html


def test_usage_needs_a_staff_login_with_view_access(client: Client):
    assert client.get(USAGE)["Location"].startswith("/admin/login/")
    staff = get_user_model().objects.create_user("staff", "s@x.test", "pw-1234", is_staff=True)
    client.force_login(staff)
    assert client.get(USAGE).status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="view_requestlog"))
    assert client.get(USAGE).status_code == 200
    assert client.get(CHANGELIST).status_code == 200


def test_the_admin_index_links_to_the_usage_page(admin_client: Client):
    html = admin_client.get("/admin/").content.decode()
    assert f'href="{USAGE}"' in html and f'href="{CHANGELIST}"' in html
    assert "app-accounts" in html  # the usual app list is still there


def results(client: Client, query: str) -> str:
    html = client.get(f"{CHANGELIST}?{query}").content.decode()
    return html.split('id="result_list"')[1].split("</table>")[0]


def test_the_request_log_admin_lists_filters_and_searches(admin_client: Client, rows):
    page = admin_client.get(CHANGELIST)
    assert page.status_code == 200
    html = page.content.decode()
    assert "deepseek-chat" in html and "rate limited" in html
    assert f'href="{USAGE}"' in html
    for query in ("status_class=errors", "status_class=ok", "status__exact=429",
                  "api__exact=openai", "stream__exact=1", "model=glm-5",
                  f"account__id__exact={rows[0].account_id}",
                  "started_at__gte=2000-01-01T00:00:00%2B00:00", "q=deepseek", "q=backup"):
        assert admin_client.get(f"{CHANGELIST}?{query}").status_code == 200, query
    errors = results(admin_client, "status_class=errors")
    assert "rate limited" in errors and "deepseek-chat" not in errors
    found = results(admin_client, "q=backup")
    assert "deepseek-chat" in found and "rate limited" not in found


def test_the_request_log_is_read_only(admin_client: Client, rows):
    assert admin_client.get(CHANGELIST + "add/").status_code == 403
    detail = admin_client.get(f"{CHANGELIST}{rows[0].pk}/change/")
    assert detail.status_code == 200
    assert 'name="_save"' not in detail.content.decode()
    assert admin_client.post(f"{CHANGELIST}{rows[0].pk}/delete/").status_code == 403
    assert RequestLog.objects.count() == len(rows)
