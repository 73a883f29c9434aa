"""One number that grows with every change to the configuration the gateway serves from
(accounts, models, instances, client keys, rate rules, budgets), kept by the database itself.

The snapshots (iflow2api_lib/snapshot.py) read it every second or so under traffic and reload
only when it moved: a full reload is a dozen ORM queries (~9 ms of CPU, holding the GIL in
slices the event loop waits behind), the version one indexed row. Triggers keep it, not
Django signals: QuerySet.update(), raw SQL and other processes change rows too.
- SQLite: a row trigger per table and event, in the writer's transaction.
- PostgreSQL: deferred constraint triggers, so the counter's row is locked only at commit,
  the last thing a transaction does (locked at each statement, two transactions touching
  rows in opposite orders could deadlock on it); a TRUNCATE bumps it too.
Either way the new number is visible exactly when the change is: a reader that reads the
number before the rows never keeps older rows under a newer number.
"""

from __future__ import annotations

from typing import Any

from django.db import close_old_connections, connection

TABLE = "iflow2api_config_version"
_FUNCTION = "iflow2api_bump_config_version"
_BUMP = f"UPDATE {TABLE} SET version = version + 1 WHERE id = 1"


def read() -> int | None:
    """The current number; None when it cannot be told (no counter row: always reload).
    Runs outside Django's request cycle, like the loaders: a broken connection is dropped
    first."""
    close_old_connections()
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT version FROM {TABLE} WHERE id = 1")
        row = cursor.fetchone()
    return int(row[0]) if row else None


def _trigger(table: str) -> str:
    return f"{TABLE}_{table}"[:63]  # PostgreSQL's identifier limit


def _kept_by_triggers(schema_editor: Any) -> bool:
    return schema_editor.connection.vendor in ("postgresql", "sqlite")


def create_counter(schema_editor: Any) -> None:
    """On another database (not supported, but Django could run on it) there is no row:
    the snapshots then always load in full, as they did before the number."""
    run = schema_editor.execute
    run(f"CREATE TABLE {TABLE} (id integer PRIMARY KEY, version bigint NOT NULL)")
    if not _kept_by_triggers(schema_editor):
        return
    run(f"INSERT INTO {TABLE} (id, version) VALUES (1, 1)")
    if schema_editor.connection.vendor == "postgresql":
        run(f"CREATE FUNCTION {_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN {_BUMP}; RETURN NULL; END $$")


def drop_counter(schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP FUNCTION IF EXISTS {_FUNCTION}() CASCADE")
    schema_editor.execute(f"DROP TABLE IF EXISTS {TABLE}")


def watch(schema_editor: Any, tables: list[str]) -> None:
    """Every insert, update and delete on `tables` bumps the number."""
    if not _kept_by_triggers(schema_editor):
        return
    run = schema_editor.execute
    for table in tables:
        name = _trigger(table)
        if schema_editor.connection.vendor == "postgresql":
            run(f'CREATE CONSTRAINT TRIGGER "{name}" AFTER INSERT OR UPDATE OR DELETE '
                f'ON "{table}" DEFERRABLE INITIALLY DEFERRED FOR EACH ROW '
                f"EXECUTE FUNCTION {_FUNCTION}()")
            run(f'CREATE TRIGGER "{name}_t" AFTER TRUNCATE ON "{table}" '
                f"FOR EACH STATEMENT EXECUTE FUNCTION {_FUNCTION}()")
        else:
            for event in ("INSERT", "UPDATE", "DELETE"):
                run(f'CREATE TRIGGER "{name}_{event.lower()}" AFTER {event} ON "{table}" '
                    f"BEGIN {_BUMP}; END")


def unwatch(schema_editor: Any, tables: list[str]) -> None:
    if not _kept_by_triggers(schema_editor):
        return
    run = schema_editor.execute
    for table in tables:
        name = _trigger(table)
        if schema_editor.connection.vendor == "postgresql":
            run(f'DROP TRIGGER IF EXISTS "{name}" ON "{table}"')
            run(f'DROP TRIGGER IF EXISTS "{name}_t" ON "{table}"')
        else:
            for event in ("insert", "update", "delete"):
                run(f'DROP TRIGGER IF EXISTS "{name}_{event}"')


def tables_of(apps: Any, fields: dict[str, tuple[str, ...]]) -> list[str]:
    """The tables of the models named in `fields` (app_label.Model: its many-to-many fields,
    whose link tables are watched too), from the migration's historical models."""
    tables = []
    for label, m2m in fields.items():
        model = apps.get_model(label)
        tables.append(model._meta.db_table)
        tables += [model._meta.get_field(f).remote_field.through._meta.db_table for f in m2m]
    return tables
