"""The account admin: pages never show a secret; the actions work through the real admin views
(Django's test client, a staff user) against fake upstreams; no secret reaches a log."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import AsyncClient, Client
from django.utils import timezone

from accounts.importers import import_environment, import_iflow_settings
from accounts.models import Account, ModelInfo
from iflow2api_lib.scope import RUNTIME_SCOPE_KEY
from proxy.runtime import Runtime
from tests.conftest import FAKE_KEY
from tests.fakes import scenarios as sc
from tests.fakes.upstream import FakeUpstream

pytestmark = pytest.mark.django_db

OPENAI_KEY = "sk-admin-openai-5e8f21"
SECRETS = {
    "api_key": "sk-admin-plain-key-a1b2c3",
    "oauth_access_token": "at-admin-plain-access-d4e5",
    "oauth_refresh_token": "rt-admin-plain-refresh-f6a7",
    "cookie": "BXAuth-admin-plain-cookie-b8c9",
}
CHANGELIST = "/admin/accounts/account/"


@pytest.fixture(scope="module")
def openai_fake() -> Iterator[FakeUpstream]:
    with FakeUpstream(OPENAI_KEY, "openai", models=["omega-chat", "omega-mini"]) as fake:
        yield fake


@pytest.fixture
def openai_upstream(openai_fake: FakeUpstream) -> Iterator[FakeUpstream]:
    openai_fake.reset()
    yield openai_fake
    openai_fake.reset()


@pytest.fixture
def staff() -> Client:
    user = get_user_model().objects.create_user("staff", password="pw-0123456789",
                                                is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def runtime() -> Runtime:
    """The Runtime of the process the admin's requests come to (as under `iflow2api serve`),
    its routing snapshot read."""
    runtime = Runtime.build(redis_url="")
    runtime.routing.ttl_seconds = 3600.0  # stale only when marked so, never by the clock
    async_to_sync(runtime.routing.get)()
    return runtime


class ClientOf(AsyncClient):
    """Requests in an ASGI scope that carries `runtime`, as the gateway's ASGI application
    hands them to Django (proxy/runtime.with_runtime)."""

    def __init__(self, runtime: Runtime) -> None:
        super().__init__()
        self.runtime = runtime

    def _base_scope(self, **request: object) -> dict[str, object]:
        return {**super()._base_scope(**request), RUNTIME_SCOPE_KEY: self.runtime}


@pytest.fixture
def staff_in(runtime: Runtime, staff: Client) -> AsyncClient:
    """The staff user, in the process whose Runtime is `runtime`."""
    client = ClientOf(runtime)
    client.cookies = staff.cookies
    return client


def act(client: Client | AsyncClient, action: str,
        *accounts: Account) -> tuple[str, list[tuple[str, str]]]:
    """Run an admin action on the change list; (page HTML, [(level, message)])."""
    post = async_to_sync(client.post) if isinstance(client, AsyncClient) else client.post
    response = post(CHANGELIST, {"action": action, "index": 0,
                                 "_selected_action": [a.pk for a in accounts]}, follow=True)
    assert response.status_code == 200
    shown = [(m.level_tag, str(m)) for m in response.context["messages"]]
    return response.content.decode(), shown


def raw_values(pk: int) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {', '.join(SECRETS)} FROM accounts_account WHERE id = %s", [pk])
        return list(cursor.fetchone())


# ------------------------------------------------------------------------------ pages


def test_admin_pages_never_show_a_secret(staff):
    account = Account.objects.create(label="Secretive", base_url="http://127.0.0.1:9/v1",
                                     **SECRETS)
    info = ModelInfo.objects.get(model_id="glm-5")
    info.accounts.add(account)
    hidden = [*SECRETS.values(), *raw_values(account.pk)]
    hidden += [value.removeprefix("fernet:") for value in raw_values(account.pk)]
    pages = [CHANGELIST, f"{CHANGELIST}?q=Secretive", f"{CHANGELIST}{account.pk}/change/",
             f"{CHANGELIST}{account.pk}/delete/", f"{CHANGELIST}{account.pk}/history/",
             f"/admin/accounts/modelinfo/{info.pk}/change/"]
    for page in pages:
        response = staff.get(page)
        assert response.status_code == 200, page
        html = response.content.decode()
        assert "Secretive" in html
        for value in hidden:
            assert value not in html, (page, value[:12])
    change = staff.get(f"{CHANGELIST}{account.pk}/change/").content.decode()
    assert change.count("Set (hidden). Leave empty to keep it.") == 4


def test_saving_the_form_with_empty_secret_fields_keeps_them(staff):
    account = Account.objects.create(label="Keep", base_url="http://127.0.0.1:9/v1", **SECRETS)
    form = staff.get(f"{CHANGELIST}{account.pk}/change/").context["adminform"].form
    # What a browser posts back: every field as rendered, the secret inputs empty.
    data = {name: form[name].value() for name in form.fields if name not in SECRETS}
    data = {k: v for k, v in data.items() if v is not None}
    data["label"] = "Kept"
    response = staff.post(f"{CHANGELIST}{account.pk}/change/", data)
    assert response.status_code == 302, response.content.decode()[:2000]
    account.refresh_from_db()
    assert account.label == "Kept"
    assert {k: getattr(account, k) for k in SECRETS} == SECRETS


# ------------------------------------------------------------------------------ actions


def test_enable_disable_and_reset_cooldown(staff_in, runtime):
    account = Account.objects.create(
        label="Cool", base_url="http://127.0.0.1:9/v1", api_key="sk-x",
        state=Account.State.COOLING, cooldown_until=timezone.now() + timedelta(minutes=5),
        last_error="429 busy")
    other = Account.objects.create(label="Other", base_url="http://127.0.0.1:9/v1")

    def routing_read_again() -> bool:
        """The process's routing snapshot was marked stale (then read, for the next action)."""
        stale = not runtime.routing.fresh()
        async_to_sync(runtime.routing.get)()
        return stale

    _, shown = act(staff_in, "disable_accounts", account, other)
    assert shown == [("success", "Disabled 2 accounts.")]
    assert not Account.objects.filter(enabled=True).exists()
    assert routing_read_again() and runtime.routing.value.accounts == []
    _, shown = act(staff_in, "enable_accounts", account)
    assert shown == [("success", "Enabled 1 account.")]
    assert Account.objects.get(pk=account.pk).enabled
    assert not Account.objects.get(pk=other.pk).enabled
    assert routing_read_again()

    _, shown = act(staff_in, "reset_cooldown", account)
    assert shown == [("success", "Reset the cooldown of 1 account.")]
    account.refresh_from_db()
    assert (account.state, account.cooldown_until, account.last_error) == ("active", None, "")
    assert routing_read_again()


