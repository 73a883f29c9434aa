"""Which account a conversation is pinned to (cache-friendly routing, docs/costs.md).

Vendors' prompt caches are per account: a conversation whose turns land on different accounts
re-bills its whole context each time. The pool prefers the pinned account while it is usable;
a pin lives AFFINITY_TTL_SECONDS after its last use. In Redis when REDIS_URL is set (every web
process sees the same pins), in this process otherwise. Keys are hashes made by the caller.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

from django.conf import settings

if TYPE_CHECKING:
    from iflow2api_lib.redis_client import SharedRedis

log = logging.getLogger(__name__)

LOCAL_MAX = 50_000  # pins kept in a process; the oldest go first


def ttl() -> float:
    return float(settings.IFLOW2API["AFFINITY_TTL_SECONDS"])


class LocalAffinity:
    def __init__(self) -> None:
        self.pins: OrderedDict[str, tuple[int, float]] = OrderedDict()  # key → (account, until)

    async def get(self, key: str) -> int | None:
        found = self.pins.get(key)
        if found is None or found[1] <= time.monotonic():
            return None
        return found[0]

    async def set(self, key: str, account_id: int) -> None:
        self.pins[key] = (account_id, time.monotonic() + ttl())
        self.pins.move_to_end(key)
        while len(self.pins) > LOCAL_MAX:
            self.pins.popitem(last=False)


class RedisAffinity:
    """Pins in the shared Redis. Redis away: no pin (routing goes on without it)."""

    def __init__(self, redis: SharedRedis) -> None:
        from redis.exceptions import RedisError

        self.redis = redis
        self.unreachable = (RedisError, OSError)

    async def get(self, key: str) -> int | None:
        try:
            value = await self.redis.client().get(self.redis.key("affinity", key))
        except self.unreachable:
            log.warning("affinity: Redis unreachable, routing without the pin")
            return None
        return int(value) if value is not None else None

    async def set(self, key: str, account_id: int) -> None:
        try:
            await self.redis.client().set(self.redis.key("affinity", key), account_id,
                                          ex=max(1, round(ttl())))
        except self.unreachable:
            log.warning("affinity: Redis unreachable, the pin is not kept")


def build_affinity(redis: SharedRedis | None) -> LocalAffinity | RedisAffinity:
    return RedisAffinity(redis) if redis is not None else LocalAffinity()
