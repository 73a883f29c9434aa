"""The rate limiter engine: which counters a request touches, and exact counting in this
process and through a real Redis shared by several processes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from iflow2api_lib.redis_client import SharedRedis, database_namespace
from instances import ratelimit
from instances.models import ClientKey, Instance, RateRule
from instances.ratelimit import (
    DAY,
    Bucket,
    LocalLimiter,
    RuleRef,
    RuleSet,
    buckets_for,
    rule_refs,
    window_start,
)
from instances.ratelimit_redis import RedisLimiter
from proxy.runtime import Runtime
from tests.servers import ROOT
from tests.services import REDIS_URL, require_redis

# 12:00:15 UTC on some day: 45 s left in the minute, 3585 in the hour, 43185 in the day.
T0 = window_start(1_750_000_000, DAY) + 12 * 3600 + 15


class Clock:
    """A clock the test moves by hand, so no window boundary falls inside a test."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def namespace() -> Iterator[str]:
    """A Redis namespace of this test's own; its keys are deleted afterwards."""
    require_redis()
    ns = "iflow2api:{test-" + uuid.uuid4().hex[:12] + "}"
    yield ns
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=ns + ":*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(params=["local", "redis"])
def make(request) -> Callable[..., LocalLimiter | RedisLimiter]:
    """Builds the limiter under test, in-process or on Redis, with the test's clock."""
    if request.param == "local":
        return lambda **kw: LocalLimiter(**kw)
    ns = request.getfixturevalue("namespace")
    return lambda **kw: RedisLimiter(SharedRedis(REDIS_URL, ns), **kw)


def drive(limiter, body: Callable[[], Awaitable[object]]) -> object:
    async def run():
        try:
            return await body()
        finally:
            if isinstance(limiter, RedisLimiter):
                await limiter.aclose()
    return asyncio.run(run())


def rule(id=1, scope="key", instance_id=None, key_id=None, **limits) -> RuleRef:
    fields = dict(rpm=None, rph=None, rpd=None, streams=None, tpm=None) | limits
    return RuleRef(id=id, scope=scope, instance_id=instance_id, key_id=key_id, **fields)


# --- which counters a request touches ------------------------------------------------------------


def ids(rules, instance_id=1, key_id=None, ip="10.0.0.1") -> list[str]:
    return [b.id for b in buckets_for(rules, instance_id=instance_id, key_id=key_id,
                                      client_ip=ip)]


def test_a_key_rule_without_a_key_gives_every_key_its_own_counter():
    rules = [rule(1, "key", rpm=5)]
    assert ids(rules, key_id=7) == ["1:k7"]
    assert ids(rules, key_id=8) == ["1:k8"]
    assert ids(rules, instance_id=2, key_id=9) == ["1:k9"]  # no instance: every instance
    assert ids(rules, key_id=None) == []  # an open instance's requests have no key


def test_a_key_rule_naming_a_key_applies_to_that_key_only():
    rules = [rule(1, "key", key_id=7, rpm=5), rule(2, "key", instance_id=1, rph=100)]
    assert ids(rules, key_id=7) == ["1:k7", "2:k7"]
    assert ids(rules, key_id=8) == ["2:k8"]
    assert ids(rules, instance_id=2, key_id=8) == []  # rule 2 is for instance 1


def test_instance_rules_count_all_clients_together_per_instance():
    rules = [rule(3, "instance", instance_id=1, rpm=5), rule(4, "instance", rpd=9)]
    assert ids(rules, key_id=7, ip="10.0.0.1") == ["3:i1", "4:i1"]
    assert ids(rules, key_id=None, ip="10.0.0.2") == ["3:i1", "4:i1"]
    assert ids(rules, instance_id=2) == ["4:i2"]


def test_ip_rules_count_per_instance_and_client_ip():
    rules = [rule(5, "ip", rpm=5)]
    assert ids(rules, ip="10.0.0.1") == ["5:i1:ip:10.0.0.1"]
    assert ids(rules, ip="::1", key_id=3) == ["5:i1:ip:::1"]
    assert ids(rules, instance_id=2, ip="10.0.0.1") == ["5:i2:ip:10.0.0.1"]


