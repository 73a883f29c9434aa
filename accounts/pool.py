"""The account pool: which account serves the next request, how many requests each may carry
at once, and which accounts sit out a cooldown.

Slots are counted in Redis when REDIS_URL is set (so the per-account limit holds across every
web process), in this process otherwise. A Redis slot is a lease with an expiry that its holder
renews, so a crashed process cannot keep an account busy for long. Cooldowns and blocks are
written to the database, where every process's routing snapshot picks them up.

A rate-limited account is routed around for its whole cooldown while others can serve; when it
is the last one left, it is held back only for the upstream's Retry-After, or for a short
backoff (1, 2, 4 … s on repeated rate limits) kept beside the slots (Redis or this process).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import timezone
from django.utils.translation import gettext

from accounts.affinity import LocalAffinity, RedisAffinity, build_affinity
from accounts.models import Account
from accounts.services import AccountRef, Routing, invalidate_routing
from iflow2api_lib.ids import random_hex
from iflow2api_lib.redis_client import SharedRedis
from iflow2api_lib.snapshot import Snapshot

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger(__name__)
T = TypeVar("T")

LEASE_SECONDS = 120.0
RENEW_EVERY = 40.0
POLL_SECONDS = 0.05

# ZREMRANGEBYSCORE drops expired leases; a slot is taken only while fewer than `limit` remain.
ACQUIRE_SCRIPT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  return 1
end
return 0
"""


