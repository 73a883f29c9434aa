"""The one place that sends requests to model providers (and fetches image URLs for them).

aiohttp, one pooled session per event loop: measured on this stack, httpx's pool did work
proportional to its open connections on every request and capped the gateway near 100 req/s
at 50 concurrent streams. Every failure becomes an UpstreamError. The session factory is the
swappable transport.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from yarl import URL

from iflow2api_lib.wire import loads
from upstream.deadline import ReadDeadline
from upstream.images import ImageFetcher
from upstream.providers.base import Provider
from upstream.sse import SSEDataParser, SSEEvent, SSEEventParser
from upstream.text_lane import TextLane, TextRun
from upstream.types import FinalBatch, PreparedRequest, UpstreamError

log = logging.getLogger(__name__)

SessionFactory = Callable[[], aiohttp.ClientSession]


class UpstreamClient:
    def __init__(
        self,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 600.0,
        proxy: str | None = None,
        session_factory: SessionFactory | None = None,
    ) -> None:
        # No total limit: a stream may last long; a silent gap longer than read_timeout fails.
        self.timeout = aiohttp.ClientTimeout(
            total=None, connect=connect_timeout, sock_connect=connect_timeout,
            sock_read=read_timeout)
        self.proxy = proxy
        self.session_factory = session_factory or self._default_session
        self._sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}
        self._socks_sessions: dict[tuple[asyncio.AbstractEventLoop, str],
                                   aiohttp.ClientSession] = {}
        self.images = ImageFetcher()

    def _default_session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=60, keepalive_timeout=30),
            timeout=self.timeout,
            trust_env=False,  # an explicit UPSTREAM_PROXY only, like the official CLI
            auto_decompress=True,
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
        )

    def _session(self) -> aiohttp.ClientSession:
        # Connections belong to the loop that opened them; Daphne has one loop, tests several.
        loop = asyncio.get_running_loop()
        session = self._sessions.get(loop)
        if session is None or session.closed:
            for old_loop in [lp for lp in self._sessions if lp.is_closed()]:
                del self._sessions[old_loop]
            session = self._sessions[loop] = self.session_factory()
        return session

    def _socks_session(self, proxy: str) -> aiohttp.ClientSession:
        """SOCKS proxies need their own connector: one session per proxy and loop."""
        loop = asyncio.get_running_loop()
        key = (loop, proxy)
        session = self._socks_sessions.get(key)
        if session is None or session.closed:
            try:
                from aiohttp_socks import ProxyConnector
            except ImportError as exc:
                raise UpstreamError(502, "a SOCKS upstream proxy needs the aiohttp-socks "
                                    "package", "upstream_proxy") from exc
            session = self._socks_sessions[key] = aiohttp.ClientSession(
                connector=ProxyConnector.from_url(proxy, limit=0), timeout=self.timeout,
                trust_env=False, auto_decompress=True,
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"))
        return session

    def _send(self, prepared: PreparedRequest, method: str = "POST",
              proxy: str | None = None) -> Any:
        proxy = proxy or self.proxy
        if proxy and proxy.lower().startswith("socks"):
            session, http_proxy = self._socks_session(proxy), None
        else:
            session, http_proxy = self._session(), proxy
        return session.request(
            method, URL(prepared.url, encoded=True), headers=prepared.headers,
            data=prepared.body or None, proxy=http_proxy, allow_redirects=False)

    async def request_json(
        self, provider: Provider, prepared: PreparedRequest, method: str = "POST",
        *, proxy: str | None = None,
    ) -> dict[str, Any]:
        """`proxy`: an http(s):// or socks5:// proxy for this call (default: the client's)."""
        payload, _ = await self.request_raw(provider, prepared, method, proxy=proxy)
        return payload

    async def request_raw(
        self, provider: Provider, prepared: PreparedRequest, method: str = "POST",
        *, proxy: str | None = None,
    ) -> tuple[dict[str, Any], bytes]:
        """request_json, and the body's bytes as received (for relaying them as they are)."""
        try:
            async with self._send(prepared, method, proxy) as response:
                body = await response.read()
                status, headers = response.status, _lower_headers(response.headers)
        except (TimeoutError, aiohttp.ClientError) as exc:
            _forget_frames(exc)
            raise _transport_error(exc) from exc
        if status != 200:
            raise provider.error_from_response(status, headers, body)
        payload = _json_object(body)
        error = provider.error_from_payload(payload)
        if error is not None:
            raise error
        return payload, body

    async def stream_events(
        self, provider: Provider, prepared: PreparedRequest, *, proxy: str | None = None,
    ) -> AsyncIterator[list[SSEEvent]]:
        """An Anthropic Messages event stream: the whole events of each network read as one
        batch, each with its parsed `data` and its bytes as sent. An `error` event before any
        other raises (the caller may still answer with an HTTP error or another account);
        later it is passed on and ends the stream. A stream that ends before `message_stop`
        raises `upstream_disconnected`."""
        count = 0
        ended = False
        try:
            async with self._send(prepared, proxy=proxy) as response:
                if response.status != 200:
                    raise provider.error_from_response(
                        response.status, _lower_headers(response.headers), await response.read())
                if "json" in response.headers.get("content-type", ""):
                    payload = _json_object(await response.read())
                    raise provider.error_from_payload(payload) or UpstreamError(
                        502, "upstream sent an unexpected answer", "upstream_invalid_json")
                parser = SSEEventParser()
                with ReadDeadline.of(response, self.timeout.sock_read,
                                     aiohttp.ServerTimeoutError) as deadline:
                    async for raw in response.content.iter_any():
                        deadline.touch()
                        batch, ended = _event_batch(provider, parser.feed(raw),
                                                    first=count == 0)
                        if batch:
                            count += len(batch)
                            yield batch
                        if ended:
                            break
                    else:
                        batch, ended = _event_batch(provider, parser.close(), first=count == 0)
                        if batch:
                            count += len(batch)
                            yield batch
        except (TimeoutError, aiohttp.ClientError) as exc:
            _forget_frames(exc)
            if not ended:
                raise _transport_error(exc, started=count > 0) from exc
        if count == 0:
            raise UpstreamError(502, "upstream returned an empty stream", "empty_stream")
        if not ended:
            raise UpstreamError(502, "upstream connection lost mid-stream",
                                "upstream_disconnected")

    async def stream_batches(
        self, provider: Provider, prepared: PreparedRequest, *, proxy: str | None = None,
        text_runs: bool = False,
    ) -> AsyncIterator[list[Any]]:
        """Yields the chunk objects of each network read as one batch (relaying a batch costs
        one write instead of one per event); raises UpstreamError for errors before or during
        the stream, for a stream that ends without a single chunk, and for one that ends before
        the upstream said it was done (see StreamEnd). With `text_runs`, a chunk that is an
        earlier text chunk with other text comes in a TextRun (upstream/text_lane.py)."""
        count = 0
        end = StreamEnd()
        lane = TextLane() if text_runs else None
        try:
            async with self._send(prepared, proxy=proxy) as response:
                if response.status != 200:
                    raise provider.error_from_response(
                        response.status, _lower_headers(response.headers), await response.read())
                if "json" in response.headers.get("content-type", ""):
                    # iFlow answers errors with a 200 JSON envelope, even for streams.
                    batch = _chunks_from_json(provider, await response.read())
                    count += len(batch)
                    yield batch
                    return
                parser = SSEDataParser()
                with ReadDeadline.of(response, self.timeout.sock_read,
                                     aiohttp.ServerTimeoutError) as deadline:
                    async for raw in response.content.iter_any():
                        deadline.touch()
                        batch, end.done = _parse_batch(provider, parser.feed(raw), lane)
                        count += end.see(batch)
                        if batch:
                            yield batch  # a FinalBatch when [DONE] came: may be closed there
                        if end.done:
                            break
                    else:
                        batch, end.done = _parse_batch(provider, parser.close(), lane)
                        count += end.see(batch)
                        if batch:
                            yield batch
        except (TimeoutError, aiohttp.ClientError) as exc:
            _forget_frames(exc)
            if not end.complete:
                raise _transport_error(exc, started=count > 0) from exc
            # The answer is whole; only what follows its finish_reason (usage, [DONE]) is lost.
            log.info("upstream stream broke after its finish_reason (%s)", type(exc).__name__)
        if count == 0:
            raise UpstreamError(502, "upstream returned an empty stream", "empty_stream")
        if not end.complete:
            # However the body was framed: a close-delimited body cut short ends like a whole one.
            raise UpstreamError(502, "upstream connection lost mid-stream",
                                "upstream_disconnected")

    async def fetch_image(
        self, url: str, *, max_bytes: int, timeout: float, allow_private: bool
    ) -> tuple[str, bytes]:
        """(content type, bytes) of an image URL a client sent (upstream/images.py)."""
        return await self.images.fetch(url, max_bytes=max_bytes, timeout=timeout,
                                       allow_private=allow_private)

    async def aclose(self) -> None:
        await self.images.aclose()
        for session in [*self._sessions.values(), *self._socks_sessions.values()]:
            await session.close()
        self._sessions.clear()
        self._socks_sessions.clear()


