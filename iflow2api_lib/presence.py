"""Whether an HTTP client is still there, without a task per request to find out.

ASGI says a client has gone with an `http.disconnect` message on `receive`; the usual way to
learn of it while the answer is being made is a task that awaits `receive` until then. That task
(made, first step, cancelled, its callback, and a wake-up by the server's own disconnect after
the answer) was ~2 % of a short request's CPU at c=50 (docs/benchmarks.md, seventh sitting).

`ClientPresence` is the `receive` the outermost wrapper hands down (iflow2api_lib/logs.py): reads
pass through it, and it remembers a disconnect that came before the answer was complete (the
access line's and the request log's 499). `watch(callback)` calls back once the client goes,
until the watch is closed or the answer ends.
Under Daphne, `receive` is the `get` of the request's own `asyncio.Queue`, which Daphne feeds
with `put_nowait`: the watch waits on that queue with a bare future, as `Queue.get` itself does
(a waiter in `_getters`), so nothing runs until a message comes. Any other `receive` (another
server, a test harness) is watched by a task awaiting it, as before.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]


def _queue_behind(receive: Receive) -> asyncio.Queue[Message] | None:
    """The asyncio.Queue whose plain `get` is `receive` (Daphne's), when its waiters are where
    this Python keeps them; None otherwise (then a task watches)."""
    queue = getattr(receive, "__self__", None)
    if (type(queue) is asyncio.Queue and getattr(receive, "__func__", None) is asyncio.Queue.get
            and isinstance(getattr(queue, "_getters", None), collections.deque)):
        return queue
    return None


class ClientPresence:
    """One HTTP request's `receive`, which also knows whether the client left early."""

    __slots__ = ("_queue", "_receive", "_watch", "answered", "left")

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._queue = _queue_behind(receive)
        self._watch: Watch | None = None
        self.answered = False  # the end of the answer is being sent (`answer_ends`)
        self.left = False  # the client went before the answer was complete

    async def __call__(self) -> Message:
        message = await self._receive()
        self.saw(message)
        return message

    def saw(self, message: Message) -> bool:
        """Notes a message read from the client; whether it says the client has gone."""
        if message["type"] != "http.disconnect":
            return False
        if not self.answered:
            self.left = True
        return True

    def answer_ends(self) -> None:
        """Called just before the last part of the answer is sent. A client that goes from now
        on has had its answer; the watch ends here, before the server's own `http.disconnect`
        after the answer (Daphne sends one) would wake it for nothing."""
        self.answered = True
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.close()

    @property
    def watched_without_task(self) -> bool:
        return self._queue is not None

    def watch(self, on_leave: Callable[[], None]) -> Watch:
        """Calls `on_leave` (once, from the loop) when the client goes, until the watch is
        closed. Messages other than the disconnect that arrive meanwhile are read and dropped,
        as a task awaiting `receive` would; the body must have been read before."""
        watch: Watch
        if self._queue is not None:
            watch = _QueueWatch(self, self._queue, on_leave)
        else:
            watch = _TaskWatch(self, on_leave)
        self._watch = watch
        return watch


class Watch(Protocol):
    def close(self) -> None: ...


class _QueueWatch:
    __slots__ = ("_on_leave", "_presence", "_queue", "_waiter")

    def __init__(self, presence: ClientPresence, queue: asyncio.Queue[Message],
                 on_leave: Callable[[], None]) -> None:
        # The presence holds its watch and the watch its presence until closed: the cycle is
        # broken there, so both go when the request's last reference does, not at a pass of
        # the cyclic garbage collector.
        self._presence: ClientPresence | None = presence
        self._queue = queue
        self._on_leave: Callable[[], None] | None = on_leave
        self._waiter: asyncio.Future[None] | None = None
        if queue.empty():
            self._wait()
        else:  # a message is already there: read it from the loop, as a waiting get would
            asyncio.get_running_loop().call_soon(self._woken, None)

    def _wait(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        waiter.add_done_callback(self._woken)
        self._queue._getters.append(waiter)  # type: ignore[attr-defined]
        self._waiter = waiter

    def _woken(self, waiter: asyncio.Future[None] | None) -> None:
        self._waiter = None
        presence = self._presence
        if self._on_leave is None or presence is None or (
                waiter is not None and waiter.cancelled()):
            return
        while not self._queue.empty():
            if presence.saw(self._queue.get_nowait()):
                on_leave, self._on_leave = self._on_leave, None
                on_leave()
                return
        self._wait()

    def close(self) -> None:
        self._on_leave = None
        self._presence = None
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            # Out of the queue's waiters, so that a later message goes to a later reader.
            waiter.remove_done_callback(self._woken)
            with contextlib.suppress(ValueError):
                self._queue._getters.remove(waiter)  # type: ignore[attr-defined]
            waiter.cancel()


class _TaskWatch:
    __slots__ = ("_on_leave", "_task")

    def __init__(self, presence: ClientPresence, on_leave: Callable[[], None]) -> None:
        self._on_leave: Callable[[], None] | None = on_leave
        self._task = asyncio.ensure_future(_until_gone(presence))
        self._task.add_done_callback(self._done)

    def _done(self, task: asyncio.Future[None]) -> None:
        # A `receive` that failed counts as the client gone (the request cannot go on without
        # it); the failure itself is the server's to report.
        on_leave, self._on_leave = self._on_leave, None
        if not task.cancelled():
            task.exception()  # retrieved: not logged again as "never retrieved"
            if on_leave is not None:
                on_leave()

    def close(self) -> None:
        self._on_leave = None
        self._task.cancel()


async def _until_gone(presence: ClientPresence) -> None:
    while not presence.saw(await presence._receive()):
        pass
