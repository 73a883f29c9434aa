from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.docker.roles import DOCKER_REDIS_URL
from tests.services import require_redis


@pytest.fixture
def redis_queue() -> Iterator[str]:
    """The Redis database the container tests use (theirs alone), emptied afterwards: beat's
    task, the worker's queue bindings."""
    require_redis()
    yield DOCKER_REDIS_URL
    import redis

    redis.Redis.from_url(DOCKER_REDIS_URL).flushdb()
