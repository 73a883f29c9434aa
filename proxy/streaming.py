"""The SSE response driver shared by both APIs.

It waits briefly for the upstream's first event so that early failures become a proper HTTP
error; past that it commits to a 200 stream, flushes the headers with a keep-alive (Daphne sends
headers only with the first body chunk), keeps the connection alive while the upstream is silent,
turns later failures into an in-band error event, and closes the upstream request as soon as our
client goes away (the framework cancels this generator).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from proxy.errors import ApiError
from proxy.http import SSE_HEADERS, JsonResult, StreamResult
from proxy.upstream.types import UpstreamError


class StreamSession(Protocol):
    """Per-request translation of upstream chunks into our client's SSE bytes."""

    keepalive: bytes

    def feed(self, chunk: dict) -> list[bytes]: ...
    def close(self) -> list[bytes]: ...
    def fail(self, error: ApiError) -> list[bytes]: ...


Batches = AsyncIterator[list[dict]]


async def _next(iterator: Batches) -> list[dict]:
    return await iterator.__anext__()


async def stream_response(
    batches: Batches,
    session: StreamSession,
    *,
    error_result: Callable[[ApiError], JsonResult],
    prelude_seconds: float,
    keepalive_seconds: float,
    on_finish: Callable[[ApiError | None], Any] | None = None,
) -> JsonResult | StreamResult:
    pending: asyncio.Future[list[dict]] = asyncio.ensure_future(_next(batches))
    await asyncio.wait({pending}, timeout=prelude_seconds)
    if pending.done() and pending.exception() is not None:
        exc = pending.exception()
        await _close(batches)
        error = _as_api_error(exc)
        if on_finish:
            on_finish(error)
        return error_result(error)

    async def body() -> AsyncIterator[bytes]:
        nonlocal pending
        error: ApiError | None = None
        try:
            if not pending.done():
                yield session.keepalive
            while True:
                done, _ = await asyncio.wait({pending}, timeout=keepalive_seconds)
                if not done:
                    yield session.keepalive
                    continue
                try:
                    batch = pending.result()
                except StopAsyncIteration:
                    break
                except Exception as exc:
                    error = _as_api_error(exc)
                    out = session.fail(error)
                    if out:
                        yield b"".join(out)
                    return
                pending = asyncio.ensure_future(_next(batches))
                out = [data for chunk in batch for data in session.feed(chunk)]
                if out:
                    yield b"".join(out)
            out = session.close()
            if out:
                yield b"".join(out)
        finally:
            pending.cancel()  # a no-op when done; awaiting also retrieves a finished result
            with contextlib.suppress(BaseException):
                await pending
            await _close(batches)
            if on_finish:
                on_finish(error)

    return StreamResult(body(), headers=list(SSE_HEADERS))


async def _close(chunks: Batches) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()


def _as_api_error(exc: BaseException | None) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, UpstreamError):
        return ApiError.from_upstream(exc)
    return ApiError(502, f"upstream stream failed: {type(exc).__name__}", "upstream_error")
