"""The one adapter between the ASGI server and the API handlers, beneath both carriers (the lean
path in proxy/fastpath.py and Django with the Ninja operations in proxy/api.py).

It owns what must hold whichever carries the request:
- while the server drains, new requests get 503 `server_shutting_down` in the client's shape;
- every request is counted in flight until its response has ended (a graceful shutdown waits);
- the body is read here, within MAX_BODY_BYTES (413 in the client's shape);
- a stream's cleanup (the account's pool slot, the rate-limit stream slot, the upstream request,
  the request log) runs on every exit: also when the stream is never started because the client
  left before its first byte, or Django never iterated it, or the request task was cancelled.
  Carriers hand the stream over with `Exchange.stream`; the adapter's `finally` runs whatever
  cleanup is still due (StreamResult.cleanup is idempotent).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from django.utils import translation
from django.utils.translation import gettext

from iflow2api_lib.conf import gateway
from iflow2api_lib.i18n import api_language
from proxy.errors import ApiError, this_request_id
from proxy.http import ApiRequest, JsonResult, StreamResult, body_too_large
from proxy.lifecycle import Lifecycle
from proxy.routes import Route
from proxy.runtime import runtime_in

Scope = dict[str, Any]
Message = dict[str, Any]
Send = Callable[[Message], Awaitable[None]]
Receive = Callable[[], Awaitable[Message]]
JSON_HEADERS = [(b"content-type", b"application/json")]
EXCHANGE = "iflow2api.exchange"  # the scope key carrying it through Django to the operation


class Exchange:
    """One API request on its way through a carrier: the request, and the stream the handler
    answered with (set by the carrier as soon as it has it)."""

    __slots__ = ("request", "route", "stream")

    def __init__(self, route: Route, request: ApiRequest) -> None:
        self.route = route
        self.request = request
        self.stream: StreamResult | None = None

    async def finish(self) -> None:
        """Runs the stream's cleanup if it has not run yet."""
        stream, self.stream = self.stream, None
        if stream is not None and stream.cleanup is not None:
            await stream.cleanup()


Carrier = Callable[[Exchange, Scope, Receive, Send], Awaitable[None]]


def current_lifecycle(scope: Scope) -> Lifecycle:
    """The process's shutdown lifecycle: its Runtime's, which the ASGI application put in the
    scope (proxy/runtime.py)."""
    return runtime_in(scope).lifecycle


async def refuse_method(served: tuple[Route, ...], scope: Scope, send: Send) -> None:
    """A route's path with a method none of its routes takes: 405 with `Allow`, in the route's
    error shape and the request's language (Django's own 405 is HTML no SDK reads)."""
    allowed = ", ".join(dict.fromkeys(m for route in served for m in route.methods()))
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    with translation.override(api_language(headers)):  # None: English
        message = gettext("%(method)s is not allowed on %(path)s; use %(allowed)s") % {
            "method": scope["method"][:20], "path": scope["path"], "allowed": allowed}
    result = served[0].render_error(ApiError(405, message, "method_not_allowed"))
    result.headers.append(("allow", allowed))
    await send_json(send, result)


async def serve(route: Route, scope: Scope, receive: Receive, send: Send,
                carrier: Carrier) -> None:
    life = current_lifecycle(scope)
    if life.draining:
        error = ApiError(503, gettext("the server is shutting down; retry the request"),
                         "server_shutting_down", retry_after=1)
        await send_json(send, route.render_error(error))
        return
    with life.track():
        body = await read_body(scope, receive)
        if body is None:
            return  # the client left while sending
        if isinstance(body, ApiError):
            await send_json(send, route.render_error(body))
            return
        exchange = Exchange(route, api_request(scope, body))
        try:
            await carrier(exchange, scope, receive, send)
        finally:
            if exchange.stream is not None:
                await exchange.finish()


def api_request(scope: Scope, body: bytes) -> ApiRequest:
    """The request as the handlers take it, with the process's Runtime and the request's id."""
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    client = scope.get("client") or ("", 0)
    server = scope.get("server") or ("", None)
    runtime = runtime_in(scope)
    return ApiRequest(scope["method"], scope["path"], headers, body, runtime,
                      client[0], instance_id=runtime.listeners.instance_for_port(server[1]),
                      request_id=this_request_id(),
                      query=scope.get("query_string", b"").decode("latin-1"))


async def read_body(scope: Scope, receive: Receive) -> bytes | ApiError | None:
    """The whole body; an ApiError (413) past MAX_BODY_BYTES; None if the client left. The
    listener refuses larger bodies before reading them (iflow2api_site/listener.py); this holds
    under any other server."""
    limit = gateway()["MAX_BODY_BYTES"]
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


def encode_headers(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]


async def send_json(send: Send, result: JsonResult) -> None:
    await send({"type": "http.response.start", "status": result.status,
                "headers": [*JSON_HEADERS, (b"content-length", str(len(result.body)).encode()),
                            *encode_headers(result.headers)]})
    await send({"type": "http.response.body", "body": result.body})


def replaying(body: bytes, receive: Receive) -> Receive:
    """`receive` for a carrier that reads the body itself (Django): the body already read,
    then the client's own messages (its disconnect)."""
    given = False

    async def replay() -> Message:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def django_carrier(django_app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> Carrier:
    """Django (and the Ninja operation of the route) carries the request: the operation finds
    the exchange in the scope and hands its stream back through it."""

    async def carry(exchange: Exchange, scope: Scope, receive: Receive, send: Send) -> None:
        await django_app({**scope, EXCHANGE: exchange}, replaying(exchange.request.body, receive),
                         send)

    return carry