def test_buckets_carry_the_rules_limits():
    [bucket] = buckets_for([rule(1, "ip", rpm=1, rph=2, rpd=3, streams=4, tpm=5)],
                           instance_id=1, key_id=None, client_ip="1.2.3.4")
    assert (bucket.rpm, bucket.rph, bucket.rpd, bucket.streams, bucket.tpm) == (1, 2, 3, 4, 5)


def test_a_rule_set_makes_the_buckets_of_each_combination_once():
    rules = RuleSet([rule(1, "key", rpm=5), rule(5, "ip", rpm=5)])

    def of(key_id, ip):
        return rules.buckets(instance_id=1, key_id=key_id, client_ip=ip)

    first = of(7, "10.0.0.1")
    assert [b.id for b in first] == ["1:k7", "5:i1:ip:10.0.0.1"]
    assert of(7, "10.0.0.1") is first  # shared, windows and all
    assert [b.id for b in of(7, "10.0.0.2")] == ["1:k7", "5:i1:ip:10.0.0.2"]
    assert [b.id for b in of(8, "10.0.0.1")] == ["1:k8", "5:i1:ip:10.0.0.1"]
    assert [b.id for b in of(None, "10.0.0.1")] == ["5:i1:ip:10.0.0.1"]
    # Without an IP rule the client's address does not matter, nor make new entries.
    by_key = RuleSet([rule(1, "key", rpm=5)])
    assert by_key.buckets(instance_id=1, key_id=7, client_ip="10.0.0.1") is by_key.buckets(
        instance_id=1, key_id=7, client_ip="10.0.0.2")
    assert RuleSet().buckets(instance_id=1, key_id=7, client_ip="10.0.0.1") == ()


def test_a_rule_set_keeps_a_bounded_memo(monkeypatch):
    monkeypatch.setattr(RuleSet, "MEMO_MAX", 3)
    rules = RuleSet([rule(5, "ip", rpm=5)])
    for n in range(10):
        ip = f"10.0.0.{n}"
        found = rules.buckets(instance_id=1, key_id=None, client_ip=ip)
        assert [b.id for b in found] == [f"5:i1:ip:{ip}"]
        assert len(rules._memo) <= 3


@pytest.mark.django_db
def test_rule_refs_reads_the_enabled_rules():
    instance = Instance.objects.create(name="rl", port=18999)
    key, _secret = ClientKey.create(instance, "k")
    on = RateRule.objects.create(scope="key", key=key, requests_per_minute=3,
                                 concurrent_streams=2)
    RateRule.objects.create(scope="ip", instance=instance, requests_per_day=9, enabled=False)
    every = RateRule.objects.create(scope="instance", instance=instance, tokens_per_minute=1000,
                                    requests_per_hour=50)
    assert rule_refs() == [
        RuleRef(on.pk, "key", None, key.pk, 3, None, None, 2, None),
        RuleRef(every.pk, "instance", instance.pk, None, None, 50, None, None, 1000),
    ]


# --- semantics, in-process and on Redis ----------------------------------------------------------


def test_a_minute_window_admits_its_limit_then_says_when_it_ends(make):
    clock = Clock()
    limiter = make(clock=clock)
    bucket = Bucket("1:k7", "key", rpm=2)

    async def body():
        first = [await limiter.admit([bucket], stream=False) for _ in range(2)]
        refused = await limiter.admit([bucket], stream=False)
        clock.now = T0 + 45  # the next minute
        again = await limiter.admit([bucket], stream=False)
        return first, refused, again

    first, refused, again = drive(limiter, body)
    assert all(a.allowed for a in first)
    assert not refused.allowed
    assert refused.retry_after == 45
    assert refused.reason == "rate limit: 2 requests per minute for this key"
    assert again.allowed


