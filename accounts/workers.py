"""The account worker threads: sync jobs (the ORM, the OAuth client) run off the event loop.

A process's `AccountWorkers` belong to its Runtime (proxy/runtime.py), which hands them to the
refresh scheduler (accounts/scheduler.py) and to the reactive refresh after a 401/439
(accounts/refresh.py); this module imports neither, so both can use it. The threads start on
first use.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from iflow2api_lib.threads import with_released_connections

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_WORKERS = 4


def _log_failure(future: Future[Any]) -> None:
    exc = future.exception()
    if exc is not None:
        log.error("background refresh job failed: %s", type(exc).__name__)


class AccountWorkers:
    """A process's worker threads for account jobs (refreshes, the refresh schedule)."""

    def __init__(self, max_workers: int = MAX_WORKERS) -> None:
        self.executor = ThreadPoolExecutor(max_workers=max_workers,
                                           thread_name_prefix="iflow2api-refresh")

    def submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T]:
        """Run `fn(*args, **kwargs)` in a worker thread; returns at once."""
        future = self.executor.submit(with_released_connections, fn, *args, **kwargs)
        future.add_done_callback(_log_failure)
        return future

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Await `fn(*args)` run in a worker thread (from the event loop)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, with_released_connections, fn, *args)
