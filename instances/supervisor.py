"""Keeps the listeners of this server in line with the enabled instances in the database.

Every couple of seconds it compares what should listen (enabled instances, their host:port)
with what does, closes what should not (connections already open on it, streams included,
carry on), opens what is missing, and writes each instance's state: running, stopped, or error
with the reason (port in use, a network address without a client key). Settings other than the
address need no restart: requests read them from the instance directory (services.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections
from django.utils.functional import lazy
from django.utils.translation import gettext as _

from iflow2api_lib.snapshot import Snapshot
from instances.models import Instance
from instances.runtime import WILDCARDS, Listeners, host_port
from instances.services import Directory, invalidate_directory, set_state, usable_key_count
from instances.state_messages import (
    ADDRESS_OVERRIDDEN,
    CANNOT_LISTEN,
    OPEN_RELAY,
    shown,
    written,
)

log = logging.getLogger(__name__)
shown_lazily = lazy(shown, str)

POLL_SECONDS = 2.0

Address = tuple[str, int]
OpenListener = Callable[[str, int], Awaitable[Any]]  # → a listening port with a real port number
CloseListener = Callable[[Any], Awaitable[None]]


def is_loopback(host: str) -> bool:
    if host in {"localhost", "ip6-localhost"}:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Wanted:
    """What the database says about one instance, for this server."""

    id: int
    name: str
    address: Address
    refusal: str = ""  # why it must not listen; empty when it may
    note: str = ""  # shown while it runs: the address comes from the command line
    warnings: tuple[str, ...] = ()  # logged when it starts listening


def open_relay_refusal(name: str, host: str) -> str:
    return written(OPEN_RELAY, host=host, name=name)


def wanted_instances(overrides: dict[str, Address], only: frozenset[str] | None) -> list[Wanted]:
    close_old_connections()
    found = []
    for instance in Instance.objects.filter(enabled=True):
        if only is not None and instance.name not in only:
            continue
        host, port = overrides.get(instance.name, (instance.host, instance.port))
        refusal = note = ""
        warnings = []
        keys = usable_key_count(instance)
        if not is_loopback(host) and keys == 0:
            refusal = open_relay_refusal(instance.name, host)
        if (host, port) != (instance.host, instance.port):  # else the admin shows the wrong one
            note = written(ADDRESS_OVERRIDDEN, host=host, port=port)
        if keys == 0 and any_web_page_allowed(instance):
            warnings.append(any_origin_warning(instance.name))
        if host in WILDCARDS and not getattr(settings.ALLOWED_HOSTS, "configured", True):
            warnings.append(unnamed_host_warning(instance.name, host))
        found.append(Wanted(instance.pk, instance.name, (host, port), refusal, note,
                            tuple(warnings)))
    return found


def any_web_page_allowed(instance: Instance) -> bool:
    origins = instance.origins or settings.IFLOW2API["CORS_ALLOWED_ORIGINS"]
    return "*" in (o.strip() for o in origins)


def unnamed_host_warning(name: str, host: str) -> str:
    return _("instance %(name)s listens on %(host)s: its admin, login and docs pages answer "
             "only to loopback names until ALLOWED_HOSTS lists the names clients use to reach "
             "it (e.g. ALLOWED_HOSTS=gateway.lan,192.168.1.20)") % {"name": name, "host": host}


def any_origin_warning(name: str) -> str:
    return _("instance %(name)s allows CORS origin * and has no client key: any web page its "
             "users visit can call it and spend the upstream quota") % {"name": name}


def known_instances(only: frozenset[str] | None) -> dict[int, str]:
    """Every instance's name by id (those named by `only`, when given)."""
    return {pk: name for pk, name in Instance.objects.values_list("pk", "name")
            if only is None or name in only}


