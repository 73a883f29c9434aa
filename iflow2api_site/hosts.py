"""ALLOWED_HOSTS: the names this server answers to on its Django pages (admin, OAuth views,
API docs). Without it, `Host: evil.example` would be believed: the OAuth callback URL is built
from the Host header when PUBLIC_BASE_URL is unset, and DNS rebinding could reach the admin.

By default: the loopback names, the addresses the instances listen on (read as requests come
from the process's listener table, `Runtime.listeners`, which the ASGI application hands to
`follow()`: an instance started from the admin needs no restart), the host of PUBLIC_BASE_URL,
and what ALLOWED_HOSTS lists (`*` there allows any). An instance on 0.0.0.0 is reached by names this
server cannot know (its LAN address, a DNS name): those must be listed in ALLOWED_HOSTS.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:  # settings.py imports this module: nothing from Django's views at load time
    from django.http import HttpRequest, HttpResponse

    from instances.runtime import Listeners

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")


class ServedHosts(list[str]):
    """A list (Django insists) whose items are worked out each time it is read: the fixed
    names, then the listeners' addresses (Django iterates it for each request's Host check;
    what it reads lives in memory)."""

    def __init__(self, configured: list[str], public_base_url: str = "") -> None:
        public = urlsplit(public_base_url.strip()).hostname if public_base_url.strip() else None
        named = [*([public] if public else []), *configured]
        super().__init__([*LOOPBACK_HOSTS, *named])
        self.configured = named  # empty: nothing but loopback and the listeners' addresses
        self.listeners: Listeners | None = None  # the process's, once its Runtime is built

    def follow(self, listeners: Listeners) -> None:
        """Answer to the addresses of `listeners` too (the process's Runtime's, from the ASGI
        application as it starts)."""
        self.listeners = listeners

    def names(self) -> list[str]:
        listening = self.listeners.host_names() if self.listeners is not None else []
        return [*super().__iter__(), *listening]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __contains__(self, name: object) -> bool:
        return name in self.names()

    def __len__(self) -> int:
        return len(self.names())

    def __getitem__(self, index):  # type: ignore[no-untyped-def, override]
        return self.names()[index]

    def __repr__(self) -> str:
        return f"ServedHosts({self.names()!r})"


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """handler400: a Host this server does not answer to gets a 400 that says what to do (the
    name itself is not echoed back)."""
    from django.core.exceptions import DisallowedHost
    from django.http import HttpResponseBadRequest
    from django.utils.translation import gettext as _
    from django.views.defaults import bad_request as django_bad_request

    if isinstance(exception, DisallowedHost):
        return HttpResponseBadRequest(_(
            "Bad Request (400): this server does not answer to the host name this page was "
            "requested with. If the name is yours, add it to ALLOWED_HOSTS (comma-separated) "
            "and restart; a server listening on 0.0.0.0 is reached by names it cannot know, so "
            "list them, e.g. ALLOWED_HOSTS=gateway.lan,192.168.1.20. The server log names the "
            "host.") + "\n", content_type="text/plain; charset=utf-8")
    return django_bad_request(request, exception)
