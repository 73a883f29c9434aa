#!/bin/sh
# iflow2api container entrypoint: wait for the database, migrate once, start a role.
#
#   web      iflow2api serve --no-migrate (Daphne) on ${IFLOW2API_HOST:-0.0.0.0}:${IFLOW2API_PORT:-28000}
#   worker   celery -A iflow2api_site worker -l info   (extra arguments are passed on)
#   beat     celery -A iflow2api_site beat -l info -S django
#   migrate  wait for the database, migrate, exit
#   other    run as given (exec "$@"), without waiting or migrating: `… run --rm web sh`
#
# Environment:
#   DATABASE_URL          when set, wait up to DB_WAIT_SECONDS (default 60) for it to answer
#   MIGRATE_ON_START      true (default): web, worker and beat migrate before starting
#   MIGRATE_LOCK_SECONDS  how long to wait for another container's migration (default 600)
#
# Several containers may start at once: on PostgreSQL `migrate` runs under a session advisory
# lock, so one migrates and the others wait, then find nothing left to do. (A transaction-mode
# pooler such as PgBouncer between us and PostgreSQL breaks session locks: point DATABASE_URL
# at PostgreSQL itself for the entrypoint.) Every role ends in `exec`, so signals reach it.
set -eu

# Any fixed 64-bit number, the same in every container of a deployment.
MIGRATE_LOCK_ID=7280124202606

log() {
    printf 'iflow2api-entrypoint: %s\n' "$*" >&2
}

is_true() {
    case "$(printf '%s' "${1:-}" | tr '[:upper:]' '[:lower:]')" in
        1 | true | yes | on) return 0 ;;
        *) return 1 ;;
    esac
}

check_home() {
    home="${IFLOW2API_HOME:-}"
    if [ -n "$home" ] && [ -d "$home" ] && [ ! -w "$home" ]; then
        log "$home (IFLOW2API_HOME) is not writable by uid $(id -u); for a bind mount:" \
            "chown -R $(id -u):$(id -g) <host directory>"
        exit 1
    fi
}

# Poll the database through Django's own connection until it answers, for DB_WAIT_SECONDS.
wait_for_database() {
    [ -n "${DATABASE_URL:-}" ] || return 0
    DATABASE_POOL=false python - "${DB_WAIT_SECONDS:-60}" <<'PY'
import os
import sys
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "iflow2api_site.settings")
import django

django.setup()
from django.db import connection

limit = float(sys.argv[1])
params = connection.settings_dict
where = f"{params.get('HOST') or 'localhost'}:{params.get('PORT') or 5432}/{params.get('NAME')}"
if connection.vendor == "postgresql":
    # One attempt must not outlast the whole wait (libpq's minimum is 2 s).
    params.setdefault("OPTIONS", {})["connect_timeout"] = max(2, min(10, int(limit)))
deadline = time.monotonic() + limit
attempt = 0
while True:
    attempt += 1
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        break
    except Exception as exc:  # refused, DNS not there yet, starting up, auth: all retried
        error = " ".join(str(exc).split()) or type(exc).__name__
        connection.close()
        if time.monotonic() + 1 >= deadline:
            sys.exit(f"iflow2api-entrypoint: the database at {where} (DATABASE_URL) did not "
                     f"answer within {limit:g} s (DB_WAIT_SECONDS), {attempt} attempts; "
                     f"last error: {error}")
        if attempt == 1:
            print(f"iflow2api-entrypoint: waiting for the database at {where} "
                  f"(up to {limit:g} s): {error}", file=sys.stderr, flush=True)
        time.sleep(1)
connection.close()
if attempt > 1:
    print(f"iflow2api-entrypoint: the database at {where} is up", file=sys.stderr, flush=True)
PY
}

# `migrate` once: on PostgreSQL under an advisory lock held by this same session.
migrate() {
    DATABASE_POOL=false python - "$MIGRATE_LOCK_ID" "${MIGRATE_LOCK_SECONDS:-600}" <<'PY'
import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "iflow2api_site.settings")
import django

django.setup()
from django.core.management import call_command
from django.db import OperationalError, connection

lock_id, wait = int(sys.argv[1]), float(sys.argv[2])


def say(message):
    print(f"iflow2api-entrypoint: {message}", file=sys.stderr, flush=True)


if connection.vendor != "postgresql":
    call_command("migrate", interactive=False)
    sys.exit(0)

with connection.cursor() as cursor:
    cursor.execute("SELECT pg_try_advisory_lock(%s)", [lock_id])
    if not cursor.fetchone()[0]:
        say(f"another container is migrating; waiting for it (up to {wait:g} s, "
            "MIGRATE_LOCK_SECONDS)")
        cursor.execute("SELECT set_config('lock_timeout', %s, false)", [f"{int(wait * 1000)}ms"])
        try:
            cursor.execute("SELECT pg_advisory_lock(%s)", [lock_id])
        except OperationalError:
            sys.exit(f"iflow2api-entrypoint: another container held the migration lock for "
                     f"more than {wait:g} s (MIGRATE_LOCK_SECONDS); is a migration stuck?")
        cursor.execute("SELECT set_config('lock_timeout', '0', false)")
    cursor.execute("SELECT pg_backend_pid()")
    session = cursor.fetchone()[0]
try:
    call_command("migrate", interactive=False)
finally:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        if cursor.fetchone()[0] != session:  # the lock went with the old session
            say("warning: the database session changed during migrate")
        cursor.execute("SELECT pg_advisory_unlock(%s)", [lock_id])
PY
}

prepare() {
    check_home
    wait_for_database
    if is_true "${MIGRATE_ON_START:-true}"; then
        migrate
    fi
}

role="${1:-web}"
[ "$#" -eq 0 ] || shift

case "$role" in
    web)
        prepare
        exec iflow2api serve --no-migrate \
            --host "${IFLOW2API_HOST:-0.0.0.0}" --port "${IFLOW2API_PORT:-28000}" "$@"
        ;;
    worker)
        prepare
        exec celery -A iflow2api_site worker -l "${CELERY_LOG_LEVEL:-info}" "$@"
        ;;
    beat)
        prepare
        exec celery -A iflow2api_site beat -l "${CELERY_LOG_LEVEL:-info}" -S django "$@"
        ;;
    migrate)
        check_home
        wait_for_database
        migrate
        log "migrations are up to date"
        ;;
    *)
        exec "$role" "$@"
        ;;
esac