def test_refused_requests_are_not_counted_and_the_longest_wait_is_given(make):
    clock = Clock()
    limiter = make(clock=clock)
    bucket = Bucket("2:i1", "instance", rpm=1, rph=2)

    async def body():
        out = [await limiter.admit([bucket], stream=False)]  # 1 this hour
        out += [await limiter.admit([bucket], stream=False) for _ in range(5)]  # refused
        clock.now = T0 + 60
        out.append(await limiter.admit([bucket], stream=False))  # 2 this hour: not 7
        clock.now = T0 + 120
        out.append(await limiter.admit([bucket], stream=False))
        return out

    out = drive(limiter, body)
    assert [a.allowed for a in out] == [True] + [False] * 5 + [True, False]
    assert out[1].retry_after == 45
    # Both the minute and the hour are full: only the end of the hour helps.
    assert out[-1].retry_after == 3585 - 120
    assert out[-1].reason == "rate limit: 2 requests per hour for this instance"


def test_a_day_window_ends_at_midnight_utc(make):
    limiter = make(clock=Clock())
    bucket = Bucket("3:i1:ip:10.0.0.1", "ip", rpd=1)

    async def body():
        return [await limiter.admit([bucket], stream=False) for _ in range(2)]

    ok, refused = drive(limiter, body)
    assert ok.allowed and not refused.allowed
    assert refused.retry_after == 43185
    assert refused.reason == "rate limit: 1 request per day for your IP address"


def test_a_limit_of_zero_refuses_everything_it_covers(make):
    limiter = make(clock=Clock())
    suspended = Bucket("3:k9", "key", rpm=0, streams=0)

    async def body():
        return (await limiter.admit([suspended], stream=False),
                await limiter.admit([suspended], stream=True))

    plain, stream = drive(limiter, body)
    assert not plain.allowed and plain.retry_after == 45
    assert not stream.allowed and stream.reason == "rate limit: 0 requests per minute for this key"


def test_admission_is_all_or_nothing_across_buckets(make):
    limiter = make(clock=Clock())
    tight, loose = Bucket("1:k7", "key", rpm=1), Bucket("2:i1", "instance", rpm=3)

    async def body():
        both = [await limiter.admit([tight, loose], stream=False) for _ in range(4)]
        loose_alone = [await limiter.admit([loose], stream=False) for _ in range(3)]
        return both, loose_alone

    both, loose_alone = drive(limiter, body)
    assert [a.allowed for a in both] == [True, False, False, False]
    # The refused requests did not count against the loose bucket: 2 of its 3 remain.
    assert [a.allowed for a in loose_alone] == [True, True, False]


def test_tokens_per_minute_refuse_once_the_budget_is_spent(make):
    clock = Clock()
    limiter = make(clock=clock)
    bucket = Bucket("4:k7", "key", tpm=100)

    async def body():
        out = [await limiter.admit([bucket], stream=False)]
        await limiter.add_tokens([bucket], 60)
        out.append(await limiter.admit([bucket], stream=False))  # 60 < 100
        await limiter.add_tokens([bucket], 50)
        out.append(await limiter.admit([bucket], stream=False))  # 110 >= 100
        clock.now = T0 + 45
        out.append(await limiter.admit([bucket], stream=False))
        return out

    out = drive(limiter, body)
    assert [a.allowed for a in out] == [True, True, False, True]
    assert out[2].retry_after == 45
    assert out[2].reason == "rate limit: 100 tokens per minute for this key"


def test_concurrent_streams_take_slots_until_released(make):
    limiter = make(clock=Clock())
    bucket = Bucket("5:k7", "key", streams=2)

    async def body():
        a = await limiter.admit([bucket], stream=True)
        b = await limiter.admit([bucket], stream=True)
        full = await limiter.admit([bucket], stream=True)
        plain = await limiter.admit([bucket], stream=False)  # not a stream: no slot needed
        await limiter.release(a)
        await limiter.release(a)  # twice: still only one slot back
        c = await limiter.admit([bucket], stream=True)
        d = await limiter.admit([bucket], stream=True)
        await limiter.release(b)
        await limiter.release(c)
        e = await limiter.admit([bucket], stream=True)
        return a, b, full, plain, c, d, e

    a, b, full, plain, c, d, e = drive(limiter, body)
    assert a.allowed and b.allowed and a.slots == (bucket.id,) and a.lease != b.lease
    assert not full.allowed and full.retry_after == ratelimit.STREAM_RETRY_SECONDS
    assert full.reason == "rate limit: 2 concurrent streams for this key"
    assert plain.allowed and plain.slots == ()
    assert c.allowed and not d.allowed and e.allowed