def test_test_account_ok_for_openai_and_iflow(staff, openai_upstream, upstream):
    generic = Account.objects.create(provider="openai", label="Generic",
                                     base_url=openai_upstream.base_url, api_key=OPENAI_KEY)
    ModelInfo.objects.create(model_id="omega-chat", provider="openai").accounts.add(generic)
    iflow = Account.objects.create(label="iFlow", base_url=upstream.base_url, api_key=FAKE_KEY)

    _, shown = act(staff, "test_account", generic, iflow)
    levels = dict((text.split(":")[0], level) for level, text in shown)
    assert levels == {f"account {generic.pk} “Generic”": "success",
                      f"account {iflow.pk} “iFlow”": "success"}, shown
    assert any("OK, omega-chat answered in" in text and " ms" in text for _, text in shown)
    assert any("OK, glm-5 answered in" in text for _, text in shown)  # the default model

    [sent] = openai_upstream.chat_requests
    assert sent.json == {"model": "omega-chat", "stream": False, "max_tokens": 1,
                         "messages": [{"role": "user", "content": "ping"}]}
    [signed] = upstream.chat_requests
    assert signed.auth_error is None and signed.json["max_new_tokens"] == 1


def test_test_account_without_a_catalogue_model_asks_the_upstream_list(staff, openai_upstream):
    generic = Account.objects.create(provider="openai", label="Bare",
                                     base_url=openai_upstream.base_url, api_key=OPENAI_KEY)
    ModelInfo.objects.filter(provider="openai").delete()
    _, shown = act(staff, "test_account", generic)
    assert shown[0][0] == "success" and "OK, omega-chat answered" in shown[0][1]


