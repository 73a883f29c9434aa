"""Daphne, with a graceful SIGTERM: stop listening, let requests in flight finish for up to the
grace period, end the streams left with an error event, then stop. A second signal stops at
once."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from daphne.server import Server
from twisted.internet import reactor

from proxy.lifecycle import lifecycle

log = logging.getLogger(__name__)


class DrainingServer(Server):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ports: list[Any] = []
        self.draining: asyncio.Task[None] | None = None

    def listen_success(self, port: Any) -> None:
        self.ports.append(port)
        super().listen_success(port)

    def install_signal_handlers(self, grace_seconds: float) -> None:
        loop = asyncio.get_event_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.shut_down, grace_seconds)

    def shut_down(self, grace_seconds: float) -> None:
        if lifecycle.draining:  # asked twice: stop now
            self.stop()
            return
        log.warning("shutting down: %d request(s) in flight, %.0f s to finish",
                    lifecycle.in_flight, grace_seconds)
        for port in self.ports:
            port.stopListening()
        self.draining = asyncio.ensure_future(self._drain_then_stop(grace_seconds))

    async def _drain_then_stop(self, grace_seconds: float) -> None:
        await lifecycle.drain(grace_seconds)
        reactor.callLater(0, self.stop)
