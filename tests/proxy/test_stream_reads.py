"""The relay's wake-ups (proxy/streaming.py, UpstreamReads): one reader task and one keep-alive
timer per stream, no longer a task and an `asyncio.wait` with its own timer per batch.

The timer is moved lazily (re-armed only when it fires), so these check what that must keep:
no keep-alive while batches keep coming, keep-alives at the interval during a silence, and the
server's stop signal ending a silent stream at once; each with and without a direct writer
(the lean carrier's: a batch that comes while the relay waits is written by the reading task).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from proxy.lifecycle import Lifecycle
from proxy.streaming import open_stream, stream_body
from tests.proxy.test_stream_ending import session

PING = b": ping\n\n"


def chunk(text: str, finish: str | None = None) -> dict[str, Any]:
    return {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}


async def collect(batches: AsyncIterator[list[dict[str, Any]]], *, keepalive: float,
                  lifecycle: Lifecycle | None = None, direct: bool = False,
                  relayed: list[bytes] | None = None) -> list[tuple[float, bytes]]:
    """What the client gets, in order, with when; `relayed` gets what came through `chunks`."""
    reads = await open_stream(batches, prelude_seconds=5)
    result = stream_body(reads, session(), lifecycle=lifecycle or Lifecycle(),
                         keepalive_seconds=keepalive)
    started = time.monotonic()
    writes: list[tuple[float, bytes]] = []

    async def write(piece: bytes) -> None:
        writes.append((time.monotonic() - started, piece))

    if direct:
        assert result.write_directly is not None
        result.write_directly(write)
    async for piece in result.chunks:
        if relayed is not None:
            relayed.append(piece)
        await write(piece)
    return writes


def paced(count: int, gap: float) -> AsyncIterator[list[dict[str, Any]]]:
    async def upstream() -> AsyncIterator[list[dict[str, Any]]]:
        for i in range(count):
            yield [chunk(f"w{i} ")]
            await asyncio.sleep(gap)
        yield [chunk("", "stop")]

    return upstream()


def same_ids(writes: list[tuple[float, bytes]]) -> bytes:
    """The bytes, with the stream's own id (random per session) made one."""
    return re.sub(rb"chatcmpl-[0-9a-f]+", b"chatcmpl-x", b"".join(p for _, p in writes))


def test_batches_that_come_while_the_relay_waits_are_written_by_the_reading_task():
    relayed: list[bytes] = []
    direct = asyncio.run(collect(paced(6, 0.02), keepalive=5, direct=True, relayed=relayed))
    through_chunks = asyncio.run(collect(paced(6, 0.02), keepalive=5))
    # The same bytes in the same order, most of them without waking the relay: it passed on
    # the first batch (with the headers) and the ending only.
    assert same_ids(direct) == same_ids(through_chunks)
    assert len(relayed) == 2 and b"w0 " in relayed[0] and relayed[1].endswith(b"[DONE]\n\n")
    assert [b"w1 " in p for _, p in direct[1:6]] == [True, False, False, False, False]


@pytest.mark.parametrize("direct", [False, True], ids=["relayed", "direct"])
def test_no_keepalive_while_batches_keep_coming_and_keepalives_during_a_silence(direct):
    async def upstream() -> AsyncIterator[list[dict[str, Any]]]:
        for i in range(12):  # 0.6 s of batches 50 ms apart: each gap under the 0.2 s interval
            yield [chunk(f"w{i} ")]
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.7)  # silence: keep-alives at 0.2 s, 0.4 s, 0.6 s
        yield [chunk("end", "stop")]

    writes = asyncio.run(collect(upstream(), keepalive=0.2, direct=direct))
    pings = [at for at, piece in writes if piece == PING]
    content = [at for at, piece in writes if piece != PING]
    last_batch = content[11]
    assert not [at for at in pings if at < last_batch]  # none while batches came
    assert 2 <= len(pings) <= 4
    assert all(b - a >= 0.15 for a, b in zip([last_batch, *pings], pings, strict=False))
    assert writes[-1][1].endswith(b"data: [DONE]\n\n")


@pytest.mark.parametrize("direct", [False, True], ids=["relayed", "direct"])
def test_the_servers_stop_signal_ends_a_silent_stream_at_once(direct):
    lifecycle = Lifecycle()

    async def upstream() -> AsyncIterator[list[dict[str, Any]]]:
        yield [chunk("first ")]
        await asyncio.sleep(30)
        yield [chunk("never", "stop")]

    async def main() -> tuple[float, list[tuple[float, bytes]]]:
        relaying = asyncio.ensure_future(collect(upstream(), keepalive=10, lifecycle=lifecycle,
                                                 direct=direct))
        await asyncio.sleep(0.2)
        started = time.monotonic()
        await lifecycle.drain(grace_seconds=0)
        writes = await asyncio.wait_for(relaying, 5)
        return time.monotonic() - started, writes

    took, writes = asyncio.run(main())
    assert took < 3
    assert b"server_shutting_down" in writes[-1][1]
    assert b"never" not in b"".join(piece for _, piece in writes)
