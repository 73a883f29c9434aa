"""iflow2api_lib/snapshot.py: a value reloaded at most every TTL, at once when marked stale."""

from __future__ import annotations

import asyncio
import time

import pytest

from iflow2api_lib.snapshot import Snapshot


def test_loaded_once_within_the_ttl_and_again_when_invalidated() -> None:
    loads: list[int] = []

    def load() -> int:
        loads.append(len(loads) + 1)
        return loads[-1]

    async def scenario() -> list[int]:
        snapshot = Snapshot(load, ttl_seconds=3600)
        seen = [await snapshot.get(), await snapshot.get()]
        snapshot.invalidate()
        seen.append(await snapshot.get())
        return seen

    assert asyncio.run(scenario()) == [1, 1, 2]


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
