"""Graceful shutdown: stop taking API requests, let the ones in flight finish up to a deadline,
then end the streams still open with an in-band error event (never a silent cut). One per
process, owned by the Runtime (proxy/runtime.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator


class Lifecycle:
    def __init__(self) -> None:
        self.in_flight = 0
        self.draining = False
        self._stop_signals: set[asyncio.Future[None]] = set()

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        """Counts an API request as in flight while the block runs."""
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    def stop_signal(self) -> asyncio.Future[None]:
        """A future a stream waits on beside its upstream: done when streams must end now."""
        signal: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._stop_signals.add(signal)
        signal.add_done_callback(self._stop_signals.discard)
        return signal

    async def drain(self, grace_seconds: float) -> None:
        """Waits for the requests in flight, at most `grace_seconds`; then tells the streams
        left to end, and gives them a moment to send their error event."""
        self.draining = True
        deadline = time.monotonic() + grace_seconds
        while self.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for signal in list(self._stop_signals):
            if not signal.done():
                signal.set_result(None)
        deadline = time.monotonic() + 2.0
        while self.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
