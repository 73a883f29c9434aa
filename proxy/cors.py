"""CORS for the API paths, as a small ASGI wrapper so streaming responses get their headers too.

The allowed origins are the instance's list, else CORS_ALLOWED_ORIGINS (`*` only when asked for).
With neither: an instance with client keys allows any origin (a page needs a key to use it);
one without keys allows only loopback pages, and a request from any other origin is refused
with 403 — a `text/plain` POST needs no preflight, so leaving out the CORS headers would not
stop a web page from spending the user's quota. Only the API paths go through here: the admin,
its websocket and the OAuth views never send CORS headers.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from functools import lru_cache
from typing import Any

from django.utils.translation import gettext

from iflow2api_lib.wire import dumps
from proxy.errors import ApiError
from proxy.runtime import runtime_in

Scope = dict[str, Any]
Message = dict[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]],
                    Callable[[Message], Awaitable[None]]], Awaitable[None]]

ALLOW_METHODS = b"GET, POST, DELETE, HEAD, OPTIONS"  # DELETE: /v1/responses/{id}
DEFAULT_ALLOW_HEADERS = (b"authorization, x-api-key, content-type, anthropic-version, "
                         b"anthropic-beta, anthropic-dangerous-direct-browser-access, "
                         b"x-stainless-arch, x-stainless-lang, x-stainless-os, "
                         b"x-stainless-package-version, x-stainless-retry-count, "
                         b"x-stainless-runtime, x-stainless-runtime-version, "
                         b"x-stainless-timeout, x-stainless-async, x-stainless-helper-method")
EXPOSE_HEADERS = b"request-id, retry-after, x-request-id, x-iflow2api-dropped-tools"
MAX_AGE = b"86400"
LOOPBACK_ORIGIN = re.compile(r"https?://(localhost|127\.0\.0\.1|\[::1\])(:\d{1,5})?")


class CorsPolicy:
    def __init__(self, origins: Iterable[str], *, loopback: bool = False,
                 refuse_others: bool = False) -> None:
        cleaned = [o.strip().rstrip("/") for o in origins if o.strip()]
        self.any_origin = "*" in cleaned
        self.origins = frozenset(o.lower() for o in cleaned if o != "*")
        self.loopback = loopback  # any port on localhost, 127.0.0.1 and [::1]
        self.refuse_others = refuse_others  # other origins get 403, not just no headers

    def allow_origin(self, origin: bytes | None) -> bytes | None:
        """The Access-Control-Allow-Origin value for this request, or None."""
        if self.any_origin:
            return b"*"
        if not origin:
            return None
        text = origin.decode("latin-1").lower()
        if text in self.origins or (self.loopback and LOOPBACK_ORIGIN.fullmatch(text)):
            return origin
        return None


@lru_cache(maxsize=64)
def policy_of(origins: tuple[str, ...], requires_key: bool = False) -> CorsPolicy:
    """`origins`: the instance's, else CORS_ALLOWED_ORIGINS; empty when neither is set."""
    if origins:
        return CorsPolicy(origins, refuse_others=not requires_key)
    if requires_key:
        return CorsPolicy(["*"])
    return CorsPolicy([], loopback=True, refuse_others=True)


NOBODY = CorsPolicy([])  # no origin allowed; the request itself gets the API's 503


async def cors_policy_for(scope: Scope) -> CorsPolicy:
    """The allowed origins of the instance whose port the request came in on."""
    server = scope.get("server") or ("", None)
    runtime = runtime_in(scope)
    config = (await runtime.directory.get()).instance(
        runtime.listeners.instance_for_port(server[1]))
    if config is None:  # unresolved instance
        return NOBODY
    return policy_of(config.cors_origins, config.requires_key)


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value
    return None


async def cors(policy_for: Callable[[Scope], Awaitable[CorsPolicy]], app: ASGIApp,
               scope: Scope, receive: Callable[[], Awaitable[Message]],
               send: Callable[[Message], Awaitable[None]]) -> None:
    """`policy_for(scope)` is asked only for requests from a browser (with an Origin)."""
    origin = _header(scope, b"origin")
    if origin is None:
        await app(scope, receive, send)
        return
    policy = await policy_for(scope)
    allowed = policy.allow_origin(origin)
    vary = [] if policy.any_origin else [(b"vary", b"Origin")]
    if scope["method"] == "OPTIONS" and _header(scope, b"access-control-request-method"):
        if allowed is None:
            await _respond(send, 403, vary)
            return
        requested = _header(scope, b"access-control-request-headers")
        await _respond(send, 204, [
            (b"access-control-allow-origin", allowed),
            (b"access-control-allow-methods", ALLOW_METHODS),
            (b"access-control-allow-headers", requested or DEFAULT_ALLOW_HEADERS),
            (b"access-control-max-age", MAX_AGE),
            *vary,
        ])
        return
    if allowed is None and policy.refuse_others:
        await _refuse(scope, send, origin, vary)
        return
    if allowed is None:
        await app(scope, receive, send)
        return

    async def send_with_cors(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [
                *message.get("headers", []),
                (b"access-control-allow-origin", allowed),
                (b"access-control-expose-headers", EXPOSE_HEADERS),
                *vary,
            ]}
        await send(message)

    await app(scope, receive, send_with_cors)


async def _respond(send: Callable[[Message], Awaitable[None]], status: int,
                   headers: list[tuple[bytes, bytes]], body: bytes = b"") -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


def is_anthropic_path(path: str) -> bool:
    return path.startswith(("/v1/messages", "/messages"))


async def _refuse(scope: Scope, send: Callable[[Message], Awaitable[None]], origin: bytes,
                  vary: list[tuple[bytes, bytes]]) -> None:
    """403 in the client's own error shape, before the request reaches the API."""
    error = ApiError(403, gettext(
        "requests from the web page at %(origin)s are not allowed on this instance: add the "
        "origin to its CORS allowed origins (or CORS_ALLOWED_ORIGINS), or give the instance a "
        "client key")
        % {"origin": origin.decode("latin-1")[:200]}, "origin_not_allowed")
    body = error.anthropic_body() if is_anthropic_path(scope["path"]) else error.openai_body()
    await _respond(send, 403, [(b"content-type", b"application/json"), *vary], dumps(body))
