"""The Runtime: everything a gateway process holds for as long as it runs, built once when the
server starts and handed to the code that needs it (no module-level singletons).

    upstream   the UpstreamClient (pooled aiohttp sessions to the providers, image fetches)
    redis      the one Redis set-up (timeouts, key namespace) when REDIS_URL is set, else None
    pool       the account pool (slots in that Redis, or in this process)
    limiter    the rate limiter (Lua in that Redis, or in this process)
    requests   the request-log writer (a queue and a writer thread)
    status     the status publisher (open streams; tells the admin's status page)
    lifecycle  graceful shutdown (draining, requests in flight, stream stop signals)
    routing    the routing snapshot: models and accounts (accounts/services.py)
    directory  the instance directory: instances, client keys, rate rules (instances/services.py)
    listeners  which instance each listening port serves (instances/runtime.py)
    metrics    the Prometheus counters, in a registry of their own (proxy/metrics.py)
    workers    the account worker threads: token refreshes, the refresh schedule
    calibration  each model's learnt token-count ratios (proxy/calibration.py; shared in Redis)
    budgets    the budgets and their spend counters (instances/budgets.py)
    responses_cleanup  when expired stored Responses API answers were last deleted

Who builds one: the ASGI application (iflow2api_site/asgi.py, i.e. `iflow2api serve` or any
ASGI server) builds the process's Runtime at start and puts it in every request's scope under
RUNTIME_SCOPE_KEY (iflow2api_lib/scope.py); the API adapter passes it to the handlers as
`ApiRequest.runtime`; admin views and the status websocket read it from the scope (an admin
change marks its snapshots stale). Management commands and Celery tasks that call upstreams
build their own UpstreamClient; tests build their own Runtime.

Loop-bound connections (redis.asyncio, aiohttp sessions) are kept per event loop inside their
owner (SharedRedis, UpstreamClient): a server has one loop, but sync code calling in through
async_to_sync and the tests (pytest-asyncio, asyncio.run) run others.

The apps keep no module-level mutable state (tests/test_architecture.py checks it, with the
exceptions it lists and why).
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
from accounts.services import Routing, routing_snapshot
from accounts.workers import AccountWorkers
from iflow2api_lib.redis_client import SharedRedis, configured
from iflow2api_lib.scope import RUNTIME_SCOPE_KEY
from iflow2api_lib.snapshot import Snapshot
from instances.budgets import LocalBudgets, RedisBudgets, build_budgets
from instances.ratelimit import LocalLimiter
from instances.runtime import Listeners
from instances.services import Directory, directory_snapshot
from instances.status import StatusPublisher
from proxy.calibration import TokenCalibration
from proxy.lifecycle import Lifecycle
from proxy.metrics import Metrics
from proxy.requestlog import RequestLogWriter
from proxy.responses_state import ExpiryCleanup
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
    # Database snapshots the hot path reads (rebuilt every couple of seconds, or at once when
    # this process changes what they hold).
    routing: Snapshot[Routing] = field(default_factory=routing_snapshot)
    directory: Snapshot[Directory] = field(default_factory=directory_snapshot)
    # The ports this process listens on (the supervisor of `iflow2api serve` registers them).
    listeners: Listeners = field(default_factory=Listeners)
    metrics: Metrics = field(default_factory=Metrics)
    workers: AccountWorkers = field(default_factory=AccountWorkers)
    # Each model's learnt ratio of the upstream's token count to our estimate (count_tokens).
    calibration: TokenCalibration = field(default_factory=TokenCalibration)
    # The budgets (a snapshot) and their spend counters (instances/budgets.py): the counters in
    # Redis with REDIS_URL, else in process.
    budgets: LocalBudgets | RedisBudgets = field(default_factory=LocalBudgets)
    # Deletes expired stored Responses API answers now and then (a server without Celery beat).
    responses_cleanup: ExpiryCleanup = field(default_factory=ExpiryCleanup)
    # The in-process token refresh (accounts/scheduler.py) of a server without Redis.
    refresh_scheduler: asyncio.Task[None] | None = None

    @classmethod
    def build(cls, *, redis_url: str | None = None, write_at_exit: bool = False) -> Runtime:
        """A Runtime from the settings (`redis_url`: REDIS_URL unless given; "" for none).
        `write_at_exit`: the request log still queued at exit is written (servers)."""
        redis = configured(redis_url)
        status = StatusPublisher(redis)
        routing = routing_snapshot()
        metrics = Metrics(routing)
        requests = RequestLogWriter(on_written=status.notify_changed, on_record=metrics.observe)
        if write_at_exit:
            atexit.register(requests.write_leftovers)
        return cls(
            upstream=build_upstream_client(),
            redis=redis,
            pool=build_pool(redis, routing),
            limiter=_limiter(redis),
            requests=requests,
            status=status,
            lifecycle=Lifecycle(),
            routing=routing,
            directory=directory_snapshot(),
            listeners=Listeners(),
            metrics=metrics,
            workers=AccountWorkers(),
            calibration=TokenCalibration(
                redis, enabled=settings.IFLOW2API["TOKEN_CALIBRATION"]),
            budgets=build_budgets(redis),
        )

    def start_refresh_scheduler(self) -> None:
        """Starts the in-process token refresh on the running loop, once."""
        if self.refresh_scheduler is None or self.refresh_scheduler.done():
            self.refresh_scheduler = scheduler.start(self.workers, self.routing)

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
