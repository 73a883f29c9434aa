"""Cache-friendly routing on real servers (issue 18): the requests of one conversation go to
the same account while it is usable — named by Claude Code's metadata.user_id session, its
session header, Codex's session-id header or an OpenAI client's prompt_cache_key; a cooled
account fails over to the other and the conversation comes back once the cooldown is over.
The pins live in the process, or in Redis when REDIS_URL is set."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.fakes import scenarios as sc
from tests.fakes.upstream import FakeUpstream
from tests.servers import GatewayServer
from tests.services import REDIS_URL, fresh_postgres_database, require_redis

KEYS = ["sk-affinity-one-1111", "sk-affinity-two-2222"]
RATE_LIMIT = sc.http_error(429, {"error": {"message": "slow down"}})


@pytest.fixture(params=["in-process", "redis"])
def pins_env(request) -> Iterator[dict[str, str]]:
    if request.param == "in-process":
        yield {}
        return
    require_redis()
    with fresh_postgres_database() as database_url:
        yield {"DATABASE_URL": database_url, "REDIS_URL": REDIS_URL}


@pytest.fixture
def two_keys() -> Iterator[FakeUpstream]:
    with FakeUpstream(api_key=KEYS[0], extra_keys=KEYS[1:], flavor="iflow") as fake:
        fake.default = lambda r: sc.text("ok")
        yield fake


@pytest.fixture
def server(two_keys, pins_env) -> Iterator[GatewayServer]:
    gateway = GatewayServer({"RATE_LIMIT_COOLDOWN_SECONDS": "3", **pins_env})
    gateway.cli("migrate", "--noinput")
    gateway.shell("from accounts.models import Account\n" + "".join(
        f"Account.objects.create(label='a{i}', provider='iflow', base_url="
        f"{two_keys.base_url!r}, api_key={key!r}, max_concurrency=0)\n"
        for i, key in enumerate(KEYS)))
    with gateway:
        yield gateway


def claude_code(server: GatewayServer, session: str, *, header: bool = False) -> None:
    """A Claude Code turn: its session in metadata.user_id (JSON), or in its header."""
    body = {"model": "claude-sonnet-4-6", "max_tokens": 64,
            "messages": [{"role": "user", "content": "hi"}]}
    headers = {"anthropic-version": "2023-06-01"}
    if header:
        headers["x-claude-code-session-id"] = session
    else:
        body["metadata"] = {"user_id": json.dumps({"device_id": "d" * 64,
                                                   "account_uuid": "",
                                                   "session_id": session})}
    answer = httpx.post(server.url + "/v1/messages", json=body, headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text


def openai_chat(server: GatewayServer, headers: dict | None = None, **fields) -> None:
    body = {"model": "glm-5", "messages": [{"role": "user", "content": "hi"}], **fields}
    answer = httpx.post(server.url + "/v1/chat/completions", json=body, headers=headers,
                        timeout=30)
    assert answer.status_code == 200, answer.text


def served_by(fake: FakeUpstream, since: int) -> list[str]:
    return [r.bearer for r in fake.chat_requests[since:]]


def test_one_conversation_one_account_others_spread(server, two_keys):
    for _ in range(4):
        claude_code(server, "session-aaaa")
    first = served_by(two_keys, 0)
    assert len(set(first)) == 1, first  # same session → same account
    for _ in range(4):
        claude_code(server, "session-bbbb", header=True)  # its session header
    assert len(set(served_by(two_keys, 4))) == 1
    for _ in range(3):
        openai_chat(server, prompt_cache_key="conversation-c")
    assert len(set(served_by(two_keys, 8))) == 1
    for _ in range(3):
        openai_chat(server, headers={"session-id": "codex-session-d"})  # Codex's header
    assert len(set(served_by(two_keys, 11))) == 1
    for _ in range(4):
        openai_chat(server)  # no conversation named: the pool spreads the load
    assert set(served_by(two_keys, 14)) == set(KEYS)


def test_a_cooled_account_fails_over_and_the_conversation_comes_back(server, two_keys):
    claude_code(server, "session-cool")
    [pinned] = served_by(two_keys, 0)
    other = next(k for k in KEYS if k != pinned)
    two_keys.default = lambda r: RATE_LIMIT if r.bearer == pinned else sc.text("ok")
    claude_code(server, "session-cool")  # 429 on the pinned account → the other one answers
    assert served_by(two_keys, 1) == [pinned, other]
    two_keys.default = lambda r: sc.text("ok")
    claude_code(server, "session-cool")  # the pinned one cools down: the other serves
    assert served_by(two_keys, 3) == [other]
    time.sleep(3.5)  # the cooldown is over
    claude_code(server, "session-cool")
    claude_code(server, "session-cool")
    assert served_by(two_keys, 4) == [pinned, pinned]  # back where its cache is
