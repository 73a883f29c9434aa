"""Two refreshers of one account at the same moment — two threads, then two processes — against
the fake iflow.cn whose refresh tokens are single-use and whose refresh is slow: the fake sees
exactly one refresh, and the account ends with a valid refresh token and the right key.

The workers are real `iflow2api shell -c` processes sharing a file SQLite database or a fresh
PostgreSQL database (tests/services.py), as a server and a Celery worker would."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet, MultiFernet

from tests.fakes.oauth import FakeOAuth
from tests.servers import ROOT
from tests.services import fresh_postgres_database

CREATE = """
import json, os
from datetime import timedelta
from django.core.management import call_command
from django.utils import timezone
from accounts.models import Account
call_command("migrate", interactive=False, verbosity=0)  # a no-op on a migrated copy
spec = json.loads(os.environ["ACCOUNT_SPEC"])
account_id = Account.objects.create(
    label="race", base_url="https://apis.iflow.cn/v1", api_key="sk-old-key-000",
    oauth_access_token=spec["access"], oauth_refresh_token=spec["refresh"],
    access_token_expires_at=timezone.now() + timedelta(hours=spec["hours"])).pk
"""
SETUP = CREATE + 'print("RESULT", json.dumps(account_id))\n'

# After its race, each worker tries again once the lease is free (while it is held, that is
# "skipped" too): the account is fresh now, so that is "not_due" — the re-read after the lease.
RACE = """
import time
from accounts.refresh import refresh_account
def race(account_id):
    first = refresh_account(account_id).status
    deadline = time.monotonic() + 30
    while (second := refresh_account(account_id).status) == "skipped":
        assert time.monotonic() < deadline, "the lease was never released"
        time.sleep(0.05)
    return [first, second]
"""

TWO_THREADS = CREATE + RACE + """
import threading
from django.db import connections
barrier = threading.Barrier(2, timeout=30)
results = []
def work():
    barrier.wait()
    try:
        results.append(race(account_id))
    finally:
        connections.close_all()
