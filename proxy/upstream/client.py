"""The one place that sends requests to model providers: a pooled httpx client per event loop,
behind a swappable transport, turning every failure into an UpstreamError."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx

from proxy.translate.sse import SSEDataParser
from proxy.translate.vision import is_public_address
from proxy.upstream.providers.base import Provider
from proxy.upstream.types import PreparedRequest, UpstreamError

log = logging.getLogger(__name__)


class UpstreamClient:
    def __init__(
        self,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 600.0,
        proxy: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.timeout = httpx.Timeout(read_timeout, connect=connect_timeout, pool=connect_timeout)
        self.proxy = proxy
        self.transport = transport
        self._clients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}

    def _client(self) -> httpx.AsyncClient:
        # httpx connections belong to the loop that opened them; Daphne has one loop, tests
        # may have several.
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            for old_loop in [lp for lp in self._clients if lp.is_closed()]:
                del self._clients[old_loop]
            client = httpx.AsyncClient(
                timeout=self.timeout,
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=256),
                proxy=self.proxy,
                transport=self.transport,
                trust_env=False,  # an explicit UPSTREAM_PROXY only, like the official CLI
                follow_redirects=False,
            )
            self._clients[loop] = client
        return client

    def _build(self, prepared: PreparedRequest, method: str = "POST") -> httpx.Request:
        client = self._client()
        return client.build_request(
            method, prepared.url, headers=prepared.headers, content=prepared.body or None
        )

    async def request_json(
        self, provider: Provider, prepared: PreparedRequest, method: str = "POST"
    ) -> dict[str, Any]:
        client = self._client()
        try:
            response = await client.send(self._build(prepared, method))
        except httpx.HTTPError as exc:
            raise _transport_error(exc) from exc
        if response.status_code != 200:
            raise provider.error_from_response(
                response.status_code, _lower_headers(response.headers), response.content
            )
        try:
            payload = json.loads(response.content)
        except ValueError as exc:
            raise UpstreamError(502, "upstream sent invalid JSON", "upstream_invalid_json") from exc
        if not isinstance(payload, dict):
            raise UpstreamError(502, "upstream sent an unexpected answer", "upstream_invalid_json")
        error = provider.error_from_payload(payload)
        if error is not None:
            raise error
        return payload

    async def stream_chunks(
        self, provider: Provider, prepared: PreparedRequest
    ) -> AsyncIterator[dict[str, Any]]:
        """Yields parsed chunk objects; raises UpstreamError for errors before or during the
        stream, and for a stream that ends without a single chunk."""
        client = self._client()
        try:
            response = await client.send(self._build(prepared), stream=True)
        except httpx.HTTPError as exc:
            raise _transport_error(exc) from exc
        count = 0
        try:
            if response.status_code != 200:
                raise provider.error_from_response(
                    response.status_code, _lower_headers(response.headers), await response.aread()
                )
            content_type = response.headers.get("content-type", "")
            if "json" in content_type:  # iFlow answers errors with a 200 JSON envelope
                for chunk in _chunks_from_json(provider, await response.aread()):
                    count += 1
                    yield chunk
                return
            parser = SSEDataParser()
            async for raw in response.aiter_bytes():
                for data in parser.feed(raw):
                    for chunk in _parse_data(provider, data):
                        if chunk is None:
                            return
                        count += 1
                        yield chunk
            for data in parser.close():
                for chunk in _parse_data(provider, data):
                    if chunk is None:
                        return
                    count += 1
                    yield chunk
        except httpx.HTTPError as exc:
            raise _transport_error(exc, started=count > 0) from exc
        finally:
            await response.aclose()
        if count == 0:
            raise UpstreamError(502, "upstream returned an empty stream", "empty_stream")

    async def fetch_image(
        self, url: str, *, max_bytes: int, timeout: float, allow_private: bool
    ) -> tuple[str, bytes]:
        """(content type, bytes) of an image URL a client sent, for upstreams that take only
        data URLs. Refuses private, loopback and link-local addresses unless allowed, checks
        every redirect hop the same way, and stops reading past max_bytes."""
        client = self._client()
        for _hop in range(4):
            target = httpx.URL(url)
            if target.scheme not in {"http", "https"} or not target.host:
                raise _image_error(f"image URLs must be http(s): {url[:100]}")
            if not allow_private:
                await _check_public(target)
            try:
                request = client.build_request("GET", target, headers={"accept": "image/*"},
                                               timeout=httpx.Timeout(timeout))
                response = await client.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise _image_error(f"cannot fetch image {url[:100]}: {type(exc).__name__}") \
                    from exc
            try:
                if response.is_redirect and "location" in response.headers:
                    url = str(target.join(response.headers["location"]))
                    continue
                if response.status_code != 200:
                    raise _image_error(
                        f"fetching image {url[:100]} gave HTTP {response.status_code}")
                content_type = response.headers.get("content-type", "").split(";")[0].strip()
                if not content_type.startswith("image/"):
                    raise _image_error(f"{url[:100]} is not an image ({content_type or '?'})")
                data = bytearray()
                async for piece in response.aiter_bytes():
                    data += piece
                    if len(data) > max_bytes:
                        raise _image_error(
                            f"image {url[:100]} is larger than {max_bytes} bytes")
                return content_type, bytes(data)
            except httpx.HTTPError as exc:
                raise _image_error(f"cannot fetch image {url[:100]}: {type(exc).__name__}") \
                    from exc
            finally:
                await response.aclose()
        raise _image_error(f"too many redirects fetching image {url[:100]}")

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()


def _image_error(message: str) -> UpstreamError:
    return UpstreamError(400, message, "invalid_image_url")


async def _check_public(url: httpx.URL) -> None:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(url.host, url.port or (443 if url.scheme == "https"
                                                             else 80))
    except OSError as exc:
        raise _image_error(f"cannot resolve image host {url.host}") from exc
    addresses = {info[4][0] for info in infos}
    if not addresses or not all(is_public_address(a) for a in addresses):
        raise _image_error(
            f"image URL host {url.host} resolves to a private or local address; refused "
            "(IMAGE_ALLOW_PRIVATE_URLS=true allows it)")


def _lower_headers(headers: httpx.Headers) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def _parse_data(provider: Provider, data: str) -> list[dict[str, Any] | None]:
    """One SSE data payload → chunk objects; None marks [DONE]. Some servers omit the blank
    line between events, so a payload that is not one JSON value is tried line by line."""
    data = data.strip()
    if not data:
        return []
    if data == "[DONE]":
        return [None]
    try:
        values = [json.loads(data)]
    except ValueError:
        values = []
        for line in data.splitlines():
            line = line.strip()
            if line == "[DONE]":
                values.append(None)
                continue
            try:
                values.append(json.loads(line))
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


def _chunks_from_json(provider: Provider, body: bytes) -> list[dict[str, Any]]:
    """A JSON body where a stream was expected: an error envelope, or a whole completion from
    an upstream that ignored `stream` (replayed as one chunk)."""
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise UpstreamError(502, "upstream sent invalid JSON", "upstream_invalid_json") from exc
    if not isinstance(payload, dict):
        raise UpstreamError(502, "upstream sent an unexpected answer", "upstream_invalid_json")
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


def _transport_error(exc: httpx.HTTPError, *, started: bool = False) -> UpstreamError:
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamError(504, "upstream timed out", "upstream_timeout")
    if isinstance(exc, httpx.ConnectError):
        return UpstreamError(502, f"upstream unreachable: {exc or type(exc).__name__}",
                             "upstream_unreachable")
    if started:
        return UpstreamError(502, "upstream connection lost mid-stream", "upstream_disconnected")
    return UpstreamError(502, f"upstream request failed: {type(exc).__name__}", "upstream_error")
