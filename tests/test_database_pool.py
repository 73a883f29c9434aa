"""PostgreSQL's connection pool (DATABASE_POOL, DATABASE_POOL_SIZE) on a real gateway: the
threads beside the event loop give back what they borrow, so requests never wait for a
connection. The background reloads of the routing, directory and budget snapshots (a thread
each) once kept their connections: with a pool of 4, requests then waited 30 s."""

from __future__ import annotations

import time

import httpx

from tests.conftest import FAKE_KEY
from tests.fakes.upstream import FakeUpstream
from tests.servers import GatewayServer
from tests.services import fresh_postgres_database, require_postgres

BODY = {"model": "glm-5", "messages": [{"role": "user", "content": "hi"}]}
SNAPSHOT_TTL = 2.0  # accounts/services.py, instances/services.py, instances/budgets.py


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
