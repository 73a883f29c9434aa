from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.upstream import FakeUpstream
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
def gateway(fake_iflow: FakeUpstream) -> Iterator[GatewayServer]:
    """A real `iflow2api serve` whose iFlow account points at the fake upstream."""
    env = {"IFLOW_API_KEY": FAKE_KEY, "IFLOW_BASE_URL": fake_iflow.base_url}
    with GatewayServer(env) as server:
        yield server
