"""The SSE response driver shared by both APIs.

`open_stream` waits briefly for the upstream's first event so that early failures surface as
an UpstreamError (the caller answers with a proper HTTP error, or fails over to another
account). `stream_body` then commits to a 200 stream: when the first event is late it flushes
the headers (Daphne sends headers only with the first body chunk) with the session's opening
(Anthropic's message_start: a client must see it before any ping) or a keep-alive, keeps the
connection alive while the upstream is silent, turns later failures into an in-band error
event, and closes the upstream request as soon as our client goes away (the server cancels
the generator).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from django.utils.translation import gettext

from proxy.errors import ApiError
from proxy.http import SSE_HEADERS, FinalChunk, StreamResult
from proxy.lifecycle import Lifecycle
from upstream.types import FinalBatch, UpstreamError

Batches = AsyncIterator[list[dict]]


class StreamSession(Protocol):
    """Per-request translation of upstream chunks into our client's SSE bytes."""

    keepalive: bytes

    # What opens the stream when it commits before the upstream's first chunk (Anthropic:
    # message_start, which must precede any ping); [] sends a keep-alive instead.
    def start(self) -> list[bytes]: ...
    def feed(self, chunk: dict) -> list[bytes]: ...
    # Raises ApiError when the upstream's stream is not a whole answer in the session's eyes
    # (the stream then ends with `fail`, and the request log records the error).
    def close(self) -> list[bytes]: ...
    def fail(self, error: ApiError) -> list[bytes]: ...


Write = Callable[[list[dict]], Awaitable[None]]


