"""GET /v1/models lists only what can be served (issue 17): the models some usable account
serves, their aliases, and the claude-* tiers and instance aliases that lead to one. The
admin's catalogue keeps every model (accounts.services.served_model_ids marks them)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.fakes.upstream import FakeUpstream
from tests.servers import GatewayServer

KEY = "sk-models-list-4444"
SEEDED_IFLOW = {"glm-4.6", "kimi-k2", "qwen-vl-max", "minimax-m2.5"}
TIERS = {"claude-sonnet-4-6", "claude-opus-4-8"}


@pytest.fixture
def openai_fake() -> Iterator[FakeUpstream]:
    with FakeUpstream(KEY, flavor="openai", models=["glm-5"]) as fake:
        yield fake


def listed(server: GatewayServer) -> set[str]:
    answer = httpx.get(server.url + "/v1/models", timeout=10)
    assert answer.status_code == 200, answer.text
    return {model["id"] for model in answer.json()["data"]}


def served_in_admin(server: GatewayServer) -> set[str]:
    out = server.shell("import json\nfrom accounts.services import served_model_ids\n"
                       "print(json.dumps(sorted(served_model_ids())))")
    return set(json.loads(out.strip().splitlines()[-1]))


def test_only_models_a_usable_account_serves_are_listed(openai_fake):
    env = {"UPSTREAM_BASE_URL": openai_fake.base_url, "UPSTREAM_API_KEY": KEY,
           "UPSTREAM_MODELS": "glm-5"}
    with GatewayServer(env) as server:
        ids = listed(server)
        assert "glm-5" in ids and ids >= TIERS  # the tiers lead to glm-5 (DEFAULT_MODEL)
        assert not ids & SEEDED_IFLOW, "iFlow's seeded models have no iFlow account here"
        assert served_in_admin(server) == {"glm-5"}

        # A catalogue model nothing serves: not listed, and the answer says how to fix it.
        refused = httpx.post(server.url + "/v1/chat/completions", timeout=30, json={
            "model": "kimi-k2", "messages": [{"role": "user", "content": "hi"}]})
        assert refused.status_code == 403 and refused.headers["x-should-retry"] == "false"
        assert "iflow2api addaccount" in refused.json()["error"]["message"]
        answer = httpx.post(server.url + "/v1/chat/completions", timeout=30, json={
            "model": "glm-5", "messages": [{"role": "user", "content": "hi"}]})
        assert answer.status_code == 200, answer.text

        # Its only account blocked: nothing (and no tier) is listed any more.
        server.shell("from accounts.models import Account\n"
                     "Account.objects.update(state='blocked')")
        time.sleep(2.3)  # the routing snapshot lives 2 s
        assert listed(server) == set()
        assert served_in_admin(server) == set()

        # An iFlow account serves iFlow's catalogue (models linked to no account).
        server.shell("from accounts.models import Account\n"
                     f"Account.objects.create(label='iflow', provider='iflow', "
                     f"base_url={openai_fake.base_url!r}, api_key='sk-x')")
        time.sleep(2.3)
        ids = listed(server)
        assert ids >= SEEDED_IFLOW and "glm-5" not in ids  # glm-5 is linked to the blocked one
        assert not ids & TIERS  # the tiers lead to glm-5, which nothing serves


def test_a_tier_pointing_at_an_unserved_model_is_not_listed(openai_fake):
    env = {"UPSTREAM_BASE_URL": openai_fake.base_url, "UPSTREAM_API_KEY": KEY,
           "UPSTREAM_MODELS": "glm-5", "CLAUDE_HAIKU_MODEL": "kimi-k2"}
    with GatewayServer(env) as server:
        ids = listed(server)
        assert "claude-sonnet-4-6" in ids
        assert not {i for i in ids if "haiku" in i}, ids


def test_an_account_with_its_own_model_list_serves_only_that_list():
    """An unlinked catalogue model of the provider is not served (nor listed) by an account
    linked to other models; an account of the provider without a list of its own serves it."""
    with FakeUpstream(KEY, flavor="openai", models=["glm-5", "gpt-unlinked"]) as fake:
        env = {"UPSTREAM_BASE_URL": fake.base_url, "UPSTREAM_API_KEY": KEY,
               "UPSTREAM_MODELS": "glm-5"}
        with GatewayServer(env) as server:
            server.shell("from accounts.models import ModelInfo\n"
                         "ModelInfo.objects.create(model_id='gpt-unlinked', provider='openai')")
            time.sleep(2.3)  # the routing snapshot lives 2 s
            assert "gpt-unlinked" not in listed(server)
            assert served_in_admin(server) == {"glm-5"}
            refused = httpx.post(server.url + "/v1/chat/completions", timeout=30, json={
                "model": "gpt-unlinked", "messages": [{"role": "user", "content": "hi"}]})
            assert refused.status_code == 403, refused.text
            assert refused.headers["x-should-retry"] == "false"
            assert "iflow2api addaccount" in refused.json()["error"]["message"]
            assert not fake.chat_requests  # never sent to the account with its own list

            # An OpenAI-compatible account without a list of its own serves it.
            server.shell("from accounts.models import Account\n"
                         f"Account.objects.create(label='any', provider='openai', "
                         f"base_url={fake.base_url!r}, api_key={KEY!r})")
            time.sleep(2.3)
            assert {"glm-5", "gpt-unlinked"} <= listed(server)
            assert served_in_admin(server) == {"glm-5", "gpt-unlinked"}
            answer = httpx.post(server.url + "/v1/chat/completions", timeout=30, json={
                "model": "gpt-unlinked", "messages": [{"role": "user", "content": "hi"}]})
            assert answer.status_code == 200, answer.text
            assert [r.model for r in fake.chat_requests] == ["gpt-unlinked"]