class Supervisor:
    def __init__(self, open_listener: OpenListener, close_listener: CloseListener, *,
                 overrides: dict[str, Address] | None = None,
                 only: frozenset[str] | None = None,
                 on_change: Callable[[str, str, str], None] | None = None,
                 active: Callable[[], bool] = lambda: True,
                 listeners: Listeners | None = None,
                 directory: Snapshot[Directory] | None = None) -> None:
        self.open_listener = open_listener
        self.close_listener = close_listener
        # The process's Runtime's (proxy/runtime.py): its port table, where requests look up
        # their instance, and its directory, refreshed as a listener opens.
        self.listeners = listeners if listeners is not None else Listeners()
        self.directory = directory
        self.overrides = overrides or {}
        self.only = only
        self.on_change = on_change  # (name, state, message): for the console
        self.active = active  # False once the server drains: open nothing new
        # By instance id, not name: a rename keeps the listener and whose requests it serves.
        self.listening: dict[int, tuple[Address, Any]] = {}
        self.names: dict[int, str] = {}  # the latest name of each instance seen, for messages
        self.states: dict[int, tuple[str, str, str]] = {}  # state, message, listening on
        self.stopped = False

    async def run(self, poll_seconds: float = POLL_SECONDS) -> None:
        while not self.stopped:
            if not self.active():
                return
            try:
                await self.reconcile()
            except Exception:
                log.exception("instance supervisor: reconcile failed")
            await asyncio.sleep(poll_seconds)

    async def reconcile(self) -> None:
        wanted = {w.id: w for w in await sync_to_async(wanted_instances)(
            self.overrides, self.only)}
        known = await sync_to_async(known_instances)(self.only)
        self.names.update(known)
        for pk, (address, port) in list(self.listening.items()):
            want = wanted.get(pk)
            if want is None or want.refusal or want.address != address:
                await self._close(pk, port)
                if want is None:
                    await self._state(pk, Instance.State.STOPPED)
        for pk, want in wanted.items():
            if want.refusal:
                await self._state(pk, Instance.State.ERROR, want.refusal)
            elif pk not in self.listening:
                await self._open(want)
        for pk in known:
            if pk not in wanted and self.states.get(pk, ("",))[0] != Instance.State.STOPPED:
                await self._state(pk, Instance.State.STOPPED)

    async def stop(self) -> None:
        """Closes every listener (open connections carry on) and marks the instances stopped."""
        self.stopped = True
        for pk, (_address, port) in list(self.listening.items()):
            await self._close(pk, port)
            with contextlib.suppress(Exception):
                await self._state(pk, Instance.State.STOPPED)

    def mark_stopped(self) -> None:
        """At exit (sync, from the reactor's shutdown trigger): the instances this server ran
        are stopped. In a thread: the ORM refuses to run on the event loop's thread."""
        ids = list(self.listening)

        def write() -> None:
            for pk in ids:
                set_state(pk, Instance.State.STOPPED)
            close_old_connections()

        worker = threading.Thread(target=write, name="instance-states")
        worker.start()
        worker.join(timeout=5)

    async def _open(self, want: Wanted) -> None:
        host, port_number = want.address
        try:
            port = await self.open_listener(host, port_number)
        except Exception as exc:
            error = getattr(exc, "socketError", None) or exc  # Twisted's CannotListenError
            reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
            await self._state(want.id, Instance.State.ERROR,
                              written(CANNOT_LISTEN, host=host, port=port_number, reason=reason))
            return
        self.listening[want.id] = (want.address, port)
        self.listeners.register(port_number, want.id, host)
        for warning in want.warnings:
            log.warning("%s", warning)
        invalidate_directory(self.directory)
        await self._state(want.id, Instance.State.RUNNING, want.note,
                          listening_on=host_port(host, port_number))

    async def _close(self, pk: int, port: Any) -> None:
        # The port stays registered to this instance: connections it accepted carry on.
        self.listening.pop(pk)
        try:
            await self.close_listener(port)
        except Exception:
            log.exception("instance %s: closing its listener failed", self.names.get(pk, pk))

    async def _state(self, pk: int, state: str, message: str = "",
                     listening_on: str = "") -> None:
        if self.states.get(pk) == (state, message, listening_on):
            return
        self.states[pk] = (state, message, listening_on)
        await sync_to_async(set_state)(pk, state, message, listening_on)
        if self.on_change is not None:  # said in the language the console is in
            self.on_change(self.names.get(pk, str(pk)), state, shown_lazily(message))
