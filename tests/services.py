"""PostgreSQL and Redis on this machine, for the tests that need them for real."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"


def _reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def require_postgres() -> None:
    if not _reachable(5432):
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432 (see docs/testing.md)")


def require_redis() -> None:
    if not _reachable(6379):
        pytest.skip("Redis is not running on 127.0.0.1:6379 (see docs/testing.md)")


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new empty database for one test, dropped afterwards; yields its URL."""
    require_postgres()
    import psycopg

    name = f"iflow2api_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
