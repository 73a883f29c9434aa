"""upstream/deadline.py's ReadDeadline: the longest silent gap of a stream, kept by one timer
instead of aiohttp's timer moved on every read. Real sockets: a loopback server writes a chunked
SSE body on a schedule, aiohttp reads it, as upstream/client.py does."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import aiohttp
import pytest

from upstream.deadline import ReadDeadline


async def paced_server(delays: Sequence[float]) -> asyncio.Server:
    """Answers one request with a chunked SSE body: an event after each delay, then the end."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                     b"transfer-encoding: chunked\r\n\r\n")
        try:
            for n, delay in enumerate(delays):
                await asyncio.sleep(delay)
                event = f"data: {n}\n\n".encode()
                writer.write(b"%x\r\n%s\r\n" % (len(event), event))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", 0)


async def read_stream(delays: Sequence[float], seconds: float | None
                      ) -> tuple[list[tuple[float, bytes]], BaseException | None, object]:
    """(time, bytes) of each read, the error that ended the reads, and the connection's
    read_timeout as it stood during the reads."""
    server = await paced_server(delays)
    port = server.sockets[0].getsockname()[1]
    reads: list[tuple[float, bytes]] = []
    failure: BaseException | None = None
    timeout = aiohttp.ClientTimeout(total=None, sock_read=seconds)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session, \
                session.get(f"http://127.0.0.1:{port}/") as response:
            protocol = response.connection.protocol  # type: ignore[union-attr]
            with ReadDeadline.of(response, seconds, aiohttp.ServerTimeoutError) as deadline:
                during = protocol.read_timeout
                try:
                    async for raw in response.content.iter_any():
                        deadline.touch()
                        reads.append((time.monotonic(), raw))
                except (TimeoutError, aiohttp.ClientError) as exc:
                    failure = exc
            assert deadline._handle is None  # closed with the reads: no timer left behind
    finally:
        server.close()
        await server.wait_closed()
    return reads, failure, during


def test_a_stream_longer_than_the_timeout_whose_gaps_are_shorter_is_read_whole():
    reads, failure, during = asyncio.run(read_stream([0.0] + [0.25] * 7, 0.6))
    assert failure is None
    assert b"".join(raw for _, raw in reads) == b"".join(
        f"data: {n}\n\n".encode() for n in range(8))
    assert reads[-1][0] - reads[0][0] > 1.5  # far longer than the timeout in all
    assert during is None  # aiohttp's timer (moved on every read) was off meanwhile


def test_a_silent_gap_longer_than_the_timeout_fails_the_reads_when_it_runs_out():
    started = time.monotonic()
    reads, failure, _ = asyncio.run(read_stream([0.0, 0.1, 3.0], 0.6))
    assert isinstance(failure, aiohttp.ServerTimeoutError)  # what aiohttp's own timeout raises
    assert isinstance(failure, TimeoutError)
    assert [raw for _, raw in reads] in ([b"data: 0\n\n", b"data: 1\n\n"],
                                         [b"data: 0\n\ndata: 1\n\n"])
    silent = time.monotonic() - reads[-1][0]
    assert 0.55 <= silent < 1.2, silent  # at the end of the gap, not at the next event (3 s)
    assert time.monotonic() - started < 2.5


@pytest.mark.parametrize("seconds", [None, 0])
def test_without_a_timeout_nothing_is_armed_and_aiohttp_is_left_as_it_was(seconds):
    reads, failure, during = asyncio.run(read_stream([0.0, 0.2], seconds))
    assert failure is None and len(b"".join(raw for _, raw in reads)) == 2 * len(b"data: 0\n\n")
    assert not during