class PoolExhausted(Exception):
    """No account could take the request in time (→ 429 with Retry-After). `after_error`:
    every account cools down after an upstream error that was not a rate limit."""

    def __init__(self, message: str, retry_after: float, *, after_error: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.after_error = after_error


class NoAccount(Exception):
    """No usable account at all (blocked, needing a login, or none configured)."""


class PoolUnavailable(Exception):
    """The shared slots cannot be read or taken (Redis unreachable or too slow): no request
    may pass the per-account limits unchecked (→ 503)."""


@dataclass
class Lease:
    account: AccountRef
    token: str
    counted: bool
    renewer: asyncio.Task | None = None
    released: bool = False


class LocalSlots:
    def __init__(self) -> None:
        self.in_flight: dict[int, int] = {}
        # account id → (rate limits in a row, held back until, forgotten at), epoch seconds
        self.backoffs: dict[int, tuple[int, float, float]] = {}

    async def try_take(self, account: AccountRef, token: str) -> bool:
        used = self.in_flight.get(account.id, 0)
        if used >= account.max_concurrency:
            return False
        self.in_flight[account.id] = used + 1
        return True

    async def give_back(self, account: AccountRef, token: str) -> None:
        self.in_flight[account.id] = max(0, self.in_flight.get(account.id, 0) - 1)

    async def renew(self, account: AccountRef, token: str) -> None:
        return None

    async def busy(self, account: AccountRef) -> int:
        return self.in_flight.get(account.id, 0)

    async def record_rate_limit(self, account_id: int, hold_for: Callable[[int], float],
                                keep: float) -> float:
        now = time.time()
        streak, _, forgotten = self.backoffs.get(account_id, (0, 0.0, 0.0))
        streak = streak + 1 if forgotten > now else 1
        hold = hold_for(streak)
        self.backoffs[account_id] = (streak, now + hold, now + max(keep, hold))
        return hold

    async def held_until(self, account_id: int) -> float | None:
        entry = self.backoffs.get(account_id)
        return entry[1] if entry is not None and entry[2] > time.time() else None

    async def clear_backoff(self, account_id: int) -> None:
        self.backoffs.pop(account_id, None)


class RedisSlots:
    """Slots and backoffs in the process's shared Redis (its namespace: keys per database)."""

    def __init__(self, redis: SharedRedis) -> None:
        from redis.exceptions import RedisError  # the optional redis package: installed here

        self.redis = redis
        self.unreachable = (RedisError, OSError)

    def _client(self) -> Redis:
        return self.redis.client()

    async def _checked(self, work: Awaitable[T]) -> T:
        """`work`'s result; PoolUnavailable when Redis cannot answer (the shared client's
        socket timeouts bound the wait)."""
        try:
            return await work
        except self.unreachable as exc:
            raise PoolUnavailable(str(exc)) from exc

    def _failed(self, action: str) -> None:
        log.warning("account pool: Redis unreachable, could not %s", action, exc_info=True)

    def _key(self, account: AccountRef) -> str:
        return self.redis.key("pool", account.id)

    async def try_take(self, account: AccountRef, token: str) -> bool:
        now = time.time()
        taken = await self._checked(self._client().eval(
            ACQUIRE_SCRIPT, 1, self._key(account), now, account.max_concurrency,
            now + LEASE_SECONDS, token, int(LEASE_SECONDS * 2)))
        return bool(taken)

    async def give_back(self, account: AccountRef, token: str) -> None:
        await self._client().zrem(self._key(account), token)

    async def renew(self, account: AccountRef, token: str) -> None:
        await self._client().zadd(self._key(account), {token: time.time() + LEASE_SECONDS},
                                  xx=True)

    async def busy(self, account: AccountRef) -> int:
        client = self._client()
        await self._checked(client.zremrangebyscore(self._key(account), "-inf", time.time()))
        return int(await self._checked(client.zcard(self._key(account))))

    def _backoff_key(self, account_id: int) -> str:
        return self.redis.key("backoff", account_id)

    async def record_rate_limit(self, account_id: int, hold_for: Callable[[int], float],
                                keep: float) -> float:
        client, key = self._client(), self._backoff_key(account_id)
        try:
            streak = int(await client.hincrby(key, "streak", 1))
            hold = hold_for(streak)
            await client.hset(key, "hold_until", time.time() + hold)
            await client.expire(key, max(1, math.ceil(max(keep, hold))))
        except self.unreachable:  # the cooldown in the database still applies
            self._failed("record a rate limit")
            return hold_for(1)
        return hold

    async def held_until(self, account_id: int) -> float | None:
        value = await self._checked(
            self._client().hget(self._backoff_key(account_id), "hold_until"))
        return float(value) if value is not None else None

    async def clear_backoff(self, account_id: int) -> None:
        try:
            await self._client().delete(self._backoff_key(account_id))
        except self.unreachable:  # it expires by itself
            self._failed("clear a backoff")


class AccountPool:
    def __init__(self, slots: LocalSlots | RedisSlots,
                 affinity: LocalAffinity | RedisAffinity | None = None,
                 routing: Snapshot[Routing] | None = None) -> None:
        self.slots = slots
        self.affinity = affinity or LocalAffinity()  # conversation → account pins
        # The process's routing snapshot (the Runtime's): marked stale when a cooldown or a
        # block is written, so this process routes around the account at once.
        self.routing = routing
        self.waiting = 0
        self._turn = itertools.count()
        self._waiters: set[asyncio.Future[None]] = set()

    def eligible(self, accounts: list[AccountRef]) -> tuple[list[AccountRef], float]:
        """Accounts usable now, and the shortest cooldown left among the others."""
        now = time.time()
        usable, waits = [], []
        for account in accounts:
            left = (account.cooldown_until or 0.0) - now
            if left > 0:
                waits.append(left)
            else:
                usable.append(account)
        return usable, min(waits, default=0.0)

    async def acquire(self, accounts: list[AccountRef], *, timeout: float,
                      prefer: int | None = None) -> Lease:
        """A slot on the least busy usable account (round robin among equals), waiting up to
        `timeout` in a bounded queue when every usable account is full. The `prefer`red
        account (a conversation's pin) is tried first while it is usable."""
        if not accounts:
            raise NoAccount(gettext("no usable account"))
        deadline = time.monotonic() + timeout
        queued = False
        try:
            while True:
                usable = self.eligible(accounts)[0] or await self._last_resort(accounts)
                lease = await self._try(usable, prefer)
                if lease is not None:
                    return lease
                if not queued:
                    if self.waiting >= settings.IFLOW2API["POOL_QUEUE_MAX"]:
                        raise PoolExhausted(
                            gettext("too many requests are waiting for an account"), 5.0)
                    self.waiting += 1
                    queued = True
                left = deadline - time.monotonic()
                if left <= 0:
                    raise PoolExhausted(
                        gettext("all accounts for this model are busy (per-account concurrency "
                                "limit); try again shortly"), 2.0)
                waiter = asyncio.get_running_loop().create_future()
                self._waiters.add(waiter)
                try:
                    # Local releases wake us at once; other processes' releases by polling.
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(waiter, min(left, self._poll()))
                finally:
                    self._waiters.discard(waiter)
        finally:
            if queued:
                self.waiting -= 1

    async def _last_resort(self, cooling: list[AccountRef]) -> list[AccountRef]:
        """Every account cools down: those held back only by a rate-limit backoff that is over
        take requests again (the upstream decides); PoolExhausted when none is."""
        now = time.time()
        usable, waits, rate_limited = [], [], False
        for account in cooling:
            held = await self.slots.held_until(account.id)
            rate_limited = rate_limited or held is not None
            until = held if held is not None else (account.cooldown_until or 0.0)
            if until <= now:
                usable.append(account)
            else:
                waits.append(until - now)
        if usable:
            return usable
        raise PoolExhausted(
            gettext("every account for this model is cooling down after rate limits")
            if rate_limited else
            gettext("every account for this model is cooling down after an upstream error; "
                    "the admin shows each account's last error"),
            max(min(waits, default=1.0), 1.0), after_error=not rate_limited)

    def _poll(self) -> float:
        return POLL_SECONDS if isinstance(self.slots, RedisSlots) else 1.0

    async def _try(self, usable: list[AccountRef], prefer: int | None = None) -> Lease | None:
        turn = next(self._turn)
        order = usable[turn % len(usable):] + usable[:turn % len(usable)]
        loads = [(await self.slots.busy(a) if a.max_concurrency else 0, i, a)
                 for i, a in enumerate(order)]
        ranked = sorted(loads, key=lambda item: (item[2].id != prefer, item[0], item[1]))
        for _, _, account in ranked:
            token = random_hex(32)
            if not account.max_concurrency:
                return Lease(account, token, counted=False)
            if await self.slots.try_take(account, token):
                lease = Lease(account, token, counted=True)
                if isinstance(self.slots, RedisSlots):
                    lease.renewer = asyncio.ensure_future(self._renew(lease))
                return lease
        return None

    async def _renew(self, lease: Lease) -> None:
        while True:
            await asyncio.sleep(RENEW_EVERY)
            with contextlib.suppress(Exception):
                await self.slots.renew(lease.account, lease.token)

    async def release(self, lease: Lease) -> None:
        """Gives the slot back; releasing twice is harmless."""
        if lease.released:
            return
        lease.released = True
        if lease.renewer is not None:
            lease.renewer.cancel()
        if lease.counted:
            try:
                await self.slots.give_back(lease.account, lease.token)
            except Exception:  # Redis away: the lease expires on its own
                log.warning("could not release a pool slot of account %s", lease.account.id)
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    # Cooldowns and blocks live in the database: this process's routing snapshot is rebuilt
    # at once (invalidated), the others' within seconds, and an admin's reset takes effect.
    async def cool_down(self, account: AccountRef, seconds: float, reason: str) -> None:
        """Out of rotation for `seconds`, also as the last account (a refused key, no balance)."""
        await self.slots.clear_backoff(account.id)
        await sync_to_async(_store_state)(account.id, Account.State.COOLING, reason,
                                          timezone.now() + timedelta(seconds=seconds))
        invalidate_routing(self.routing)

    async def rate_limited(self, account: AccountRef, retry_after: float | None,
                           reason: str) -> float:
        """An upstream rate limit: routed around for `retry_after`, else for
        RATE_LIMIT_COOLDOWN_SECONDS; as the last account held back only for `retry_after`, else
        for 1, 2, 4 … s on rate limits in a row (capped by the setting). Returns the hold."""
        cap = float(settings.IFLOW2API["RATE_LIMIT_COOLDOWN_SECONDS"])
        cooldown = retry_after if retry_after else cap

        def hold_for(streak: int) -> float:
            return retry_after if retry_after else min(2.0 ** min(streak - 1, 30), cap)

        hold = await self.slots.record_rate_limit(account.id, hold_for, cooldown)
        await sync_to_async(_store_state)(account.id, Account.State.COOLING, reason,
                                          timezone.now() + timedelta(seconds=cooldown))
        invalidate_routing(self.routing)
        return hold

    async def recovered(self, account: AccountRef) -> None:
        """A cooling account served a request: the rate limit is over, the backoff starts over."""
        await self.slots.clear_backoff(account.id)
        await sync_to_async(_mark_active)(account.id)
        invalidate_routing(self.routing)

    async def block(self, account: AccountRef, reason: str) -> None:
        await sync_to_async(_store_state)(account.id, Account.State.BLOCKED, reason, None)
        invalidate_routing(self.routing)


def _store_state(account_id: int, state: str, reason: str, until: object) -> None:
    Account.objects.filter(pk=account_id).update(state=state, last_error=reason[:1000],
                                                 cooldown_until=until)


def _mark_active(account_id: int) -> None:
    Account.objects.filter(pk=account_id, state=Account.State.COOLING).update(
        state=Account.State.ACTIVE, cooldown_until=None)


def build_pool(redis: SharedRedis | None,
               routing: Snapshot[Routing] | None = None) -> AccountPool:
    """A process's pool (proxy/runtime.py owns it): slots in Redis when there is one."""
    return AccountPool(RedisSlots(redis) if redis is not None else LocalSlots(),
                       build_affinity(redis), routing)
