"""A value the hot path reads from memory, reloaded from the database at most every few
seconds (in a thread: the ORM is synchronous). One request at a time reloads it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from asgiref.sync import sync_to_async

T = TypeVar("T")


class Snapshot(Generic[T]):
    def __init__(self, load: Callable[[], T], ttl_seconds: float) -> None:
        self.load = load
        self.ttl_seconds = ttl_seconds
        self.value: T | None = None  # the last one loaded (None before the first)
        # None: never loaded, or marked stale. Not 0.0: the monotonic clock may be younger than
        # the TTL (a machine up for less than that), and "loaded at 0" would then look fresh.
        self.loaded_at: float | None = None
        self.lock = asyncio.Lock()

    def fresh(self) -> bool:
        return (self.value is not None and self.loaded_at is not None
                and time.monotonic() - self.loaded_at < self.ttl_seconds)

    async def get(self) -> T:
        if not self.fresh():
            async with self.lock:
                if not self.fresh():
                    self.value = await sync_to_async(self.load)()
                    self.loaded_at = time.monotonic()
        assert self.value is not None
        return self.value

    def invalidate(self) -> None:
        self.loaded_at = None
