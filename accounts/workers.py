"""The account worker threads: sync jobs (the ORM, the OAuth client) run off the event loop.

Used by the refresh scheduler (accounts/scheduler.py) and by the reactive refresh after a
401/439 (accounts/refresh.py); it imports neither, so both can use it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from django.db import close_old_connections, connections

log = logging.getLogger(__name__)

T = TypeVar("T")

executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="iflow2api-refresh")


def in_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a sync ORM job in a worker thread with fresh, then released, connections."""
    close_old_connections()
    try:
        return fn(*args, **kwargs)
    finally:
        connections.close_all()  # this thread's connections only


def _log_failure(future: Future[Any]) -> None:
    exc = future.exception()
    if exc is not None:
        log.error("background refresh job failed: %s", type(exc).__name__)


def submit(fn: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T]:
    """Run `fn(*args, **kwargs)` in a worker thread; returns at once."""
    future = executor.submit(in_thread, fn, *args, **kwargs)
    future.add_done_callback(_log_failure)
    return future
