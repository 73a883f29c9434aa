"""Anthropic-compatible accounts in the admin: the expert form's preset fills a new account in,
a preset that moves an existing account asks for its key again like any move, and the
*Sync models* and *Test account* actions speak Anthropic's API (the fake vendor of
tests/fakes/anthropic_upstream.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from accounts.models import SECRET_FIELDS, Account, ModelInfo
from tests.accounts.test_admin_actions import act
from tests.fakes.anthropic_upstream import FakeAnthropic

pytestmark = pytest.mark.django_db

ADD = "/admin/accounts/account/add/?expert=1"
CHANGELIST = "/admin/accounts/account/"
STORED_KEY = "sk-stored-openai-key-never-moved-41"
VENDOR_KEY = "sk-vendor-anthropic-admin-77"
VENDOR_MODELS = ["vendor-a", "vendor-b", "vendor-c", "vendor-d", "vendor-e"]


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


@pytest.fixture
def vendor() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(VENDOR_KEY, auth="bearer", models=VENDOR_MODELS, page_size=2) as fake:
        yield fake


def test_sync_models_follows_the_anthropic_pages_and_test_account_sends_messages(
        admin_client, vendor):
    account = Account.objects.create(provider="anthropic", label="Vendor", base_url=vendor.url,
                                     api_key=VENDOR_KEY, auth_header="bearer")
    _, shown = act(admin_client, "sync_account_models", account)
    assert any(level == "success" and "5 models listed" in text for level, text in shown), shown
    assert set(ModelInfo.objects.filter(accounts=account).values_list(
        "model_id", "provider", "display_name")) == {(m, "anthropic", m.upper())
                                                      for m in VENDOR_MODELS}
    listed = [r for r in vendor.requests if r.path == "/v1/models"]
    assert [r.query for r in listed] == ["", "after_id=vendor-b", "after_id=vendor-d"]
    assert all(r.status == 200 and r.auth_error is None for r in listed)

    _, shown = act(admin_client, "test_account", account)
    assert shown[0][0] == "success" and "OK, vendor-a answered in" in shown[0][1], shown
    [sent] = vendor.messages_requests
    assert sent.json == {"model": "vendor-a", "max_tokens": 1,
                         "messages": [{"role": "user", "content": "ping"}]}
    assert sent.bearer == VENDOR_KEY and sent.header("x-api-key") is None
    assert sent.header("anthropic-version") == "2023-06-01"


def test_test_account_shows_the_vendors_refusal_never_the_key(admin_client, vendor):
    wrong = "sk-wrong-anthropic-admin-key-00"
    account = Account.objects.create(provider="anthropic", label="Wrong", base_url=vendor.url,
                                     api_key=wrong, auth_header="x-api-key")
    ModelInfo.objects.create(model_id="vendor-a", provider="anthropic").accounts.add(account)
    html, shown = act(admin_client, "test_account", account)
    assert shown[0][0] == "error" and "HTTP 401" in shown[0][1], shown
    assert wrong not in html
    [sent] = vendor.messages_requests
    assert sent.header("x-api-key") == wrong and sent.auth_error  # the vendor refused it
