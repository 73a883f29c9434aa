"""The request log's writer thread keeps its database connection between batches; when the
database drops it (PostgreSQL restarted, the connection killed), the next batch is written on
a new one, with nothing lost and no error logged."""

from __future__ import annotations

import contextlib

import psycopg
from django.utils import timezone

from tests.conftest import FAKE_KEY
from tests.fakes.upstream import FakeUpstream
from tests.proxy.test_requestlog import post_chat, rows_since
from tests.servers import GatewayServer
from tests.services import PG_ADMIN_URL, fresh_postgres_database


def kill_connections(database_url: str) -> int:
    """Terminates every session on that database (as a restart would); returns how many."""
    name = database_url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        rows = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             "WHERE datname = %s AND pid <> pg_backend_pid()", (name,)).fetchall()
    return len(rows)


def test_rows_are_written_after_the_database_dropped_the_writers_connection(
        fake_iflow: FakeUpstream):
    with contextlib.ExitStack() as stack:
        database_url = stack.enter_context(fresh_postgres_database())
        server = stack.enter_context(GatewayServer({
            "IFLOW_API_KEY": FAKE_KEY, "IFLOW_BASE_URL": fake_iflow.base_url,
            "DATABASE_URL": database_url}))
        start = timezone.now()
        assert post_chat(server).status_code == 200
        assert len(rows_since(server, start, 1)) == 1  # the writer has its connection now
        assert kill_connections(database_url) >= 1
        again = timezone.now()
        for stream in (False, True):
            assert post_chat(server, stream=stream).status_code == 200
        assert [row["stream"] for row in rows_since(server, again, 2)] == [False, True]
        assert "request log" not in server.output()  # no batch failed