def test_a_release_interrupted_by_cancellation_still_gives_the_slot_back(make):
    limiter = make(clock=Clock())
    bucket = Bucket("5:k8", "key", streams=1)

    async def take():
        return await limiter.admit([bucket], stream=True)

    held = drive(limiter, take)

    async def cancelled_release():
        # The stream's task is cancelled again (client gone) while its `finally` releases, on
        # a loop whose Redis connection is not open yet: the cancel lands before the command.
        releasing = asyncio.ensure_future(limiter.release(held))
        await asyncio.sleep(0)
        releasing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await releasing
        for _ in range(100):
            if (await limiter.admit([bucket], stream=True)).allowed:
                return True
            await asyncio.sleep(0.01)
        return False

    assert held.allowed and drive(limiter, cancelled_release)


def test_a_stream_slot_nobody_releases_expires(make):
    clock = Clock()
    limiter = make(clock=clock, lease_seconds=30)
    bucket = Bucket("6:i1", "instance", streams=1)

    async def body():
        held = await limiter.admit([bucket], stream=True)  # its holder dies: never released
        blocked = await limiter.admit([bucket], stream=True)
        clock.now = T0 + 31
        return held, blocked, await limiter.admit([bucket], stream=True)

    held, blocked, later = drive(limiter, body)
    assert held.allowed and not blocked.allowed and later.allowed


def test_nothing_to_check_means_no_io(caplog):
    # Pointed at a port where no Redis listens: any I/O would log a warning.
    limiter = RedisLimiter(SharedRedis("redis://127.0.0.1:1/0", "iflow2api:{none}"))
    streams_only = Bucket("7:k7", "key", streams=1)

    async def body():
        return [await limiter.admit([], stream=True),
                await limiter.admit([streams_only], stream=False),
                await limiter.add_tokens([streams_only], 50)]

    with caplog.at_level(logging.WARNING):
        first, second, _none = drive(limiter, body)
    assert first.allowed and second.allowed
    assert not caplog.records


def test_an_unreachable_redis_lets_requests_through_and_warns(caplog):
    limiter = RedisLimiter(SharedRedis("redis://127.0.0.1:1/0", "iflow2api:{none}"))
    bucket = Bucket("8:k7", "key", rpm=1, streams=1)

    async def body():
        admission = await limiter.admit([bucket], stream=True)
        await limiter.release(admission)
        return admission

    with caplog.at_level(logging.WARNING):
        assert drive(limiter, body).allowed
    assert "Redis unreachable" in caplog.text


def test_redis_keys_live_in_the_namespace_and_expire(namespace):
    limiter = RedisLimiter(SharedRedis(REDIS_URL, namespace), clock=Clock())
    bucket = Bucket("9:k7", "key", rpm=5, rph=5, rpd=5, streams=5, tpm=5)

    async def body():
        await limiter.admit([bucket], stream=True)
        await limiter.add_tokens([bucket], 3)

    drive(limiter, body)
    client = redis.Redis.from_url(REDIS_URL)
    keys = sorted(k.decode() for k in client.scan_iter(match=namespace + ":*"))
    assert [k.split(":")[-2:] for k in keys] == [
        ["d", str(window_start(T0, 86400))], ["h", str(window_start(T0, 3600))],
        ["m", str(window_start(T0, 60))], ["k7", "s"], ["t", str(window_start(T0, 60))]]
    assert all(client.ttl(k) > 0 for k in keys)
    client.close()


