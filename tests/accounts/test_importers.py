"""Accounts imported from ~/.iflow and the environment: idempotent, secrets encrypted."""

from __future__ import annotations

import json

import pytest
from django.db import connection

from accounts.importers import import_environment, import_iflow_settings
from accounts.models import Account, ModelInfo
from accounts.services import load_routing

pytestmark = pytest.mark.django_db


def write_settings(directory, **fields):
    directory.mkdir(exist_ok=True)
    (directory / "settings.json").write_text(json.dumps(fields))


def test_iflow_settings_import_is_idempotent(tmp_path):
    write_settings(tmp_path, apiKey="sk-first", baseUrl="https://example.test/v1",
                   selectedAuthType="oauth-iflow")
    first = import_iflow_settings(tmp_path)
    write_settings(tmp_path, apiKey="sk-second", baseUrl="https://example.test/v1")
    second = import_iflow_settings(tmp_path)
    assert first.pk == second.pk
    assert Account.objects.count() == 1
    account = Account.objects.get()
    assert account.api_key == "sk-second"
    assert account.provider == "iflow" and account.base_url == "https://example.test/v1"
    assert account.session_id.startswith("session-")


def test_iflow_settings_falls_back_to_search_api_key_and_reads_oauth_creds(tmp_path):
    write_settings(tmp_path, searchApiKey="sk-search")
    (tmp_path / "oauth_creds.json").write_text(json.dumps({
        "access_token": "at-1", "refresh_token": "rt-1", "expiry_date": 1893456000000}))
    account = import_iflow_settings(tmp_path)
    assert account.api_key == "sk-search"
    assert account.oauth_refresh_token == "rt-1"
    assert account.access_token_expires_at.year == 2030
    assert account.base_url == "https://apis.iflow.cn/v1"


def test_nothing_is_imported_without_a_key(tmp_path):
    write_settings(tmp_path, baseUrl="https://example.test/v1")
    assert import_iflow_settings(tmp_path) is None
    assert import_iflow_settings(tmp_path / "missing") is None
    (tmp_path / "settings.json").write_text("{broken")
    assert import_iflow_settings(tmp_path) is None
    assert Account.objects.count() == 0


def test_environment_accounts_and_models(tmp_path):
    env = {"IFLOW_API_KEY": "sk-env", "IFLOW_BASE_URL": "http://127.0.0.1:9/v1",
           "UPSTREAM_BASE_URL": "http://127.0.0.1:8/v1", "UPSTREAM_API_KEY": "sk-up",
           "UPSTREAM_MODELS": "deepseek-chat, glm-5"}
    import_environment(env)
    import_environment(env)
    assert Account.objects.count() == 2
    generic = Account.objects.get(provider="openai")
    assert generic.api_key == "sk-up" and generic.max_concurrency == 0
    assert ModelInfo.objects.get(model_id="deepseek-chat").provider == "openai"
    routing = load_routing()
    deepseek = routing.find_model("deepseek-chat")
    assert [a.id for a in routing.accounts_for(deepseek)] == [generic.pk]
    # glm-5 is an iFlow model that the generic account now also serves
    assert [a.provider for a in routing.accounts_for(routing.find_model("glm-5"))] == ["openai"]


def test_secrets_are_encrypted_in_the_database(tmp_path):
    write_settings(tmp_path, apiKey="sk-very-secret-value")
    account = import_iflow_settings(tmp_path)
    with connection.cursor() as cursor:
        cursor.execute("SELECT api_key FROM accounts_account WHERE id = %s", [account.pk])
        stored = cursor.fetchone()[0]
    assert "sk-very-secret-value" not in stored
    assert stored.startswith("fernet:")
    assert Account.objects.get(pk=account.pk).api_key == "sk-very-secret-value"


def test_models_are_seeded_with_the_iflow_list():
    ids = set(ModelInfo.objects.values_list("model_id", flat=True))
    assert {"glm-5", "kimi-k2.5", "minimax-m2.5", "qwen-vl-max"} <= ids
    glm5 = ModelInfo.objects.get(model_id="glm-5")
    assert (glm5.context_length, glm5.max_output_tokens) == (200000, 128000)
    assert ModelInfo.objects.get(model_id="qwen-vl-max").vision


def test_reimport_does_not_overwrite_tokens_we_refreshed(tmp_path):
    from django.utils import timezone

    write_settings(tmp_path, apiKey="sk-file")
    (tmp_path / "oauth_creds.json").write_text(json.dumps({
        "access_token": "at-old", "refresh_token": "rt-spent", "expiry_date": 1893456000000}))
    account = import_iflow_settings(tmp_path)
    # our refresh replaced the single-use refresh token and the key
    account.oauth_refresh_token = "rt-new"
    account.api_key = "sk-new"
    account.access_token_expires_at = timezone.now().replace(year=2031)
    account.last_refreshed_at = timezone.now()
    account.save()
    import_iflow_settings(tmp_path)
    account.refresh_from_db()
    assert (account.oauth_refresh_token, account.api_key) == ("rt-new", "sk-new")
    # a file with a newer token (iflow-cli logged in again) still wins
    (tmp_path / "oauth_creds.json").write_text(json.dumps({
        "access_token": "at-cli", "refresh_token": "rt-cli", "expiry_date": 1988150400000}))
    import_iflow_settings(tmp_path)
    account.refresh_from_db()
    assert account.oauth_refresh_token == "rt-cli"
