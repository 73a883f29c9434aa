from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.upstream import FakeUpstream
from tests.production.stack import ProductionStack, production_mode
from tests.servers import GatewayServer

FAKE_KEY = "sk-fake-iflow-key-0123456789"


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
