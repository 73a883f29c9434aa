"""accounts/config_version.py: the number the snapshots check before reloading moves with every
change to the configuration tables, however it is made (ORM save, QuerySet.update, delete,
many-to-many links, TRUNCATE, another process), and only then; on PostgreSQL it moves when the
change commits. And a running gateway sees a change made by another process within the
snapshot TTL, though it no longer reloads in full every second."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from accounts import config_version
from accounts.models import Account, ModelInfo, OAuthLogin
from accounts.services import SNAPSHOT_TTL_SECONDS
from instances.models import Budget, ClientKey, Instance, RateRule
from proxy.models import RequestLog
from tests.conftest import FAKE_KEY
from tests.fakes.upstream import FakeUpstream
from tests.servers import GatewayServer
from tests.services import fresh_postgres_database

BODY = {"model": "glm-5", "messages": [{"role": "user", "content": "hi"}]}
WATCHED = [Account, ModelInfo, ModelInfo.accounts.through, Instance, Instance.accounts.through,
           ClientKey, RateRule, Budget]


def moves(change: Callable[[], object]) -> bool:
    before = config_version.read()
    change()
    return config_version.read() != before


@pytest.mark.django_db
def test_every_kind_of_change_to_a_watched_table_moves_the_number() -> None:
    assert config_version.read() is not None
    account = Account.objects.create(label="a", provider="openai", base_url="http://x/v1",
                                     api_key="sk-a")
    instance = Instance.objects.create(name="second", port=28123)
    info = ModelInfo.objects.create(model_id="m-1", provider="openai")
    key = ClientKey.objects.create(instance=instance, name="k", key_hash="h" * 64, prefix="sk-x")
    assert moves(lambda: Account.objects.filter(pk=account.pk).update(enabled=False))
    assert moves(lambda: account.save())
    assert moves(lambda: info.accounts.add(account))
    assert moves(lambda: instance.accounts.add(account))
    assert moves(lambda: instance.accounts.remove(account))
    assert moves(lambda: ClientKey.objects.filter(pk=key.pk).update(enabled=False))
    assert moves(lambda: RateRule.objects.create(name="r", scope="instance", instance=instance,
                                                 requests_per_minute=5))
    assert moves(lambda: Budget.objects.create(instance=instance, period="day", token_limit=9))
    assert moves(lambda: Budget.objects.all().delete())
    assert moves(lambda: info.delete())
    # Nothing changed: no move (the routing check ends cooldowns with an UPDATE every second).
    assert not moves(lambda: Account.objects.filter(pk=-1).update(enabled=True))
    assert not moves(lambda: Account.objects.filter(state="cooling").update(state="active"))
    # Tables the snapshots do not read: no move.
    assert not moves(lambda: RequestLog.objects.create(
        started_at=timezone.now(), api="openai", model="m", status=200, latency_ms=1))
    assert not moves(lambda: OAuthLogin.objects.all().delete())


@pytest.mark.django_db
def test_every_watched_table_has_its_triggers() -> None:
    """SQLite drops a table's triggers when a migration rebuilds the table (to alter a column):
    a later migration of a watched model must create them again, or this fails."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT tbl_name, name FROM sqlite_master WHERE type = 'trigger'")
        triggers = cursor.fetchall()
    for model in WATCHED:
        table = model._meta.db_table
        names = {name for tbl, name in triggers if tbl == table}
        assert len(names) == 3, (table, names)  # insert, update, delete


def test_on_postgresql_the_number_moves_at_commit_and_with_truncate_and_another_process_sees_it(
        upstream: FakeUpstream) -> None:
    with fresh_postgres_database() as database_url:
        env = {"IFLOW_API_KEY": FAKE_KEY, "IFLOW_BASE_URL": upstream.base_url,
               "DATABASE_URL": database_url}
        with GatewayServer(env) as server, httpx.Client(timeout=10) as client:
            assert client.post(server.url + "/v1/chat/completions", json=BODY).status_code == 200
            with psycopg.connect(database_url, autocommit=True) as reader, \
                    psycopg.connect(database_url) as writer:
                def number() -> int:
                    row = reader.execute(
                        f"SELECT version FROM {config_version.TABLE} WHERE id = 1").fetchone()
                    assert row is not None
                    return int(row[0])

                with reader.execute("SELECT tgrelid::regclass::text FROM pg_trigger "
                                    "WHERE tgname LIKE 'iflow2api_config_version_%'") as rows:
                    watched = {table for (table,) in rows}
                assert watched == {m._meta.db_table for m in WATCHED}
                start = number()
                writer.execute("UPDATE accounts_account SET max_concurrency = 3")
                writer.execute("UPDATE instances_instance SET port = port")
                assert number() == start  # not committed yet: the change is not visible either
                writer.commit()
                committed = number()
                assert committed > start
                writer.execute("UPDATE accounts_account SET enabled = true WHERE id = -1")
                writer.commit()
                assert number() == committed  # no row changed
                writer.execute("TRUNCATE instances_raterule")
                writer.commit()
                assert number() > committed
                # Another process disables the only account behind the gateway's back
                # (no Django signal): the gateway stops routing to it within its TTL.
                writer.execute("UPDATE accounts_account SET enabled = false")
                writer.commit()
            assert refused_within(client, server.url, SNAPSHOT_TTL_SECONDS + 2)


def test_a_change_made_by_another_process_reaches_the_gateway_within_the_ttl(
        upstream: FakeUpstream) -> None:
    """SQLite: the account is disabled through QuerySet.update in `iflow2api shell` (another
    process, no signal), then enabled again."""
    env = {"IFLOW_API_KEY": FAKE_KEY, "IFLOW_BASE_URL": upstream.base_url}
    with GatewayServer(env) as server, httpx.Client(timeout=10) as client:
        url = server.url + "/v1/chat/completions"
        assert client.post(url, json=BODY).status_code == 200
        time.sleep(SNAPSHOT_TTL_SECONDS + 0.2)  # past the TTL: the next reloads are checks
        assert client.post(url, json=BODY).status_code == 200
        server.shell("from accounts.models import Account; "
                     "Account.objects.update(enabled=False)")
        assert refused_within(client, server.url, SNAPSHOT_TTL_SECONDS + 2)
        server.shell("from accounts.models import Account; "
                     "Account.objects.update(enabled=True)")
        deadline = time.monotonic() + SNAPSHOT_TTL_SECONDS + 2
        while client.post(url, json=BODY).status_code != 200:
            assert time.monotonic() < deadline, "the account never came back"
            time.sleep(0.1)


def refused_within(client: httpx.Client, base: str, seconds: float) -> bool:
    """Whether the gateway answers no_upstream (no usable account) within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        answer = client.post(base + "/v1/chat/completions", json=BODY)
        if answer.status_code != 200:
            assert answer.json()["error"]["code"] == "no_upstream", answer.text
            return True
        time.sleep(0.1)
    return False
