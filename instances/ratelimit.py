"""Rate rules on the request path: which counters a request touches, and the limiter that
counts them.

Windows are fixed and aligned like django-ratelimit's (start = now - now % period, in whole
seconds since the epoch, so a day starts at 00:00 UTC). Unlike django-ratelimit we do not
stagger windows per key, so "per day" means a calendar day, and a refused request is not
counted, so a client that keeps retrying is not locked out for longer. A client can get up to
twice a limit across a window boundary: the price of a simple, exact count.

`admit()` is all-or-nothing: it checks every window of every bucket, the token budget and
(for streams) the concurrency slots, and counts only when everything passes. In-process
(`LocalLimiter`) that is one lock; with Redis (`RedisLimiter`) one Lua script, so the count is
exact across processes. Stream slots are leases with an expiry (LEASE_SECONDS), so a process
that dies mid-stream cannot hold one for ever.

Tokens are added after a request (`add_tokens`), in the minute they are reported; a request is
refused while the current minute's tokens have reached the budget. A limit of 0 refuses
everything it covers (a way to suspend a key). If Redis cannot be reached the limiter lets
requests through and logs a warning: rate limits must not take the API down.

The hot functions never touch the ORM: `rule_refs()` reads the rules once per snapshot.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from iflow2api_lib.ids import random_hex

MINUTE, HOUR, DAY = 60, 3600, 86400
# A stream slot is held at most this long unless released: longer than any sane stream, short
# enough that a crashed process's slots come back the same day.
LEASE_SECONDS = 3600.0
# Retry-After for a full concurrency limit: streams end at no known time; ask again soon.
STREAM_RETRY_SECONDS = 2
SWEEP_SECONDS = 60.0

Clock = Callable[[], float]


@dataclass(frozen=True)
class RuleRef:
    """A RateRule as the hot path sees it (None: that limit is not enforced)."""

    id: int
    scope: str  # "key" | "instance" | "ip"
    instance_id: int | None
    key_id: int | None
    rpm: int | None
    rph: int | None
    rpd: int | None
    streams: int | None
    tpm: int | None


@dataclass(frozen=True)
class Bucket:
    """One set of counters a request touches: a rule applied to one key, instance or IP."""

    id: str  # unique per rule and target, e.g. "3:k12", "4:i1", "5:i1:ip:10.0.0.7"
    scope: str
    rpm: int | None = None
    rph: int | None = None
    rpd: int | None = None
    streams: int | None = None
    tpm: int | None = None

    @functools.cached_property  # computed once per bucket (fine on a frozen dataclass)
    def windows(self) -> tuple[tuple[str, int, int], ...]:
        """(kind, period, limit) of each request limit that is set."""
        return tuple((kind, period, limit) for kind, period, limit in
                     (("m", MINUTE, self.rpm), ("h", HOUR, self.rph), ("d", DAY, self.rpd))
                     if limit is not None)

    def concerns(self, stream: bool) -> bool:
        """Whether admit() has anything to check here."""
        return (self.rpm is not None or self.rph is not None or self.rpd is not None
                or self.tpm is not None or (stream and self.streams is not None))


def rule_refs() -> list[RuleRef]:
    """The enabled rules, from the database (sync; called when a snapshot is rebuilt)."""
    from instances.models import RateRule  # the hot path imports this module without the ORM

    refs = []
    for rule in RateRule.objects.filter(enabled=True).order_by("id"):
        ref = RuleRef(id=rule.pk, scope=rule.scope, instance_id=rule.instance_id,
                      key_id=rule.key_id, rpm=rule.requests_per_minute,
                      rph=rule.requests_per_hour, rpd=rule.requests_per_day,
                      streams=rule.concurrent_streams, tpm=rule.tokens_per_minute)
        if any(v is not None for v in (ref.rpm, ref.rph, ref.rpd, ref.streams, ref.tpm)):
            refs.append(ref)
    return refs


def buckets_for(rules: Iterable[RuleRef], *, instance_id: int, key_id: int | None,
                client_ip: str) -> list[Bucket]:
    """The counters one request touches. A rule applies when its instance (if set) and its key
    (if set) match. Key rules count per key (a rule naming no key gives every key its own
    counter) and do not apply to requests without a key; instance rules count all clients of
    the instance together; IP rules count per instance and client IP."""
    buckets = []
    for rule in rules:
        if rule.instance_id is not None and rule.instance_id != instance_id:
            continue
        if rule.scope == "key":
            if key_id is None or (rule.key_id is not None and rule.key_id != key_id):
                continue
            target = f"k{key_id}"
        elif rule.scope == "instance":
            target = f"i{instance_id}"
        elif rule.scope == "ip":
            target = f"i{instance_id}:ip:{client_ip}"
        else:
            continue
        buckets.append(Bucket(f"{rule.id}:{target}", rule.scope, rule.rpm, rule.rph, rule.rpd,
                              rule.streams, rule.tpm))
    return buckets


class RuleSet:
    """The enabled rules of one directory snapshot, and the buckets each request touches.

    The same few combinations (instance, key, client IP for IP rules) come again and again:
    their buckets are made once per snapshot, with their windows (`Bucket.windows`) worked
    out once, instead of on every request. Buckets are frozen, so requests share them."""

    MEMO_MAX = 4096  # per-IP combinations come and go: start afresh past this many

    def __init__(self, rules: Iterable[RuleRef] = ()) -> None:
        self.rules = tuple(rules)
        self._per_ip = any(rule.scope == "ip" for rule in self.rules)
        self._memo: dict[tuple[int, int | None, str], tuple[Bucket, ...]] = {}

    def buckets(self, *, instance_id: int, key_id: int | None,
                client_ip: str) -> tuple[Bucket, ...]:
        if not self.rules:
            return ()
        memo_key = (instance_id, key_id, client_ip if self._per_ip else "")
        found = self._memo.get(memo_key)
        if found is None:
            if len(self._memo) >= self.MEMO_MAX:
                self._memo.clear()
            found = self._memo[memo_key] = tuple(buckets_for(
                self.rules, instance_id=instance_id, key_id=key_id, client_ip=client_ip))
        return found


@dataclass
class Admission:
    allowed: bool
    retry_after: int = 0  # seconds, >= 1 when refused
    reason: str = ""
    lease: str | None = None  # the stream-slot lease, when slots were taken
    slots: tuple[str, ...] = ()  # ids of the buckets where this request holds a slot
    released: bool = False


ADMITTED = Admission(True)  # shared: it holds nothing, so releasing it is a no-op


class Limiter(Protocol):
    async def admit(self, buckets: Sequence[Bucket], *, stream: bool) -> Admission: ...

    async def release(self, admission: Admission) -> None: ...

    async def add_tokens(self, buckets: Sequence[Bucket], tokens: int) -> None: ...


def window_start(now: float, period: int) -> int:
    second = int(now)
    return second - second % period


PERIODS = {"m": MINUTE, "h": HOUR, "d": DAY, "t": MINUTE}


def refusal(blocks: list[tuple[Bucket, str]], now: float) -> Admission:
    """The answer for a refused request: wait for the last blocking window (nothing passes
    before it ends), and say which limit that is. Kinds: m h d (requests), t (tokens),
    s (streams)."""
    waits = []
    for bucket, kind in blocks:
        if kind == "s":
            wait = STREAM_RETRY_SECONDS
        else:
            period = PERIODS[kind]
            wait = max(1, math.ceil(window_start(now, period) + period - now))
        waits.append((wait, bucket, kind))
    wait, bucket, kind = max(waits, key=lambda item: item[0])
    return Admission(False, retry_after=wait, reason=describe(bucket, kind))


def describe(bucket: Bucket, kind: str) -> str:
    scope = {"key": _("for this key"), "instance": _("for this instance"),
             "ip": _("for your IP address")}.get(bucket.scope, "")
    if kind == "s":
        n = bucket.streams or 0
        text = ngettext("rate limit: %(n)d concurrent stream %(scope)s",
                        "rate limit: %(n)d concurrent streams %(scope)s", n)
    elif kind == "t":
        n = bucket.tpm or 0
        text = ngettext("rate limit: %(n)d token per minute %(scope)s",
                        "rate limit: %(n)d tokens per minute %(scope)s", n)
    elif kind == "m":
        n = bucket.rpm or 0
        text = ngettext("rate limit: %(n)d request per minute %(scope)s",
                        "rate limit: %(n)d requests per minute %(scope)s", n)
    elif kind == "h":
        n = bucket.rph or 0
        text = ngettext("rate limit: %(n)d request per hour %(scope)s",
                        "rate limit: %(n)d requests per hour %(scope)s", n)
    else:
        n = bucket.rpd or 0
        text = ngettext("rate limit: %(n)d request per day %(scope)s",
                        "rate limit: %(n)d requests per day %(scope)s", n)
    return text % {"n": n, "scope": scope}


class LocalLimiter:
    """Counters in this process. One lock around plain dict work (no await inside), so it is
    atomic for coroutines and threads alike."""

    def __init__(self, *, clock: Clock = time.time, lease_seconds: float = LEASE_SECONDS) -> None:
        self.clock = clock
        self.lease_seconds = lease_seconds
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], list[int]] = {}  # (bucket, kind) → [start, used]
        self._leases: dict[str, dict[str, float]] = {}  # bucket → {lease: expires at}
        self._sweep_at = 0.0

    def _used(self, bucket_id: str, kind: str, start: int) -> int:
        entry = self._counts.get((bucket_id, kind))
        return entry[1] if entry is not None and entry[0] == start else 0

    def _add(self, bucket_id: str, kind: str, start: int, amount: int) -> None:
        entry = self._counts.get((bucket_id, kind))
        if entry is None or entry[0] != start:
            self._counts[(bucket_id, kind)] = [start, amount]
        else:
            entry[1] += amount

    def _live(self, bucket_id: str, now: float) -> int:
        leases = self._leases.get(bucket_id)
        if not leases:
            return 0
        for lease in [lease for lease, expires in leases.items() if expires <= now]:
            del leases[lease]
        return len(leases)

    def _at_limit(self, bucket_id: str, limit: int, now: float) -> bool:
        # Dropping expired leases walks them all: with thousands of streams open that walk
        # per admission was quadratic, so it is done only when the count reaches the limit.
        held = len(self._leases.get(bucket_id) or ())
        return held >= limit and self._live(bucket_id, now) >= limit

    def _sweep(self, now: float) -> None:
        # Per-IP buckets come and go: drop counters whose window is over, now and then.
        if now < self._sweep_at:
            return
        self._sweep_at = now + SWEEP_SECONDS
        for key in [key for key, (start, _used) in self._counts.items()
                    if start + PERIODS[key[1]] <= now]:
            del self._counts[key]
        for bucket_id in [b for b in self._leases if not self._live(b, now)]:
            del self._leases[bucket_id]

    async def admit(self, buckets: Sequence[Bucket], *, stream: bool) -> Admission:
        relevant = [b for b in buckets if b.concerns(stream)]
        if not relevant:
            return ADMITTED
        now = self.clock()
        with self._lock:
            self._sweep(now)
            blocks: list[tuple[Bucket, str]] = []
            passed: list[tuple[str, str, int]] = []  # (bucket, kind, window start) to count
            for b in relevant:
                for kind, period, limit in b.windows:
                    start = window_start(now, period)
                    if self._used(b.id, kind, start) >= limit:
                        blocks.append((b, kind))
                    else:
                        passed.append((b.id, kind, start))
                if b.tpm is not None and self._used(b.id, "t", window_start(now, MINUTE)) >= b.tpm:
                    blocks.append((b, "t"))
                if stream and b.streams is not None and self._at_limit(b.id, b.streams, now):
                    blocks.append((b, "s"))
            if blocks:
                return refusal(blocks, now)
            for bucket_id, kind, start in passed:
                self._add(bucket_id, kind, start, 1)
            slots = tuple(b.id for b in relevant if stream and b.streams is not None)
            if not slots:
                return ADMITTED
            lease = random_hex(32)
            for bucket_id in slots:
                self._leases.setdefault(bucket_id, {})[lease] = now + self.lease_seconds
        return Admission(True, lease=lease, slots=slots)

    async def release(self, admission: Admission) -> None:
        if admission.released or not admission.slots:
            return
        admission.released = True
        with self._lock:
            for bucket_id in admission.slots:
                self._leases.get(bucket_id, {}).pop(admission.lease or "", None)

    async def add_tokens(self, buckets: Sequence[Bucket], tokens: int) -> None:
        if tokens <= 0:
            return
        counted = [b for b in buckets if b.tpm is not None]
        if not counted:
            return
        minute = window_start(self.clock(), MINUTE)
        with self._lock:
            for b in counted:
                self._add(b.id, "t", minute, tokens)
