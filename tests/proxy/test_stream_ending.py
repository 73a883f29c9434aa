"""A stream's last batch ends the stream in the same write.

When the upstream says within a network read that it is done (`data: [DONE]`, `message_stop`),
the upstream client yields that read's chunks as a FinalBatch; the relay then sends them, the
session's ending (held-back finish chunk, usage, `[DONE]`) and nothing else in one piece, and
never asks the upstream iterator again (which cost a task, a loop pass and a socket write per
stream). Measured by strace on the bench's 1-event stream: two writes to the client before,
one after.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from proxy import fastpath
from proxy.chat import OpenAIStreamSession
from proxy.errors import ApiError
from proxy.http import FinalChunk
from proxy.lifecycle import Lifecycle
from proxy.streaming import open_stream, stream_body
from proxy.translate.openai_chat import OpenAIStreamNormalizer
from upstream.client import UpstreamClient, _parse_batch
from upstream.providers.openai import PROVIDER
from upstream.types import FinalBatch, PreparedRequest

CONTENT = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m",
           "choices": [{"index": 0, "delta": {"role": "assistant", "content": "hello"},
                        "finish_reason": None}]}
FINISH = {**CONTENT, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}


def session() -> OpenAIStreamSession:
    return OpenAIStreamSession(OpenAIStreamNormalizer(model="ours", created=1))


async def relay(batches: AsyncIterator[list[dict[str, Any]]]) -> list[bytes]:
    reads = await open_stream(batches, prelude_seconds=5)
    result = stream_body(reads, session(), lifecycle=Lifecycle(), keepalive_seconds=5)
    return [chunk async for chunk in result.chunks]


def payloads(writes: list[bytes]) -> list[Any]:
    text = b"".join(writes).decode()
    return [json.loads(p) if p != "[DONE]" else p
            for p in (block.removeprefix("data: ") for block in text.split("\n\n")) if p]


def test_a_final_batch_and_the_ending_are_one_write_and_the_upstream_is_not_asked_again():
    seen: list[str] = []

    async def upstream() -> AsyncIterator[list[dict[str, Any]]]:
        try:
            yield FinalBatch([CONTENT, FINISH])
            seen.append("asked again")
            yield [CONTENT]
        finally:
            seen.append("closed")

    writes = asyncio.run(relay(upstream()))
    assert len(writes) == 1 and type(writes[0]) is FinalChunk
    sent = payloads(writes)
    assert sent[-1] == "[DONE]"
    assert [c["choices"][0]["finish_reason"] for c in sent[:-1]] == [None, "stop"]
    assert sent[0]["choices"][0]["delta"]["content"] == "hello"
    assert seen == ["closed"]  # closed at its last batch, never resumed


def test_an_ordinary_batch_is_followed_by_another_read():
    async def upstream() -> AsyncIterator[list[dict[str, Any]]]:
        yield [CONTENT]
        yield [FINISH]

    writes = asyncio.run(relay(upstream()))
    assert len(writes) == 2  # the last read's chunks, then the ending once the iterator ended
    assert [type(w) for w in writes] == [bytes, FinalChunk]
    assert payloads(writes)[-1] == "[DONE]"


def test_an_in_band_error_is_the_final_chunk():
    async def upstream() -> AsyncIterator[list[dict[str, Any]]]:
        yield [CONTENT]
        raise ApiError(502, "upstream connection lost mid-stream", "upstream_disconnected")

    writes = asyncio.run(relay(upstream()))
    assert [type(w) for w in writes] == [bytes, FinalChunk]
    assert payloads(writes)[-2]["error"]["code"] == "upstream_disconnected"


def relay_by_fast_path(batches: AsyncIterator[list[dict[str, Any]]],
                       on_finish: Callable[[ApiError | None], Awaitable[None]],
                       sent: list[Any]) -> None:
    """The stream relayed by the fast path's carrier; each message it sends goes to `sent`."""
    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def scenario() -> None:
        reads = await open_stream(batches, prelude_seconds=5)
        result = stream_body(reads, session(), lifecycle=Lifecycle(), keepalive_seconds=5,
                             on_finish=on_finish)
        await fastpath._relay(send, result)

    asyncio.run(scenario())


def test_the_fast_path_sends_the_final_chunk_with_the_end_once_the_stream_settled():
    # One write for the server (tuning.corked_replies), and a client that has the whole answer
    # finds its request settled (the account's lease, the request log, the rate rule's slot).
    events: list[Any] = []

    async def upstream() -> AsyncIterator[list[dict[str, Any]]]:
        yield [CONTENT]
        yield FinalBatch([FINISH])

    async def settled(error: ApiError | None) -> None:
        events.append("settled")

    relay_by_fast_path(upstream(), settled, events)
    start, first, settle, end = events
    assert start["type"] == "http.response.start"
    assert first["more_body"] is True and payloads([first["body"]])[0]["choices"]
    assert settle == "settled"
    assert "more_body" not in end and payloads([end["body"]])[-1] == "[DONE]"


def test_done_marks_the_batch_final():
    data = [json.dumps(CONTENT), json.dumps(FINISH)]
    batch, done = _parse_batch(PROVIDER, data)
    assert not done and type(batch) is list
    batch, done = _parse_batch(PROVIDER, [*data, "[DONE]"])
    assert done and isinstance(batch, FinalBatch) and len(batch) == 2


def test_the_upstream_client_yields_the_read_with_done_as_final_and_closes_cleanly():
    body = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in (CONTENT, FINISH))
    body += b"data: [DONE]\n\n"
    answer = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
              b"Content-Length: %d\r\n\r\n" % len(body)) + body

    async def scenario() -> tuple[list[list[dict[str, Any]]], list[str]]:
        requests: list[str] = []

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:  # keep-alive: answer every request on the connection
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                requests.append(f"connection {id(writer)}")
                writer.write(answer)  # the whole answer in one write: one read for the client
                await writer.drain()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = UpstreamClient()
        prepared = PreparedRequest(f"http://127.0.0.1:{port}/v1/chat/completions",
                                   [("Content-Type", "application/json")], b"{}")
        try:
            batches: list[list[dict[str, Any]]] = []
            for _ in range(2):
                stream = client.stream_batches(PROVIDER, prepared)
                async for batch in stream:
                    batches.append(batch)
                    if isinstance(batch, FinalBatch):
                        await stream.aclose()  # what the relay does at a final batch
                        break
            return batches, requests
        finally:
            await client.aclose()
            server.close()

    batches, requests = asyncio.run(scenario())
    assert [type(b) for b in batches] == [FinalBatch, FinalBatch]
    assert [len(b) for b in batches] == [2, 2]
    # Closed at its last batch, the response had been read whole: the connection is reused.
    assert len(requests) == 2 and requests[0] == requests[1]


def test_a_cleanup_that_fails_does_not_keep_the_last_chunk_from_the_client():
    sent: list[dict[str, Any]] = []

    async def upstream() -> AsyncIterator[list[dict[str, Any]]]:
        yield FinalBatch([CONTENT, FINISH])

    async def broken(error: ApiError | None) -> None:
        raise RuntimeError("the rate rule's store went away")

    with pytest.raises(RuntimeError, match="went away"):
        relay_by_fast_path(upstream(), broken, sent)
    start, whole = sent  # the answer went out; the response is not ended as if all were well
    assert start["type"] == "http.response.start"
    assert whole["more_body"] is True and payloads([whole["body"]])[-1] == "[DONE]"