class UpstreamReads:
    """The upstream's batches, read by one task per stream into a queue the relay takes from.

    A task and an `asyncio.wait` (a timer, callbacks on two futures) per batch were a fifth of
    the gateway's CPU with many paced streams open. Here the relay waits on one future at a
    time, which a batch, the end of the reads, the server's stop signal or the keep-alive
    interval completes; the keep-alive timer is one per stream, moved only when it fires.

    With a direct writer (`write_directly`, the lean carrier's), a batch that comes while the
    relay waits with nothing queued is written by the reading task itself: one task wakes per
    upstream read instead of two (-1.5 % of the CPU of a 2,000-stream burst, paired). The last
    batch, a failure and the end of the reads still go through the relay, which ends the stream.
    """

    def __init__(self, batches: Batches) -> None:
        self._batches = batches
        self._loop = asyncio.get_running_loop()
        self._time = self._loop.time
        self._ready: collections.deque[list[dict]] = collections.deque()
        self._failure: BaseException | None = None
        self.stopped = False  # no batch will follow those ready: the reads ended or failed
        self._waiter: asyncio.Future[None] | None = None
        self._deadline = 0.0
        self._timeout = 0.0  # the relay's keep-alive interval, from its last wait
        self._timer: asyncio.TimerHandle | None = None
        self._write: Write | None = None
        self._reader = asyncio.ensure_future(self._read())

    def write_directly(self, write: Write) -> None:
        self._write = write

    async def _read(self) -> None:
        try:
            async for batch in self._batches:
                waiter = self._waiter
                if (waiter is not None and self._write is not None and not self._ready
                        and not waiter.done() and not isinstance(batch, FinalBatch)):
                    await self._write(batch)
                    # The interval counts from the last batch, as the relay's next wait would.
                    self._deadline = self._time() + self._timeout
                    continue
                self._ready.append(batch)
                self._wake()
                if isinstance(batch, FinalBatch):
                    break  # the upstream said it is done: it is not asked again
        except Exception as exc:  # any failure ends the stream with an in-band error
            self._failure = exc  # a cycle through this frame until taken or closed
        finally:
            self.stopped = True
            self._wake()

    @property
    def has_batch(self) -> bool:
        return bool(self._ready)

    def take(self) -> list[dict] | None:
        return self._ready.popleft() if self._ready else None

    def take_failure(self) -> BaseException | None:
        """Why the reads stopped early; None when the upstream's iterator simply ended."""
        failure, self._failure = self._failure, None
        return failure

    def wake_on(self, signal: asyncio.Future[None]) -> None:
        signal.add_done_callback(self._wake)

    async def wait(self, timeout: float) -> None:
        """Until a batch is ready, the reads stop, a watched signal fires or `timeout` passed
        (then nothing is ready: time for a keep-alive)."""
        if self._ready or self.stopped:
            return
        self._timeout = timeout
        self._deadline = self._time() + timeout
        if self._timer is None or self._timer.when() > self._deadline:  # none, or too late
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._loop.call_at(self._deadline, self._tick)
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _tick(self) -> None:
        self._timer = None
        if self._waiter is None:
            return  # nobody waits; the next wait arms the timer again
        if self._time() >= self._deadline:
            self._wake()
        else:  # the deadline moved on since the timer was set
            self._timer = self._loop.call_at(self._deadline, self._tick)

    def _wake(self, _signal: object = None) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def close(self) -> None:
        """Stops reading (a read in progress is cancelled) and closes the upstream iterator."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._reader.done():
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader
        self._failure = None
        self._write = None
        self._ready.clear()
        await _close(self._batches)


async def open_stream(batches: Batches, *, prelude_seconds: float) -> UpstreamReads:
    """The stream's reads, its first batch perhaps ready; raises UpstreamError if the upstream
    failed within the prelude (the upstream request is closed then)."""
    reads = UpstreamReads(batches)
    try:
        await reads.wait(prelude_seconds)
    except BaseException:  # cancelled: the client left meanwhile, the upstream request ends
        await reads.close()
        raise
    if reads.has_batch or not reads.stopped:
        return reads
    failure = reads.take_failure()
    await reads.close()
    try:
        if isinstance(failure, UpstreamError):
            raise failure
        if failure is None:
            raise UpstreamError(502, gettext("upstream returned an empty stream"),
                                "empty_stream")
        raise UpstreamError(502, gettext("upstream stream failed: %(error)s")
                            % {"error": type(failure).__name__}, "upstream_error")
    finally:
        del failure  # this frame is in the raised error's traceback: no cycle through it


def stream_body(
    reads: UpstreamReads,
    session: StreamSession,
    *,
    lifecycle: Lifecycle,
    keepalive_seconds: float,
    on_finish: Callable[[ApiError | None], Awaitable[Any]] | None = None,
) -> StreamResult:
    error: ApiError | None = None
    finished = False
    stop = lifecycle.stop_signal()
    reads.wake_on(stop)

    async def cleanup() -> None:
        nonlocal finished
        if finished:
            return
        finished = True
        stop.cancel()
        await reads.close()
        if on_finish is not None:
            await on_finish(error)

    async def body() -> AsyncIterator[bytes]:
        nonlocal error
        try:
            if not reads.has_batch:  # committed before the first chunk: headers out now
                yield b"".join(session.start()) or session.keepalive
            while True:
                if not reads.has_batch:
                    await reads.wait(keepalive_seconds)
                if stop.done() and not stop.cancelled():
                    error = ApiError(503, gettext("the server is shutting down; retry the "
                                                  "request"), "server_shutting_down")
                    yield FinalChunk(b"".join(session.fail(error)))
                    return
                batch = reads.take()
                if batch is None:
                    if not reads.stopped:
                        yield session.keepalive
                        continue
                    failure = reads.take_failure()
                    if failure is None:
                        break  # the upstream's iterator ended
                    error = _as_api_error(failure)  # every failure becomes an in-band event
                    out = session.fail(error)
                    if out:
                        yield FinalChunk(b"".join(out))
                    return
                out = translated(batch)
                if isinstance(batch, FinalBatch):  # nothing follows: the ending goes out
                    out += ending()                 # in the same write
                    if out:
                        yield FinalChunk(b"".join(out))
                    return
                if out:
                    yield b"".join(out)
            out = ending()
            if out:
                yield FinalChunk(b"".join(out))
        finally:
            await cleanup()

    def translated(batch: list[dict]) -> list[bytes]:
        return [data for chunk in batch for data in session.feed(chunk)]

    def ending() -> list[bytes]:
        nonlocal error
        try:
            return session.close()
        except ApiError as exc:
            error = exc
            return session.fail(exc)

    def write_directly(write: Callable[[bytes], Awaitable[None]]) -> None:
        async def write_batch(batch: list[dict]) -> None:
            out = translated(batch)
            if out:
                await write(b"".join(out))

        reads.write_directly(write_batch)

    return StreamResult(body(), headers=list(SSE_HEADERS), cleanup=cleanup,
                        write_directly=write_directly)


async def _close(batches: Batches) -> None:
    aclose = getattr(batches, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()


def _as_api_error(exc: BaseException | None) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, UpstreamError):
        return ApiError.from_upstream(exc)
    return ApiError(502, gettext("upstream stream failed: %(error)s")
                    % {"error": type(exc).__name__}, "upstream_error")
