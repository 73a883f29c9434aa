"""Where a stored secret is sent can only change together with the secret (issue 13, item 6).

A staff user with change rights but no knowledge of an account's key points the account at a
server of their own (the "collector", a fake upstream on loopback) and runs "Test account":
the collector must never receive the stored key — through the admin form, the ORM, a queryset
update, or an instance's upstream proxy."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.utils import timezone

from accounts.importers import import_iflow_settings
from accounts.models import SECRET_FIELDS, Account, ModelInfo
from instances.models import Instance
from tests.fakes.upstream import FakeUpstream

pytestmark = pytest.mark.django_db

STORED_KEY = "sk-stored-secret-never-to-leave-7c1d"
ENTERED_KEY = "sk-entered-by-the-editor-2b9e"
TOKENS = {"oauth_access_token": "at-stored-9f8e", "oauth_refresh_token": "rt-stored-7d6c",
          "cookie": "BXAuth-stored-5b4a"}
CHANGELIST = "/admin/accounts/account/"


@pytest.fixture(scope="module")
def collector() -> Iterator[FakeUpstream]:
    """The editor's own server: answers any key and records what it was sent."""
    with FakeUpstream("sk-collector", "openai", models=["omega-chat"],
                      check_auth=False) as fake:
        yield fake


@pytest.fixture
def collected(collector: FakeUpstream) -> Iterator[FakeUpstream]:
    collector.reset()
    yield collector
    collector.reset()


def staff_with(*codenames: str, superuser: bool = False) -> Client:
    user = get_user_model().objects.create_user(
        f"editor-{len(codenames)}-{superuser}", password="pw-0123456789", is_staff=True,
        is_superuser=superuser)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def editor() -> Client:
    """Staff, not a superuser, may view and change accounts and instances."""
    return staff_with("view_account", "change_account", "view_instance", "change_instance")


@pytest.fixture
def account() -> Account:
    made = Account.objects.create(provider="openai", label="Paid",
                                  base_url="http://127.0.0.1:9/v1", api_key=STORED_KEY)
    ModelInfo.objects.create(model_id="omega-chat", provider="openai").accounts.add(made)
    return made


def change_form_data(client: Client, account: Account) -> dict[str, object]:
    """What a browser posts back: every field as rendered, the secret inputs empty."""
    form = client.get(f"{CHANGELIST}{account.pk}/change/").context["adminform"].form
    data = {name: form[name].value() for name in form.fields if name not in SECRET_FIELDS}
    return {k: ("" if v is None else v) for k, v in data.items()}


def run_test_account(client: Client, account: Account) -> list[tuple[str, str]]:
    response = client.post(CHANGELIST, {"action": "test_account", "index": 0,
                                        "_selected_action": [account.pk]}, follow=True)
    assert response.status_code == 200
    return [(m.level_tag, str(m)) for m in response.context["messages"]]


def keys_received(fake: FakeUpstream) -> set[str | None]:
    return {request.bearer for request in fake.requests}


def assert_never_sent(fake: FakeUpstream, *secrets: str) -> None:
    for request in fake.requests:
        seen = " ".join(f"{k}: {v}" for k, v in request.headers) + repr(request.json)
        for secret in secrets:
            assert secret not in seen


# ------------------------------------------------------------------------------ admin form


def test_a_new_base_url_without_the_key_is_refused_and_nothing_leaves(editor, account,
                                                                      collected):
    data = change_form_data(editor, account)
    data["base_url"] = collected.base_url
    response = editor.post(f"{CHANGELIST}{account.pk}/change/", data)
    run_test_account(editor, account)
    assert_never_sent(collected, STORED_KEY)
    assert collected.requests == []

    assert response.status_code == 200  # the form again, with an error
    errors = response.context["adminform"].form.errors
    assert "enter the API key again" in str(errors["api_key"])
    account.refresh_from_db()
    assert (account.base_url, account.api_key) == ("http://127.0.0.1:9/v1", STORED_KEY)


