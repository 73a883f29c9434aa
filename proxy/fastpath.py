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

from iflow2api_lib.presence import ClientPresence
from proxy.adapter import Exchange, Receive, Scope, Send, encode_headers, send_json
from proxy.http import SSE_HEADERS, FinalChunk, JsonResult, StreamResult, call_handler

SSE_START_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"),
                     *((k.encode(), v.encode()) for k, v in SSE_HEADERS)]


async def carry(exchange: Exchange, scope: Scope, receive: Receive, send: Send) -> None:
    route = exchange.route
    # From here on the client may leave at any moment: the work for it stops at once (the
    # upstream request is closed), whether it is still being prepared or already streaming.
    # The handler and the relay run in this request's own task, which the client's leaving
    # cancels: a task of their own each cost two loop passes and a task per request.
    watch = _ClientWatch(receive)
    try:
        result = await call_handler(route.handler, exchange.request, route.render_error)
        if isinstance(result, JsonResult):
            await send_json(send, result)
        else:
            exchange.stream = result  # the adapter runs its cleanup however this ends
            await _relay(send, result)
    except asyncio.CancelledError:
        if not watch.stopped_us():
            raise  # cancelled for another reason (the server's own shutdown): not ours
    finally:
        watch.close()


class _ClientWatch:
    """Cancels the current task when the client goes away (the request body was read
    before), until closed. The server's `receive` is watched without a task of its own where
    it can be (iflow2api_lib/presence.py)."""

    __slots__ = ("_cancelled", "_task", "_watch")

    def __init__(self, receive: Receive) -> None:
        self._task = asyncio.current_task()
        self._cancelled = False
        presence = receive if isinstance(receive, ClientPresence) else ClientPresence(receive)
        self._watch = presence.watch(self._left)

    def _left(self) -> None:
        # Closed, the watch does nothing: a callback scheduled just before must not cancel
        # what follows the answer (the stream's cleanup, the access line).
        if self._task is not None:
            self._cancelled = True
            self._task.cancel()

    def stopped_us(self) -> bool:
        """Whether the CancelledError being handled came from the client's leaving (and from
        nothing else): then it is consumed."""
        if self._task is None or not self._cancelled:
            return False
        self._cancelled = False
        return self._task.uncancel() == 0

    def close(self) -> None:
        if self._task is not None and self._cancelled:
            # The handler swallowed our cancel (a cleanup that suppresses it): give the
            # request back, so what follows does not see it as being cancelled.
            self._task.uncancel()
        self._task = None
        self._watch.close()


async def _relay(send: Send, result: StreamResult) -> None:
    """Relays the stream; its cleanup is the adapter's (started or not, it runs). The last
    chunk waits for the stream's own cleanup (the account's lease, the request log, the rate
    rule's slot) and goes with the end of the response: a client that has the whole answer
    finds the request settled, and the server sends it in one write (tuning.corked_replies)."""
    extra = [h for h in result.headers if h not in SSE_HEADERS]
    await send({"type": "http.response.start", "status": result.status,
                "headers": [*SSE_START_HEADERS, *encode_headers(extra)]})
    last = b""

    def write(chunk: bytes) -> Awaitable[None]:  # the server's own coroutine: no extra frame
        return send({"type": "http.response.body", "body": chunk, "more_body": True})

    if result.write_directly is not None:
        result.write_directly(write)
    try:
        async with contextlib.aclosing(result.chunks) as chunks:
            async for chunk in chunks:
                if type(chunk) is FinalChunk:
                    last = chunk
                    continue
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except Exception:
        if last:  # the cleanup failed once the answer was whole: the client still gets it all
            await send({"type": "http.response.body", "body": last, "more_body": True})
        raise
    await send({"type": "http.response.body", "body": last})
