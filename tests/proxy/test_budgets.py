"""Budgets on two real server processes sharing PostgreSQL and Redis (issue 18): a key's daily
budget is hit exactly at its limit whichever process serves the requests, then every client
shape gets a 402 budget_exceeded that the SDKs do not retry, saying when it resets; the
request after the limit never reaches the upstream."""

from __future__ import annotations

import time
from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest

from tests.conftest import FAKE_KEY
from tests.fakes import scenarios as sc
from tests.fakes.upstream import FakeUpstream
from tests.servers import GatewayServer
from tests.services import REDIS_URL, fresh_postgres_database, require_redis

USAGE = {"prompt_tokens": 1000, "completion_tokens": 0, "total_tokens": 1000}  # 0.001 USD
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture
def two_processes(upstream: FakeUpstream) -> Iterator[tuple[GatewayServer, GatewayServer, str]]:
    require_redis()
    with fresh_postgres_database() as database_url:
        env = {"DATABASE_URL": database_url, "REDIS_URL": REDIS_URL,
               "IFLOW_API_KEY": FAKE_KEY, "IFLOW_BASE_URL": upstream.base_url}
        first = GatewayServer(env)
        with first:  # its start creates the default instance
            first.cli("setprice", "glm-5", "--input", "1", "--output", "1", "--currency", "USD")
            key = first.shell(
                "from decimal import Decimal\n"
                "from instances.models import Budget, ClientKey, Instance\n"
                "row, key = ClientKey.create(Instance.objects.get(name='default'), 'team')\n"
                "Budget.objects.create(key=row, period='day', spend_limit=Decimal('0.003'))\n"
                "print(key)").strip().splitlines()[-1]
            with GatewayServer({**env, "IFLOW2API_HOME": first.home}) as second:
                time.sleep(2.5)  # the first process's snapshots (keys, budgets) see them
                yield first, second, key


def chat(server: GatewayServer, key: str) -> httpx.Response:
    return httpx.post(server.url + "/v1/chat/completions", timeout=30,
                      headers={"authorization": f"Bearer {key}"},
                      json={"model": "glm-5", "messages": MESSAGES})


def test_a_budget_is_hit_exactly_across_two_processes(two_processes, upstream):
    first, second, key = two_processes
    upstream.default = lambda r: sc.text("ok", usage=USAGE)
    # 3 × 0.001 = the limit: each is allowed (the spend before it is below the limit).
    for server in (first, second, first):
        assert chat(server, key).status_code == 200
    assert len(upstream.chat_requests) == 3
    for server in (second, first):  # at the limit, in either process
        refused = chat(server, key)
        assert refused.status_code == 402, refused.text
        assert refused.headers["x-should-retry"] == "false"
        error = refused.json()["error"]
        assert error["code"] == "budget_exceeded"
        assert "resets at" in error["message"] and "T00:00:00" in error["message"]
    # The SDKs get it in their own shape and do not retry it.
    oa = openai.OpenAI(base_url=second.url + "/v1", api_key=key)
    with pytest.raises(openai.APIStatusError) as raised:
        oa.chat.completions.create(model="glm-5", messages=MESSAGES)
    assert raised.value.status_code == 402 and raised.value.code == "budget_exceeded"
    client = anthropic.Anthropic(base_url=first.url, api_key=key)
    with pytest.raises(anthropic.APIStatusError) as raised:
        client.messages.create(model="claude-sonnet-4-6", max_tokens=64, messages=MESSAGES)
    assert raised.value.status_code == 402
    assert raised.value.body["error"]["type"] == "billing_error"
    assert "budget exceeded" in raised.value.body["error"]["message"]
    assert len(upstream.chat_requests) == 3  # nothing more reached the upstream
