"""Anthropic-compatible accounts in the admin's expert form: the preset fills a new account in,
and a preset that moves an existing account asks for its key again like any move."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from accounts.models import SECRET_FIELDS, Account

pytestmark = pytest.mark.django_db

ADD = "/admin/accounts/account/add/?expert=1"
CHANGELIST = "/admin/accounts/account/"
STORED_KEY = "sk-stored-openai-key-never-moved-41"


@pytest.fixture
def admin_client() -> Client:
    user = get_user_model().objects.create_superuser("root", password="pw-0123456789")
    client = Client()
    client.force_login(user)
    return client


def form_data(client: Client, url: str) -> dict[str, object]:
    form = client.get(url).context["adminform"].form
    data = {name: form[name].value() for name in form.fields if name not in SECRET_FIELDS}
    return {k: ("" if v is None else v) for k, v in data.items()}


def test_a_preset_fills_in_a_new_anthropic_account(admin_client):
    data = form_data(admin_client, ADD)
    data.update(label="Kimi", base_url="", preset="moonshot", api_key="sk-kimi-0001")
    response = admin_client.post(ADD, data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    account = Account.objects.get(label="Kimi")
    assert (account.provider, account.base_url, account.auth_header, account.beta_policy) == (
        "anthropic", "https://api.moonshot.ai/anthropic", "bearer", "drop")
    assert account.api_key == "sk-kimi-0001"


def test_without_a_preset_the_base_url_is_still_required(admin_client):
    data = form_data(admin_client, ADD)
    data.update(label="Nothing", base_url="", provider="anthropic")
    response = admin_client.post(ADD, data)
    assert response.status_code == 200
    assert "base_url" in response.context["adminform"].form.errors


def test_a_preset_that_moves_an_account_needs_its_key_again(admin_client):
    account = Account.objects.create(provider="openai", label="Paid", api_key=STORED_KEY,
                                     base_url="https://api.deepseek.com/v1")
    url = f"{CHANGELIST}{account.pk}/change/"
    data = form_data(admin_client, url)
    data.update(preset="deepseek", base_url="")
    response = admin_client.post(url, data)
    assert response.status_code == 200
    assert "api_key" in response.context["adminform"].form.errors
    account.refresh_from_db()
    assert (account.provider, account.api_key) == ("openai", STORED_KEY)

    data.update(api_key="sk-deepseek-anthropic-2")
    assert admin_client.post(url, data).status_code == 302
    account.refresh_from_db()
    assert (account.provider, account.base_url, account.auth_header) == (
        "anthropic", "https://api.deepseek.com/anthropic", "x-api-key")
    assert account.api_key == "sk-deepseek-anthropic-2"
