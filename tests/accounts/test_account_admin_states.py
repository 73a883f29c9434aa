"""The account list shows how long a cooldown has left; enabling a blocked account puts it back
into rotation (the fix the gateway's no_upstream answer names)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from accounts.models import Account

pytestmark = pytest.mark.django_db
CHANGELIST = "/admin/accounts/account/"


@pytest.fixture
def staff() -> Client:
    user = get_user_model().objects.create_user("staff", password="pw-0123456789",
                                                is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(user)
    return client


def account(**fields: object) -> Account:
    return Account.objects.create(label="acc", provider="openai", api_key="sk-states-admin-1",
                                  base_url="http://127.0.0.1:9/v1", **fields)


def test_a_cooling_account_shows_the_time_left(staff):
    account(state=Account.State.COOLING, cooldown_until=timezone.now() + timedelta(seconds=42))
    page = staff.get(CHANGELIST).content.decode()
    assert "Cooling down, 42 s left" in page or "Cooling down, 41 s left" in page


def test_enabling_a_blocked_account_puts_it_back_into_rotation(staff):
    blocked = account(state=Account.State.BLOCKED, last_error="401 refused", enabled=False)
    staff.post(CHANGELIST, {"action": "enable_accounts", "_selected_action": [blocked.pk]})
    blocked.refresh_from_db()
    assert blocked.enabled and blocked.state == Account.State.ACTIVE