def test_a_new_provider_without_the_key_is_refused(editor, account):
    data = change_form_data(editor, account)
    data["provider"] = "iflow"
    response = editor.post(f"{CHANGELIST}{account.pk}/change/", data)
    assert response.status_code == 200
    assert "api_key" in response.context["adminform"].form.errors
    account.refresh_from_db()
    assert account.provider == "openai" and account.api_key == STORED_KEY


def test_with_the_key_entered_again_the_move_works(editor, account, collected):
    data = change_form_data(editor, account)
    data.update(base_url=collected.base_url, api_key=ENTERED_KEY)
    response = editor.post(f"{CHANGELIST}{account.pk}/change/", data)
    assert response.status_code == 302, response.content.decode()[:2000]
    account.refresh_from_db()
    assert (account.base_url, account.api_key) == (collected.base_url, ENTERED_KEY)

    shown = run_test_account(editor, account)
    assert shown[0][0] == "success", shown
    assert keys_received(collected) == {ENTERED_KEY}
    assert_never_sent(collected, STORED_KEY)


def test_an_iflow_move_with_the_key_drops_the_tokens_not_entered(editor, collected):
    iflow = Account.objects.create(label="iFlow", base_url="http://127.0.0.1:9/v1",
                                   api_key=STORED_KEY, **TOKENS)
    data = change_form_data(editor, iflow)
    data.update(base_url=collected.base_url, api_key=ENTERED_KEY)
    assert editor.post(f"{CHANGELIST}{iflow.pk}/change/", data).status_code == 302
    iflow.refresh_from_db()
    assert iflow.api_key == ENTERED_KEY
    assert [getattr(iflow, name) for name in TOKENS] == ["", "", ""]


def test_other_changes_still_keep_the_secrets(editor, account):
    data = change_form_data(editor, account)
    data["label"] = "Renamed"
    assert editor.post(f"{CHANGELIST}{account.pk}/change/", data).status_code == 302
    account.refresh_from_db()
    assert (account.label, account.api_key) == ("Renamed", STORED_KEY)


# ------------------------------------------------------------------------------ the ORM


def test_an_orm_move_clears_the_secrets_and_marks_the_account(editor, collected):
    moved = Account.objects.create(label="ORM", base_url="http://127.0.0.1:9/v1",
                                   api_key=STORED_KEY, **TOKENS)
    moved.base_url = collected.base_url
    moved.save()
    moved = Account.objects.get(pk=moved.pk)
    assert [getattr(moved, n) for n in ("api_key", *TOKENS)] == ["", "", "", ""]
    assert moved.state == Account.State.NEEDS_LOGIN
    assert "enter the API key again" in moved.last_error

    run_test_account(editor, moved)
    assert_never_sent(collected, STORED_KEY, *TOKENS.values())


def test_an_orm_move_with_only_update_fields_clears_them_too(collected):
    moved = Account.objects.create(provider="openai", label="Partial",
                                   base_url="http://127.0.0.1:9/v1", api_key=STORED_KEY)
    same = Account.objects.get(pk=moved.pk)
    same.base_url = collected.base_url
    same.save(update_fields=["base_url"])
    assert Account.objects.get(pk=moved.pk).api_key == ""

    # Built by hand for an existing row, never loaded: the guard reads the row itself.
    moved = Account.objects.create(provider="openai", label="Blind",
                                   base_url="http://127.0.0.1:9/v1", api_key=STORED_KEY)
    Account(pk=moved.pk, provider="openai", label="Blind",
            base_url=collected.base_url).save(update_fields=["base_url"])
    assert Account.objects.get(pk=moved.pk).api_key == ""


def test_an_orm_move_with_the_key_assigned_again_keeps_it(editor, collected):
    moved = Account.objects.create(provider="openai", label="Again",
                                   base_url="http://127.0.0.1:9/v1", api_key=STORED_KEY)
    ModelInfo.objects.create(model_id="omega-chat", provider="openai").accounts.add(moved)
    moved = Account.objects.get(pk=moved.pk)
    moved.base_url = collected.base_url
    moved.api_key = STORED_KEY  # whoever moves it knows the key
    moved.save()
    moved = Account.objects.get(pk=moved.pk)
    assert (moved.api_key, moved.state) == (STORED_KEY, Account.State.ACTIVE)
    assert run_test_account(editor, moved)[0][0] == "success"
    assert keys_received(collected) == {STORED_KEY}


