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
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from django.utils.translation import gettext

from proxy.errors import ApiError
from proxy.http import SSE_HEADERS, StreamResult
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


async def _next(iterator: Batches) -> list[dict]:
    return await iterator.__anext__()


async def open_stream(batches: Batches, *, prelude_seconds: float) -> asyncio.Future[list[dict]]:
    """The pending first batch; raises UpstreamError if the upstream failed within the
    prelude (the upstream request is closed then)."""
    pending: asyncio.Future[list[dict]] = asyncio.ensure_future(_next(batches))
    try:
        await asyncio.wait({pending}, timeout=prelude_seconds)
    except BaseException:  # cancelled: the client left meanwhile, the upstream request ends
        pending.cancel()
        with contextlib.suppress(BaseException):
            await pending
        await _close(batches)
        raise
    if pending.done() and pending.exception() is not None:
        exc = pending.exception()
        await _close(batches)
        if isinstance(exc, UpstreamError):
            raise exc
        if isinstance(exc, StopAsyncIteration):
            raise UpstreamError(502, gettext("upstream returned an empty stream"), "empty_stream")
        raise UpstreamError(502, gettext("upstream stream failed: %(error)s")
                            % {"error": type(exc).__name__}, "upstream_error")
    return pending


def stream_body(
    batches: Batches,
    pending: asyncio.Future[list[dict]],
    session: StreamSession,
    *,
    lifecycle: Lifecycle,
    keepalive_seconds: float,
    on_finish: Callable[[ApiError | None], Awaitable[Any]] | None = None,
) -> StreamResult:
    error: ApiError | None = None
    finished = False
    stop = lifecycle.stop_signal()

    async def cleanup() -> None:
        nonlocal finished
        if finished:
            return
        finished = True
        stop.cancel()
        if not pending.done():
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
        elif not pending.cancelled():
            pending.exception()  # retrieved (not raised: see body), so asyncio logs nothing
        await _close(batches)
        if on_finish is not None:
            await on_finish(error)

    async def body() -> AsyncIterator[bytes]:
        nonlocal pending, error
        try:
            if not pending.done():  # committed before the first chunk: headers out now
                yield b"".join(session.start()) or session.keepalive
            while True:
                if not pending.done():  # often it is: read while the last batch was sent
                    await asyncio.wait({pending, stop}, timeout=keepalive_seconds,
                                       return_when=asyncio.FIRST_COMPLETED)
                if stop.done() and not stop.cancelled():
                    error = ApiError(503, gettext("the server is shutting down; retry the "
                                                  "request"), "server_shutting_down")
                    yield b"".join(session.fail(error))
                    return
                if not pending.done():
                    yield session.keepalive
                    continue
                # The outcome is read, never re-raised here: a raise would add this frame to
                # the traceback of the exception the task keeps, a reference cycle (frame →
                # task → exception → frame) holding the whole request until a full
                # garbage-collector pass, which under load is what costs the most.
                failure = pending.exception()
                if isinstance(failure, StopAsyncIteration):
                    break
                if failure is not None:  # every failure becomes an in-band event
                    error = _as_api_error(failure)
                    out = session.fail(error)
                    if out:
                        yield b"".join(out)
                    return
                batch = pending.result()
                final = isinstance(batch, FinalBatch)
                if not final:
                    pending = asyncio.ensure_future(_next(batches))
                out = [data for chunk in batch for data in session.feed(chunk)]
                if final:  # nothing follows: the ending goes out in the same write
                    out += ending()
                    if out:
                        yield b"".join(out)
                    return
                if out:
                    yield b"".join(out)
            out = ending()
            if out:
                yield b"".join(out)
        finally:
            await cleanup()

    def ending() -> list[bytes]:
        nonlocal error
        try:
            return session.close()
        except ApiError as exc:
            error = exc
            return session.fail(exc)

    return StreamResult(body(), headers=list(SSE_HEADERS), cleanup=cleanup)


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
