"""Live status for the admin: what `snapshot()` reads, and how changes reach the page.

- `snapshot()` (sync ORM) gathers instances, requests per minute, active streams, accounts with
  their next refresh, and recent errors. The request log belongs to `proxy`, which this app
  never imports: it is looked up through the app registry.
- A `StatusPublisher` (one per process, owned by proxy/runtime.py's Runtime and handed to the
  request path, the status page and its websocket) does the rest.
- `notify_changed()` is called by the request path when a request starts or ends. It costs a
  few attribute reads: at most one group message per NOTIFY_INTERVAL per process goes out, from
  a task on the running loop, and the last change is never dropped (a trailing send).
- `stream_started()` / `stream_finished()` count the streams open in this process. Each process
  publishes its counts under its own key with a short TTL (Redis when REDIS_URL is set, else the
  Django cache), refreshed while streams are open, so `snapshot()` sums every live process and
  forgets dead ones.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections import Counter
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.cache import cache as django_cache
from django.db.models import Count
from django.utils import timezone

from accounts.models import Account
from accounts.refresh import OAUTH, credential_kind
from iflow2api_lib.redis_client import SharedRedis, configured
from iflow2api_lib.scope import runtime_of
from iflow2api_lib.threads import low_priority_executor
from instances.budgets import budget_status
from instances.models import Instance
from instances.state_messages import shown

log = logging.getLogger(__name__)

GROUP = "iflow2api.status"
# The page shows account labels and errors and recent request errors: the same right as the
# usage page and the request log (a staff user without it sees neither).
VIEW_PERMISSION = "proxy.view_requestlog"
CHANGED = {"type": "status.changed"}
NOTIFY_INTERVAL = 0.5  # seconds between two group messages from one process
SEND_TIMEOUT = 5.0  # a stuck channel layer must not pile up tasks
STREAMS_TTL = 30  # seconds a process's published stream counts stay valid
HEARTBEAT_SECONDS = 10.0  # republish that often while streams are open
ERRORS_SHOWN = 10
ERROR_TEXT_MAX = 300
# Under the shared Redis namespace (iflow2api_lib/redis_client.py), or as Django cache keys.
KEY_PREFIX = "status:streams:"
REGISTRY_KEY = "status:processes"


# --- where processes publish their counts --------------------------------------------------------


class _RedisStore:
    """A key per process (with a TTL) and a sorted set of process ids scored by expiry, so
    readers find the live ones without scanning the keyspace."""

    def __init__(self, redis: SharedRedis) -> None:
        self.client = redis.sync_client()
        self.prefix = redis.key(KEY_PREFIX)
        self.registry = redis.key(REGISTRY_KEY)

    def publish(self, pid: str, counts: dict[str, int]) -> None:
        now = time.time()
        pipe = self.client.pipeline(transaction=False)
        pipe.set(self.prefix + pid, json.dumps(counts), ex=STREAMS_TTL)
        pipe.zadd(self.registry, {pid: now + STREAMS_TTL})
        # Entries dead for a whole TTL more: gone for good (a live process re-adds itself).
        pipe.zremrangebyscore(self.registry, "-inf", now - STREAMS_TTL)
        pipe.execute()

    def read(self) -> dict[str, dict[str, int]]:
        pids = [p.decode() for p in self.client.zrangebyscore(self.registry, time.time(), "+inf")]
        if not pids:
            return {}
        values = self.client.mget([self.prefix + p for p in pids])
        return {p: json.loads(v) for p, v in zip(pids, values, strict=True) if v}


class _CacheStore:
    """The Django cache: a key per process and one registry key. Without Redis the cache is
    per process, so the registry's read-modify-write never races another process."""

    def publish(self, pid: str, counts: dict[str, int]) -> None:
        django_cache.set(KEY_PREFIX + pid, counts, STREAMS_TTL)
        registry = django_cache.get(REGISTRY_KEY) or {}
        now = time.time()
        registry = {p: t for p, t in registry.items() if t > now}
        registry[pid] = now + STREAMS_TTL
        django_cache.set(REGISTRY_KEY, registry, None)

    def read(self) -> dict[str, dict[str, int]]:
        now = time.time()
        pids = [p for p, t in (django_cache.get(REGISTRY_KEY) or {}).items() if t > now]
        values = django_cache.get_many([KEY_PREFIX + p for p in pids])
        return {p: values[KEY_PREFIX + p] for p in pids if KEY_PREFIX + p in values}


def publisher_in(scope: Mapping[str, Any] | None) -> StatusPublisher:
    """The process's publisher (its Runtime's, from the scope: iflow2api_lib/scope.py);
    outside the gateway's ASGI app (the test client) a reader of what the processes
    published."""
    runtime = runtime_of(scope) if scope else None
    return runtime.status if runtime is not None else StatusPublisher(configured())


