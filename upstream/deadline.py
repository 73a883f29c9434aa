"""The read timeout of an upstream stream (UPSTREAM_READ_TIMEOUT: the longest silent gap),
kept by one timer per stream instead of aiohttp's.

aiohttp enforces `sock_read` by cancelling its timer and scheduling a new one on every read
from the socket: a timer object, a push onto the loop's heap (compared in Python) and a cancel
per read. A paced stream is a read per event, and that was ~6 % of the gateway's CPU in a burst
of 500 streams (cProfile). Once the answer's head is in, aiohttp's timer is turned off for the
rest of the response (`ReadDeadline.of`) and each read only notes its time (`touch`). The one
timer fires when the gap would have run out; if a read came meanwhile it is set again for the
new end of the gap, else the body fails as aiohttp's own timeout fails it. No HTTP is made
here: the client (upstream/client.py) passes its response in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType
from typing import Any


class ReadDeadline:
    """`with ReadDeadline(seconds, expire) as deadline:` around a body's reads, and
    `deadline.touch()` after each; `expire()` is called once if a gap reaches `seconds`.
    Without a timeout (None or 0) it does nothing."""

    __slots__ = ("_expire", "_handle", "_loop", "_seconds", "last")

    def __init__(self, seconds: float | None, expire: Callable[[], object]) -> None:
        self._seconds = seconds or 0.0
        self._expire = expire
        self._loop = asyncio.get_running_loop()
        self.last = self._loop.time()
        self._handle: asyncio.TimerHandle | None = None
        if self._seconds:
            self._handle = self._loop.call_at(self.last + self._seconds, self._check)

    @classmethod
    def of(cls, response: Any, seconds: float | None,
           error: Callable[[str], BaseException]) -> ReadDeadline:
        """The read timeout of an aiohttp response's body: aiohttp's own timer is turned off
        for the rest of it (set again for the next request on the connection), and `error`
        (aiohttp's ServerTimeoutError) fails the body when a gap runs out. Without a timeout
        or a connection to take it from, aiohttp keeps its own."""
        connection = response.connection
        protocol = connection.protocol if connection is not None else None
        if not seconds or protocol is None or not hasattr(protocol, "read_timeout"):
            return cls(None, lambda: None)
        protocol.read_timeout = None

        def expire() -> None:
            response.content.set_exception(error("Timeout on reading data from socket"))

        return cls(seconds, expire)

    def __enter__(self) -> ReadDeadline:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def touch(self) -> None:
        """A read came: the gap starts again."""
        self.last = self._loop.time()

    def _check(self) -> None:
        due = self.last + self._seconds
        if self._loop.time() < due:  # reads came since it was set: wait for the new end
            self._handle = self._loop.call_at(due, self._check)
            return
        self._handle = None
        self._expire()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
