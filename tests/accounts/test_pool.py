"""The account pool on real servers: per-account limits, the wait queue, cooldown, failover,
and the limit held across two web processes sharing Redis; in process, that its cooldowns and
blocks reach its Runtime's routing snapshot at once."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from cryptography.fernet import Fernet

from tests.fakes import scenarios as sc
from tests.fakes.upstream import FakeUpstream
from tests.servers import GatewayServer
from tests.services import REDIS_URL, fresh_postgres_database, require_redis

KEYS = ["sk-pool-one-1111", "sk-pool-two-2222"]
BODY = {"model": "glm-5", "messages": [{"role": "user", "content": "hi"}]}
ADD_ACCOUNTS = """
from accounts.models import Account
for i, key in enumerate({keys!r}):
    Account.objects.create(label=f"pool {{i}}", provider="iflow", base_url={base!r},
                           api_key=key, max_concurrency={limit})
"""


@pytest.fixture(scope="module")
def pool_fake():
    with FakeUpstream(api_key=KEYS[0], extra_keys=KEYS[1:], flavor="iflow") as fake:
        yield fake


@pytest.fixture
def fake(pool_fake):
    pool_fake.reset()
    pool_fake.default = sc.text("pooled answer")
    yield pool_fake
    pool_fake.reset()
    pool_fake.default = sc.text("pooled answer")


def start_gateway(fake, *, keys=KEYS, limit=1, env=None):
    server = GatewayServer({"IMPORT_IFLOW_SETTINGS": "0", **(env or {})})
    server.cli("migrate", "--noinput")
    server.shell(ADD_ACCOUNTS.format(keys=list(keys), base=fake.base_url, limit=limit))
    return server.start()


def post(server, body=BODY, timeout=60):
    return httpx.post(server.url + "/v1/chat/completions", json=body, timeout=timeout)


def account_states(server):
    out = server.shell("from accounts.models import Account\n"
                       "import json\n"
                       "print(json.dumps([[a.api_key[-4:], a.state, a.last_error] "
                       "for a in Account.objects.order_by('id')]))")
    return json.loads(out.strip().splitlines()[-1])


def test_one_request_at_a_time_per_account_under_load(fake):
    fake.default = sc.slow(sc.text("a b c d"), chunk_delay=0.1)
    with start_gateway(fake) as server, ThreadPoolExecutor(8) as workers:
        results = list(workers.map(lambda _: post(server, {**BODY, "stream": True}), range(8)))
    assert all(r.status_code == 200 for r in results), [r.text for r in results]
    assert len(fake.chat_requests) == 8
    peaks = {k: v for k, v in fake.max_in_flight_by_key.items() if v}
    assert peaks == {KEYS[0]: 1, KEYS[1]: 1}  # both used, never two at once


def test_a_full_pool_queues_then_answers_429_in_each_clients_format(fake):
    fake.default = sc.slow(sc.text("slow"), first_delay=3.0)
    env = {"POOL_QUEUE_TIMEOUT": "0.5", "STREAM_PRELUDE_SECONDS": "0.1"}
    with start_gateway(fake, keys=KEYS[:1], env=env) as server, ThreadPoolExecutor(2) as pool:
        busy = pool.submit(post, server, {**BODY, "stream": True})
        assert fake.wait_for(lambda: len(fake.chat_requests) == 1, timeout=5)
        openai_answer = post(server)
        anthropic_answer = httpx.post(server.url + "/v1/messages", timeout=30, json={
            "model": "glm-5", "max_tokens": 5, "messages": BODY["messages"]})
        assert busy.result().status_code == 200
    assert openai_answer.status_code == 429
    assert openai_answer.json()["error"]["type"] == "rate_limit_error"
    assert int(openai_answer.headers["retry-after"]) >= 1
    assert anthropic_answer.status_code == 429
    assert anthropic_answer.json()["error"]["type"] == "rate_limit_error"
    assert "retry-after" in anthropic_answer.headers
    assert len(fake.chat_requests) == 1


def test_rate_limited_account_cools_down_and_the_request_fails_over(fake):
    def by_key(record):
        if record.bearer == KEYS[0]:
            return sc.envelope_error("449", "Please limit to single concurrent usage")
        return sc.text("from the second account")

    fake.default = by_key
    env = {"RATE_LIMIT_COOLDOWN_SECONDS": "60"}
    with start_gateway(fake, env=env) as server:
        answers = [post(server) for _ in range(3)]
        states = account_states(server)
    assert [a.json()["choices"][0]["message"]["content"] for a in answers] == \
        ["from the second account"] * 3
    keys_used = [r.bearer for r in fake.chat_requests]
    assert keys_used.count(KEYS[0]) == 1  # tried once, then cooled down
    assert states[0][1] == "cooling" and "single concurrent" in states[0][2]
    assert states[1][1] == "active"


def test_blocked_key_fails_over_and_is_taken_out(fake):
    fake.default = lambda r: (sc.envelope_error("434", "Invalid apiKey") if r.bearer == KEYS[0]
                              else sc.text("ok"))
    with start_gateway(fake) as server:
        answers = [post(server, {**BODY, "stream": True}) for _ in range(2)]
        states = account_states(server)
    assert all(a.status_code == 200 for a in answers)
    assert [r.bearer for r in fake.chat_requests].count(KEYS[0]) == 1
    assert states[0][1] == "blocked" and "Invalid apiKey" in states[0][2]


def test_the_limit_holds_across_two_processes_sharing_redis(fake):
    require_redis()
    fake.default = sc.slow(sc.text("x y"), chunk_delay=0.15)
    with fresh_postgres_database() as database_url:
        # Two web processes of one deployment share the database and the encryption key.
        env = {"DATABASE_URL": database_url, "REDIS_URL": REDIS_URL,
               "FIELD_ENCRYPTION_KEY": Fernet.generate_key().decode()}
        first = start_gateway(fake, keys=KEYS[:1], env=env)
        second = GatewayServer({"IMPORT_IFLOW_SETTINGS": "0", **env}).start()
        try:
            with ThreadPoolExecutor(6) as workers:
                results = list(workers.map(
                    lambda i: post((first, second)[i % 2], {**BODY, "stream": True}), range(6)))
        finally:
            first.stop()
            second.stop()
    assert all(r.status_code == 200 for r in results), [r.text for r in results]
    assert len(fake.chat_requests) == 6
    assert {k: v for k, v in fake.max_in_flight_by_key.items() if v} == {KEYS[0]: 1}


# --- a Redis that does not answer ---------------------------------------------------------------


def test_a_redis_that_does_not_answer_is_a_503_not_a_hang():
    """The pool's Redis accepts connections but never answers (a hung server): the shared
    client's socket timeout ends the wait, and the request is refused with 503
    pool_unavailable (Retry-After) in the client's shape, not left hanging or a 500."""
    import asyncio
    import socket

    from accounts.pool import AccountPool, RedisSlots
    from accounts.services import AccountRef
    from iflow2api_lib.redis_client import SharedRedis
    from proxy.errors import ApiError
    from proxy.pipeline import take_account

    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(8)  # connections complete in the kernel; nothing ever reads them
    url = f"redis://127.0.0.1:{hung.getsockname()[1]}/0"
    pool = AccountPool(RedisSlots(SharedRedis(url, "iflow2api:{test-hung}")))
    account = AccountRef(id=1, provider="iflow", label="one", base_url="http://127.0.0.1:9",
                         api_key="k", session_id="", conversation_id="", max_concurrency=1)

    async def take() -> ApiError:
        try:  # model and options are not consulted on this path
            await asyncio.wait_for(take_account(pool, [account], None, None, None), 30)
        except ApiError as error:
            return error
        raise AssertionError("a slot was taken without Redis")

    try:
        error = asyncio.run(take())
    finally:
        hung.close()
    assert (error.status, error.code) == (503, "pool_unavailable")
    assert ("retry-after", "5") in error.headers()


