"""The status page's websocket: active staff with the page's permission (status.VIEW_PERMISSION)
only; a full snapshot on connect and after each change, at most one per THROTTLE_SECONDS per
connection."""

from __future__ import annotations

import asyncio
import time
from importlib import import_module
from types import SimpleNamespace
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.contrib.auth import SESSION_KEY, get_user_model
from django.utils import translation

from instances import status

THROTTLE_SECONDS = 0.5
FORBIDDEN = 4403  # a close code the page understands: log in again, do not retry


def _session_store() -> Any:
    return import_module(settings.SESSION_ENGINE).SessionStore


def language_of(scope: dict[str, Any]) -> str:
    """The language the page was drawn in, as Django's LocaleMiddleware chose it: the admin's
    language cookie, else the browser's Accept-Language (both come with the handshake)."""
    headers = dict(scope.get("headers") or ())
    request = SimpleNamespace(
        COOKIES=scope.get("cookies") or {},
        META={"HTTP_ACCEPT_LANGUAGE": headers.get(b"accept-language", b"").decode("latin-1")})
    return translation.get_language_from_request(request)  # type: ignore[arg-type]


def _allowed(user: Any) -> bool:
    """Sync: has_perm reads the database."""
    return bool(user is not None and user.is_authenticated and user.is_active and user.is_staff
                and user.has_perm(status.VIEW_PERMISSION))


class StatusConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        self.joined = False
        self.last_sent = float("-inf")
        self.pending: asyncio.Task[None] | None = None
        if not await database_sync_to_async(_allowed)(self.scope.get("user")):
            # Accepted then closed, so the browser sees the code (a refused handshake is 1006).
            await self.accept()
            await self.close(code=FORBIDDEN)
            return
        self.language = language_of(self.scope)  # snapshots speak the page's language
        self.publisher = status.publisher_in(self.scope)
        self.publisher.remember_loop()
        await self.channel_layer.group_add(status.GROUP, self.channel_name)
        self.joined = True
        await self.accept()
        await self.send_snapshot()

    async def disconnect(self, code: int) -> None:
        if self.pending is not None:
            self.pending.cancel()
        if self.joined:
            self.joined = False
            await self.channel_layer.group_discard(status.GROUP, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None,
                      **kwargs: Any) -> None:
        """The page sends nothing; whatever arrives (JSON or not) is ignored."""

    async def status_changed(self, event: dict[str, Any]) -> None:
        """A group message: a snapshot now, or one when the throttle allows (once)."""
        if self.pending is not None and not self.pending.done():
            return
        delay = self.last_sent + THROTTLE_SECONDS - time.monotonic()
        if delay <= 0:
            await self.send_snapshot()
        else:
            self.pending = asyncio.ensure_future(self._send_later(delay))

    async def _send_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        # No longer pending: a change arriving while this snapshot is read gets its own send.
        self.pending = None
        await self.send_snapshot()

    async def send_snapshot(self) -> None:
        self.last_sent = time.monotonic()
        data = await database_sync_to_async(self._checked_snapshot)()
        if data is None:  # no longer staff, or logged out elsewhere: stop here
            await self.disconnect(FORBIDDEN)
            await self.close(code=FORBIDDEN)
            return
        await self.send_json({"type": "snapshot", "data": data})

    def _checked_snapshot(self) -> dict[str, Any] | None:
        """The snapshot, if the user still may see it: staff with the permission, and still
        logged in."""
        # Read afresh (rights are cached on a user object): losing staff status or the
        # permission ends this connection too.
        pk = getattr(self.scope.get("user"), "pk", None)
        user = get_user_model().objects.filter(pk=pk).first() if pk is not None else None
        if user is None:  # deleted, or never logged in
            return None
        session = self.scope.get("session")
        key = getattr(session, "session_key", None)
        # Re-read: a logout or an expiry elsewhere ends this connection too.
        if key and str(_session_store()(key).get(SESSION_KEY)) != str(user.pk):
            return None
        if not _allowed(user):
            return None
        with translation.override(self.language):
            return status.snapshot(self.publisher)
