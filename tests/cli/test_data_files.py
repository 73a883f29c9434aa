"""The data directory at rest (issue 13, item 15): the SQLite database holds the encrypted
secrets and is readable by its owner only, from a fresh install on."""

from __future__ import annotations

import sqlite3
import stat
import tempfile
from pathlib import Path

from tests.cli.test_serve import run_cli
from tests.servers import GatewayServer


def modes(home: Path) -> dict[str, int]:
    """Permission bits of the database and its -journal/-wal/-shm files."""
    return {path.name: stat.S_IMODE(path.stat().st_mode) for path in home.glob("db.sqlite3*")}


def test_a_fresh_server_writes_a_private_database():
    with GatewayServer() as server:
        server.cli("addaccount", "--provider", "openai", "--label", "Written", "--no-migrate",
                   "--base-url", "http://127.0.0.1:9/v1", "--api-key", "sk-at-rest-1")
        home = Path(server.home)
        found = modes(home)
        assert "db.sqlite3" in found
        assert found == {name: 0o600 for name in found}, found
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
        for name in ("field_encryption.key", "secret_key"):
            assert stat.S_IMODE((home / name).stat().st_mode) == 0o600, name


def test_an_existing_readable_database_is_made_private():
    home = Path(tempfile.mkdtemp(prefix="iflow2api-cli-"))
    env = {"IFLOW2API_HOME": str(home)}
    assert run_cli("migrate", "--noinput", env=env).returncode == 0
    (home / "db.sqlite3").chmod(0o644)  # as versions before this one left it
    assert run_cli("migrate", "--noinput", env=env).returncode == 0
    assert modes(home)["db.sqlite3"] == 0o600


def test_the_database_runs_in_write_ahead_log_mode():
    """WAL: the server's readers never wait for its request-log writer and commits cost no
    fsync; another process (a command, beside the running server) reads and writes as before."""
    with GatewayServer() as server:
        server.cli("addaccount", "--provider", "openai", "--label", "Beside", "--no-migrate",
                   "--base-url", "http://127.0.0.1:9/v1", "--api-key", "sk-wal-1")
        db = Path(server.home) / "db.sqlite3"
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            labels = {row[0] for row in conn.execute("SELECT label FROM accounts_account")}
        assert "Beside" in labels
        out = server.shell("from django.db import connection\n"
                           "with connection.cursor() as c:\n"
                           "    c.execute('PRAGMA synchronous')\n"
                           "    print('synchronous', c.fetchone()[0])")
        assert out.strip().splitlines()[-1] == "synchronous 1"  # NORMAL
        assert (db.parent / "db.sqlite3-wal").exists()