def test_the_runtime_limiter_follows_redis_url(settings):
    settings.REDIS_URL = ""
    assert isinstance(Runtime.build().limiter, LocalLimiter)
    settings.REDIS_URL = REDIS_URL
    runtime = Runtime.build()
    shared = runtime.limiter
    database = settings.DATABASES["default"]
    assert isinstance(shared, RedisLimiter) and shared.redis is runtime.redis
    # One namespace for the pool, the limiter and the status counts: per database.
    assert shared.namespace == database_namespace(database) + ":rl"
    assert runtime.pool.slots.redis is runtime.redis  # type: ignore[union-attr]
    assert runtime.status.store.prefix.startswith(database_namespace(database) + ":")
    other = {**database, "NAME": "other"}
    assert database_namespace(other) != database_namespace(database)  # other counters


# --- exact counts under concurrency --------------------------------------------------------------


def test_concurrent_admits_in_one_process_pass_exactly_the_limit(make):
    limiter = make(clock=Clock())
    requests, streams = Bucket("10:i1", "instance", rpd=25), Bucket("11:i1", "instance",
                                                                    streams=7)

    async def body():
        counted = await asyncio.gather(*[limiter.admit([requests], stream=False)
                                         for _ in range(60)])
        slots = await asyncio.gather(*[limiter.admit([streams], stream=True) for _ in range(30)])
        return counted, slots

    counted, slots = drive(limiter, body)
    assert sum(a.allowed for a in counted) == 25
    assert sum(a.allowed for a in slots) == 7


def test_threads_share_the_local_limiter_exactly():
    limiter = LocalLimiter(clock=Clock())
    bucket = Bucket("12:k7", "key", rpd=50, streams=1000)

    def burst(_):
        async def many():
            return [await limiter.admit([bucket], stream=True) for _ in range(25)]
        return sum(a.allowed for a in asyncio.run(many()))

    with ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(burst, range(8))) == 50


CHILD = textwrap.dedent("""
    import asyncio, sys, time
    import django
    django.setup()
    import redis.asyncio as redis
    from iflow2api_lib.redis_client import SharedRedis
    from instances.ratelimit import Bucket
    from instances.ratelimit_redis import RedisLimiter

    url, ns, now, count, limit, kind = sys.argv[1:7]
    count, limit = int(count), int(limit)
    WORKERS = 8  # concurrent requests in each process, as in a busy server

    async def main():
        limiter = RedisLimiter(SharedRedis(url, ns), clock=lambda: float(now))
        bucket = (Bucket("shared", "key", rpd=limit) if kind == "requests"
                  else Bucket("shared", "key", streams=limit))
        warm_up = Bucket("warm-up", "key", rpd=10**6)  # open the connections before the race
        await asyncio.gather(*[limiter.admit([warm_up], stream=False) for _ in range(WORKERS)])
        ready = redis.Redis.from_url(url)
        await ready.incr(ns + ":ready")  # start together, so the two processes really race
        deadline = time.monotonic() + 30
        while int(await ready.get(ns + ":ready")) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0)
        await ready.aclose()

        async def worker():
            return [(await limiter.admit([bucket], stream=kind == "streams")).allowed
                    for _ in range(count // WORKERS)]

        answers = sum(await asyncio.gather(*[worker() for _ in range(WORKERS)]), [])
        await limiter.aclose()
        print(sum(answers))

    asyncio.run(main())
""")


@pytest.mark.parametrize("kind", ["requests", "streams"])
def test_two_processes_sharing_redis_pass_exactly_the_limit(namespace, kind):
    limit = 200
    env = {"DJANGO_SETTINGS_MODULE": "tests.settings", "PATH": "/usr/bin:/bin"}
    children = [subprocess.Popen(
        [sys.executable, "-c", CHILD, REDIS_URL, namespace, str(T0), str(limit), str(limit),
         kind], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)]
    outputs = [child.communicate(timeout=60) for child in children]
    assert all(child.returncode == 0 for child in children), [err for _out, err in outputs]
    passed = [int(out.strip().splitlines()[-1]) for out, _err in outputs]
    # 2 × N requests against a limit of N (typically split ~60/40: the processes interleave).
    assert sum(passed) == limit, passed

