"""The guided "add an upstream" admin page (accounts/guided_views.py) with Django's test client
against a fake OpenAI-compatible provider on loopback: a good key, a wrong key, an address
where nothing listens and one that is not an API; the expert form behind it."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from django.test import Client

from accounts.guided import PRESETS
from accounts.models import Account, ModelInfo
from tests.fakes.upstream import FakeUpstream
from tests.servers import free_port

pytestmark = pytest.mark.django_db

KEY = "sk-guided-good-4d1c9e"
WRONG = "sk-guided-wrong-0000"
ADD = "/accounts/add/"


@pytest.fixture(autouse=True)
def fast_passwords(settings) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeUpstream]:
    with FakeUpstream(KEY, "openai", models=["fake-chat", "fake-coder", "fake-vision"]) as fake:
        yield fake


def test_accounts_add_leads_to_the_guided_page(admin_client: Client):
    answer = admin_client.get("/admin/accounts/account/add/")
    assert answer.status_code == 302 and answer["Location"] == ADD
    page = admin_client.get(ADD).content.decode()
    for preset in PRESETS:
        assert f'href="?preset={preset.slug}"' in page
        assert preset.base_url in page
    assert "/accounts/oauth/start/" in page and "/accounts/cookie/" in page  # iFlow logins
    assert "/admin/accounts/account/add/?expert=1" in page


def test_the_expert_form_groups_and_collapses_the_internal_fields(admin_client: Client):
    page = admin_client.get("/admin/accounts/account/add/?expert=1").content.decode()
    assert re.search(r'<option value="openai" selected>', page), "provider default"
    collapsed = page[page.index("Kept by the server") - 400:]
    for field in ("refreshing_until", "cooldown_until", "session_id", "conversation_id",
                  "last_error", "refresh_failures"):
        assert re.search(f'name="{field}(_0)?"', collapsed), field  # dates: two inputs
    assert page.index('name="label"') < page.index("Kept by the server")
    assert page.count("<details") >= 2  # Django 5.2 draws collapsed fieldsets as <details>


def test_test_and_save_then_choose_the_models(admin_client: Client, provider: FakeUpstream):
    provider.reset()
    answer = admin_client.post(ADD, {"preset": "openai-compatible", "label": "Fake",
                                     "base_url": provider.base_url, "api_key": KEY})
    assert answer.status_code == 302, answer.content.decode()[-2000:]
    account = Account.objects.get(label="Fake")
    assert not account.enabled and account.api_key == KEY and account.provider == "openai"
    assert answer["Location"] == f"/accounts/add/{account.pk}/models/"
    assert provider.requests[-1].bearer == KEY

    page = admin_client.get(answer["Location"]).content.decode()
    for model in ("fake-chat", "fake-coder", "fake-vision"):
        assert f'value="{model}"' in page
    assert KEY not in page
    done = admin_client.post(answer["Location"], {"models": ["fake-chat", "fake-coder"]})
    assert done.status_code == 302 and done["Location"] == "/admin/accounts/account/"
    account.refresh_from_db()
    assert account.enabled
    for model in ("fake-chat", "fake-coder"):
        assert list(ModelInfo.objects.get(model_id=model).accounts.all()) == [account]
    assert not ModelInfo.objects.filter(model_id="fake-vision").exists()
    listing = admin_client.get(done["Location"]).content.decode()
    assert "tested and saved" in listing and "/admin/connect/" in listing


def test_nothing_ticked_is_refused(admin_client: Client, provider: FakeUpstream):
    admin_client.post(ADD, {"preset": "vllm", "label": "Local", "base_url": provider.base_url,
                            "api_key": KEY})
    account = Account.objects.get(label="Local")
    page = admin_client.post(f"/accounts/add/{account.pk}/models/", {})
    assert page.status_code == 200 and "Tick at least one model" in page.content.decode()
    account.refresh_from_db()
    assert not account.enabled


@pytest.mark.parametrize(("how", "expected"), [
    ("wrong key", "The provider refused the key"),
    ("nothing listening", "Nothing answers at"),
    ("not an API", "does not look like an OpenAI-compatible API"),
])
def test_a_failed_test_is_shown_in_the_form(admin_client: Client, provider: FakeUpstream,
                                            how: str, expected: str):
    url, key = provider.base_url, KEY
    if how == "wrong key":
        key = WRONG
    elif how == "nothing listening":
        url = f"http://127.0.0.1:{free_port()}/v1"
    else:
        url = provider.url + "/not-the-api"
    page = admin_client.post(ADD, {"preset": "openai-compatible", "label": "Broken",
                                   "base_url": url, "api_key": key})
    assert page.status_code == 200
    html = page.content.decode()
    assert 'class="errornote"' in html and expected in html, html[-3000:]
    assert key not in html  # the key is never rendered back
    assert not Account.objects.filter(label="Broken").exists()


def test_errors_in_the_users_language(admin_client: Client):
    page = admin_client.post(ADD, {"preset": "openai-compatible", "label": "Broken",
                                   "base_url": f"http://127.0.0.1:{free_port()}/v1"},
                             HTTP_ACCEPT_LANGUAGE="zh-hans")
    html = page.content.decode()
    assert "没有任何服务" in html, html[-3000:]
    assert "测试并保存" in html


def test_a_preset_fixes_its_vendors_address(admin_client: Client, provider: FakeUpstream):
    """A cloud preset's URL is the vendor's: a base_url posted with it is ignored."""
    page = admin_client.post(ADD, {"preset": "deepseek", "label": "DS",
                                   "base_url": provider.base_url, "api_key": ""})
    html = page.content.decode()
    assert page.status_code == 200 and "https://api.deepseek.com/v1" in html
    assert "This field is required" in html  # the key, required for a cloud provider
    assert not Account.objects.filter(label="DS").exists()


def test_strangers_and_unknown_presets(client: Client, admin_client: Client):
    assert client.get(ADD).status_code == 302  # to the login page
    assert admin_client.get(ADD + "?preset=nope").status_code == 404


def test_an_anthropic_compatible_upstream(admin_client: Client):
    from tests.fakes.anthropic_upstream import FakeAnthropic

    with FakeAnthropic("sk-ant-guided-1", auth="bearer", models=["local-claude"]) as fake:
        answer = admin_client.post(ADD, {"preset": "anthropic-llama.cpp", "label": "Local A",
                                         "base_url": fake.url, "api_key": "sk-ant-guided-1"})
        assert answer.status_code == 302, answer.content.decode()[-2000:]
        account = Account.objects.get(label="Local A")
        assert account.provider == "anthropic" and account.auth_header == "bearer"
        page = admin_client.get(answer["Location"]).content.decode()
        assert 'value="local-claude"' in page
        wrong = admin_client.post(ADD, {"preset": "anthropic-llama.cpp", "label": "Bad A",
                                        "base_url": fake.url, "api_key": "sk-ant-wrong"})
        assert "The provider refused the key" in wrong.content.decode()


def test_the_catalogue_marks_what_is_served(admin_client: Client, provider: FakeUpstream):
    account = Account.objects.create(provider="openai", label="Served", api_key=KEY,
                                     base_url=provider.base_url)
    ModelInfo.objects.create(model_id="only-here", provider="openai").accounts.add(account)
    ModelInfo.objects.create(model_id="nobody-serves", provider="openai").accounts.add(
        Account.objects.create(provider="openai", label="Off", base_url=provider.base_url,
                               enabled=False))
    html = admin_client.get("/admin/accounts/modelinfo/?served=yes").content.decode()
    assert "only-here" in html and "nobody-serves" not in html
    html = admin_client.get("/admin/accounts/modelinfo/?served=no").content.decode()
    assert "nobody-serves" in html and "only-here" not in html
    html = admin_client.get("/admin/accounts/modelinfo/").content.decode()
    assert "column-served" in html  # the catalogue stays complete, marked
    assert "only-here" in html and "nobody-serves" in html


def test_a_preset_with_a_key_check_path(provider: FakeUpstream):
    """OpenRouter's model list is public: its preset also asks a path that needs the key."""
    from asgiref.sync import async_to_sync

    from accounts.guided import Preset, test_connection

    account = Account(provider="openai", label="x", base_url=provider.base_url, api_key=WRONG)
    listed_publicly = Preset("p", "P", "cloud", "openai", check_path="")
    checked = Preset("p", "P", "cloud", "openai", check_path="models")  # needs the key here
    provider.check_auth = False  # a public model list
    try:
        assert async_to_sync(test_connection)(account, listed_publicly).ok
        provider.check_auth = True
        result = async_to_sync(test_connection)(account, checked)
        assert not result.ok and "The provider refused the key" in result.error
        account.api_key = KEY
        assert async_to_sync(test_connection)(account, checked).ok
    finally:
        provider.check_auth = True
