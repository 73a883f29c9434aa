"""iflow2api_lib/snapshot.py: a value reloaded at most every TTL, at once when marked stale."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import Callable

import pytest

from iflow2api_lib.snapshot import Snapshot
from iflow2api_lib.threads import LOW_PRIORITY_NICE


def counting_loader() -> tuple[list[int], Callable[[], int]]:
    """A load that returns 1, 2, 3, … and the list of what it returned."""
    loads: list[int] = []

    def load() -> int:
        loads.append(len(loads) + 1)
        return loads[-1]

    return loads, load


def test_loaded_once_within_the_ttl_and_again_when_invalidated() -> None:
    _, load = counting_loader()

    async def scenario() -> list[int]:
        snapshot = Snapshot(load, ttl_seconds=3600)
        seen = [await snapshot.get(), await snapshot.get()]
        snapshot.invalidate()
        seen.append(await snapshot.get())
        return seen

    assert asyncio.run(scenario()) == [1, 1, 2]


def test_callers_waiting_for_a_load_are_woken_together() -> None:
    """A burst of requests after a quiet moment finds the value past its TTL: one load, and
    every caller gets the value in the loop pass after it (through a lock they were woken one a
    pass, each by the one before it: 500 callers took ~270 ms after a load of ~60 ms)."""
    loads: list[int] = []

    def load() -> int:
        time.sleep(0.05)  # a database query, in a thread
        loads.append(len(loads) + 1)
        return loads[-1]

    async def scenario() -> list[int]:
        loop = asyncio.get_running_loop()
        passes = [0]

        def count_pass() -> None:  # once per loop pass
            passes[0] += 1
            loop.call_soon(count_pass)

        count_pass()
        snapshot = Snapshot(load, ttl_seconds=3600)
        got_at: list[int] = []

        async def caller() -> None:
            assert await snapshot.get() == 1
            got_at.append(passes[0])

        await asyncio.gather(*(caller() for _ in range(200)))
        return got_at

    got_at = asyncio.run(scenario())
    assert loads == [1]
    assert max(got_at) - min(got_at) <= 1, (min(got_at), max(got_at))


def test_a_caller_that_goes_away_does_not_cancel_the_load_the_others_wait_for() -> None:
    loads: list[int] = []

    def load() -> int:
        time.sleep(0.05)
        loads.append(len(loads) + 1)
        return loads[-1]

    async def scenario() -> int:
        snapshot = Snapshot(load, ttl_seconds=3600)
        first = asyncio.ensure_future(snapshot.get())  # starts the load, then its client leaves
        await asyncio.sleep(0.01)
        second = asyncio.ensure_future(snapshot.get())
        first.cancel()
        return await second

    assert asyncio.run(scenario()) == 1
    assert loads == [1]


def test_a_caller_after_an_invalidation_does_not_get_the_load_that_began_before_it() -> None:
    """A load is running when this process changes the data (an admin change marks the
    snapshot stale): those already waiting get what it reads, a caller that comes after the
    mark waits for a load that began after it."""
    snapshot: Snapshot[int]
    loads: list[int] = []
    reading = threading.Event()

    def load() -> int:
        loads.append(len(loads) + 1)
        if len(loads) == 1:
            reading.set()
            time.sleep(0.1)
        return loads[-1]

    async def scenario() -> tuple[int, int]:
        before = asyncio.ensure_future(snapshot.get())
        while not reading.is_set():
            await asyncio.sleep(0.005)
        snapshot.invalidate()
        after = await snapshot.get()
        return await before, after

    snapshot = Snapshot(load, ttl_seconds=3600)
    assert asyncio.run(scenario()) == (1, 2)


def test_invalidation_holds_on_a_young_monotonic_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine up for less than the TTL (a fresh CI machine): the monotonic clock is small,
    and a stale mark must not read as "loaded at 0, still fresh"."""
    monkeypatch.setattr(time, "monotonic", lambda: 100.0)
    snapshot = Snapshot(lambda: object(), ttl_seconds=3600)
    first = asyncio.run(snapshot.get())
    assert snapshot.fresh()
    snapshot.invalidate()
    assert not snapshot.fresh()
    assert asyncio.run(snapshot.get()) is not first


