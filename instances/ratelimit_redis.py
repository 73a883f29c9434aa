"""The rate limiter shared by every process through Redis: one Lua script per admit(), so the
check and the count are one atomic step (Django's cache.incr/aincr is get-then-set and would
let concurrent requests through).

Keys, all under the process's Redis namespace (iflow2api_lib/redis_client.py: one per database,
with a hash tag so a multi-key script stays legal on Redis Cluster):
    {ns}:rl:{bucket}:m:{start}  :h:{start}  :d:{start}   requests in that window (then expire)
    {ns}:rl:{bucket}:t:{start}                           tokens in that minute
    {ns}:rl:{bucket}:s                                   stream leases: sorted set, score = expiry
Windows come from the caller's clock (like django-ratelimit): servers sharing a Redis should
keep their clocks in sync (NTP); a skew only blurs the window edges by that much.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Sequence

import redis as redis_errors

from iflow2api_lib.redis_client import SharedRedis
from instances.ratelimit import (
    ADMITTED,
    DAY,
    HOUR,
    LEASE_SECONDS,
    MINUTE,
    Admission,
    Bucket,
    Clock,
    refusal,
    window_start,
)

log = logging.getLogger(__name__)

KINDS = ("m", "h", "d", "t", "s")  # the order of a bucket's five keys and limits
EXPIRY_MARGIN = 60  # counters outlive their window a little, for servers whose clocks lag
WARN_EVERY = 60.0

# KEYS: five per bucket (m, h, d, t, s).  ARGV: now, lease id, lease expiry, stream-key TTL,
# TTLs of the m, h and d counters; then five limits per bucket (-1: not checked). TTLs are
# relative to the caller's clock (not EXPIREAT), so they follow the clock that chose the window.
# Phase one checks everything and counts nothing; phase two counts, only if nothing blocked.
ADMIT_SCRIPT = """
local now = tonumber(ARGV[1])
local blocked = {0}
local n = #KEYS / 5
for i = 0, n - 1 do
  local k, a = i * 5, 7 + i * 5
  for j = 1, 4 do
    local limit = tonumber(ARGV[a + j])
    if limit >= 0 and tonumber(redis.call('GET', KEYS[k + j]) or '0') >= limit then
      blocked[#blocked + 1] = i
      blocked[#blocked + 1] = j
    end
  end
  local streams = tonumber(ARGV[a + 5])
  if streams >= 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[k + 5], '-inf', now)
    if redis.call('ZCARD', KEYS[k + 5]) >= streams then
      blocked[#blocked + 1] = i
      blocked[#blocked + 1] = 5
    end
  end
end
if #blocked > 1 then
  return blocked
end
for i = 0, n - 1 do
  local k, a = i * 5, 7 + i * 5
  for j = 1, 3 do
    if tonumber(ARGV[a + j]) >= 0 and redis.call('INCR', KEYS[k + j]) == 1 then
      redis.call('EXPIRE', KEYS[k + j], ARGV[4 + j])
    end
  end
  if tonumber(ARGV[a + 5]) >= 0 then
    redis.call('ZADD', KEYS[k + 5], ARGV[3], ARGV[2])
    redis.call('EXPIRE', KEYS[k + 5], ARGV[4])
  end
end
return {1}
"""


def ttl(now: float, period: int) -> int:
    """Seconds a counter of the current window must live."""
    return math.ceil(window_start(now, period) + period - now) + EXPIRY_MARGIN


def _limit(value: int | None) -> int:
    return -1 if value is None else value


class RedisLimiter:
    def __init__(self, redis: SharedRedis, *, clock: Clock = time.time,
                 lease_seconds: float = LEASE_SECONDS) -> None:
        # The shared client's short socket timeouts: a hung Redis must not hang the API (we
        # fail open, see _failed).
        self.redis = redis
        self.namespace = redis.key("rl")
        self.clock = clock
        self.lease_seconds = lease_seconds
        self._script: tuple[object, object] | None = None  # (client, its registered script)
        self._warned_at = 0.0
        self._pending: set[asyncio.Future[None]] = set()  # releases under way (kept referenced)

    def _connection(self):  # type: ignore[no-untyped-def]
        client = self.redis.client()
        if self._script is None or self._script[0] is not client:
            self._script = (client, client.register_script(ADMIT_SCRIPT))
        return self._script

    def key(self, bucket_id: str, kind: str, now: float) -> str:
        if kind == "s":
            return f"{self.namespace}:{bucket_id}:s"
        period = HOUR if kind == "h" else DAY if kind == "d" else MINUTE
        return f"{self.namespace}:{bucket_id}:{kind}:{window_start(now, period)}"

    def _failed(self, action: str) -> None:
        # Redis away: let requests through rather than take the API down; say so, not too often.
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY:
            self._warned_at = now
            log.warning("rate limiter: Redis unreachable, could not %s (limits not enforced)",
                        action, exc_info=True)

    async def admit(self, buckets: Sequence[Bucket], *, stream: bool) -> Admission:
        relevant = [b for b in buckets if b.concerns(stream)]
        if not relevant:
            return ADMITTED
        now = self.clock()
        lease = uuid.uuid4().hex if stream else ""
        keys: list[str] = []
        args: list[object] = [f"{now:.6f}", lease, f"{now + self.lease_seconds:.6f}",
                              int(self.lease_seconds) + EXPIRY_MARGIN]
        args += [ttl(now, period) for period in (MINUTE, HOUR, DAY)]
        for b in relevant:
            keys += [self.key(b.id, kind, now) for kind in KINDS]
            args += [_limit(b.rpm), _limit(b.rph), _limit(b.rpd), _limit(b.tpm),
                     _limit(b.streams) if stream else -1]
        _client, script = self._connection()
        try:
            result = await script(keys=keys, args=args)  # type: ignore[operator]
        except redis_errors.RedisError:
            self._failed("count a request")
            return ADMITTED
        if int(result[0]) == 1:
            slots = tuple(b.id for b in relevant if stream and b.streams is not None)
            return Admission(True, lease=lease, slots=slots) if slots else ADMITTED
        pairs = [int(v) for v in result[1:]]
        blocks = [(relevant[pairs[i]], KINDS[pairs[i + 1] - 1]) for i in range(0, len(pairs), 2)]
        return refusal(blocks, now)

    async def release(self, admission: Admission) -> None:
        if admission.released or not admission.slots:
            return
        admission.released = True
        # Releases run in `finally` blocks of streams whose client went away, i.e. while the
        # task is being cancelled: shield the give-back so the slot is not kept for an hour.
        task = asyncio.ensure_future(self._give_back(admission))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        await asyncio.shield(task)

    async def _give_back(self, admission: Admission) -> None:
        client, _script = self._connection()
        try:
            async with client.pipeline(transaction=False) as pipe:  # type: ignore[attr-defined]
                for bucket_id in admission.slots:
                    pipe.zrem(self.key(bucket_id, "s", 0), admission.lease)
                await pipe.execute()
        except redis_errors.RedisError:
            self._failed("release a stream slot")  # the lease expires by itself

    async def add_tokens(self, buckets: Sequence[Bucket], tokens: int) -> None:
        counted = [b for b in buckets if b.tpm is not None]
        if tokens <= 0 or not counted:
            return
        now = self.clock()
        expires = ttl(now, MINUTE)
        client, _script = self._connection()
        try:
            async with client.pipeline(transaction=False) as pipe:  # type: ignore[attr-defined]
                for b in counted:
                    key = self.key(b.id, "t", now)
                    pipe.incrby(key, tokens)
                    pipe.expire(key, expires)
                await pipe.execute()
        except redis_errors.RedisError:
            self._failed("count tokens")

    async def aclose(self) -> None:
        """Closes this loop's connection (tests; servers keep theirs for life)."""
        self._script = None
        await self.redis.aclose()
