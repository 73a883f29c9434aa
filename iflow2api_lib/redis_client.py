"""The process's one Redis set-up: the URL, short socket timeouts and the key namespace that
the account pool, the rate limiter and the status publisher share. proxy/runtime.py builds one
per process (when REDIS_URL is set) and hands it to each of them.

Keys are `iflow2api:{<database>}:<part>:…`: account, key and instance ids are per database, so
deployments (and test databases) sharing one Redis never share counters; the braces are a
Redis Cluster hash tag, so a script touching several keys stays legal there.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # redis is an optional dependency (the `redis` extra): imported when used
    import redis
    import redis.asyncio as aredis

# A hung Redis must not hang the API: every caller either fails open (rate limiter, status) or
# answers an error (pool) after this long.
SOCKET_TIMEOUT = 2.0


def database_namespace(database: Mapping[str, Any]) -> str:
    """`iflow2api:{<10 hex>}` for a Django DATABASES entry (host, port and name)."""
    identity = f"{database.get('HOST', '')}:{database.get('PORT', '')}/{database['NAME']}"
    return "iflow2api:{" + hashlib.sha1(identity.encode()).hexdigest()[:10] + "}"


def configured(url: str | None = None) -> SharedRedis | None:
    """The set-up the settings describe (REDIS_URL unless `url`; None without one)."""
    from django.conf import settings

    url = settings.REDIS_URL if url is None else url
    return SharedRedis(url, database_namespace(settings.DATABASES["default"])) if url else None


class SharedRedis:
    """Connections to one Redis and the names of the keys in it."""

    def __init__(self, url: str, namespace: str, *,
                 socket_timeout: float = SOCKET_TIMEOUT) -> None:
        self.url = url
        self.namespace = namespace
        self.socket_timeout = socket_timeout
        # A redis.asyncio connection belongs to the event loop that opened it. A server has one
        # loop; sync code calling in through async_to_sync and pytest-asyncio tests run others.
        self._clients: dict[asyncio.AbstractEventLoop, aredis.Redis] = {}
        self._sync: redis.Redis | None = None

    def key(self, *parts: object) -> str:
        return ":".join([self.namespace, *map(str, parts)])

    def client(self) -> aredis.Redis:
        """The async client of the running loop."""
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            import redis.asyncio as aredis

            for old in [lp for lp in self._clients if lp.is_closed()]:
                del self._clients[old]
            client = self._clients[loop] = aredis.Redis.from_url(
                self.url, socket_timeout=self.socket_timeout,
                socket_connect_timeout=self.socket_timeout)
        return client

    def sync_client(self) -> redis.Redis:
        """A client for worker threads (thread-safe: it pools its connections)."""
        if self._sync is None:
            import redis

            self._sync = redis.Redis.from_url(self.url, socket_timeout=self.socket_timeout,
                                              socket_connect_timeout=self.socket_timeout)
        return self._sync

    async def aclose(self) -> None:
        """Closes the running loop's connections (tests; a server keeps them for life)."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()
