"""CORS for the API paths, as a small ASGI wrapper so streaming responses get their headers too.

Default `*` without credentials (like the original tool), or a list of origins, per instance
(CORS_ALLOWED_ORIGINS when the instance sets none). Only the API paths go through here: the
admin, its websocket and the OAuth views never send CORS headers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from functools import lru_cache
from typing import Any

from instances.runtime import instance_for_port
from instances.services import directory

Scope = dict[str, Any]
Message = dict[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]],
                    Callable[[Message], Awaitable[None]]], Awaitable[None]]

ALLOW_METHODS = b"GET, POST, HEAD, OPTIONS"
DEFAULT_ALLOW_HEADERS = (b"authorization, x-api-key, content-type, anthropic-version, "
                         b"anthropic-beta, anthropic-dangerous-direct-browser-access, "
                         b"x-stainless-arch, x-stainless-lang, x-stainless-os, "
                         b"x-stainless-package-version, x-stainless-retry-count, "
                         b"x-stainless-runtime, x-stainless-runtime-version, "
                         b"x-stainless-timeout, x-stainless-async, x-stainless-helper-method")
EXPOSE_HEADERS = b"request-id, retry-after, x-request-id"
MAX_AGE = b"86400"


class CorsPolicy:
    def __init__(self, origins: Iterable[str]) -> None:
        cleaned = [o.strip().rstrip("/") for o in origins if o.strip()]
        self.any_origin = "*" in cleaned
        self.origins = frozenset(o.lower() for o in cleaned if o != "*")

    def allow_origin(self, origin: bytes | None) -> bytes | None:
        """The Access-Control-Allow-Origin value for this request, or None."""
        if self.any_origin:
            return b"*"
        if origin and origin.decode("latin-1").lower() in self.origins:
            return origin
        return None


@lru_cache(maxsize=64)
def policy_of(origins: tuple[str, ...]) -> CorsPolicy:
    return CorsPolicy(origins)


async def cors_policy_for(scope: Scope) -> CorsPolicy:
    """The allowed origins of the instance whose port the request came in on."""
    server = scope.get("server") or ("", None)
    config = (await directory()).instance(instance_for_port(server[1]))
    return policy_of(config.cors_origins)


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
                   headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-length", b"0"), *headers]})
    await send({"type": "http.response.body", "body": b""})
