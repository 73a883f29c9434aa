"""A fake model provider for tests: a real HTTP/1.1 server on 127.0.0.1.

It runs on raw asyncio (its own event loop in a background thread) so that it controls every
byte: ``data:`` lines without a space (iFlow), chunked encoding cut short, TCP resets, and it
learns at once (``connection_lost``) when a client goes away mid-response.

Usage::

    with FakeUpstream() as fake:                  # flavor "iflow", key "sk-fake-key"
        fake.script(text("hi"), envelope_error("429", "busy"))
        ...point the code under test at fake.base_url...
        assert fake.requests[0].header("user-agent") == "iFlow-Cli"
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import http
import itertools
import json
import logging
import re
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Self

from .scenarios import (
    Plan,
    RenderContext,
    Scenario,
    close_delimited,
    drop_after,
    empty_stream,
    envelope_error,
    events,
    hang,
    http_error,
    raw,
    reasoning,
    render,
    slow,
    text,
    tool_calls,
)

__all__ = [
    "IFLOW_MODELS",
    "FakeUpstream",
    "RecordedRequest",
    "Scenario",
    "ScenarioSource",
    "close_delimited",
    "drop_after",
    "empty_stream",
    "envelope_error",
    "events",
    "hang",
    "http_error",
    "raw",
    "reasoning",
    "slow",
    "text",
    "tool_calls",
]

log = logging.getLogger(__name__)

IFLOW_MODELS: tuple[str, ...] = (
    "glm-4.6",
    "glm-4.7",
    "glm-5",
    "iFlow-ROME-30BA3B",
    "deepseek-v3.2-chat",
    "qwen3-coder-plus",
    "kimi-k2",
    "kimi-k2-thinking",
    "kimi-k2.5",
    "kimi-k2-0905",
    "minimax-m2.5",
    "qwen-vl-max",
)

CHAT_PATHS = frozenset({"/v1/chat/completions", "/chat/completions"})
MODELS_PATHS = frozenset({"/v1/models", "/models"})

_UUID4 = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
_UUID4_RE = re.compile(_UUID4, re.IGNORECASE)
_SESSION_RE = re.compile(f"session-{_UUID4}", re.IGNORECASE)
_TRACEPARENT_RE = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01")
_SIGNATURE_RE = re.compile(r"[0-9a-f]{64}")
_TIMESTAMP_WINDOW_MS = 5 * 60 * 1000
_IFLOW_HEADERS = (
    "user-agent",
    "session-id",
    "conversation-id",
    "x-iflow-timestamp",
    "x-iflow-signature",
    "traceparent",
)
_MAX_HEAD = 64 * 1024
_MAX_BODY = 256 * 1024 * 1024


@dataclass(eq=False)
class RecordedRequest:
    """One request as the fake saw it. Fields after ``connection_id`` change while it is served."""

    method: str
    path: str
    query: str
    http_version: str
    headers: list[tuple[str, str]]  # as received: order and spelling kept
    body: bytes
    json: dict[str, Any] | None
    received_at: float  # time.monotonic()
    connection_id: int
    scenario: str | None = None  # label of the scenario that answered, None if none did
    status: int | None = None  # status line sent, None while nothing was sent
    auth_error: str | None = None  # why the fake rejected the credentials
    finished: bool = False  # the whole response was written
    finished_at: float | None = None
    client_disconnected: bool = False  # the client closed before the response was complete
    disconnected_at: float | None = None
    server_aborted: bool = False  # the fake cut the connection on purpose (drop_after)

    def header(self, name: str, default: str | None = None) -> str | None:
        """First value of a header, case-insensitive."""
        low = name.lower()
        for key, value in self.headers:
            if key.lower() == low:
                return value
        return default

    def header_all(self, name: str) -> list[str]:
        low = name.lower()
        return [v for k, v in self.headers if k.lower() == low]

    @property
    def header_names(self) -> list[str]:
        return [k for k, _ in self.headers]

    @property
    def is_stream(self) -> bool:
        return self.json is not None and self.json.get("stream") is True

    @property
    def model(self) -> str | None:
        model = (self.json or {}).get("model")
        return model if isinstance(model, str) else None

    @property
    def bearer(self) -> str | None:
        value = self.header("authorization")
        if value is None or not value.startswith("Bearer "):
            return None
        return value[len("Bearer ") :].strip()


ScenarioSource = Scenario | Callable[[RecordedRequest], Scenario]


# --------------------------------------------------------------------------- HTTP parsing


@dataclass
class _RawRequest:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes


class _BadRequest(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def _parse_chunked(buf: bytearray, pos: int) -> tuple[bytes, int] | None:
    body = bytearray()
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size_text = bytes(buf[pos:eol]).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise _BadRequest(400, "bad chunk size") from None
        pos = eol + 2
        if size == 0:
            while True:  # optional trailers, then an empty line
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    return None
                if eol == pos:
                    return bytes(body), pos + 2
                pos = eol + 2
        if len(body) + size > _MAX_BODY:
            raise _BadRequest(413, "body too large")
        if len(buf) < pos + size + 2:
            return None
        body += buf[pos : pos + size]
        pos += size + 2


def _parse_request(buf: bytearray) -> tuple[_RawRequest, int] | None:
    """Parse one request from the front of ``buf``; None when more bytes are needed."""
    while buf.startswith(b"\r\n"):
        del buf[:2]
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > _MAX_HEAD:
            raise _BadRequest(431, "request head too large")
        return None
    lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
    request_line = lines[0].split(" ")
    if len(request_line) != 3 or not request_line[2].startswith("HTTP/1."):
        raise _BadRequest(400, "bad request line")
    method, target, version = request_line
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise _BadRequest(400, "bad header line")
        headers.append((name, value.strip()))
    start = end + 4
    te = [v for k, v in headers if k.lower() == "transfer-encoding"]
    cl = [v for k, v in headers if k.lower() == "content-length"]
    if te:
        if te[-1].split(",")[-1].strip().lower() != "chunked":
            raise _BadRequest(400, "unsupported transfer-encoding")
        parsed = _parse_chunked(buf, start)
        if parsed is None:
            return None
        body, consumed = parsed
    elif cl:
        try:
            length = int(cl[0])
        except ValueError:
            raise _BadRequest(400, "bad content-length") from None
        if length < 0 or length > _MAX_BODY:
            raise _BadRequest(400 if length < 0 else 413, "bad content-length")
        if len(buf) < start + length:
            return None
        body, consumed = bytes(buf[start : start + length]), start + length
    else:
        body, consumed = b"", start
    return _RawRequest(method, target, version, headers, body), consumed


def _keep_alive(req: _RawRequest) -> bool:
    tokens = {
        t.strip().lower() for k, v in req.headers if k.lower() == "connection" for t in v.split(",")
    }
    if req.version == "HTTP/1.0":
        return "keep-alive" in tokens
    return "close" not in tokens


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


# --------------------------------------------------------------------------- connection


class _Connection(asyncio.Protocol):
    def __init__(self, fake: FakeUpstream, loop: asyncio.AbstractEventLoop) -> None:
        self.fake = fake
        self.loop = loop
        self.id = next(fake._conn_ids)
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.task: asyncio.Task[None] | None = None
        self.current: RecordedRequest | None = None
        self.closed = False
        self.closed_event = asyncio.Event()
        self.writable = asyncio.Event()
        self.writable.set()
        self.keep_alive = True

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.fake._conns.add(self)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.task is None:
            self.dispatch()

    def eof_received(self) -> bool | None:
        return None  # close our side too; connection_lost follows at once

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.closed_event.set()
        self.writable.set()
        self.fake._conns.discard(self)
        rec = self.current
        if (
            rec is not None
            and not rec.finished
            and not rec.server_aborted
            and not self.fake._stopping
        ):
            rec.client_disconnected = True
            rec.disconnected_at = time.monotonic()
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    # request loop
    def dispatch(self) -> None:
        if self.closed or not self.keep_alive:
            return
        try:
            parsed = _parse_request(self.buffer)
        except _BadRequest as exc:
            self.keep_alive = False
            self.write(
                f"HTTP/1.1 {exc.status} {_reason(exc.status)}\r\n"
                "Content-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )
            self.close()
            return
        if parsed is None:
            return
        req, consumed = parsed
        del self.buffer[:consumed]
        self.keep_alive = _keep_alive(req)
        self.task = self.loop.create_task(self.fake._serve(self, req))
        self.task.add_done_callback(self._served)

    def _served(self, task: asyncio.Task[None]) -> None:
        self.task = None
        self.current = None
        if self.buffer and not self.closed:
            self.dispatch()

    # output
    def write(self, data: bytes | bytearray) -> None:
        if data and not self.closed and self.transport is not None:
            self.transport.write(bytes(data))

    async def drain(self) -> None:
        if not self.writable.is_set():
            await self.writable.wait()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()

    async def drop(self, reset: bool) -> None:
        """Cut the connection now: FIN after the pending bytes, or RST."""
        transport = self.transport
        if transport is None or self.closed:
            return
        if not reset:
            transport.close()  # flushes what was written, then FIN, no chunked terminator
            return
        deadline = time.monotonic() + 2.0
        while transport.get_write_buffer_size() and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.02)  # let the client read what was sent before the RST
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()


# --------------------------------------------------------------------------- the server


class FakeUpstream:
    """A loopback OpenAI-compatible provider; flavor "iflow" checks the CLI headers."""

    def __init__(
        self,
        api_key: str = "sk-fake-key",
        flavor: str = "iflow",
        *,
        models: Iterable[str] | None = None,
        extra_keys: Iterable[str] = (),
        check_auth: bool = True,
        max_concurrency_per_key: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if flavor not in ("iflow", "openai"):
            raise ValueError(f"flavor must be 'iflow' or 'openai', not {flavor!r}")
        self.api_key = api_key
        self.flavor = flavor
        self.api_keys: set[str] = {api_key, *extra_keys}
        self.models: list[str] = list(models) if models is not None else list(IFLOW_MODELS)
        self.check_auth = check_auth
        self.max_concurrency_per_key = max_concurrency_per_key
        self.default: ScenarioSource = text("Hello from the fake upstream.", name="default")
        self.errors: list[str] = []  # exceptions inside the fake itself (should stay empty)
        self.in_flight = 0
        self.max_in_flight = 0
        self.max_in_flight_by_key: dict[str, int] = {}
        self._in_flight_by_key: dict[str, int] = {}
        self._host = host
        self._port = port
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._queue: deque[ScenarioSource] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._conns: set[_Connection] = set()
        self._ids = itertools.count(1)
        self._conn_ids = itertools.count(1)
        self._stopping = False

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Self:
        if self._thread is not None:
            return self
        loop = asyncio.new_event_loop()
        thread = threading.Thread(
            target=self._run_loop, args=(loop,), name="FakeUpstream", daemon=True
        )
        self._loop, self._thread = loop, thread
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._open(loop), loop).result(timeout=10)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._stopping = True
        try:
            asyncio.run_coroutine_threadsafe(self._close(), loop).result(timeout=10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            self._loop = self._thread = self._server = None
            self._stopping = False

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    async def _open(self, loop: asyncio.AbstractEventLoop) -> None:
        self._server = await loop.create_server(
            lambda: _Connection(self, loop),
            self._host,
            self._port,
            reuse_address=True,
            backlog=1024,
        )
        self._port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            if conn.transport is not None:
                conn.transport.abort()
        await asyncio.sleep(0)

    # ------------------------------------------------------------------ addresses
    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self._port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    # ------------------------------------------------------------------ scenarios
    def script(self, *scenarios: ScenarioSource) -> Self:
        """Queue scenarios, consumed one per authorised chat request, in order."""
        with self._lock:
            self._queue.extend(scenarios)
        return self

    @property
    def pending(self) -> int:
        """Scripted scenarios not consumed yet."""
        with self._lock:
            return len(self._queue)

    def _next_scenario(self, rec: RecordedRequest) -> Scenario:
        with self._lock:
            source = self._queue.popleft() if self._queue else self.default
        return source if isinstance(source, Scenario) else source(rec)

    # ------------------------------------------------------------------ recording
    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot list; the records themselves keep updating while being served."""
        with self._lock:
            return list(self._requests)

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path in CHAT_PATHS]

    @property
    def last(self) -> RecordedRequest | None:
        with self._lock:
            return self._requests[-1] if self._requests else None

    def reset(self) -> None:
        """Forget recorded requests, scripted scenarios, errors and peak counters."""
        with self._lock:
            self._requests.clear()
            self._queue.clear()
            self.errors.clear()
            self.max_in_flight = self.in_flight
            self.max_in_flight_by_key = dict(self._in_flight_by_key)

    def wait_for(
        self, predicate: Callable[[], object], timeout: float = 5.0, interval: float = 0.005
    ) -> bool:
        """Poll ``predicate`` (IndexError/AttributeError/KeyError count as False)."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(IndexError, AttributeError, KeyError):
                if predicate():
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(interval)

    async def await_for(
        self, predicate: Callable[[], object], timeout: float = 5.0, interval: float = 0.005
    ) -> bool:
        """Like wait_for, without blocking the caller's event loop."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(IndexError, AttributeError, KeyError):
                if predicate():
                    return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(interval)

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[RecordedRequest]:
        if not self.wait_for(lambda: len(self._requests) >= n, timeout):
            raise AssertionError(f"expected {n} requests, got {len(self._requests)}")
        return self.requests

    async def await_requests(self, n: int, timeout: float = 5.0) -> list[RecordedRequest]:
        if not await self.await_for(lambda: len(self._requests) >= n, timeout):
            raise AssertionError(f"expected {n} requests, got {len(self._requests)}")
        return self.requests

    def wait_for_disconnect(self, timeout: float = 5.0) -> RecordedRequest:
        """The first request whose client went away before its response was complete."""
        found: list[RecordedRequest] = []

        def check() -> bool:
            found[:] = [r for r in self.requests if r.client_disconnected]
            return bool(found)

        if not self.wait_for(check, timeout):
            raise AssertionError("no client disconnect recorded")
        return found[0]

    # ------------------------------------------------------------------ serving
    async def _serve(self, conn: _Connection, req: _RawRequest) -> None:
        path, _, query = req.target.partition("?")
        doc: dict[str, Any] | None = None
        if req.body:
            with contextlib.suppress(ValueError):
                loaded = json.loads(req.body)
                doc = loaded if isinstance(loaded, dict) else None
        rec = RecordedRequest(
            method=req.method,
            path=path,
            query=query,
            http_version=req.version,
            headers=req.headers,
            body=req.body,
            json=doc,
            received_at=time.monotonic(),
            connection_id=conn.id,
        )
        conn.current = rec
        with self._lock:
            self._requests.append(rec)
        try:
            await self._route(conn, rec)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("fake upstream failed on %s %s", rec.method, rec.path)
            self.errors.append(f"{type(exc).__name__}: {exc}")
            if rec.status is None:
                await self._execute(conn, rec, self._json_plan(500, {"error": str(exc)}))
            else:
                await conn.drop(False)

    async def _route(self, conn: _Connection, rec: RecordedRequest) -> None:
        if rec.path in CHAT_PATHS:
            if rec.method != "POST":
                return await self._execute(conn, rec, self._error_plan(405, "method not allowed"))
            return await self._chat(conn, rec)
        if rec.path in MODELS_PATHS:
            if rec.method != "GET":
                return await self._execute(conn, rec, self._error_plan(405, "method not allowed"))
            rec.auth_error = self._auth_error(rec, full=False) if self.check_auth else None
            if rec.auth_error:
                return await self._execute(conn, rec, self._auth_failure_plan())
            owner = "iflow" if self.flavor == "iflow" else "fake"
            listing = {
                "object": "list",
                "data": [
                    {"id": m, "object": "model", "created": 1700000000, "owned_by": owner}
                    for m in self.models
                ],
            }
            return await self._execute(conn, rec, self._json_plan(200, listing))
        return await self._execute(conn, rec, self._error_plan(404, f"no route {rec.path}"))

    async def _chat(self, conn: _Connection, rec: RecordedRequest) -> None:
        rec.auth_error = self._auth_error(rec, full=True) if self.check_auth else None
        if rec.auth_error:
            await self._execute(conn, rec, self._auth_failure_plan())
            return
        key = rec.bearer or ""
        limit = self.max_concurrency_per_key
        if limit is not None and self._in_flight_by_key.get(key, 0) >= limit:
            rec.scenario = "concurrency_limit"
            if self.flavor == "iflow":
                body: dict[str, Any] = {
                    "status": "449",
                    "msg": "Please limit to single concurrent usage",
                    "body": None,
                }
                await self._execute(conn, rec, self._json_plan(200, body))
            else:
                await self._execute(conn, rec, self._error_plan(429, "Rate limit reached"))
            return
        scenario = self._next_scenario(rec)
        rec.scenario = scenario.label
        doc = rec.json or {}
        stream = doc.get("stream") is True
        options = doc.get("stream_options")
        include_usage = (
            stream and isinstance(options, dict) and options.get("include_usage") is True
        )
        model = doc.get("model")
        ctx = RenderContext(
            flavor=self.flavor,
            model=model if isinstance(model, str) else "unknown",
            stream=stream,
            include_usage=include_usage,
            prompt_tokens=max(1, len(rec.body) // 4),
            response_id=f"chatcmpl-fake{next(self._ids):08d}",
            created=int(time.time()),
        )
        plan = render(scenario, ctx)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        per_key = self._in_flight_by_key.get(key, 0) + 1
        self._in_flight_by_key[key] = per_key
        self.max_in_flight_by_key[key] = max(self.max_in_flight_by_key.get(key, 0), per_key)
        try:
            await self._execute(conn, rec, plan)
        finally:
            self.in_flight -= 1
            self._in_flight_by_key[key] -= 1

    async def _execute(self, conn: _Connection, rec: RecordedRequest, plan: Plan) -> None:
        if plan.hang:
            await conn.closed_event.wait()
            return
        if plan.header_delay > 0:
            await asyncio.sleep(plan.header_delay)
        headers = list(plan.headers)
        names = {k.lower() for k, _ in headers}
        chunked = plan.framing == "chunked"
        if chunked and "transfer-encoding" not in names:
            headers.append(("Transfer-Encoding", "chunked"))
        elif plan.framing == "length" and "content-length" not in names:
            headers.append(("Content-Length", str(sum(len(p) for p in plan.parts))))
        close_after = plan.framing == "close" or not conn.keep_alive
        if plan.framing != "close" and "connection" not in names:
            headers.append(("Connection", "close" if close_after else "keep-alive"))
        head = [f"HTTP/1.1 {plan.status} {_reason(plan.status)}\r\n"]
        head += [f"{k}: {v}\r\n" for k, v in headers]
        head.append("\r\n")
        out = bytearray("".join(head).encode("latin-1"))
        rec.status = plan.status
        for i, part in enumerate(plan.parts):
            delay = plan.delays[i] if i < len(plan.delays) else 0.0
            if delay > 0:
                conn.write(out)
                out.clear()
                await conn.drain()
                await asyncio.sleep(delay)
            if plan.drop_after is not None and i >= plan.drop_after:
                if plan.cut_inside and part:
                    half = part[: max(1, len(part) // 2)]
                    out += (b"%x\r\n" % len(part) + half) if chunked else half
                break
            if not chunked:
                out += part
            elif part:  # an empty HTTP chunk would end the body
                out += b"%x\r\n" % len(part)
                out += part
                out += b"\r\n"
        if plan.drop_after is not None:  # all parts up to n sent, now cut (no terminator)
            conn.write(out)
            rec.server_aborted = True
            rec.disconnected_at = time.monotonic()
            await conn.drop(plan.reset)
            return
        if chunked:
            out += b"0\r\n\r\n"
        conn.write(out)
        rec.finished = True
        rec.finished_at = time.monotonic()
        if close_after:
            conn.close()
        else:
            await conn.drain()

    # ------------------------------------------------------------------ auth and errors
    def _auth_error(self, rec: RecordedRequest, *, full: bool) -> str | None:
        """Why these credentials would be refused, or None."""
        auth = rec.header_all("authorization")
        if len(auth) != 1:
            return "missing or repeated Authorization header"
        scheme, _, key = auth[0].partition(" ")
        key = key.strip()
        if scheme != "Bearer" or not key:
            return "Authorization is not 'Bearer <key>'"
        if key not in self.api_keys:
            return "unknown api key"
        if not full or self.flavor != "iflow":
            return None
        values: dict[str, str] = {}
        for name in _IFLOW_HEADERS:
            got = rec.header_all(name)
            if len(got) != 1:
                return f"missing or repeated {name} header"
            values[name] = got[0]
        if values["user-agent"] != "iFlow-Cli":
            return f"user-agent is {values['user-agent']!r}, not 'iFlow-Cli'"
        session_id = values["session-id"]
        if not _SESSION_RE.fullmatch(session_id):
            return f"session-id {session_id!r} is not session-<uuid4>"
        if not _UUID4_RE.fullmatch(values["conversation-id"]):
            return f"conversation-id {values['conversation-id']!r} is not a uuid4"
        stamp = values["x-iflow-timestamp"]
        if not stamp.isdigit():
            return f"x-iflow-timestamp {stamp!r} is not epoch milliseconds"
        if abs(int(stamp) - int(time.time() * 1000)) > _TIMESTAMP_WINDOW_MS:
            return f"x-iflow-timestamp {stamp} is more than 5 minutes off"
        signature = values["x-iflow-signature"]
        expected = hmac.new(
            key.encode(), f"iFlow-Cli:{session_id}:{stamp}".encode(), hashlib.sha256
        ).hexdigest()
        if not _SIGNATURE_RE.fullmatch(signature) or not hmac.compare_digest(signature, expected):
            return "x-iflow-signature does not match"
        if not _TRACEPARENT_RE.fullmatch(values["traceparent"]):
            return f"traceparent {values['traceparent']!r} is not 00-<32hex>-<16hex>-01"
        return None

    def _auth_failure_plan(self) -> Plan:
        if self.flavor == "iflow":
            return self._json_plan(200, {"status": "434", "msg": "Invalid apiKey", "body": None})
        return self._json_plan(
            401,
            {
                "error": {
                    "message": "Incorrect API key provided",
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                }
            },
        )

    def _error_plan(self, status: int, message: str) -> Plan:
        return self._json_plan(
            status,
            {"error": {"message": message, "type": "invalid_request_error", "code": None}},
        )

    @staticmethod
    def _json_plan(status: int, body: dict[str, Any]) -> Plan:
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        return Plan(status, [("Content-Type", "application/json")], [data], framing="length")
