"""docker/entrypoint.sh, run for real for every role: PostgreSQL and Redis from
tests/services.py (skipped without them), loopback only, every wait bounded."""

from __future__ import annotations

import sqlite3
import subprocess
import time
import uuid

import httpx
import psycopg
import pytest

from tests.docker.roles import (
    CLIENT_KEY,
    Role,
    compose_healthcheck,
    container_env,
    dockerfile_healthcheck,
    migrate_lock_id,
)
from tests.servers import free_port
from tests.services import fresh_postgres_database

pytestmark = pytest.mark.slow

TABLES = ("accounts_account", "accounts_modelinfo", "django_celery_beat_periodictask",
          "proxy_requestlog", "django_migrations")


def tables(database_url: str) -> set[str]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {row[0] for row in rows}


def no_error(output: str) -> None:
    assert "Traceback" not in output, output
    assert "already exists" not in output and "duplicate key" not in output, output


# --- migrate -----------------------------------------------------------------------------------


def test_migrate_creates_the_tables_and_is_idempotent(tmp_path):
    with fresh_postgres_database() as database_url:
        env = container_env(tmp_path, DATABASE_URL=database_url)
        with Role(env, "migrate", log=tmp_path / "first.log") as first:
            assert first.wait(120) == 0, first.output()
        assert "Applying accounts.0001_initial... OK" in first.output()
        assert "migrations are up to date" in first.output()
        assert set(TABLES) <= tables(database_url)
        with psycopg.connect(database_url) as conn:
            schedule = conn.execute("SELECT name FROM django_celery_beat_periodictask").fetchall()
        assert ("refresh iFlow accounts",) in schedule

        with Role(env, "migrate", log=tmp_path / "again.log") as again:
            assert again.wait(120) == 0, again.output()
        assert "No migrations to apply." in again.output()


def test_two_migrations_started_together_both_succeed(tmp_path):
    with fresh_postgres_database() as database_url:
        roles = []
        try:
            for name in ("a", "b"):
                home = tmp_path / name
                home.mkdir()
                env = container_env(home, DATABASE_URL=database_url)
                roles.append(Role(env, "migrate", log=tmp_path / f"{name}.log"))
            for role in roles:
                assert role.wait(180) == 0, role.output()
                no_error(role.output())
        finally:
            for role in roles:
                role.kill()
        outputs = [role.output() for role in roles]
        # One applied the migrations; the other waited for the lock and found nothing to do.
        assert sum("Applying accounts.0001_initial... OK" in out for out in outputs) == 1, outputs
        assert set(TABLES) <= tables(database_url)


def test_migrate_waits_for_the_advisory_lock(tmp_path):
    with fresh_postgres_database() as database_url:
        env = container_env(tmp_path, DATABASE_URL=database_url, MIGRATE_LOCK_SECONDS="120")
        holder = psycopg.connect(database_url, autocommit=True)  # "another container"
        try:
            holder.execute("SELECT pg_advisory_lock(%s)", [migrate_lock_id()])
            with Role(env, "migrate", log=tmp_path / "migrate.log") as role:
                role.wait_for("another container is migrating", 60)
                time.sleep(1)
                assert role.running()
                assert "django_migrations" not in tables(database_url)
                holder.execute("SELECT pg_advisory_unlock(%s)", [migrate_lock_id()])
                assert role.wait(120) == 0, role.output()
        finally:
            holder.close()
        assert set(TABLES) <= tables(database_url)


def test_a_stuck_migration_lock_is_a_clear_error(tmp_path):
    with fresh_postgres_database() as database_url:
        env = container_env(tmp_path, DATABASE_URL=database_url, MIGRATE_LOCK_SECONDS="2")
        with psycopg.connect(database_url, autocommit=True) as holder:
            holder.execute("SELECT pg_advisory_lock(%s)", [migrate_lock_id()])
            with Role(env, "migrate", log=tmp_path / "migrate.log") as role:
                assert role.wait(60) != 0
        output = role.output()
        assert "held the migration lock for more than 2 s (MIGRATE_LOCK_SECONDS)" in output
        assert "Traceback" not in output


def test_sqlite_without_database_url_just_migrates(tmp_path):
    env = container_env(tmp_path)
    with Role(env, "migrate", log=tmp_path / "migrate.log") as role:
        assert role.wait(120) == 0, role.output()
    database = tmp_path / "data" / "db.sqlite3"
    with sqlite3.connect(database) as conn:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert set(TABLES) <= names


# --- waiting for the database ------------------------------------------------------------------


@pytest.mark.parametrize("role", ["migrate", "web", "worker"])
def test_an_unreachable_database_fails_clearly_within_the_wait(tmp_path, role):
    port = free_port()  # nothing listens there
    env = container_env(
        tmp_path, DATABASE_URL=f"postgresql://iflow2api:s3cret-pw@127.0.0.1:{port}/iflow2api",
        DB_WAIT_SECONDS="3", IFLOW2API_PORT=str(free_port()))
    with Role(env, role, log=tmp_path / "role.log") as proc:
        code = proc.wait(40)
        elapsed = time.monotonic() - proc.started
    output = proc.output()
    assert code != 0, output
    assert elapsed >= 2.5, output
    assert (f"the database at 127.0.0.1:{port}/iflow2api (DATABASE_URL) did not answer "
            "within 3 s (DB_WAIT_SECONDS)") in output
    assert "Connection refused" in output
    assert "s3cret-pw" not in output
    assert "Traceback" not in output
    assert "serving on" not in output and "ready." not in output


