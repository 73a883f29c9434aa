"""Rate rules on real servers: 429 in each client's format with Retry-After, per key, per
instance, per IP, concurrent streams, tokens per minute, and exact counting across two web
processes that share Redis and PostgreSQL."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import anthropic
import httpx
import openai
import pytest
from cryptography.fernet import Fernet

from tests.conftest import FAKE_KEY
from tests.fakes import scenarios as sc
from tests.servers import GatewayServer
from tests.services import REDIS_URL, fresh_postgres_database, require_redis

BODY = {"model": "glm-5", "messages": [{"role": "user", "content": "hi"}]}
RULE = """
from instances.models import Instance, RateRule, ClientKey
instance = Instance.objects.get(name="default")
RateRule.objects.all().delete()
RateRule.objects.create(scope={scope!r}, instance=instance, **{limits!r})
"""


def make_key(server: GatewayServer, name: str) -> str:
    return server.cli("createkey", "--instance", "default", "--name", name).stdout.split()[-1]


def start_early_in_a_minute() -> None:
    """The per-minute window is the clock's minute: a test that counts requests in it must not
    straddle a minute's end (CI once saw the window reset between two of its requests)."""
    if time.time() % 60 > 45:
        time.sleep(60 - time.time() % 60 + 0.05)


def set_rule(server: GatewayServer, scope: str, **limits: int) -> None:
    server.shell(RULE.format(scope=scope, limits=limits))
    time.sleep(2.5)  # every process rereads its instance directory within 2 s


def chat(server: GatewayServer, key: str, **extra: object) -> httpx.Response:
    return httpx.post(server.url + "/v1/chat/completions", json={**BODY, **extra},
                      headers={"authorization": f"Bearer {key}"}, timeout=30)


@pytest.fixture(scope="module")
def limited(fake_iflow):
    env = {"IFLOW_API_KEY": FAKE_KEY, "IFLOW_BASE_URL": fake_iflow.base_url}
    with GatewayServer(env) as server:
        server.keys = (make_key(server, "alice"), make_key(server, "bob"))
        yield server


def test_per_key_requests_per_minute_answer_429_in_each_clients_format(limited, upstream):
    alice, bob = limited.keys
    set_rule(limited, "key", requests_per_minute=2)
    start_early_in_a_minute()
    assert [chat(limited, alice).status_code for _ in range(2)] == [200, 200]
    refused = chat(limited, alice)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
    assert "2 requests per minute for this key" in error["message"]
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert chat(limited, bob).status_code == 200  # every key counts on its own

    client = anthropic.Anthropic(base_url=limited.url, api_key=alice, max_retries=0)
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.create(model="claude-sonnet-4-6", max_tokens=10,
                               messages=[{"role": "user", "content": "hi"}])
    assert caught.value.response.headers["retry-after"]
    assert caught.value.body["error"]["type"] == "rate_limit_error"
    assert len(upstream.chat_requests) == 3  # refused requests never reach the upstream


def test_instance_rule_counts_every_client_together(limited, upstream):
    alice, bob = limited.keys
    set_rule(limited, "instance", requests_per_hour=3)
    statuses = [chat(limited, key).status_code for key in (alice, bob, alice, bob)]
    assert statuses == [200, 200, 200, 429]
    oai = openai.OpenAI(base_url=limited.url + "/v1", api_key=bob, max_retries=0)
    with pytest.raises(openai.RateLimitError):
        oai.chat.completions.create(**BODY)


def test_concurrent_streams_limit_and_release(limited, upstream):
    alice, _ = limited.keys
    set_rule(limited, "key", concurrent_streams=1)
    upstream.default = sc.slow(sc.text("one two three four"), chunk_delay=0.4)
    first: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: first.append(chat(limited, alice, stream=True)))
    thread.start()
    deadline = time.monotonic() + 10
    while not upstream.chat_requests and time.monotonic() < deadline:
        time.sleep(0.05)
    second = chat(limited, alice, stream=True)
    assert second.status_code == 429
    assert "1 concurrent stream for this key" in second.json()["error"]["message"]
    assert chat(limited, alice).status_code == 200  # not a stream: no slot needed
    thread.join(30)
    assert first[0].status_code == 200 and first[0].text.rstrip().endswith("data: [DONE]")
    upstream.default = sc.text("quick")
    assert chat(limited, alice, stream=True).status_code == 200  # the slot came back


def test_tokens_per_minute(limited, upstream):
    alice, _ = limited.keys
    set_rule(limited, "key", tokens_per_minute=50)
    upstream.default = sc.text("answer", usage={"prompt_tokens": 40, "completion_tokens": 20,
                                                "total_tokens": 60})
    assert chat(limited, alice).status_code == 200  # under budget when it started
    refused = chat(limited, alice)
    assert refused.status_code == 429 and "50 tokens per minute" in refused.text


def test_per_ip_rule(limited, upstream):
    alice, bob = limited.keys
    set_rule(limited, "ip", requests_per_minute=1)
    assert chat(limited, alice).status_code == 200
    assert chat(limited, bob).status_code == 429  # same address, other key
    assert "for your IP address" in chat(limited, bob).json()["error"]["message"]


def test_refusals_are_in_the_request_log(limited, upstream):
    alice, _ = limited.keys
    set_rule(limited, "key", requests_per_day=1)
    chat(limited, alice)
    chat(limited, alice)
    time.sleep(1)
    out = limited.shell(
        "from proxy.models import RequestLog\n"
        "row = RequestLog.objects.filter(status=429).first()\n"
        "print(row.instance, '|', row.key_label, '|', row.error)")
    assert out.strip().splitlines()[-1].startswith("default | alice (sk-i2a-")
    set_rule(limited, "key", requests_per_day=1000)


def test_responses_are_counted_and_refused_in_the_openai_shape(limited, upstream):
    carol = make_key(limited, "carol")  # a fresh key: nothing counted for it yet this minute
    set_rule(limited, "key", requests_per_minute=2)
    start_early_in_a_minute()
    client = openai.OpenAI(base_url=limited.url + "/v1", api_key=carol, max_retries=0)
    assert client.responses.create(model="glm-5", input="hi").status == "completed"
    assert chat(limited, carol).status_code == 200  # one rule for every API of the key
    sent = len(upstream.chat_requests)
    with pytest.raises(openai.RateLimitError) as caught:
        client.responses.create(model="glm-5", input="hi", stream=True)
    assert caught.value.code == "rate_limit_exceeded"
    assert 1 <= int(caught.value.response.headers["retry-after"]) <= 60
    assert len(upstream.chat_requests) == sent  # refused before the upstream
    set_rule(limited, "key", requests_per_day=1000)


def test_limit_is_exact_across_two_processes_sharing_redis(fake_iflow, upstream):
    require_redis()
    limit = 10
    with fresh_postgres_database() as database_url:
        env = {"DATABASE_URL": database_url, "REDIS_URL": REDIS_URL,
               "FIELD_ENCRYPTION_KEY": Fernet.generate_key().decode(),
               "IFLOW_API_KEY": FAKE_KEY, "IFLOW_BASE_URL": fake_iflow.base_url}
        first = GatewayServer(env).start()
        second = GatewayServer(env).start()
        try:
            key = make_key(first, "shared")
            set_rule(first, "instance", requests_per_day=limit)
            with ThreadPoolExecutor(8) as workers:
                statuses = list(workers.map(
                    lambda i: chat((first, second)[i % 2], key).status_code, range(2 * limit)))
        finally:
            first.stop()
            second.stop()
    assert sorted(statuses) == [200] * limit + [429] * limit
    assert len(upstream.chat_requests) == limit
