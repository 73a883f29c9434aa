"""The read timeout of an upstream stream (UPSTREAM_READ_TIMEOUT: the longest silent gap),
kept by one timer per stream instead of aiohttp's.

aiohttp enforces `sock_read` by cancelling its timer and scheduling a new one on every read
from the socket: a timer object, a push onto the loop's heap (compared in Python) and a cancel
per read. A paced stream is a read per event, and that was ~6 % of the gateway's CPU in a burst
of 500 streams (cProfile). Here, once the answer's head is in, aiohttp's timer is turned off
for the rest of the response and each read only notes its time (`touch`). The one timer fires
when the gap would have run out; if a read came meanwhile it is set again for the new end of
the gap, else the response's body fails as aiohttp's own timeout fails it (ServerTimeoutError,
so the caller's handling does not change).
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any

import aiohttp


class ReadDeadline:
    """`with ReadDeadline(response, seconds) as deadline:` around the body's reads, and
    `deadline.touch()` after each. Without a timeout (None or 0) or a connection to take it
    from, it does nothing and aiohttp keeps its own."""

    __slots__ = ("_content", "_handle", "_loop", "_seconds", "last")

    def __init__(self, response: aiohttp.ClientResponse, seconds: float | None) -> None:
        self._handle: asyncio.TimerHandle | None = None
        self._seconds = seconds or 0.0
        self._loop = asyncio.get_running_loop()
        self._content = response.content
        self.last = self._loop.time()
        connection = response.connection
        protocol: Any = connection.protocol if connection is not None else None
        if not self._seconds or protocol is None or not hasattr(protocol, "read_timeout"):
            return
        # aiohttp's timer for this response goes at its next read (it is set again for the
        # next request on this connection); ours is due at the same moment.
        protocol.read_timeout = None
        self._handle = self._loop.call_at(self.last + self._seconds, self._check)

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
        self._content.set_exception(
            aiohttp.ServerTimeoutError("Timeout on reading data from socket"))

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
