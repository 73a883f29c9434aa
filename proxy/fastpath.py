"""A lean ASGI path for the hot API routes.

Django's ASGI handler costs several thread hops per request (request signals, closing the
response) on top of routing and middleware; at proxy rates that dominates. The handlers in
chat.py, messages.py and catalog.py are framework-free, so the hot routes are served here
directly: read the body, call the handler, send the result, cancel it when the client goes
away. Everything else — and every route when FAST_PATH is off — goes through Django and Ninja,
which also document these routes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings
from django.utils.translation import gettext

from instances.runtime import instance_for_port
from proxy import catalog, chat, messages
from proxy.errors import ApiError, this_request_id
from proxy.http import (
    SSE_HEADERS,
    ApiRequest,
    JsonResult,
    StreamResult,
    body_too_large,
    call_handler,
)
from proxy.runtime import runtime_in

Handler = Callable[[ApiRequest], Awaitable[JsonResult | StreamResult]]
Renderer = Callable[[ApiError], JsonResult]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


def _routes() -> dict[tuple[str, str], tuple[Handler, Renderer]]:
    openai = chat.openai_error
    anthropic = messages.anthropic_error
    table: dict[tuple[str, str], tuple[Handler, Renderer]] = {}
    for prefix in ("/v1", ""):
        table["POST", f"{prefix}/chat/completions"] = (chat.chat_completions, openai)
        table["GET", f"{prefix}/models"] = (catalog.list_models, openai)
        for slash in ("", "/"):
            table["POST", f"{prefix}/messages{slash}"] = (messages.messages, anthropic)
            table["POST", f"{prefix}/messages/count_tokens{slash}"] = (
                messages.count_tokens, anthropic)
    table["GET", "/health"] = (catalog.health, openai)
    return table


ROUTES = _routes()
JSON_HEADERS = [(b"content-type", b"application/json")]
SSE_START_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"),
                     *((k.encode(), v.encode()) for k, v in SSE_HEADERS)]


def handles(scope: dict[str, Any]) -> bool:
    return (scope["method"], scope["path"]) in ROUTES


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    handler, render_error = ROUTES[scope["method"], scope["path"]]
    lifecycle = runtime_in(scope).lifecycle
    if lifecycle.draining:
        error = ApiError(503, gettext("the server is shutting down; retry the request"),
                         "server_shutting_down", retry_after=1)
        await _send_json(send, render_error(error))
        return
    with lifecycle.track():
        await _serve(scope, receive, send, handler, render_error)


async def _serve(scope: dict[str, Any], receive: Receive, send: Send, handler: Handler,
                 render_error: Renderer) -> None:
    body = await _read_body(scope, receive)
    if body is None:
        return  # the client left while sending
    if isinstance(body, ApiError):
        await _send_json(send, render_error(body))
        return
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    client = scope.get("client") or ("", 0)
    server = scope.get("server") or ("", None)
    request = ApiRequest(scope["method"], scope["path"], headers, body, runtime_in(scope),
                         client[0], instance_id=instance_for_port(server[1]),
                         request_id=this_request_id())
    # From here on the client may leave at any moment: the work for it stops at once (the
    # upstream request is closed), whether it is still being prepared or already streaming.
    client_left = asyncio.ensure_future(_client_leaves(receive))
    try:
        result = await _unless_client_leaves(call_handler(handler, request, render_error),
                                             client_left)
        if isinstance(result, JsonResult):
            await _send_json(send, result)
        elif result is not None:
            await _send_stream(send, client_left, result)
    finally:
        client_left.cancel()


async def _read_body(scope: dict[str, Any], receive: Receive) -> bytes | ApiError | None:
    # The listener refuses larger bodies before reading them (iflow2api_site/listener.py);
    # this holds for any other server.
    limit = settings.IFLOW2API["MAX_BODY_BYTES"]
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            return body_too_large()
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return body_too_large()
        parts.append(chunk)
        if not message.get("more_body"):
            return b"".join(parts)


def _encode_headers(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]


async def _send_json(send: Send, result: JsonResult) -> None:
    await send({"type": "http.response.start", "status": result.status,
                "headers": [*JSON_HEADERS, (b"content-length", str(len(result.body)).encode()),
                            *_encode_headers(result.headers)]})
    await send({"type": "http.response.body", "body": result.body})


async def _client_leaves(receive: Receive) -> None:
    """Returns when the client has gone (the request body was read before)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _unless_client_leaves(
    work: Awaitable[JsonResult | StreamResult], client_left: asyncio.Future[None],
) -> JsonResult | StreamResult | None:
    """The handler's result, or None when the client left first (the handler is cancelled
    at once). A result that comes just as the client leaves is returned: a stream's relay
    then ends it (and runs its cleanup)."""
    task = asyncio.ensure_future(work)

    def stop(_left: asyncio.Future[None]) -> None:
        task.cancel()

    client_left.add_done_callback(stop)  # cheaper per request than asyncio.wait
    try:
        return await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():  # this request is cancelled itself
            raise
        return None
    finally:
        client_left.remove_done_callback(stop)


async def _send_stream(send: Send, client_left: asyncio.Future[None],
                       result: StreamResult) -> None:
    """Relays the stream; a disconnect cancels it at once (closing the upstream request)."""

    async def relay() -> None:
        extra = [h for h in result.headers if h not in SSE_HEADERS]
        await send({"type": "http.response.start", "status": result.status,
                    "headers": [*SSE_START_HEADERS, *_encode_headers(extra)]})
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
        if result.cleanup is not None:
            await result.cleanup()
