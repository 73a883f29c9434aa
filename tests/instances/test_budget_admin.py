"""Budgets and their spend where admins look (issue 18): the key's admin page (an inline with
the period's spend and its reset), the instance's page, and the live status page with its
warning state, from request log rows (Django test client, real database)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from instances import status
from instances.models import Budget, ClientKey, Instance
from proxy.models import RequestLog

pytestmark = pytest.mark.django_db


@pytest.fixture
def key_with_budget() -> ClientKey:
    instance = Instance.objects.create(name="team", port=28555)
    key, _ = ClientKey.create(instance, "laptop")
    Budget.objects.create(key=key, period="month", spend_limit=Decimal("0.01"),
                          currency="USD", token_limit=100_000, warn_percent=80)
    Budget.objects.create(instance=instance, period="day", spend_limit=Decimal("5"))
    label = f"laptop ({key.prefix}…)"
    for cost in ("0.004", "0.0045"):  # 0.0085 of 0.01: past the 80 % warning
        RequestLog.objects.create(started_at=timezone.now(), instance="team", key_label=label,
                                  api="openai", status=200, latency_ms=10, tokens_in=1000,
                                  tokens_out=10, cost=Decimal(cost), cost_currency="USD")
    return key


def test_the_keys_page_shows_its_budget_and_spend(admin_client: Client, key_with_budget):
    html = admin_client.get(f"/admin/instances/clientkey/{key_with_budget.pk}/change/"
                            ).content.decode()
    assert "Budgets of this key" in html
    assert "0.0085 of 0.01 USD; 2,020 of 100,000 tokens (85%, warning); resets" in html
    page = admin_client.get(f"/admin/instances/instance/{key_with_budget.instance.pk}/change/")
    assert "0.0085 of 5 USD" in page.content.decode()  # the whole instance, per day


def test_the_live_status_lists_budgets_nearest_their_limit_first(key_with_budget):
    budgets = status.snapshot()["budgets"]
    assert [(b["owner"], b["percent"], b["state"]) for b in budgets] == [
        (f"laptop ({key_with_budget.prefix}…)", 85, "warning"), ("team", 0, "ok")]


def test_a_budget_needs_one_owner_and_a_limit():
    from django.core.exceptions import ValidationError

    instance = Instance.objects.create(name="other", port=28556)
    with pytest.raises(ValidationError):
        Budget(instance=instance).clean()  # no limit
    key, _ = ClientKey.create(instance, "k")
    with pytest.raises(ValidationError):
        Budget(instance=instance, key=key, spend_limit=Decimal(1)).clean()  # two owners
