"""The lean carrier for the API routes (FAST_PATH, the default).

Django's ASGI handler costs several thread hops per request (request signals, closing the
response) on top of routing and middleware; at proxy rates that dominates. The handlers in
chat.py, messages.py and catalog.py are framework-free, so here a request the adapter
(proxy/adapter.py: draining, in-flight count, body, cleanup) has read goes straight to its
handler: call it, send the result, cancel it when the client goes away. With FAST_PATH off,
Django and the Ninja operations (proxy/api.py) carry the same routes instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable

from proxy.adapter import Exchange, Receive, Scope, Send, encode_headers, send_json
from proxy.http import SSE_HEADERS, JsonResult, StreamResult, call_handler

SSE_START_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"),
                     *((k.encode(), v.encode()) for k, v in SSE_HEADERS)]


async def carry(exchange: Exchange, scope: Scope, receive: Receive, send: Send) -> None:
    route = exchange.route
    # From here on the client may leave at any moment: the work for it stops at once (the
    # upstream request is closed), whether it is still being prepared or already streaming.
    client_left = asyncio.ensure_future(_client_leaves(receive))
    try:
        result = await _unless_client_leaves(
            call_handler(route.handler, exchange.request, route.render_error), client_left,
            exchange)
        if isinstance(result, JsonResult):
            await send_json(send, result)
        elif result is not None:
            exchange.stream = result  # the adapter runs its cleanup however this ends
            await _send_stream(send, client_left, result)
    finally:
        client_left.cancel()


async def _client_leaves(receive: Receive) -> None:
    """Returns when the client has gone (the request body was read before)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _unless_client_leaves(
    work: Awaitable[JsonResult | StreamResult], client_left: asyncio.Future[None],
    exchange: Exchange,
) -> JsonResult | StreamResult | None:
    """The handler's result, or None when the client left first (the handler is cancelled
    at once). A result that comes just as the client leaves is returned: a stream's relay
    then ends it. A stream that comes as this request is cancelled itself goes to the
    exchange, whose cleanup the adapter runs."""
    task = asyncio.ensure_future(work)

    def stop(_left: asyncio.Future[None]) -> None:
        task.cancel()

    client_left.add_done_callback(stop)  # cheaper per request than asyncio.wait
    try:
        return await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():  # this request is cancelled itself
            if task.done() and not task.cancelled() and isinstance(task.result(), StreamResult):
                exchange.stream = task.result()
            raise
        return None
    finally:
        client_left.remove_done_callback(stop)


async def _send_stream(send: Send, client_left: asyncio.Future[None],
                       result: StreamResult) -> None:
    """Relays the stream; a disconnect cancels it at once (closing the upstream request).
    Its cleanup is the adapter's (never started or not, it runs)."""

    async def relay() -> None:
        extra = [h for h in result.headers if h not in SSE_HEADERS]
        await send({"type": "http.response.start", "status": result.status,
                    "headers": [*SSE_START_HEADERS, *encode_headers(extra)]})
        async with contextlib.aclosing(result.chunks) as chunks:
            async for chunk in chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    relay_task = asyncio.ensure_future(relay())
    try:
        await asyncio.wait({relay_task, client_left}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        relay_task.cancel()
        with contextlib.suppress(BaseException):
            await relay_task