threads = [threading.Thread(target=work) for _ in range(2)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join(60)
print("RESULT", json.dumps([account_id, results]))
"""

# Worker 0 migrates and creates the account, then both wait for the start signal.
ONE_PROCESS = RACE + """
import json, os
from pathlib import Path
if os.environ.get("ACCOUNT_SPEC"):
""" + "\n".join("    " + line for line in CREATE.strip().splitlines()) + """
Path(os.environ["RACE_READY"]).touch()
go, deadline = Path(os.environ["RACE_GO"]), time.monotonic() + 60
while not go.exists():
    if time.monotonic() > deadline:
        raise SystemExit("no start signal")
    time.sleep(0.002)
from accounts.models import Account
print("RESULT", json.dumps(race(Account.objects.get(label="race").pk)))
"""


class Site:
    """An iflow2api installation: its home directory, database and environment, pointed at
    the fake. Runs `iflow2api shell -c` in it and reads its database directly."""

    def __init__(self, fake: FakeOAuth | None, database_url: str | None = None,
                 env: dict[str, str] | None = None, *, copy_of: Site | None = None,
                 home: str | None = None) -> None:
        self.home = Path(home or tempfile.mkdtemp(prefix="iflow2api-refresh-"))
        if copy_of is not None:
            copy_of.copy_to(self.home)
        self.database_url = database_url
        self.env = {k: v for k, v in os.environ.items()
                    if k not in {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE",
                                 "IFLOW_API_KEY", "IFLOW_BASE_URL", "UPSTREAM_BASE_URL",
                                 "UPSTREAM_API_KEY", "UPSTREAM_MODELS"}}
        self.env.update({
            "IFLOW2API_HOME": str(self.home), "IMPORT_IFLOW_SETTINGS": "0",
            "PYTHONUNBUFFERED": "1", "LOG_LEVEL": "INFO",
            # Processes starting at once on a new home would race to create the key file.
            "DJANGO_SECRET_KEY": "test-secret-" + self.home.name,
        })
        if fake is not None:
            self.env.update({"IFLOW_OAUTH_BASE_URL": fake.oauth_base_url,
                             "IFLOW_PLATFORM_BASE_URL": fake.platform_base_url})
        if database_url:
            self.env["DATABASE_URL"] = database_url
        self.env.update(env or {})

    def popen_shell(self, code: str, env: dict[str, str] | None = None,
                    log: Path | None = None) -> subprocess.Popen[str]:
        out = log.open("w") if log else subprocess.PIPE
        return subprocess.Popen(
            [sys.executable, "-m", "iflow2api_site.cli", "shell", "-c", code], cwd=ROOT,
            env={**self.env, **(env or {})}, stdout=out, stderr=subprocess.STDOUT, text=True)

    def copy_to(self, home: str | Path) -> None:
        """Copy the SQLite database and its keys to another home (saves a migrate)."""
        for name in ("db.sqlite3", "field_encryption.key", "secret_key"):
            if (self.home / name).exists():
                shutil.copy2(self.home / name, Path(home) / name)

    @staticmethod
    def result(process: subprocess.Popen[str], timeout: float = 60) -> Any:
        try:
            out, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            out, _ = process.communicate()
            raise AssertionError(f"worker timed out:\n{out}") from None
        assert process.returncode == 0, out
        lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
        assert lines, out
        return json.loads(lines[-1][len("RESULT "):])

    def shell(self, code: str, env: dict[str, str] | None = None, timeout: float = 60) -> Any:
        return self.result(self.popen_shell(code, env), timeout)

    def create_account(self, access: str, refresh: str, hours: float) -> int:
        """Migrate, then add an OAuth account whose token expires in `hours`."""
        return self.shell(SETUP, account_spec(access, refresh, hours))

    # --- reading the database as it is on disk ---

    def row(self, account_id: int) -> dict[str, Any]:
        sql = f"SELECT * FROM accounts_account WHERE id = {int(account_id)}"
        if self.database_url:
            import psycopg
            from psycopg.rows import dict_row

            with psycopg.connect(self.database_url, row_factory=dict_row) as conn:
                return conn.execute(sql).fetchone()
        with contextlib.closing(sqlite3.connect(self.home / "db.sqlite3", timeout=20)) as conn:
            conn.row_factory = sqlite3.Row
            return dict(conn.execute(sql).fetchone())

    def decrypt(self, stored: str) -> str:
        assert stored.startswith("fernet:"), "a secret is stored in clear text"
        keys = (self.home / "field_encryption.key").read_text().split()
        fernet = MultiFernet([Fernet(key.encode()) for key in keys])
        return fernet.decrypt(stored[len("fernet:"):].encode()).decode()

    def wait_for(self, account_id: int, predicate, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            row = self.row(account_id)
            if predicate(row):
                return row
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s; account row: "
                                     f"{ {k: v for k, v in row.items() if 'token' not in k} }")
            time.sleep(0.1)


def account_spec(access: str, refresh: str, hours: float) -> dict[str, str]:
    return {"ACCOUNT_SPEC": json.dumps({"access": access, "refresh": refresh, "hours": hours})}


@contextlib.contextmanager
def database(kind: str) -> Iterator[str | None]:
    if kind == "postgresql":
        with fresh_postgres_database() as url:
            yield url
    else:
        yield None  # SQLite in the site's home


def assert_refreshed_once_and_valid(site: Site, fake: FakeOAuth, account_id: int,
                                    old_refresh: str) -> None:
    assert fake.calls("refresh") == 1, "two refreshes of one account raced"
    assert fake.calls("userinfo") == 1
    row = site.row(account_id)
    assert row["state"] == "active" and row["last_error"] == ""
    assert row["refreshing_until"] is None and row["last_refreshed_at"] is not None
    # No plaintext secret in the raw row.
    for column in ("api_key", "oauth_access_token", "oauth_refresh_token"):
        assert row[column].startswith("fernet:")
    raw = repr(row)
    access, refresh_token = (site.decrypt(row["oauth_access_token"]),
                             site.decrypt(row["oauth_refresh_token"]))
    for secret in (access, refresh_token, fake.user.api_key):
        assert secret not in raw
    # Valid: the stored refresh token is the live one, the key is the user's (not the token).
    assert refresh_token != old_refresh and fake.refresh_tokens[refresh_token]["used"] is False
    assert fake.refresh_tokens[old_refresh]["used"] is True
    assert site.decrypt(row["api_key"]) == fake.user.api_key != access


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOAuth]:
    with FakeOAuth(refresh_delay=1.0) as server:
        yield server


@functools.cache
def migrated_template() -> Site:
    """A migrated SQLite installation to copy (once per test session)."""
    site = Site(None)
    site.shell('from django.core.management import call_command; '
               'call_command("migrate", interactive=False, verbosity=0); print("RESULT 0")')
    return site


@pytest.fixture
def migrated() -> Site:
    return migrated_template()


def test_two_threads_refresh_one_account_once(fake, migrated):
    fake.reset()
    site = Site(fake, copy_of=migrated)
    access, old_refresh = fake.issue_tokens()
    account_id, statuses = site.shell(TWO_THREADS, account_spec(access, old_refresh, 1))
    assert sorted(statuses) == [["refreshed", "not_due"], ["skipped", "not_due"]]
    assert_refreshed_once_and_valid(site, fake, account_id, old_refresh)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_two_processes_refresh_one_account_once(fake, migrated, kind):
    fake.reset()
    with database(kind) as url:
        site = Site(fake, url, copy_of=None if url else migrated)
        access, old_refresh = fake.issue_tokens()
        go = site.home / "go"
        ready = [site.home / f"ready-{n}" for n in range(2)]
        workers = [site.popen_shell(ONE_PROCESS, {
            "RACE_READY": str(flag), "RACE_GO": str(go),
            **(account_spec(access, old_refresh, 1) if n == 0 else {})})
            for n, flag in enumerate(ready)]
        deadline = time.monotonic() + 60
        while not all(flag.exists() for flag in ready):
            assert time.monotonic() < deadline, "workers did not start"
            assert all(w.poll() is None for w in workers), [Site.result(w) for w in workers]
            time.sleep(0.01)
        go.touch()  # both at the same moment
        statuses = [Site.result(worker) for worker in workers]
        assert sorted(statuses) == [["refreshed", "not_due"], ["skipped", "not_due"]]
        assert_refreshed_once_and_valid(site, fake, 1, old_refresh)