def test_a_queryset_update_of_the_destination_clears_the_secrets(collected):
    moved = Account.objects.create(label="Bulk", base_url="http://127.0.0.1:9/v1",
                                   api_key=STORED_KEY, **TOKENS)
    stays = Account.objects.create(label="Stays", base_url=collected.base_url,
                                   api_key=STORED_KEY)
    Account.objects.filter(pk__in=[moved.pk, stays.pk]).update(base_url=collected.base_url)
    moved.refresh_from_db()
    stays.refresh_from_db()
    assert [getattr(moved, n) for n in ("api_key", *TOKENS)] == ["", "", "", ""]
    assert moved.state == Account.State.NEEDS_LOGIN
    assert stays.api_key == STORED_KEY  # its destination did not change

    Account.objects.filter(pk=moved.pk).update(base_url="http://127.0.0.1:9/v1",
                                               api_key=ENTERED_KEY)
    assert Account.objects.get(pk=moved.pk).api_key == ENTERED_KEY


def test_fresh_secrets_leave_the_account_usable_again(editor, account):
    Account.objects.filter(pk=account.pk).update(provider="iflow")
    account.refresh_from_db()
    assert account.state == Account.State.NEEDS_LOGIN
    data = change_form_data(editor, account)
    data["api_key"] = ENTERED_KEY
    assert editor.post(f"{CHANGELIST}{account.pk}/change/", data).status_code == 302
    account.refresh_from_db()
    assert (account.api_key, account.state, account.last_error) == (
        ENTERED_KEY, Account.State.ACTIVE, "")


# ------------------------------------------------------------------------------ instances


def test_only_a_superuser_sets_an_instance_upstream_proxy(editor, collected):
    instance = Instance.objects.create(name="proxied", host="127.0.0.1", port=18555)
    page = f"/admin/instances/instance/{instance.pk}/change/"
    form = editor.get(page).context["adminform"].form
    assert "upstream_proxy" not in form.fields  # shown read-only
    data = {name: form[name].value() for name in form.fields}
    data = {k: ("" if v is None else v) for k, v in data.items()}
    data.update({"upstream_proxy": f"http://127.0.0.1:{collected.port}", "keys-TOTAL_FORMS": 0,
                 "keys-INITIAL_FORMS": 0})
    for name in ("claude_tiers", "model_aliases"):
        data[name] = "{}"
    data["accounts"] = []
    response = editor.post(page, data)
    assert response.status_code == 302, response.content.decode()[:3000]
    instance.refresh_from_db()
    assert instance.upstream_proxy == ""

    boss = staff_with(superuser=True)
    assert "upstream_proxy" in boss.get(page).context["adminform"].form.fields


# ------------------------------------------------------------------------------ imports


def test_a_settings_file_with_a_new_base_url_brings_its_own_key(tmp_path, collected):
    settings_file = tmp_path / "settings.json"
    settings_file.write_text(json.dumps({"apiKey": STORED_KEY,
                                         "baseUrl": "http://127.0.0.1:9/v1"}))
    account = import_iflow_settings(tmp_path)
    # Refreshed here since: the file's (older) secrets alone would not be written back…
    Account.objects.filter(pk=account.pk).update(last_refreshed_at=timezone.now())
    settings_file.write_text(json.dumps({"apiKey": ENTERED_KEY,
                                         "baseUrl": collected.base_url}))
    account = import_iflow_settings(tmp_path)
    account.refresh_from_db()
    # …but a new address takes the file's key, never the stored one.
    assert (account.base_url, account.api_key, account.state) == (
        collected.base_url, ENTERED_KEY, Account.State.ACTIVE)
