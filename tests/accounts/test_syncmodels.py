"""`iflow2api syncmodels` and accounts.sync.sync_models against fake OpenAI-compatible upstreams."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
from asgiref.sync import async_to_sync
from django.core.management import call_command
from django.core.management.base import CommandError

from accounts import sync
from accounts.models import Account, ModelInfo
from tests.fakes.upstream import FakeUpstream

pytestmark = pytest.mark.django_db

KEY_ONE = "sk-sync-one-0f3a9c"
KEY_TWO = "sk-sync-two-7b21d4"


@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[FakeUpstream, FakeUpstream]]:
    with FakeUpstream(KEY_ONE, "openai", models=[]) as one, \
            FakeUpstream(KEY_TWO, "openai", models=[]) as two:
        yield one, two


@pytest.fixture
def one(fakes) -> FakeUpstream:
    fakes[0].reset()
    fakes[0].models = ["alpha-chat", "beta-coder"]
    return fakes[0]


@pytest.fixture
def two(fakes) -> FakeUpstream:
    fakes[1].reset()
    fakes[1].models = ["gamma-large"]
    return fakes[1]


def openai_account(fake: FakeUpstream, label: str, key: str, **fields) -> Account:
    return Account.objects.create(provider="openai", label=label, base_url=fake.base_url,
                                  api_key=key, **fields)


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("syncmodels", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def linked(model_id: str) -> set[int]:
    return set(ModelInfo.objects.get(model_id=model_id).accounts.values_list("pk", flat=True))


def test_sync_creates_links_and_reports(one, two):
    first = openai_account(one, "One", KEY_ONE)
    second = openai_account(two, "Two", KEY_TWO)

    out, err = run()
    assert err == ""
    assert "Synced 2 of 2 OpenAI-compatible accounts: 3 models created" in out
    assert f"account {first.pk} “One”: 2 models listed; created: alpha-chat, beta-coder" in out
    alpha = ModelInfo.objects.get(model_id="alpha-chat")
    assert (alpha.provider, alpha.display_name, alpha.owned_by, alpha.enabled) == \
        ("openai", "alpha-chat", "fake", True)
    assert linked("alpha-chat") == {first.pk} and linked("gamma-large") == {second.pk}
    [request] = [r for r in one.requests if r.path.endswith("/models")]
    assert request.method == "GET" and request.bearer == KEY_ONE

    out, _ = run()  # idempotent
    assert "0 models created, 0 linked, 0 updated" in out
    assert ModelInfo.objects.filter(provider="openai").count() == 3


def test_models_gone_upstream_are_reported_and_left_alone(one):
    account = openai_account(one, "One", KEY_ONE)
    run()
    one.models = ["alpha-chat", "delta-new"]
    out, _ = run()
    assert "created: delta-new" in out
    assert "no longer listed upstream (left as they are): beta-coder" in out
    beta = ModelInfo.objects.get(model_id="beta-coder")
    assert beta.enabled and linked("beta-coder") == {account.pk}


def test_account_option_disabled_and_iflow_accounts(one, two):
    first = openai_account(one, "One", KEY_ONE)
    second = openai_account(two, "Two", KEY_TWO, enabled=False)
    iflow = Account.objects.create(label="iFlow", base_url=one.base_url, api_key=KEY_ONE)

    out, _ = run()  # the disabled account is not synced by default
    assert "Synced 1 of 1" in out and not ModelInfo.objects.filter(model_id="gamma-large")

    out, _ = run("--account", str(second.pk))  # asked for explicitly: synced
    assert "Synced 1 of 1" in out and linked("gamma-large") == {second.pk}
    assert f"account {first.pk}" not in out

    with pytest.raises(CommandError, match="nothing to sync"):
        run("--account", str(iflow.pk), "--account", "999999")


def test_no_account_to_sync():
    out, _ = run()
    assert "No enabled OpenAI-compatible account to sync." in out


def test_a_failing_account_is_reported_without_its_key(one, two, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = "sk-wrong-key-that-must-stay-hidden"
    good = openai_account(one, "One", KEY_ONE)
    bad = openai_account(two, "Two", wrong)
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError, match=r"1 account\(s\) could not be synced"):
        call_command("syncmodels", stdout=out, stderr=err)
    assert f"account {bad.pk} “Two”: failed: HTTP 401 invalid_api_key" in err.getvalue()
    assert "Synced 1 of 2" in out.getvalue() and linked("alpha-chat") == {good.pk}
    for text in (out.getvalue(), err.getvalue(), caplog.text):
        assert wrong not in text and KEY_ONE not in text


def test_existing_models_follow_the_linking_rules(one, two):
    """A linked model gains the account; an unlinked model of another provider is left to
    that provider's accounts when it has some, taken when it has none."""
    first = openai_account(one, "One", KEY_ONE)
    second = openai_account(two, "Two", KEY_TWO)
    one.models = ["gamma-large", "glm-5"]
    two.models = ["gamma-large", "kimi-k2"]
    run("--account", str(second.pk))
    iflow = Account.objects.create(label="iFlow", base_url=one.base_url, api_key="sk-i")

    out, _ = run("--account", str(first.pk))
    assert linked("gamma-large") == {first.pk, second.pk}
    assert "left alone: glm-5 (served by the iFlow accounts" in out
    assert linked("glm-5") == set()

    iflow.delete()  # no iFlow account: the seeded glm-5 serves nobody, the sync takes it
    out, _ = run("--account", str(first.pk))
    assert "linked: glm-5" in out and linked("glm-5") == {first.pk}
    assert ModelInfo.objects.get(model_id="glm-5").provider == "iflow"  # unchanged


