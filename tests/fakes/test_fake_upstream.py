"""The fake upstream itself: it must be as strict and as faithful as the real providers."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import httpx
import pytest

from tests.fakes.upstream import (
    IFLOW_MODELS,
    FakeUpstream,
    close_delimited,
    drop_after,
    empty_stream,
    envelope_error,
    events,
    hang,
    http_error,
    raw,
    reasoning,
    slow,
    text,
    tool_calls,
)

KEY = "sk-fake-key"
CHAT = {"model": "glm-5", "messages": [{"role": "user", "content": "hi"}]}
STREAM = {**CHAT, "stream": True}
STREAM_USAGE = {**STREAM, "stream_options": {"include_usage": True}}


def iflow_headers(
    key: str = KEY,
    *,
    user_agent: str = "iFlow-Cli",
    timestamp_ms: int | None = None,
    session_id: str | None = None,
    signing_key: str | None = None,
) -> dict[str, str]:
    """Headers as the official CLI builds them; signature computed here, independently."""
    session = session_id or f"session-{uuid.uuid4()}"
    stamp = str(timestamp_ms if timestamp_ms is not None else int(time.time() * 1000))
    message = f"iFlow-Cli:{session}:{stamp}".encode()
    signature = hmac.new((signing_key or key).encode(), message, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "Authorization": f"Bearer {key}",
        "user-agent": user_agent,
        "session-id": session,
        "conversation-id": str(uuid.uuid4()),
        "x-iflow-signature": signature,
        "x-iflow-timestamp": stamp,
        "traceparent": f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01",
        "accept": "*/*",
    }


def sse_data(body: str) -> list[str]:
    """The payloads of the data lines, in order (prefix "data:" with or without a space)."""
    out = []
    for event in body.split("\n\n"):
        for line in event.split("\n"):
            if line.startswith("data:"):
                out.append(line[len("data:") :].lstrip(" "))
    return out


def chunks_of(body: str) -> list[dict[str, Any]]:
    return [json.loads(d) for d in sse_data(body) if d != "[DONE]"]


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


@pytest.fixture
def client(fake: FakeUpstream) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake.base_url, timeout=5) as c:
        yield c


def post(client: httpx.Client, body: dict[str, Any], **kw: Any) -> httpx.Response:
    headers = kw.pop("headers", None) or iflow_headers()
    return client.post("/chat/completions", json=body, headers=headers, **kw)


# --------------------------------------------------------------------------- auth


def test_valid_signature_non_stream(fake: FakeUpstream, client: httpx.Client) -> None:
    resp = post(client, CHAT)
    assert resp.status_code == 200
    doc = resp.json()
    assert doc["object"] == "chat.completion"
    assert doc["model"] == "glm-5"
    assert doc["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Hello from the fake upstream.",
    }
    assert doc["choices"][0]["finish_reason"] == "stop"
    assert doc["usage"]["total_tokens"] == (
        doc["usage"]["prompt_tokens"] + doc["usage"]["completion_tokens"]
    )
    rec = fake.last
    assert rec is not None
    # `finished` is set by the server thread just after the last write: the client may be first.
    assert fake.wait_for(lambda: rec.finished, timeout=2)
    assert rec.auth_error is None and not rec.client_disconnected
    assert rec.json == CHAT
    assert rec.header("USER-AGENT") == "iFlow-Cli"
    names = [n.lower() for n in rec.header_names]
    assert names.index("authorization") < names.index("session-id") < names.index("traceparent")


def _bad(kind: str) -> dict[str, str]:
    if kind == "signature":
        return iflow_headers(signing_key="sk-other")
    if kind == "user-agent":
        return iflow_headers(user_agent="iFlow-Cli/0.5.13")
    if kind == "key":
        return iflow_headers("sk-wrong")
    if kind == "stale":
        return iflow_headers(timestamp_ms=int(time.time() * 1000) - 6 * 60 * 1000)
    if kind == "session":
        return iflow_headers(session_id=str(uuid.uuid4()))
    headers = iflow_headers()
    if kind == "traceparent":
        headers["traceparent"] = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-00"
    elif kind == "conversation":
        del headers["conversation-id"]
    elif kind == "uppercase-signature":
        headers["x-iflow-signature"] = headers["x-iflow-signature"].upper()
    return headers


@pytest.mark.parametrize(
    "kind",
    [
        "signature",
        "user-agent",
        "key",
        "stale",
        "session",
        "traceparent",
        "conversation",
        "uppercase-signature",
    ],
)
@pytest.mark.parametrize("body", [CHAT, STREAM_USAGE], ids=["plain", "stream"])
def test_bad_credentials_get_434_envelope(
    fake: FakeUpstream, client: httpx.Client, kind: str, body: dict[str, Any]
) -> None:
    fake.script(text("scripted"))
    resp = post(client, body, headers=_bad(kind))
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    assert resp.json() == {"status": "434", "msg": "Invalid apiKey", "body": None}
    rec = fake.last
    assert rec is not None and rec.auth_error and rec.scenario is None
    assert fake.pending == 1  # a refused request consumes no scenario


def test_openai_flavor_checks_only_the_bearer() -> None:
    with FakeUpstream("sk-open", flavor="openai") as fake:
        ok = httpx.post(
            f"{fake.base_url}/chat/completions",
            json=STREAM,
            headers={"Authorization": "Bearer sk-open"},
        )
        assert ok.status_code == 200
        assert ok.headers["content-type"] == "text/event-stream"
        assert all(line.startswith("data: ") for line in ok.text.split("\n") if line)
        bad = httpx.post(
            f"{fake.base_url}/chat/completions", json=CHAT, headers={"Authorization": "Bearer x"}
        )
        assert bad.status_code == 401
        assert bad.json() == {
            "error": {
                "message": "Incorrect API key provided",
                "type": "invalid_request_error",
                "code": "invalid_api_key",
            }
        }


def test_models_list(fake: FakeUpstream, client: httpx.Client) -> None:
    resp = client.get("/models", headers={"Authorization": f"Bearer {KEY}"})
    assert resp.status_code == 200
    assert [m["id"] for m in resp.json()["data"]] == list(IFLOW_MODELS)
    fake.models = ["a", "b"]
    resp = client.get("/models", headers={"Authorization": f"Bearer {KEY}"})
    assert [m["id"] for m in resp.json()["data"]] == ["a", "b"]
    assert client.get("/models").json()["status"] == "434"


# --------------------------------------------------------------------------- streams


def test_iflow_stream_has_no_space_after_data(client: httpx.Client) -> None:
    resp = post(client, STREAM)
    assert resp.headers["content-type"] == "text/event-stream"
    lines = [line for line in resp.text.split("\n") if line]
    assert lines and all(line.startswith("data:") for line in lines)
    assert not any(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data:[DONE]"
    assert resp.text.endswith("data:[DONE]\n\n")
    chunks = chunks_of(resp.text)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all("role" not in c["choices"][0]["delta"] for c in chunks[1:])
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "glm-5" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    text_out = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text_out == "Hello from the fake upstream."
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in c for c in chunks)  # no include_usage, no usage chunk


def test_usage_chunk_only_with_include_usage(fake: FakeUpstream, client: httpx.Client) -> None:
    usage = {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}
    fake.script(text("abc def", chunks=3, usage=usage), text("abc def", chunks=3, usage=usage))
    with_usage = chunks_of(post(client, STREAM_USAGE).text)
    assert with_usage[-1]["choices"] == [] and with_usage[-1]["usage"] == usage
    assert with_usage[-2]["choices"][0]["finish_reason"] == "stop"
    deltas = [c["choices"][0]["delta"].get("content") for c in with_usage[1:-2]]
    assert deltas == ["abc", " d", "ef"]
    without = chunks_of(post(client, STREAM).text)
    assert all("usage" not in c and c["choices"] for c in without)


def test_reasoning_then_answer(fake: FakeUpstream, client: httpx.Client) -> None:
    fake.script(reasoning("Let me think.", "42"), reasoning("Let me think.", "42"))
    chunks = chunks_of(post(client, STREAM).text)
    kinds = [
        next(iter(c["choices"][0]["delta"]), None) for c in chunks[1:] if c["choices"][0]["delta"]
    ]
    assert kinds == ["reasoning_content"] * 3 + ["content"]
    message = post(client, CHAT).json()["choices"][0]["message"]
    assert message["reasoning_content"] == "Let me think." and message["content"] == "42"


@pytest.mark.parametrize("parallel", [False, True])
def test_tool_call_fragments(fake: FakeUpstream, client: httpx.Client, parallel: bool) -> None:
    calls = [("get_weather", {"city": "Paris", "unit": "c"}), ("get_time", {"tz": "Europe/Paris"})]
    fake.script(tool_calls(calls, parallel=parallel, content="Checking."))
    chunks = chunks_of(post(client, STREAM).text)
    frags = [f for c in chunks for f in c["choices"][0]["delta"].get("tool_calls", [])]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    seen: set[int] = set()
    args: dict[int, str] = {0: "", 1: ""}
    for frag in frags:
        if frag["index"] not in seen:
            seen.add(frag["index"])
            assert frag["id"] == f"call_{frag['index']}" and frag["type"] == "function"
            assert frag["function"]["name"] == calls[frag["index"]][0]
        else:
            assert set(frag) == {"index", "function"} and set(frag["function"]) == {"arguments"}
            assert 0 < len(frag["function"]["arguments"]) <= 7
        args[frag["index"]] += frag["function"].get("arguments", "")
    assert [json.loads(args[i]) for i in (0, 1)] == [c[1] for c in calls]
    order = [f["index"] for f in frags]
    if parallel:
        assert order[:4] == [0, 1, 0, 1]
    else:
        assert order == sorted(order)


def test_tool_calls_non_stream(fake: FakeUpstream, client: httpx.Client) -> None:
    fake.script(tool_calls([("f", {"a": 1})]))
    choice = post(client, CHAT).json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [
        {"id": "call_0", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
    ]


# --------------------------------------------------------------------------- failures


def test_scenario_queue_order_then_default(fake: FakeUpstream, client: httpx.Client) -> None:
    fake.script(
        text("one"),
        envelope_error("429", "too many"),
        http_error(503, "down", {"Retry-After": "3"}),
        lambda rec: text(f"model was {rec.model}"),
    )
    assert post(client, CHAT).json()["choices"][0]["message"]["content"] == "one"
    second = post(client, STREAM)
    assert second.status_code == 200 and second.headers["content-type"] == "application/json"
    assert second.json() == {"status": "429", "msg": "too many", "body": None}
    third = post(client, CHAT)
    assert (third.status_code, third.text, third.headers["retry-after"]) == (503, "down", "3")
    assert post(client, CHAT).json()["choices"][0]["message"]["content"] == "model was glm-5"
    assert "Hello from" in post(client, CHAT).json()["choices"][0]["message"]["content"]
    fake.default = envelope_error("439", "expired")
    assert post(client, CHAT).json()["status"] == "439"
    labels = [r.scenario for r in fake.requests]
    assert labels == ["text", "envelope_429", "http_503", "text", "default", "envelope_439"]


def test_empty_stream(fake: FakeUpstream, client: httpx.Client) -> None:
    fake.script(empty_stream())
    resp = post(client, STREAM)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "text/event-stream"
    assert resp.content == b""


def test_drop_after_kills_the_connection(fake: FakeUpstream, client: httpx.Client) -> None:
    fake.script(drop_after(3, text("one two three four five six")))
    received = b""
    with (
        pytest.raises(httpx.RemoteProtocolError),
        client.stream("POST", "/chat/completions", json=STREAM, headers=iflow_headers()) as resp,
    ):
        for part in resp.iter_raw():
            received += part
    assert len(sse_data(received.decode())) == 3
    assert b"[DONE]" not in received
    rec = fake.last
    assert rec is not None
    assert rec.server_aborted and not rec.finished and not rec.client_disconnected


def test_drop_after_with_reset(fake: FakeUpstream, client: httpx.Client) -> None:
    fake.script(drop_after(1, slow(text("a b c"), chunk_delay=0.05), reset=True))
    with (
        pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)),
        client.stream("POST", "/chat/completions", json=STREAM, headers=iflow_headers()) as resp,
    ):
        for _ in resp.iter_raw():
            pass


def test_hang_then_client_timeout_is_recorded(fake: FakeUpstream) -> None:
    fake.script(hang())
    with (
        httpx.Client(base_url=fake.base_url, timeout=httpx.Timeout(5, read=0.3)) as client,
        pytest.raises(httpx.ReadTimeout),
    ):
        post(client, STREAM)
    gave_up = time.monotonic()
    rec = fake.wait_for_disconnect(timeout=2)
    assert rec.disconnected_at is not None
    assert rec.disconnected_at - gave_up < 0.2
    assert rec.status is None and not rec.finished and rec.scenario == "hang"


def test_slow_stream_notices_disconnect_at_once(fake: FakeUpstream) -> None:
    fake.script(slow(text("a b c d e f", chunks=6), first_delay=0.05, chunk_delay=1.0))
    with httpx.Client(base_url=fake.base_url, timeout=5) as client:
        started = time.monotonic()
        with client.stream(
            "POST", "/chat/completions", json=STREAM, headers=iflow_headers()
        ) as resp:
            first = next(resp.iter_raw())
            assert first.startswith(b"data:")
        closed = time.monotonic()
    assert closed - started < 1.0
    rec = fake.wait_for_disconnect(timeout=2)
    assert rec.disconnected_at is not None and rec.disconnected_at - closed < 0.2
    assert not rec.finished


def test_raw_exact_bytes(fake: FakeUpstream) -> None:
    fake.script(
        raw(200, {"Content-Type": "text/event-stream"}, [b'data:{"a":', b"1}\n\n"], [0, 0.05])
    )
    with socket.create_connection(("127.0.0.1", fake.port), timeout=3) as sock:
        body = json.dumps(CHAT).encode()
        head = "".join(f"{k}: {v}\r\n" for k, v in iflow_headers().items())
        sock.sendall(
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n{head}"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert data.endswith(b'a\r\ndata:{"a":\r\n4\r\n1}\n\n\r\n0\r\n\r\n')


def raw_exchange(fake: FakeUpstream, body: dict[str, Any]) -> bytes:
    """One request on a socket, everything the fake wrote until it closed."""
    with socket.create_connection(("127.0.0.1", fake.port), timeout=3) as sock:
        data = json.dumps(body).encode()
        head = "".join(f"{k}: {v}\r\n" for k, v in iflow_headers().items())
        sock.sendall(
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n{head}"
            f"Content-Length: {len(data)}\r\n\r\n".encode() + data
        )
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def test_close_delimited_body_has_no_length_and_no_chunks(fake: FakeUpstream) -> None:
    fake.script(close_delimited(drop_after(2, text("a b c", chunks=3))))
    head, _, body = raw_exchange(fake, STREAM).partition(b"\r\n\r\n")
    headers = head.decode().lower()
    assert "content-length" not in headers and "transfer-encoding" not in headers
    assert "connection: close" in headers
    assert body.startswith(b"data:{") and len(sse_data(body.decode())) == 2
    assert b"\r\n" not in body  # no chunk-size lines


def test_drop_after_cut_inside_breaks_an_http_chunk(fake: FakeUpstream) -> None:
    fake.script(drop_after(1, text("a b c", chunks=3), cut_inside=True))
    _, _, body = raw_exchange(fake, STREAM).partition(b"\r\n\r\n")
    first_size, _, rest = body.partition(b"\r\n")
    first, _, rest = rest.partition(b"\r\n")
    assert len(first) == int(first_size, 16)  # the first part whole
    size, _, cut = rest.partition(b"\r\n")
    assert 0 < len(cut) < int(size, 16)  # the second announced, then cut half-way
    assert fake.last is not None and fake.last.server_aborted


def test_events_fill_chunk_fields(fake: FakeUpstream, client: httpx.Client) -> None:
    fake.script(
        events(
            [
                b": keep-alive\n\n",
                {"choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": None}]},
                {"error": {"message": "boom"}},
            ],
            done=False,
        )
    )
    resp = post(client, STREAM)
    assert resp.text.startswith(": keep-alive\n\ndata:{")
    first, err = chunks_of(resp.text)
    assert first["model"] == "glm-5" and first["object"] == "chat.completion.chunk"
    assert err == {"error": {"message": "boom"}}
    assert "[DONE]" not in resp.text


def test_keep_alive_reuses_the_connection(fake: FakeUpstream, client: httpx.Client) -> None:
    post(client, STREAM)
    post(client, CHAT)
    first, second = fake.requests
    assert first.connection_id == second.connection_id


def test_per_key_concurrency_limit() -> None:
    with FakeUpstream(max_concurrency_per_key=1) as fake:
        fake.default = slow(text("x"), first_delay=0.3)

        async def go() -> list[dict[str, Any]]:
            async with aiohttp.ClientSession() as session:

                async def one() -> dict[str, Any]:
                    url = f"{fake.base_url}/chat/completions"
                    async with session.post(url, json=CHAT, headers=iflow_headers()) as r:
                        return await r.json(content_type=None)

                return await asyncio.gather(one(), one())

        results = asyncio.run(go())
        assert sorted(str(r.get("status")) for r in results) == ["449", "None"]
        assert fake.max_in_flight_by_key == {KEY: 1}


def test_fifty_parallel_streams() -> None:
    with FakeUpstream() as fake:
        fake.default = slow(text("a b c d"), chunk_delay=0.02)

        async def go() -> list[str]:
            connector = aiohttp.TCPConnector(limit=100)
            async with aiohttp.ClientSession(connector=connector) as session:

                async def one() -> str:
                    url = f"{fake.base_url}/chat/completions"
                    async with session.post(url, json=STREAM, headers=iflow_headers()) as r:
                        return await r.text()

                return await asyncio.gather(*(one() for _ in range(50)))

        started = time.monotonic()
        bodies = asyncio.run(go())
        assert time.monotonic() - started < 5
        assert all(b.endswith("data:[DONE]\n\n") for b in bodies)
        assert len(fake.requests) == 50
        assert fake.wait_for(lambda: all(r.finished for r in fake.requests), timeout=2)
        assert fake.max_in_flight > 10
        assert fake.errors == []


def test_reset_and_restart() -> None:
    fake = FakeUpstream()
    fake.start()
    try:
        fake.script(text("x"))
        httpx.post(f"{fake.base_url}/chat/completions", json=CHAT, headers=iflow_headers())
        assert len(fake.wait_for_requests(1)) == 1
        fake.script(text("y"))
        fake.reset()
        assert fake.requests == [] and fake.pending == 0
    finally:
        fake.stop()
    fake.stop()  # idempotent
