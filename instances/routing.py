"""Websocket routes: the admin's live status.

Origin check: a browser sends its page's Origin with every websocket handshake, and cookies go
along whatever the origin, so a page elsewhere could otherwise open the socket with the admin's
session. `AllowedHostsOriginValidator` alone lets any origin in while ALLOWED_HOSTS is "*" (the
default), so the origin must also be this site: its host:port equals the Host the browser
connected to, as Django's CSRF check wants for the admin's forms, or it is listed in
CSRF_TRUSTED_ORIGINS (a proxy that rewrites Host).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from channels.auth import AuthMiddlewareStack
from channels.routing import URLRouter
from channels.security.websocket import AllowedHostsOriginValidator, WebsocketDenier
from django.conf import settings
from django.http.request import is_same_domain
from django.urls import path

from instances.consumers import StatusConsumer

WS_PATH = "/admin/status/ws/"

websocket_urlpatterns = [
    path(WS_PATH.lstrip("/"), StatusConsumer.as_asgi(), name="status-ws"),
]


def _header(scope: dict[str, Any], name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin1").strip()
    return ""


def trusted_origin(origin: str, host: str) -> bool:
    """`origin` (scheme://host[:port]) is this site, reached at `host` (the Host header)."""
    if not origin or origin == "null":
        return False
    parts = urlsplit(origin)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        return False
    if host and parts.netloc.lower() == host.lower():
        return True
    for trusted in settings.CSRF_TRUSTED_ORIGINS:
        allowed = urlsplit(trusted)
        pattern = allowed.netloc.lower()
        pattern = pattern[1:] if pattern.startswith("*.") else pattern  # as Django's CSRF does
        if allowed.scheme == parts.scheme and is_same_domain(parts.netloc.lower(), pattern):
            return True
    return False


class SameOriginValidator:
    """Refuses (HTTP 403) a websocket handshake whose Origin is not this site."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] == "websocket" and not trusted_origin(
                _header(scope, b"origin"), _header(scope, b"host")):
            return await WebsocketDenier()(scope, receive, send)
        return await self.application(scope, receive, send)


def websocket_app() -> Any:
    return AllowedHostsOriginValidator(
        SameOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))))
