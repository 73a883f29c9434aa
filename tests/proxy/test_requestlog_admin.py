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

