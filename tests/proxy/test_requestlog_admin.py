"""The request log's admin list: the columns that matter (one line a row; the browser test in
tests/e2e/test_admin_browser.py checks they fit 1366 px) and a correct plural."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.test import Client

from proxy.models import RequestLog

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fast_passwords(settings) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def test_the_request_log_columns_and_plural(admin_client: Client):
    for status in (200, 502):
        RequestLog.objects.create(started_at=datetime.now(UTC), api="openai", model="glm-5",
                                  status=status, latency_ms=12, tokens_in=3, tokens_out=4,
                                  error="" if status == 200 else "upstream exploded " * 5)
    html = admin_client.get("/admin/proxy/requestlog/").content.decode()
    for column in ("column-time", "column-instance", "column-key", "column-api",
                   "column-model", "column-status", "column-latency_ms", "column-tokens",
                   "column-short_error"):
        assert column in html, column
    assert "column-account" not in html and "column-ttft_ms" not in html
    assert "3 / 4" in html and ("upstream exploded " * 5)[:39] + "…" in html
    assert "2 request log entries" in html
    zh = admin_client.get("/admin/proxy/requestlog/", HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert "请求日志条目" in zh.content.decode()



def test_the_rows_page_has_the_details_the_list_leaves_out(admin_client: Client):
    from accounts.models import Account

    account = Account.objects.create(provider="openai", label="The DeepSeek key",
                                     base_url="http://127.0.0.1:9/v1")
    error = "upstream exploded: " + "a very long explanation " * 10 + "THE END"
    row = RequestLog.objects.create(
        started_at=datetime.now(UTC), api="anthropic", model="glm-5", status=502,
        requested_model="claude-sonnet-4-5", request_id="req-details-1", account=account,
        latency_ms=1234, ttft_ms=321, tokens_in=3, tokens_out=4, error=error)
    listing = admin_client.get("/admin/proxy/requestlog/").content.decode()
    assert "claude-sonnet-4-5" not in listing and "req-details-1" not in listing
    assert "THE END</" not in listing  # the error cut short (whole in the cell's title only)
    assert f"/admin/proxy/requestlog/{row.pk}/change/" in listing  # the row links to its page
    page = admin_client.get(f"/admin/proxy/requestlog/{row.pk}/change/").content.decode()
    for shown in ("THE END", "claude-sonnet-4-5", "req-details-1", "The DeepSeek key", "321"):
        assert shown in page, shown