def test_sync_models_service_directly(one):
    account = openai_account(one, "One", KEY_ONE)
    ModelInfo.objects.create(model_id="alpha-chat", provider="openai")  # unlinked, no owner
    report = async_to_sync(sync.sync_models)([account.pk])
    [item] = report.accounts
    assert item.ok and item.listed == ["alpha-chat", "beta-coder"]
    assert item.created == ["beta-coder"] and item.updated == ["alpha-chat"]
    # Linked to beta-coder, the account serves its list only: alpha-chat, which no other
    # account served, is linked to it too.
    assert item.linked == ["alpha-chat"]
    assert ModelInfo.objects.get(model_id="alpha-chat").owned_by == "fake"
    assert linked("alpha-chat") == {account.pk}


def test_an_unlinked_model_stays_with_the_accounts_without_a_list(one, two):
    """An account with a model list serves that list only. An unlinked model of its provider
    that an account without a list serves is left to it (linking would take it away), said in
    the report; an account without a list of its own serves it as it is."""
    from accounts.services import served_model_ids

    catch_all = openai_account(two, "Any", KEY_TWO)  # no model linked: every unlinked one
    ModelInfo.objects.create(model_id="alpha-chat", provider="openai")
    listing = openai_account(one, "One", KEY_ONE)
    out, _ = run("--account", str(listing.pk))
    assert "created: beta-coder" in out
    assert "left alone: alpha-chat (served by the OpenAI-compatible accounts without a model " \
           "list" in out, out
    assert linked("alpha-chat") == set() and linked("beta-coder") == {listing.pk}
    assert served_model_ids() >= {"alpha-chat", "beta-coder"}

    catch_all.delete()  # nobody else serves it now: the account with the list takes it
    out, _ = run("--account", str(listing.pk))
    assert "linked: alpha-chat" in out and linked("alpha-chat") == {listing.pk}


@pytest.mark.parametrize(("entry", "expected"), [
    ({"id": "m", "context_length": 131072}, 131072),  # OpenRouter and others
    ({"id": "m", "max_model_len": 32768}, 32768),  # vLLM
    # llama.cpp: the context the server runs with, not the one the model was trained for
    ({"id": "m", "meta": {"n_ctx": 2048, "n_ctx_train": 32768}}, 2048),
    ({"id": "m", "meta": {"n_ctx": 0}}, None),
    ({"id": "m", "meta": "n_ctx=2048"}, None),
    ({"id": "m", "context_length": True}, None),
], ids=["context_length", "max_model_len", "llama.cpp", "zero", "not-an-object", "bool"])
def test_the_context_a_listing_states(entry, expected):
    assert sync._context_length(entry) == expected


@pytest.mark.parametrize(("entry", "expected"), [
    ({"id": "m", "max_output_tokens": 8192}, 8192),
    ({"id": "m", "max_completion_tokens": 4096}, 4096),
    ({"id": "m", "top_provider": {"context_length": 131072, "max_completion_tokens": 16384}},
     16384),  # OpenRouter
    ({"id": "m", "top_provider": {"max_completion_tokens": None}}, None),
    ({"id": "m", "meta": {"n_ctx": 2048}}, None),  # llama.cpp states none
], ids=["max_output_tokens", "max_completion_tokens", "openrouter", "null", "llama.cpp"])
def test_the_output_limit_a_listing_states(entry, expected):
    assert sync._output_limit(entry) == expected