def test_test_account_failure_shows_the_mapped_error_never_the_key(
        staff, openai_upstream, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = "sk-wrong-admin-key-must-not-show"
    bad = Account.objects.create(provider="openai", label="Bad",
                                 base_url=openai_upstream.base_url, api_key=wrong)
    ModelInfo.objects.create(model_id="omega-chat", provider="openai").accounts.add(bad)
    html, shown = act(staff, "test_account", bad)
    assert shown == [("error", f"account {bad.pk} “Bad” (omega-chat): HTTP 401 invalid_api_key: "
                               "Incorrect API key provided")]
    assert wrong not in html and wrong not in caplog.text

    openai_upstream.script(sc.http_error(429, "slow down, key sk-wrong-admin-key-must-not-show"))
    good = Account.objects.create(provider="openai", label="Busy",
                                  base_url=openai_upstream.base_url, api_key=OPENAI_KEY)
    ModelInfo.objects.get(model_id="omega-chat").accounts.add(good)
    html, shown = act(staff, "test_account", good)
    assert shown[0][0] == "error" and "HTTP 429 rate_limit_exceeded" in shown[0][1]
    assert OPENAI_KEY not in html

    unreachable = Account.objects.create(provider="openai", label="Gone",
                                         base_url="http://127.0.0.1:9/v1", api_key=OPENAI_KEY)
    ModelInfo.objects.get(model_id="omega-chat").accounts.add(unreachable)
    _, shown = act(staff, "test_account", unreachable)
    assert shown[0][0] == "error" and "upstream_unreachable" in shown[0][1]


def test_sync_models_action(staff_in, runtime, openai_upstream):
    generic = Account.objects.create(provider="openai", label="Generic",
                                     base_url=openai_upstream.base_url, api_key=OPENAI_KEY)
    iflow = Account.objects.create(label="iFlow", base_url="http://127.0.0.1:9/v1",
                                   api_key="sk-i")
    _, shown = act(staff_in, "sync_account_models", generic, iflow)
    assert ("warning", f"Skipped account {iflow.pk} “iFlow”: iFlow accounts have no dependable "
                       "model list; edit the catalogue instead.") in shown
    assert ("success", f"account {generic.pk} “Generic”: 2 models listed; created: omega-chat, "
                       "omega-mini") in shown
    assert any(level == "info" and "Synced 1 of 1" in text for level, text in shown)
    assert set(ModelInfo.objects.filter(accounts=generic).values_list("model_id", flat=True)) \
        == {"omega-chat", "omega-mini"}
    assert not runtime.routing.fresh()  # the new models are served at once


# ------------------------------------------------------------------------------ logs


def test_logs_never_contain_a_secret(staff, openai_upstream, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    (tmp_path / "settings.json").write_text(json.dumps({
        "apiKey": SECRETS["api_key"], "selectedAuthType": "oauth-iflow",
        "baseUrl": "http://127.0.0.1:9/v1"}))
    (tmp_path / "oauth_creds.json").write_text(json.dumps({
        "access_token": SECRETS["oauth_access_token"],
        "refresh_token": SECRETS["oauth_refresh_token"]}))
    imported = import_iflow_settings(tmp_path)
    import_environment({"UPSTREAM_BASE_URL": openai_upstream.base_url,
                        "UPSTREAM_API_KEY": OPENAI_KEY, "UPSTREAM_MODELS": "omega-chat"})
    generic = Account.objects.get(provider="openai")
    stale = Account.objects.create(provider="openai", label="Stale",
                                   base_url=openai_upstream.base_url, api_key=SECRETS["cookie"])
    act(staff, "sync_account_models", generic, stale)
    act(staff, "test_account", generic, stale, imported)
    staff.get(f"{CHANGELIST}{imported.pk}/change/")
    assert "model sync of account" in caplog.text  # the failure was logged…
    for value in [*SECRETS.values(), OPENAI_KEY, *filter(None, raw_values(imported.pk))]:
        assert value not in caplog.text  # …without the key