def test_a_cooldown_or_block_is_routed_around_at_once_in_this_process(db):
    """The pool marks its Runtime's routing snapshot stale as it writes a cooldown, a block or
    a recovery: the next request of this process sees the account's new state, not the
    snapshot's (which would otherwise live up to 2 s more)."""
    from asgiref.sync import async_to_sync

    from accounts.models import Account
    from proxy.runtime import Runtime

    runtime = Runtime.build(redis_url="")
    runtime.routing.ttl_seconds = 3600.0  # stale only when marked so, never by the clock
    account = Account.objects.create(label="pooled", provider="iflow", api_key=KEYS[0],
                                     base_url="http://127.0.0.1:9/v1")

    def state_after(change: str) -> tuple[bool, float | None, list[int]]:
        async def run() -> tuple[bool, float | None, list[int]]:
            table = await runtime.routing.get()
            ref = next(a for a in table.accounts if a.id == account.pk)
            await getattr(runtime.pool, change)(ref, *{"cool_down": (60, "429 busy"),
                                                       "block": ("key refused",),
                                                       "recovered": ()}[change])
            stale = not runtime.routing.fresh()
            table = await runtime.routing.get()
            again = next((a for a in table.accounts if a.id == account.pk), None)
            return stale, again.cooldown_until if again else None, [a.id for a in table.accounts]

        return async_to_sync(run)()

    stale, cooldown, _ids = state_after("cool_down")
    assert stale and cooldown is not None  # cooling: routed around from the next request
    stale, cooldown, _ids = state_after("recovered")
    assert stale and cooldown is None
    stale, _cooldown, ids = state_after("block")
    assert stale and account.pk not in ids  # blocked: out of rotation