def _lower_headers(headers: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        payload = loads(body)
    except ValueError as exc:
        raise UpstreamError(502, "upstream sent invalid JSON", "upstream_invalid_json") from exc
    if not isinstance(payload, dict):
        raise UpstreamError(502, "upstream sent an unexpected answer", "upstream_invalid_json")
    return payload


class StreamEnd:
    """Whether an upstream stream said its answer was complete: `data: [DONE]`, or a
    finish_reason for every choice it started. The HTTP framing cannot tell: a close-delimited
    body, or a chunked one ended by a proxy, looks whole however early it stops."""

    __slots__ = ("closed", "done", "open")

    def __init__(self) -> None:
        self.done = False  # [DONE] came
        self.open: set[int] = set()  # choices started, no finish_reason yet
        self.closed: set[int] = set()  # choices with their finish_reason

    def see(self, batch: list[Any]) -> int:
        """Notes the batch's choices; returns its size. Called before the batch is yielded
        (the relay may close the stream at its last batch)."""
        for chunk in batch:
            if type(chunk) is TextRun:
                continue  # its template's chunk, seen before it, opened choice 0
            choices = chunk.get("choices")
            for choice in choices if isinstance(choices, list) else ():
                if not isinstance(choice, dict):
                    continue
                index = choice.get("index")
                index = index if isinstance(index, int) else 0
                if choice.get("finish_reason"):
                    self.closed.add(index)
                    self.open.discard(index)
                elif index not in self.closed:
                    self.open.add(index)
        if self.done and not self.finished:
            log.info("upstream sent [DONE] without a finish_reason: taken as complete")
        return len(batch)

    @property
    def finished(self) -> bool:
        return bool(self.closed) and not self.open

    @property
    def complete(self) -> bool:
        return self.done or self.finished


def _parse_batch(provider: Provider, payloads: list[str],
                 lane: TextLane | None = None) -> tuple[list[Any], bool]:
    """The chunks of some data payloads, and whether [DONE] came. With a lane, payloads that
    are its template around other text come as one TextRun; other text chunks teach it."""
    batch: list[Any] = []
    at, count = 0, len(payloads)
    while at < count:
        if lane is not None:
            run = lane.take_run(payloads, at)
            if run is not None:
                batch.append(run)
                at += len(run.literals)
                continue
        data = payloads[at]
        at += 1
        try:  # the usual payload: one JSON object, parsed in one step
            value = loads(data) if data[:1] == "{" else None
        except ValueError:
            value = None  # the long way below reads it line by line
        if type(value) is dict:
            error = provider.error_from_payload(value)
            if error is not None:
                raise error
            batch.append(value)
            if lane is not None:
                lane.learn(data, value)
            continue
        for chunk in _parse_data(provider, data):
            if chunk is None:
                return FinalBatch(batch), True
            batch.append(chunk)
    return batch, False


def _parse_data(provider: Provider, data: str) -> list[dict[str, Any] | None]:
    """One SSE data payload → chunk objects; None marks [DONE]. Some servers omit the blank
    line between events, so a payload that is not one JSON value is tried line by line."""
    data = data.strip()
    if not data:
        return []
    if data == "[DONE]":
        return [None]
    try:
        values = [loads(data)]
    except ValueError:
        values = []
        for line in data.splitlines():
            line = line.strip()
            if line == "[DONE]":
                values.append(None)
                continue
            try:
                values.append(loads(line))
            except ValueError:
                log.warning("skipping an unparsable upstream event (%d bytes)", len(line))
    out: list[dict[str, Any] | None] = []
    for value in values:
        if value is None:
            out.append(None)
            break
        if not isinstance(value, dict):
            continue
        error = provider.error_from_payload(value)
        if error is not None:
            raise error
        out.append(value)
    return out


def _event_batch(provider: Provider, events: list[SSEEvent],
                 *, first: bool) -> tuple[list[SSEEvent], bool]:
    """Parsed events (data as a dict; unparsable ones skipped), and whether the stream ended
    (message_stop or an error event: the batch is then a FinalBatch). An error event that
    comes first raises."""
    batch: list[SSEEvent] = []
    for event in events:
        try:
            data = loads(event.data)
        except ValueError:
            log.warning("skipping an unparsable upstream event (%d bytes)", len(event.raw))
            continue
        if not isinstance(data, dict):
            continue
        event.data = data
        kind = data.get("type") or event.name
        if kind == "error":
            error = provider.error_from_payload(data)
            if first and not batch and error is not None:
                raise error
            batch.append(event)
            return FinalBatch(batch), True
        batch.append(event)
        if kind == "message_stop":
            return FinalBatch(batch), True
    return batch, False


def _chunks_from_json(provider: Provider, body: bytes) -> list[dict[str, Any]]:
    """A JSON body where a stream was expected: an error envelope, or a whole completion from
    an upstream that ignored `stream` (replayed as one chunk)."""
    payload = _json_object(body)
    error = provider.error_from_payload(payload)
    if error is not None:
        raise error
    if not payload.get("choices"):
        raise UpstreamError(502, "upstream sent an unexpected answer", "upstream_invalid_json")
    choices = []
    for choice in payload["choices"]:
        message = choice.get("message") or {}
        choices.append({"index": choice.get("index", 0), "delta": message,
                        "finish_reason": choice.get("finish_reason")})
    chunk = {k: v for k, v in payload.items() if k != "choices"}
    chunk["object"] = "chat.completion.chunk"
    chunk["choices"] = choices
    return [chunk]


def _forget_frames(exc: BaseException) -> None:
    """Drops a transport error's traceback. aiohttp keeps the exception a broken connection
    raised on that connection's reader, and the traceback's frames hold the reader: a
    reference cycle, with the request's response and upstream body in it, left to the garbage
    collector (tests/proxy/test_error_garbage.py). Its type and message are what we report."""
    exc.__traceback__ = None


def _transport_error(exc: BaseException, *, started: bool = False) -> UpstreamError:
    if isinstance(exc, aiohttp.ClientConnectorError) and not isinstance(
            exc, aiohttp.ServerTimeoutError):
        return UpstreamError(502, f"upstream unreachable: {exc.host}:{exc.port} "
                             f"({exc.os_error.strerror or exc.os_error})", "upstream_unreachable")
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return UpstreamError(504, "upstream timed out", "upstream_timeout")
    if started:
        return UpstreamError(502, "upstream connection lost mid-stream", "upstream_disconnected")
    return UpstreamError(502, f"upstream request failed: {type(exc).__name__}", "upstream_error")
