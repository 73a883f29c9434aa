"""The Runtime: everything a gateway process holds for as long as it runs, built once when the
server starts and handed to the code that needs it (no module-level singletons).

    upstream   the UpstreamClient (pooled aiohttp sessions to the providers, image fetches)
    redis      the one Redis set-up (timeouts, key namespace) when REDIS_URL is set, else None
    pool       the account pool (slots in that Redis, or in this process)
    limiter    the rate limiter (Lua in that Redis, or in this process)
    requests   the request-log writer (a queue and a writer thread)
    status     the status publisher (open streams; tells the admin's status page)
    lifecycle  graceful shutdown (draining, requests in flight, stream stop signals)
    calibration  each model's learnt token-count ratios (proxy/calibration.py; shared in Redis)

Who builds one: the ASGI application (iflow2api_site/asgi.py, i.e. `iflow2api serve` or any
ASGI server) builds the process's Runtime at start and puts it in every request's scope under
RUNTIME_SCOPE_KEY; the API adapter passes it to the handlers as `ApiRequest.runtime`; admin
views and the status websocket read it from the scope. Management commands and Celery tasks
that call upstreams build their own UpstreamClient; tests build their own Runtime.

Loop-bound connections (redis.asyncio, aiohttp sessions) are kept per event loop inside their
owner (SharedRedis, UpstreamClient): a server has one loop, but sync code calling in through
async_to_sync and the tests (pytest-asyncio, asyncio.run) run others.

Not in the Runtime, on purpose: the routing and directory snapshots (accounts/services.py,
instances/services.py: database read caches that model signals invalidate from any thread)
and the table of listening ports (instances/runtime.py: Django's ALLOWED_HOSTS check reads it).
"""

from __future__ import annotations

import asyncio
import atexit
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.conf import settings

from accounts import scheduler
from accounts.pool import AccountPool, build_pool
from iflow2api_lib.redis_client import SharedRedis, configured
from instances.budgets import LocalBudgets, RedisBudgets, build_budgets
from instances.ratelimit import LocalLimiter
from instances.status import RUNTIME_SCOPE_KEY, StatusPublisher
from proxy import metrics
from proxy.calibration import TokenCalibration
from proxy.lifecycle import Lifecycle
from proxy.requestlog import RequestLogWriter
from upstream.client import UpstreamClient

if TYPE_CHECKING:
    from instances.ratelimit_redis import RedisLimiter

__all__ = ["RUNTIME_SCOPE_KEY", "Runtime", "build_upstream_client", "runtime_in", "with_runtime"]

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def build_upstream_client() -> UpstreamClient:
    conf = settings.IFLOW2API
    return UpstreamClient(connect_timeout=conf["UPSTREAM_CONNECT_TIMEOUT"],
                          read_timeout=conf["UPSTREAM_READ_TIMEOUT"],
                          proxy=conf["UPSTREAM_PROXY"])


@dataclass(eq=False)
class Runtime:
    upstream: UpstreamClient
    redis: SharedRedis | None
    pool: AccountPool
    limiter: LocalLimiter | RedisLimiter
    requests: RequestLogWriter
    status: StatusPublisher
    lifecycle: Lifecycle
    # Each model's learnt ratio of the upstream's token count to our estimate (count_tokens).
    calibration: TokenCalibration = field(default_factory=TokenCalibration)
    # Budgets' spend counters (instances/budgets.py): Redis with REDIS_URL, else in process.
    budgets: LocalBudgets | RedisBudgets = field(default_factory=LocalBudgets)
    # The in-process token refresh (accounts/scheduler.py) of a server without Redis.
    refresh_scheduler: asyncio.Task[None] | None = None

    @classmethod
    def build(cls, *, redis_url: str | None = None, write_at_exit: bool = False) -> Runtime:
        """A Runtime from the settings (`redis_url`: REDIS_URL unless given; "" for none).
        `write_at_exit`: the request log still queued at exit is written (servers)."""
        redis = configured(redis_url)
        status = StatusPublisher(redis)
        requests = RequestLogWriter(on_written=status.notify_changed, on_record=metrics.observe)
        if write_at_exit:
            atexit.register(requests.write_leftovers)
        return cls(
            upstream=build_upstream_client(),
            redis=redis,
            pool=build_pool(redis),
            limiter=_limiter(redis),
            requests=requests,
            status=status,
            lifecycle=Lifecycle(),
            calibration=TokenCalibration(
                redis, enabled=settings.IFLOW2API["TOKEN_CALIBRATION"]),
            budgets=build_budgets(redis),
        )

    def start_refresh_scheduler(self) -> None:
        """Starts the in-process token refresh on the running loop, once."""
        if self.refresh_scheduler is None or self.refresh_scheduler.done():
            self.refresh_scheduler = scheduler.start()

    async def aclose(self) -> None:
        """Closes this loop's connections (tests; a server keeps them until it exits)."""
        await self.upstream.aclose()
        if self.redis is not None:
            await self.redis.aclose()


def with_runtime(runtime: Runtime, app: ASGIApp) -> ASGIApp:
    """`app` with `runtime` in every scope (HTTP and websocket) under RUNTIME_SCOPE_KEY."""

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope[RUNTIME_SCOPE_KEY] = runtime
        await app(scope, receive, send)

    return wrapped


def _limiter(redis: SharedRedis | None) -> LocalLimiter | RedisLimiter:
    if redis is None:
        return LocalLimiter()
    from instances.ratelimit_redis import RedisLimiter  # needs the optional redis package

    return RedisLimiter(redis)


def runtime_in(scope: Mapping[str, Any]) -> Runtime:
    """The process's Runtime, as the ASGI application put it in the scope."""
    return scope[RUNTIME_SCOPE_KEY]
