from __future__ import annotations

from collections.abc import Generator, Iterator

import pytest
from django.db import connections
from pytest_django.plugin import blocking_manager_key

from tests.fakes.upstream import FakeUpstream
from tests.production.stack import ProductionStack, production_mode
from tests.servers import GatewayServer

FAKE_KEY = "sk-fake-iflow-key-0123456789"


# --- transactional database tests leave the migrated data behind them ----------------------------
# A transactional test (`django_db(transaction=True)`) ends by emptying every table, the rows the
# migrations made (the model catalogue, the refresh schedule, content types, permissions)
# included. Run alone, pytest-django orders those tests after the others; spread over workers
# (`pytest -n`, scripts/test) a worker may take another file after one, so each such test
# puts the migrated data back once its database is emptied.


def _flushes_database(item: pytest.Item) -> bool:
    marker = item.get_closest_marker("django_db")
    return bool(marker and marker.kwargs.get("transaction"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _flushes_database(item):
            # serialized_rollback: pytest-django keeps the migrated data (serialised once, when
            # the test database is made) for _restore_migrated_data to load.
            marker = item.get_closest_marker("django_db")
            assert marker is not None
            item.add_marker(pytest.mark.django_db(
                *marker.args, **{**marker.kwargs, "serialized_rollback": True}), append=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Generator:
    try:
        return (yield)  # the fixtures' teardown: pytest-django empties the tables here
    finally:
        if _flushes_database(item):
            _restore_migrated_data(item.config)


def _restore_migrated_data(config: pytest.Config) -> None:
    with config.stash[blocking_manager_key].unblock():
        for connection in connections.all(initialized_only=True):
            contents = getattr(connection, "_test_serialized_contents", None)
            if contents:
                connection.creation.deserialize_db_from_string(contents)
            connection.close()


@pytest.fixture(scope="session")
def fake_iflow() -> Iterator[FakeUpstream]:
    with FakeUpstream(api_key=FAKE_KEY, flavor="iflow") as fake:
        yield fake


@pytest.fixture
def upstream(fake_iflow: FakeUpstream) -> Iterator[FakeUpstream]:
    """The session's fake iFlow, with an empty script and record for this test."""
    fake_iflow.reset()
    yield fake_iflow
    fake_iflow.reset()


@pytest.fixture(scope="session")
def gateway(fake_iflow: FakeUpstream) -> Iterator[GatewayServer | ProductionStack]:
    """A real `iflow2api serve` whose iFlow account points at the fake upstream.

    With IFLOW2API_TEST_STACK=production: the whole production stack instead (PostgreSQL,
    Redis, two web processes behind nginx, a Celery worker and beat; tests/production/stack.py),
    so the same tests run across both web processes through nginx."""
    env = {"IFLOW_API_KEY": FAKE_KEY, "IFLOW_BASE_URL": fake_iflow.base_url}
    if production_mode():
        # Redis database 15 is this stack's alone (tests/production/test_stack.py uses 13).
        with ProductionStack(env, redis_db=15) as stack:
            yield stack
        return
    with GatewayServer(env) as server:
        yield server