def new_process_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


# --- this process's stream counts, and telling the status pages ----------------------------------


class StatusPublisher:
    """One per process (proxy/runtime.py owns it). Counts may change from any thread; the
    timers live on one loop (a new loop, in tests, starts them over)."""

    def __init__(self, redis: SharedRedis | None = None) -> None:
        self.store: _RedisStore | _CacheStore = _RedisStore(redis) if redis else _CacheStore()
        self.lock = threading.Lock()
        self.streams: Counter[str] = Counter()
        self.published: dict[str, int] | None = None
        self.pid = os.getpid()
        self.process_id = new_process_id()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.pending: asyncio.Handle | None = None
        self.task: asyncio.Task[None] | None = None
        self.again = False  # a change arrived while a send was running
        self.last_sent = float("-inf")
        self.heartbeat: asyncio.Handle | None = None
        # One thread: publishes happen in order, so an older count never overwrites a newer one.
        # Nobody waits for them: lowest priority (iflow2api_lib/threads.py).
        self.executor = low_priority_executor("status")

    def my_id(self) -> str:
        # Re-made after a fork: a child must not publish under its parent's key.
        if self.pid != os.getpid():
            self.pid, self.process_id = os.getpid(), new_process_id()
        return self.process_id

    def local_streams(self) -> dict[str, int]:
        with self.lock:
            return {name: n for name, n in self.streams.items() if n > 0}

    def stream_started(self, instance_name: str) -> None:
        """A stream opened on `instance_name` in this process. Never raises."""
        try:
            with self.lock:
                self.streams[instance_name or "default"] += 1
            self.notify_changed()
        except Exception:
            log.debug("status: stream_started failed", exc_info=True)

    def stream_finished(self, instance_name: str) -> None:
        """A stream ended (any way). Never raises; never counts below zero."""
        try:
            name = instance_name or "default"
            with self.lock:
                if self.streams[name] > 0:
                    self.streams[name] -= 1
                if self.streams[name] <= 0:
                    del self.streams[name]
            self.notify_changed()
        except Exception:
            log.debug("status: stream_finished failed", exc_info=True)

    def publish_streams(self, force: bool = False) -> None:
        """Writes this process's counts if they changed (or `force`: the heartbeat). Sync; runs
        in the status thread."""
        counts = self.local_streams()
        if not force and counts == self.published:
            return
        self.store.publish(self.my_id(), counts)
        self.published = counts

    def active_streams(self) -> dict[str, Any]:
        """Open streams summed over every live process; this process's own counts are always
        current, whatever it has published."""
        try:
            by_process = self.store.read()
        except Exception:
            log.warning("status: could not read the stream counts of other processes")
            by_process = {}
        by_process[self.my_id()] = self.local_streams()
        per_instance: Counter[str] = Counter()
        for counts in by_process.values():
            per_instance.update({k: int(v) for k, v in counts.items() if int(v) > 0})
        return {"total": sum(per_instance.values()), "per_instance": dict(per_instance),
                "processes": len(by_process)}

    def notify_changed(self) -> None:
        """Something the status page shows changed. Cheap, never blocks, never raises."""
        try:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is not None:
                self._schedule(loop)
            elif self.loop is not None and self.loop.is_running():
                self.loop.call_soon_threadsafe(self._schedule, self.loop)
            # No loop in this process: no page is connected to it, and without Redis none can be.
        except Exception:
            log.debug("status: notify_changed failed", exc_info=True)

    def remember_loop(self) -> None:
        """Lets threads of this process notify (the consumer calls it on connect)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._adopt(loop)

    def _adopt(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.loop is not loop:  # a new loop (tests): the old timers are meaningless
            self.loop, self.pending, self.task, self.heartbeat = loop, None, None, None
            self.again, self.last_sent = False, float("-inf")

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the loop's thread: one send soon, unless one is already waiting."""
        self._adopt(loop)
        if self.task is not None and not self.task.done():
            self.again = True
            return
        if self.pending is not None:
            return
        delay = max(0.0, self.last_sent + NOTIFY_INTERVAL - time.monotonic())
        self.pending = loop.call_later(delay, self._start_send, loop)

    def _start_send(self, loop: asyncio.AbstractEventLoop) -> None:
        self.pending = None
        self.last_sent = time.monotonic()
        self.task = loop.create_task(self._send(loop), name="status-notify")

    async def _send(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            # Counts first: the pages that wake up read them.
            await loop.run_in_executor(self.executor, self.publish_streams)
        except Exception:
            log.debug("status: could not publish the stream counts", exc_info=True)
        try:
            from channels.layers import get_channel_layer

            layer = get_channel_layer()
            if layer is not None:
                await asyncio.wait_for(layer.group_send(GROUP, dict(CHANGED)), SEND_TIMEOUT)
        except Exception:
            log.debug("status: group_send failed", exc_info=True)
        finally:
            self._after_send(loop)

    def _after_send(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.loop is not loop:
            return
        if self.again:
            self.again = False
            self.task = None
            self._schedule(loop)
        if self.local_streams() and self.heartbeat is None:
            self.heartbeat = loop.call_later(HEARTBEAT_SECONDS, self._beat, loop)

    def _beat(self, loop: asyncio.AbstractEventLoop) -> None:
        """While streams are open, keep this process's key alive."""
        self.heartbeat = None
        if self.loop is not loop or not self.local_streams():
            return
        future = loop.run_in_executor(self.executor, self.publish_streams, True)
        future.add_done_callback(lambda f: f.cancelled() or f.exception())  # errors: not fatal
        self.heartbeat = loop.call_later(HEARTBEAT_SECONDS, self._beat, loop)


# --- the snapshot --------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def next_refresh(account: Account, now: datetime) -> tuple[str, datetime | None]:
    """("refreshing" | "due" | "scheduled" | "none", when) for an account, following the rules
    of accounts/refresh.py (due = expiry minus the threshold, not before the next attempt)."""
    kind = credential_kind(account)
    if (kind is None or not account.enabled
            or account.state in {Account.State.NEEDS_LOGIN, Account.State.BLOCKED}):
        return "none", None
    if account.refreshing_until and account.refreshing_until > now:
        return "refreshing", now
    conf = settings.IFLOW2API
    if account.refresh_failures > 0:
        due = now
    elif kind == OAUTH:
        before = timedelta(hours=float(conf["REFRESH_OAUTH_BEFORE_HOURS"]))
        expires = account.access_token_expires_at
        due = now if expires is None or not account.oauth_access_token else expires - before
    else:
        before = timedelta(hours=float(conf["REFRESH_COOKIE_BEFORE_HOURS"]))
        expires = account.api_key_expires_at
        due = now if expires is None else expires - before
    if account.next_refresh_attempt_at and account.next_refresh_attempt_at > due:
        due = account.next_refresh_attempt_at
    return ("due" if due <= now else "scheduled"), due


def _accounts(now: datetime) -> list[dict[str, Any]]:
    rows = []
    for account in Account.objects.order_by("id"):
        refresh_state, refresh_at = next_refresh(account, now)
        cooling = account.cooldown_until if (
            account.cooldown_until and account.cooldown_until > now) else None
        rows.append({
            "id": account.pk, "label": account.label, "provider": account.provider,
            # str(): the labels are lazy translations, and the snapshot goes out as JSON.
            "provider_display": str(account.get_provider_display()), "enabled": account.enabled,
            "state": account.state, "state_display": str(account.get_state_display()),
            "cooldown_until": _iso(cooling), "refresh_state": refresh_state,
            "next_refresh": _iso(refresh_at), "error": account.last_error[:ERROR_TEXT_MAX],
        })
    return rows


def snapshot(publisher: StatusPublisher | None = None) -> dict[str, Any]:
    """Everything the status page shows, JSON-ready (times as ISO 8601); the open streams as
    `publisher` (this process's) counts them, else as the processes published them. Sync
    ORM."""
    now = timezone.now()
    request_log = apps.get_model("proxy", "RequestLog")
    recent = request_log.objects.filter(started_at__gte=now - timedelta(seconds=60))
    per_instance = dict(recent.values_list("instance").annotate(n=Count("id")).order_by())
    streams = (publisher or StatusPublisher(configured())).active_streams()
    instances = [{
        "name": inst.name, "host": inst.host, "port": inst.port, "enabled": inst.enabled,
        "state": inst.state, "state_display": str(inst.get_state_display()),
        "state_message": shown(inst.state_message),
        "state_changed_at": _iso(inst.state_changed_at),
        "requests_per_minute": per_instance.get(inst.name, 0),
        "active_streams": streams["per_instance"].get(inst.name, 0),
    } for inst in Instance.objects.order_by("port")]
    errors = [{
        "time": _iso(row.started_at), "instance": row.instance,
        "model": row.model or row.requested_model, "status": row.status,
        "error": row.error[:ERROR_TEXT_MAX],
    } for row in request_log.objects.filter(status__gte=400).order_by("-started_at", "-id")[
        :ERRORS_SHOWN]]
    return {
        "generated_at": _iso(now),
        "requests_per_minute": sum(per_instance.values()),
        "active_streams": streams["total"],
        "streams_per_instance": streams["per_instance"],
        "processes": streams["processes"],
        "instances": instances,
        "accounts": _accounts(now),
        "errors": errors,
        "budgets": budget_status(),  # instances/budgets.py: spend per period, warnings
    }
