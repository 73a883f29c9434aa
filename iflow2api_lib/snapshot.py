"""A value the hot path reads from memory, reloaded from the database at most every few
seconds (in a thread: the ORM is synchronous).

Never older than its TTL: past the TTL, or once marked stale, the next caller starts a reload
and every caller waits for that one load, all of them woken together when it is done. (They
used to queue on a lock, each woken by the one before it a loop pass later: in a burst of 500
new streams after a quiet moment, admission took ~270 ms for a load of ~60 ms.) Under steady
traffic the load happens before that: a
call in the second half of the TTL starts one reload in the background and gets the current
value, so requests do not queue behind a reload every TTL (a c=50 tail of the benchmark).
Nobody waits for that reload, so it runs in a thread of its own at the lowest CPU priority
(iflow2api_lib/threads.py): at normal priority the reloads were a fifth of the c=1 p99. That
thread gives its database connection back after each load: with PostgreSQL's pool (a few
connections a process) a connection kept by an idle thread is one that requests then wait for
(30 s, then a PoolTimeout).

With a `version` (a cheap read of a number that moves whenever the loaded rows change:
accounts/config_version.py), a reload past the TTL first reads the number and keeps the value
when it has not moved; a snapshot marked stale, one without a number, and one fully loaded
more than FULL_RELOAD_SECONDS ago load in full (what the number could miss is never older
than that)."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

from asgiref.sync import sync_to_async

from iflow2api_lib.threads import low_priority_executor, with_released_connections

T = TypeVar("T")

FULL_RELOAD_SECONDS = 30.0

log = logging.getLogger(__name__)


class Snapshot(Generic[T]):
    def __init__(self, load: Callable[[], T], ttl_seconds: float,
                 version: Callable[[], object | None] | None = None) -> None:
        self.load = load
        self.ttl_seconds = ttl_seconds
        self.version = version
        self.loaded_version: object | None = None  # the number the value was loaded at
        self.fully_loaded_at: float | None = None
        self.value: T | None = None  # the last one loaded (None before the first)
        # None: never loaded, or marked stale. Not 0.0: the monotonic clock may be younger than
        # the TTL (a machine up for less than that), and "loaded at 0" would then look fresh.
        self.loaded_at: float | None = None
        # Bumped by invalidate(): a load that began before the mark must not make its (older)
        # value look fresh.
        self.generation = 0
        self.lock = asyncio.Lock()  # one reload at a time: a caller's or the background's
        self.loading: asyncio.Task[None] | None = None  # the reload callers wait for, if one runs
        self.loading_generation = 0  # the generation it began at
        self.refresh: asyncio.Task[None] | None = None  # the background reload, if one runs
        self.background: ThreadPoolExecutor | None = None  # its thread, made on first use
        # The loaded_at of a value whose background reload failed: not tried again for it (a
        # database that is down is not asked on every call); past the TTL a caller reloads.
        self.refresh_failed_for: float | None = None

    def age(self) -> float | None:
        if self.value is None or self.loaded_at is None:
            return None
        return time.monotonic() - self.loaded_at

    def fresh(self) -> bool:
        age = self.age()
        return age is not None and age < self.ttl_seconds

    async def get(self) -> T:
        age = self.age()
        if age is not None and age < self.ttl_seconds:
            if age >= self.ttl_seconds / 2:
                self._refresh_ahead()
            assert self.value is not None
            return self.value
        loop = asyncio.get_running_loop()
        loading = self.loading
        if (loading is None or loading.done() or loading.get_loop() is not loop
                or self.loading_generation != self.generation):
            # A task of its own, in a context of its own: a caller that goes away (its client
            # left) does not cancel the load the others wait for. Marked stale since that load
            # began (a change made here), a caller waits for a load that began after the mark.
            loading = self.loading = loop.create_task(
                self._reload_when_stale(), name="snapshot-load", context=contextvars.Context())
            self.loading_generation = self.generation
            loading.add_done_callback(_retrieved)
        await asyncio.shield(loading)
        # Marked stale while it loaded: the callers waiting now still get what it read.
        assert self.value is not None
        return self.value

    async def _reload_when_stale(self) -> None:
        async with self.lock:
            if not self.fresh():  # a background reload may have finished meanwhile
                await self._reload()

    def invalidate(self) -> None:
        self.loaded_at = None
        self.generation += 1

    async def _reload(self, *, background: bool = False) -> None:
        generation = self.generation
        full = self.loaded_at is None  # never loaded, or marked stale
        if background:
            if self.background is None:
                self.background = low_priority_executor("snapshot-refresh")
            loaded = await asyncio.get_running_loop().run_in_executor(
                self.background, with_released_connections, self._fetch, full)
        else:  # the process's thread for sync code: the load's context is no request's
            loaded = await sync_to_async(self._fetch)(full)
        if loaded is not None:
            self.value, self.loaded_version, self.fully_loaded_at = loaded
        # Marked stale meanwhile: keep the value for the callers waiting now, load again next.
        self.loaded_at = time.monotonic() if generation == self.generation else None

    def _fetch(self, full: bool) -> tuple[T, object | None, float] | None:
        """(value, its version, when) from the database, or None when the version says the
        value is still the current one (runs in a thread)."""
        version = self.version() if self.version is not None else None
        if (not full and version is not None and version == self.loaded_version
                and self.value is not None and self.fully_loaded_at is not None
                and time.monotonic() - self.fully_loaded_at < FULL_RELOAD_SECONDS):
            return None
        # The number is read before the rows: a change between the two is loaded now and
        # loaded again at the next check, never missed.
        return self.load(), version, time.monotonic()

    def _refresh_ahead(self) -> None:
        loop = asyncio.get_running_loop()
        running = self.refresh
        if running is not None and not running.done() and running.get_loop() is loop:
            return
        if self.refresh_failed_for is not None and self.refresh_failed_for == self.loaded_at:
            return
        # A fresh context: the reload belongs to no request (its logs carry no request id).
        self.refresh = loop.create_task(self._refresh_quietly(), name="snapshot-refresh",
                                        context=contextvars.Context())

    async def _refresh_quietly(self) -> None:
        try:
            async with self.lock:
                age = self.age()
                if age is None or age >= self.ttl_seconds / 2:  # nobody reloaded meanwhile
                    await self._reload(background=True)
        except Exception:
            # The value stays; past the TTL a caller reloads it and sees the error itself.
            self.refresh_failed_for = self.loaded_at
            log.warning("reloading a snapshot in the background failed", exc_info=True)


def _retrieved(task: asyncio.Task[None]) -> None:
    """Its failure reaches the callers waiting for it; none left (all gone) is not an error to
    log as never retrieved."""
    if not task.cancelled():
        task.exception()