def test_any_other_command_runs_as_given_without_waiting(tmp_path):
    env = container_env(tmp_path, DATABASE_URL=f"postgresql://x@127.0.0.1:{free_port()}/x",
                        DB_WAIT_SECONDS="30")
    with Role(env, "python", "-c", "print('as given')", log=tmp_path / "cmd.log") as proc:
        assert proc.wait(30) == 0
    assert proc.output().strip() == "as given"


# --- long-running roles ------------------------------------------------------------------------


def test_web_serves_health_and_stops_on_sigterm(tmp_path, redis_queue):
    with fresh_postgres_database() as database_url:
        port = free_port()
        env = container_env(tmp_path, DATABASE_URL=database_url, REDIS_URL=redis_queue,
                            IFLOW2API_PORT=str(port))
        with Role(env, "web", log=tmp_path / "web.log") as web:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 90
            health = None
            while time.monotonic() < deadline and web.running():
                try:
                    health = httpx.get(url + "/health", timeout=2)
                    break
                except httpx.HTTPError:
                    time.sleep(0.2)
            assert health is not None and health.status_code == 200, web.output()
            assert health.json()["status"] == "degraded"  # no upstream account configured
            body = {"model": "glm-5", "messages": [{"role": "user", "content": "hi"}]}
            refused = httpx.post(url + "/v1/chat/completions", json=body, timeout=10)
            assert refused.status_code == 401  # IFLOW2API_API_KEYS is in force
            assert refused.json()["error"]["code"] == "missing_api_key"
            accepted = httpx.post(url + "/v1/chat/completions", json=body, timeout=10,
                                  headers={"authorization": f"Bearer {CLIENT_KEY}"})
            assert accepted.status_code != 401  # past the key check (no upstream: an error)
            # `exec`: the server itself has the entrypoint's pid, so SIGTERM reaches it.
            assert "serve" in web.command_line() and "--no-migrate" in web.command_line()
            # The image's and the compose file's health checks, as the engine runs them.
            for probe in (dockerfile_healthcheck(), compose_healthcheck("web")):
                check = subprocess.run(probe, env=env, capture_output=True, text=True,
                                       timeout=30)
                assert check.returncode == 0, (probe, check.stderr)
            assert web.terminate(20) == 0, web.output()
            after = subprocess.run(dockerfile_healthcheck(), env=env, capture_output=True,
                                   timeout=30)
            assert after.returncode != 0  # and it fails once the server is gone
        assert f"iflow2api serving on {url}" in web.output()
        assert "Applying accounts.0001_initial... OK" in web.output()  # the entrypoint migrated


def test_worker_starts_answers_ping_and_stops_on_sigterm(tmp_path, redis_queue):
    with fresh_postgres_database() as database_url:
        env = container_env(tmp_path, DATABASE_URL=database_url, REDIS_URL=redis_queue)
        node = f"celery@docker-test-{uuid.uuid4().hex[:8]}"
        # Extra arguments go to celery; a queue of its own keeps other tests' tasks away.
        with Role(env, "worker", "--concurrency", "1", "-n", node, "-Q", f"q-{node}",
                  log=tmp_path / "worker.log") as worker:
            worker.wait_for(f"{node} ready.", 120)
            assert "celery" in " ".join(worker.command_line())
            # The compose file's health check for the worker ($HOSTNAME: the node's host part).
            ping = subprocess.run(compose_healthcheck("worker"), cwd=env["IFLOW2API_HOME"],
                                  env={**env, "HOSTNAME": node.split("@")[1]},
                                  capture_output=True, text=True, timeout=60)
            assert ping.returncode == 0, ping.stdout + ping.stderr
            assert worker.terminate(30) == 0, worker.output()
        assert "Warm shutdown" in worker.output()


def test_beat_starts_with_the_database_schedule_and_stops_on_sigterm(tmp_path, redis_queue):
    with fresh_postgres_database() as database_url:
        # `migrate` creates the refresh schedule with this interval: beat sends it within seconds.
        env = container_env(tmp_path, DATABASE_URL=database_url, REDIS_URL=redis_queue,
                            REFRESH_CHECK_SECONDS="2")
        with Role(env, "beat", log=tmp_path / "beat.log") as beat:
            beat.wait_for("beat: Starting...", 120)
            beat.wait_for("Sending due task refresh iFlow accounts", 30)
            assert "celery" in " ".join(beat.command_line())
            assert beat.terminate(30) == 0, beat.output()
        assert "django_celery_beat.schedulers.DatabaseScheduler" in beat.output()
