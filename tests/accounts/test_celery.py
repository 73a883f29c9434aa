"""The refresh schedule: a django-celery-beat PeriodicTask in the database, run by a real Celery
worker + beat with Redis, or by `iflow2api serve` itself without Redis."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from django.contrib import admin
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from accounts import scheduler
from accounts.models import Account
from accounts.workers import AccountWorkers
from tests.accounts.test_refresh_race import Site, migrated_template
from tests.fakes.oauth import FakeOAuth
from tests.servers import ROOT, GatewayServer
from tests.services import REDIS_URL, require_redis

TASK = "accounts.tasks.refresh_due_accounts_task"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOAuth]:
    with FakeOAuth() as server:
        yield server


# --- the schedule in the database --------------------------------------------------------------


@pytest.mark.django_db
def test_the_schedule_is_a_periodic_task_editable_in_the_admin():
    task = PeriodicTask.objects.get(name="refresh iFlow accounts")
    assert task.task == TASK and task.enabled
    assert (task.interval.every, task.interval.period) == (300, IntervalSchedule.SECONDS)
    assert admin.site.is_registered(PeriodicTask)
    assert scheduler.read_schedule() == (True, 300.0)

    task.interval = IntervalSchedule.objects.create(every=2, period=IntervalSchedule.MINUTES)
    task.save()
    assert scheduler.read_schedule() == (True, 120.0)
    task.enabled = False
    task.save()
    assert scheduler.read_schedule() == (False, 120.0)
    task.delete()  # no task at all: the settings' interval
    assert scheduler.read_schedule() == (True, 300.0)


@pytest.mark.django_db  # its worker threads reset their database connections
def test_the_in_process_scheduler_survives_failures(monkeypatch):
    calls = {"schedule": 0, "cycle": 0}

    def flaky_schedule():
        calls["schedule"] += 1
        if calls["schedule"] == 2:
            raise RuntimeError("database is locked")
        return True, 0.05

    def failing_cycle(*_routing):
        calls["cycle"] += 1
        raise RuntimeError("boom")

    monkeypatch.setattr(scheduler, "read_schedule", flaky_schedule)
    monkeypatch.setattr(scheduler, "run_cycle", failing_cycle)

    async def main():
        task = scheduler.start(AccountWorkers(), loop=asyncio.get_running_loop())
        await asyncio.sleep(0.6)
        alive = not task.done()
        task.cancel()
        return alive

    assert asyncio.run(main()) is True
    assert calls["cycle"] >= 3 and calls["schedule"] >= 4


def test_the_celery_app_uses_the_database_scheduler_and_has_the_tasks():
    import accounts.tasks  # noqa: F401
    from iflow2api_site.celery import app

    assert app.conf.beat_scheduler == "django_celery_beat.schedulers:DatabaseScheduler"
    assert {TASK, "accounts.tasks.refresh_account_task"} <= set(app.tasks)


@pytest.mark.django_db
def test_without_redis_the_tasks_run_eagerly(settings, fake):
    fake.reset()
    settings.IFLOW2API = {**settings.IFLOW2API, "IFLOW_OAUTH_BASE_URL": fake.oauth_base_url,
                          "IFLOW_PLATFORM_BASE_URL": fake.platform_base_url}
    from accounts.tasks import refresh_account_task, refresh_due_accounts_task

    access, refresh_token = fake.issue_tokens()
    account = Account.objects.create(
        label="eager", base_url="https://apis.iflow.cn/v1", oauth_access_token=access,
        oauth_refresh_token=refresh_token, access_token_expires_at=timezone.now())
    results = refresh_due_accounts_task.delay().get(timeout=30)
    assert [(r["account_id"], r["status"]) for r in results] == [(account.pk, "refreshed")]
    assert refresh_account_task.delay(account.pk).get(timeout=30)["status"] == "not_due"
    assert Account.objects.get(pk=account.pk).api_key == fake.user.api_key


# --- for real ----------------------------------------------------------------------------------


def test_serve_without_redis_refreshes_due_accounts_on_the_periodic_task_schedule(
        fake, tmp_path):
    fake.reset()
    # An iflow-cli login whose token expires in an hour, imported when the server starts.
    access, old_refresh = fake.issue_tokens()
    (tmp_path / "settings.json").write_text(json.dumps({
        "apiKey": "sk-old-cli-key", "selectedAuthType": "oauth-iflow"}))
    (tmp_path / "oauth_creds.json").write_text(json.dumps({
        "access_token": access, "refresh_token": old_refresh,
        "expiry_date": int((time.time() + 3600) * 1000)}))
    env = {"IFLOW_OAUTH_BASE_URL": fake.oauth_base_url,
           "IFLOW_PLATFORM_BASE_URL": fake.platform_base_url, "LOG_LEVEL": "INFO",
           "IMPORT_IFLOW_SETTINGS": "1", "IFLOW_SETTINGS_DIR": str(tmp_path)}
    server = GatewayServer(env)
    site = Site(fake, home=server.home, copy_of=migrated_template())
    set_interval(site, seconds=1)  # what an admin edits; read every cycle
    with server:
        account_id = sqlite(site, "SELECT id FROM accounts_account")[0][0]
        row = site.wait_for(account_id, refreshed, timeout=20)
        assert fake.calls("refresh") == 1 and fake.calls("userinfo") == 1
        assert site.decrypt(row["api_key"]) == fake.user.api_key
        assert site.decrypt(row["oauth_refresh_token"]) != old_refresh
        assert row["state"] == "active"

        # Disabled in the admin: nothing runs, though the account is due; enabled: it runs.
        sqlite(site, "UPDATE django_celery_beat_periodictask SET enabled = 0 WHERE task = ?",
               TASK)
        time.sleep(1.5)  # the scheduler reads the switch
        sqlite(site, "UPDATE accounts_account SET access_token_expires_at = "
               "'2000-01-01 00:00:00' WHERE id = ?", account_id)
        time.sleep(2.5)
        assert fake.calls("refresh") == 1
        sqlite(site, "UPDATE django_celery_beat_periodictask SET enabled = 1 WHERE task = ?",
               TASK)
        deadline = time.monotonic() + 15
        while fake.calls("refresh") < 2:
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.1)
        site.wait_for(account_id, refreshed, timeout=10)
        # The cycle notes its run on the task after the refresh it made: a moment later.
        deadline = time.monotonic() + 10
        while sqlite(site, "SELECT total_run_count FROM django_celery_beat_periodictask "
                     "WHERE task = ?", TASK)[0][0] < 2:
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.1)
        output = server.output()
        assert "Traceback" not in output, output
        assert access not in output and old_refresh not in output


def set_interval(site: Site, seconds: int) -> None:
    interval_id = sqlite(site, "SELECT interval_id FROM django_celery_beat_periodictask "
                         "WHERE task = ?", TASK)[0][0]
    sqlite(site, "UPDATE django_celery_beat_intervalschedule SET every = ?, period = 'seconds' "
           "WHERE id = ?", seconds, interval_id)


def refreshed(row: dict) -> bool:
    return row["last_refreshed_at"] is not None and row["refreshing_until"] is None


def sqlite(site: Site, sql: str, *params: object) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(site.home / "db.sqlite3", timeout=20)) as conn:
        rows = conn.execute(sql, params).fetchall()
        conn.commit()
    return rows


def test_celery_worker_and_beat_refresh_a_due_account_with_redis(fake):
    require_redis()
    fake.reset()
    # A database number of its own: no stray task from another test run gets in.
    redis_url = REDIS_URL.rsplit("/", 1)[0] + "/11"
    import redis

    redis.Redis.from_url(redis_url).delete("celery")
    # A shared SQLite file (the race tests run on PostgreSQL too).
    site = Site(fake, env={"REDIS_URL": redis_url}, copy_of=migrated_template())
    set_interval(site, seconds=1)
    celery = [sys.executable, "-m", "celery", "-A", "iflow2api_site"]
    commands = {
        "worker": [*celery, "worker", "-l", "info", "--pool", "solo",
                   "--without-gossip", "--without-mingle", "--without-heartbeat"],
        "beat": [*celery, "beat", "-l", "info", "-S", "django"],
    }
    processes = {}

    def start(name: str) -> None:
        log = (site.home / f"{name}.log").open("w")
        processes[name] = subprocess.Popen(commands[name], cwd=ROOT, env=site.env,
                                           stdout=log, stderr=subprocess.STDOUT)

    try:
        start("worker")  # it starts while the database is set up
        access, old_refresh = fake.issue_tokens()
        account_id = site.create_account(access, old_refresh, hours=1)
        start("beat")  # reads the schedule from the database

        def logs() -> str:
            return "\n".join(f"--- {name}\n" + (site.home / f"{name}.log").read_text()
                             for name in commands)

        try:
            row = site.wait_for(account_id, refreshed, timeout=40)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{logs()}") from None
        assert fake.calls("refresh") == 1 and fake.calls("userinfo") == 1
        assert site.decrypt(row["api_key"]) == fake.user.api_key
        assert row["state"] == "active"

        # The reactive path: a 401 from the chat endpoint → cool down, the worker refreshes.
        enqueued = site.shell(
            "import json, datetime; from django.utils import timezone;"
            "from accounts.models import Account;"
            "from accounts.refresh import request_refresh_now;"
            "from accounts.workers import AccountWorkers;"
            f"Account.objects.filter(pk={account_id}).update("
            "last_refreshed_at=timezone.now() - datetime.timedelta(minutes=5));"
            f"future = request_refresh_now({account_id}, AccountWorkers());"
            "print('RESULT', json.dumps(future.result(30)))")
        assert enqueued is None  # handed to the worker, not run in the caller
        refreshed_before = row["last_refreshed_at"]
        try:
            row = site.wait_for(account_id,
                                lambda r: refreshed(r)
                                and r["last_refreshed_at"] > refreshed_before, timeout=20)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{logs()}") from None
        assert fake.calls("refresh") == 2
        assert row["state"] == "active" and row["cooldown_until"] is None
        assert "refresh_account_task" in logs() and "Traceback" not in logs()
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
