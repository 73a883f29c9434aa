"""PostgreSQL's connection pool (DATABASE_POOL, DATABASE_POOL_SIZE, DATABASE_POOL_TIMEOUT) on a
real gateway: the threads beside the event loop give back what they borrow, so requests never
wait for a connection; a database out of reach is a quick 503 in the client's format. The
background reloads of the routing, directory and budget snapshots (a thread each) once kept
their connections: with a pool of 4, requests then waited 30 s."""

from __future__ import annotations

import time

import httpx
import psycopg
from psycopg import sql

from accounts.services import SNAPSHOT_TTL_SECONDS as ROUTING_TTL
from instances.budgets import SNAPSHOT_TTL_SECONDS as BUDGETS_TTL
from instances.services import DIRECTORY_TTL_SECONDS
from tests.conftest import FAKE_KEY
from tests.fakes.upstream import FakeUpstream
from tests.servers import GatewayServer
from tests.services import PG_ADMIN_URL, fresh_postgres_database, require_postgres

BODY = {"model": "glm-5", "messages": [{"role": "user", "content": "hi"}]}
SNAPSHOT_TTL = max(ROUTING_TTL, BUDGETS_TTL, DIRECTORY_TTL_SECONDS)


def test_the_smallest_pool_serves_requests_while_every_snapshot_reloads(
        upstream: FakeUpstream) -> None:
    require_postgres()
    with fresh_postgres_database() as database_url:
        env = {"IFLOW_API_KEY": FAKE_KEY, "IFLOW_BASE_URL": upstream.base_url,
               "DATABASE_URL": database_url, "DATABASE_POOL_SIZE": "4"}
        with GatewayServer(env) as server, httpx.Client(timeout=10) as client:
            statuses = []
            deadline = time.monotonic() + 3 * SNAPSHOT_TTL  # several reloads of each
            while time.monotonic() < deadline:
                answer = client.post(server.url + "/v1/chat/completions", json=BODY)
                statuses.append(answer.status_code)
                time.sleep(0.2)
    assert len(statuses) >= 15 and set(statuses) == {200}, statuses


def test_an_unreachable_database_is_a_quick_503_in_each_clients_format_then_service_resumes(
        upstream: FakeUpstream) -> None:
    require_postgres()
    with fresh_postgres_database() as database_url:
        name = database_url.rsplit("/", 1)[1]
        env = {"IFLOW_API_KEY": FAKE_KEY, "IFLOW_BASE_URL": upstream.base_url,
               "DATABASE_URL": database_url, "DATABASE_POOL_TIMEOUT": "1"}
        with GatewayServer(env) as server, httpx.Client(timeout=30) as client:
            assert client.post(server.url + "/v1/chat/completions", json=BODY).status_code == 200
            set_connections(name, allowed=False)
            try:
                time.sleep(SNAPSHOT_TTL + 0.5)  # the snapshots must be read again
                chat = client.post(server.url + "/v1/chat/completions", json=BODY)
                messages = client.post(server.url + "/v1/messages",
                                       json={**BODY, "max_tokens": 16})
                responses = client.post(server.url + "/v1/responses",
                                        json={"model": "glm-5", "input": "hi"})
            finally:
                set_connections(name, allowed=True)
            deadline = time.monotonic() + 15
            while (after := client.post(server.url + "/v1/chat/completions", json=BODY)
                   ).status_code != 200 and time.monotonic() < deadline:
                time.sleep(0.5)
            log = server.output()
    message = "the gateway's database is unavailable; retry the request later"
    for answer in (chat, messages, responses):
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"] == "5"
        assert answer.elapsed.total_seconds() < 10  # a few pool waits of 1 s, never 30 s each
    assert chat.json()["error"]["message"] == message
    assert chat.json()["error"]["code"] == "database_unavailable"
    assert messages.json()["type"] == "error"
    assert messages.json()["error"] == {"type": "api_error", "message": message}
    assert responses.json()["error"]["code"] == "database_unavailable"
    assert after.status_code == 200
    assert "database unavailable in /v1/chat/completions" in log
    assert "unhandled error" not in log  # a warning line, not a traceback of a "bug"


def set_connections(database: str, *, allowed: bool) -> None:
    """Lets our own test database take connections or not (and drops the ones it has)."""
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
            sql.Identifier(database), sql.SQL("true" if allowed else "false")))
        if not allowed:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = %s", (database,))
