"""The usage page's spend and cache hit rate (issue 18): spend per day, model, account, client
key and instance in one currency at a time, "cost unknown" counted apart, never as zero."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import Account, ModelInfo
from proxy.models import RequestLog

pytestmark = pytest.mark.django_db
USAGE = "/admin/usage/"


@pytest.fixture
def rows() -> None:
    now = timezone.now()
    deepseek = Account.objects.create(label="deepseek-main", provider="openai",
                                      base_url="https://api.deepseek.com/v1")
    kimi = Account.objects.create(label="kimi-cn", provider="openai",
                                  base_url="https://api.moonshot.cn/v1")

    def row(days_ago: int, model: str, account: Account, cost: str | None, currency: str = "",
            key: str = "laptop", instance: str = "default", cached: int = 0) -> RequestLog:
        return RequestLog(started_at=now - timedelta(days=days_ago, minutes=1), api="openai",
                          model=model, account=account, status=200, latency_ms=100,
                          key_label=key, instance=instance, tokens_in=1000, tokens_out=100,
                          tokens_cached=cached, cost=Decimal(cost) if cost else None,
                          cost_currency=currency)

    RequestLog.objects.bulk_create([
        row(0, "deepseek-chat", deepseek, "0.0012", "USD", cached=800),
        row(0, "deepseek-chat", deepseek, "0.0008", "USD", key="ci", cached=900),
        row(1, "deepseek-chat", deepseek, "0.0020", "USD", instance="team"),
        row(1, "kimi-k2", kimi, "0.0150", "CNY"),
        row(2, "unpriced-model", kimi, None, key="ci"),
    ])


def test_spend_per_group_in_the_main_currency(admin_client: Client, rows):
    html = admin_client.get(USAGE + "?metric=spend").content.decode()
    assert "<strong>0.004000 USD</strong>" in html  # USD: the most used currency
    assert '<td class="num">0.004000</td>' in html  # deepseek-chat, deepseek-main
    assert '<td class="num">0.002000</td>' in html  # key laptop: 0.0012 + 0.0020 (no ci)
    assert "kimi-k2" in html  # listed, with no USD spend
    # 1700 of 5000 tokens in came from the cache
    assert "<strong>34.0 %</strong>" in html
    assert '<td class="num">56.7 %</td>' in html  # deepseek-chat: 1700 of 3000
    assert "<strong>1</strong><span>answered requests with cost unknown" in html


def test_another_currency_is_never_added_to_the_first(admin_client: Client, rows):
    html = admin_client.get(USAGE + "?metric=spend&currency=CNY").content.decode()
    assert "<strong>0.015000 CNY</strong>" in html
    assert 'currency=USD"' in html  # the switcher offers the other
    assert admin_client.get(USAGE + "?metric=spend&currency=EVIL").status_code == 200


def test_the_models_admin_shows_prices_or_cost_unknown(admin_client: Client):
    ModelInfo.objects.create(model_id="priced", provider="openai", price_input=Decimal("0.27"),
                             price_cached_input=Decimal("0.07"), price_output=Decimal("1.10"))
    ModelInfo.objects.create(model_id="free-of-facts", provider="openai")
    html = admin_client.get("/admin/accounts/modelinfo/").content.decode()
    assert "0.27 / 0.07 / 1.1 USD" in html
    assert "cost unknown" in html
