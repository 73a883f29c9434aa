"""Daphne, with a graceful SIGTERM: stop listening, let requests in flight finish for up to the
grace period, end the streams left with an error event, then stop. A second signal stops at
once."""

from __future__ import annotations

import asyncio
import logging
import signal
import weakref
from pathlib import Path
from typing import Any

from daphne.endpoints import build_endpoint_description_strings
from daphne.http_protocol import HTTPFactory
from daphne.server import Server
from django.conf import settings
from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString

from iflow2api_site.listener import GuardedChannel, GuardedRequest
from proxy.lifecycle import Lifecycle

log = logging.getLogger(__name__)


class ListenerFactory(HTTPFactory):
    """Daphne's HTTP factory for one listener, remembering its connections: closing the
    listener must also end the keep-alive connections that would outlive it. Its connections
    enforce the body limit and the read timeouts (listener.py); plain HTTP/1.1 (our listeners
    have no TLS, so no HTTP/2 to negotiate)."""

    protocol = GuardedChannel

    def __init__(self, server: Server) -> None:
        super().__init__(server)
        self.channels: weakref.WeakSet[Any] = weakref.WeakSet()
        self.timeOut = settings.IFLOW2API["KEEPALIVE_TIMEOUT"] or None  # idle connections

    def buildProtocol(self, addr: Any) -> Any:
        channel = super().buildProtocol(addr)
        if channel is not None:
            channel.requestFactory = GuardedRequest  # Daphne set its own
            self.channels.add(channel)
        return channel


def listen_backlog() -> int:
    """LISTEN_BACKLOG, capped by the kernel's somaxconn (it would cap it silently)."""
    wanted = max(1, settings.IFLOW2API["LISTEN_BACKLOG"])
    try:
        return min(wanted, int(Path("/proc/sys/net/core/somaxconn").read_text()))
    except (OSError, ValueError):  # not Linux
        return wanted


def end_keepalive(factory: Any) -> None:
    """Idle connections close now, busy ones (a stream) once their response is done. A request
    on a kept-alive connection of a closed listener would otherwise run as whatever instance
    the port maps to next (the default one: no key asked)."""
    for protocol in list(getattr(factory, "channels", ())):
        channel = getattr(protocol, "_channel", protocol)  # Twisted wraps it (HTTP/2 choice)
        transport = channel.transport
        if transport is None or getattr(transport, "protocol", protocol) is not protocol:
            continue  # gone, or handed to a WebSocket (not an API request)
        channel.persistent = False  # requestDone closes it
        if not getattr(channel, "_handlingRequest", True):
            channel.loseConnection()


class DrainingServer(Server):
    def __init__(self, *args: Any, lifecycle: Lifecycle, **kwargs: Any) -> None:
        # The application's Runtime's lifecycle: SIGTERM drains the requests it counts.
        self.lifecycle = lifecycle
        # Daphne refuses to start without endpoints; ours may all be opened later.
        endpoints = kwargs.pop("endpoints", None) or []
        super().__init__(*args, endpoints=endpoints or ["unused"], **kwargs)
        self.endpoints = endpoints
        self.ports: list[Any] = []
        self.draining: asyncio.Task[None] | None = None

    def listen_success(self, port: Any) -> None:
        self.ports.append(port)
        super().listen_success(port)

    async def open_listener(self, host: str, port: int) -> Any:
        """Starts listening on host:port for the running server (an instance started later)."""
        (description,) = build_endpoint_description_strings(host=host, port=port)
        description += f":backlog={listen_backlog()}"
        listening = serverFromString(reactor, description).listen(ListenerFactory(self))
        port_object = await listening.asFuture(asyncio.get_running_loop())
        self.listen_success(port_object)
        return port_object

    async def close_listener(self, port: Any) -> None:
        """Stops accepting on one port; requests in flight on it (streams) carry on."""
        if port in self.ports:
            self.ports.remove(port)
        stopped = port.stopListening()
        if stopped is not None:
            await stopped.asFuture(asyncio.get_running_loop())
        end_keepalive(port.factory)

    def install_signal_handlers(self, grace_seconds: float) -> None:
        loop = asyncio.get_event_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.shut_down, grace_seconds)

    def shut_down(self, grace_seconds: float) -> None:
        if self.lifecycle.draining:  # asked twice: stop now
            self.stop()
            return
        log.warning("shutting down: %d request(s) in flight, %.0f s to finish",
                    self.lifecycle.in_flight, grace_seconds)
        for port in self.ports:
            port.stopListening()
        self.draining = asyncio.ensure_future(self._drain_then_stop(grace_seconds))

    async def _drain_then_stop(self, grace_seconds: float) -> None:
        await self.lifecycle.drain(grace_seconds)
        reactor.callLater(0, self.stop)