def test_past_half_its_ttl_it_reloads_in_the_background_and_never_serves_older_than_the_ttl(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Under traffic the reload happens before the TTL, while callers get the current value
    (they do not queue behind a reload); past the TTL a caller waits for the new value."""
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    loads, load = counting_loader()

    async def scenario() -> list[int]:
        snapshot = Snapshot(load, ttl_seconds=2)
        seen = [await snapshot.get()]           # loaded: 1
        clock[0] += 0.9
        seen.append(await snapshot.get())       # young: 1, no reload
        assert snapshot.refresh is None
        clock[0] += 0.3                         # 1.2 s old: served, reloaded behind
        seen.append(await snapshot.get())
        seen.append(await snapshot.get())       # one reload at a time
        assert snapshot.refresh is not None
        await snapshot.refresh
        seen.append(await snapshot.get())       # the reloaded value: 2
        clock[0] += 2.5                         # past the TTL: the caller waits for 3
        seen.append(await snapshot.get())
        return seen

    assert asyncio.run(scenario()) == [1, 1, 1, 1, 2, 3]
    assert loads == [1, 2, 3]


@pytest.mark.skipif(sys.platform != "linux", reason="threads are niced one by one on Linux only")
def test_only_the_background_reload_runs_at_the_lowest_priority() -> None:
    """Nobody waits for a background reload: its thread yields the core to the event loop's.
    A reload a caller waits for keeps the normal priority."""
    nice: list[int] = []

    def load() -> int:
        nice.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return len(nice)

    async def scenario() -> None:
        snapshot = Snapshot(load, ttl_seconds=0.2)
        await snapshot.get()                    # the first load: a caller waits
        await asyncio.sleep(0.12)
        await snapshot.get()                    # second half of the TTL: in the background
        assert snapshot.refresh is not None
        await snapshot.refresh

    own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    asyncio.run(scenario())
    assert nice == [own, LOW_PRIORITY_NICE]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == own


def test_a_load_that_began_before_an_invalidation_is_not_taken_as_fresh() -> None:
    """The value read by a reload that was running when this process changed the data is
    older than the change: the next call loads again."""
    snapshot: Snapshot[int]
    loads: list[int] = []

    def load() -> int:
        loads.append(len(loads) + 1)
        if len(loads) == 1:
            snapshot.invalidate()  # the change lands while the first load reads
        return loads[-1]

    async def scenario() -> list[int]:
        return [await snapshot.get(), await snapshot.get()]

    snapshot = Snapshot(load, ttl_seconds=3600)
    assert asyncio.run(scenario()) == [1, 2]


def test_a_failed_background_reload_keeps_the_value_and_the_caller_past_the_ttl_sees_it(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    calls = [0]

    def load() -> str:
        calls[0] += 1
        if calls[0] > 1:
            raise RuntimeError("database gone")
        return "first"

    async def scenario() -> str:
        snapshot = Snapshot(load, ttl_seconds=2)
        await snapshot.get()
        clock[0] += 1.5
        value = await snapshot.get()
        assert snapshot.refresh is not None
        await snapshot.refresh  # failed quietly: logged, the value kept
        assert await snapshot.get() == "first"
        assert calls[0] == 2  # not tried again for the same value
        clock[0] += 1.0
        with pytest.raises(RuntimeError, match="database gone"):
            await snapshot.get()
        return value

    assert asyncio.run(scenario()) == "first"
    assert "reloading a snapshot in the background failed" in caplog.text


def test_with_a_version_it_reloads_only_when_the_number_moved(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the TTL the version is read first; an unchanged number keeps the value (no load),
    a moved one loads. Marked stale, a missing number, or a full load older than
    FULL_RELOAD_SECONDS load in full whatever the number says."""
    from iflow2api_lib import snapshot as module

    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    loads, load = counting_loader()
    version: list[int | None] = [7]
    checks: list[int | None] = []

    def read_version() -> int | None:
        checks.append(version[0])
        return version[0]

    async def scenario() -> list[int]:
        snapshot = Snapshot(load, ttl_seconds=2, version=read_version)
        seen = [await snapshot.get()]         # first load
        clock[0] += 3
        seen.append(await snapshot.get())     # past the TTL, same number: no load
        assert snapshot.fresh()               # and fresh again for another TTL
        version[0] = 8
        clock[0] += 3
        seen.append(await snapshot.get())     # the number moved: load
        snapshot.invalidate()
        seen.append(await snapshot.get())     # marked stale: load, the number unchanged
        version[0] = None
        clock[0] += 3
        seen.append(await snapshot.get())     # no number: load
        clock[0] += 3
        seen.append(await snapshot.get())     # still none: load again
        version[0] = 9
        clock[0] += 3
        seen.append(await snapshot.get())     # a number again (it differs): load
        clock[0] += module.FULL_RELOAD_SECONDS
        seen.append(await snapshot.get())     # same number, but the full load is too old
        clock[0] += 3
        seen.append(await snapshot.get())     # and now recent again: no load
        return seen

    assert asyncio.run(scenario()) == [1, 1, 2, 3, 4, 5, 6, 7, 7]
    assert loads == [1, 2, 3, 4, 5, 6, 7]
    assert len(checks) == 9  # the number is read on every reload, full or not


def test_a_version_check_in_the_background_keeps_the_value_and_its_freshness(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The refresh ahead of the TTL (second half) checks the number too: unchanged, the value
    stays and counts as just confirmed."""
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    loads, load = counting_loader()

    async def scenario() -> None:
        snapshot = Snapshot(load, ttl_seconds=2, version=lambda: 1)
        assert await snapshot.get() == 1
        clock[0] += 1.5
        assert await snapshot.get() == 1  # starts the background check
        assert snapshot.refresh is not None
        await snapshot.refresh
        assert snapshot.loaded_at == clock[0]
        if snapshot.background is not None:
            snapshot.background.shutdown()

    asyncio.run(scenario())
    assert loads == [1]
