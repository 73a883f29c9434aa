"""Fetching the image URLs a client sent, for upstreams that take only data URLs.

Image fetches go direct (never through UPSTREAM_PROXY: the address connected to must be one we
checked) on their own sessions, whose connector resolves through the SSRF guard
(GuardedResolver, with upstream/ssrf.py's deny list): each host is resolved once, every
address is checked, and only the checked addresses are connected to. IP literals skip the
resolver, so they are checked here.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

from upstream.ssrf import is_denied_address
from upstream.types import UpstreamError

MAX_REDIRECTS = 3
REDIRECTS = frozenset({301, 302, 303, 307, 308})


class RefusedAddress(OSError):
    """A host that resolves to an address the SSRF guard denies."""

    def __init__(self, host: str) -> None:
        super().__init__(f"{host} resolves to a private or local address")
        self.host = host


class GuardedResolver(AbstractResolver):
    """Resolves once and returns the answer only if no address in it is denied, so the
    connector connects to an address that was checked (a second lookup could answer
    differently: DNS rebinding). One denied address refuses the host."""

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._inner = inner or ThreadedResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        answers = await self._inner.resolve(host, port, family)
        if not answers or any(is_denied_address(a["host"]) for a in answers):
            raise RefusedAddress(host)
        return answers

    async def close(self) -> None:
        await self._inner.close()


class ImageFetcher:
    def __init__(self) -> None:
        # One session per event loop and policy: the guard lives in the connector's resolver.
        self._sessions: dict[tuple[asyncio.AbstractEventLoop, bool], aiohttp.ClientSession] = {}

    def _session(self, allow_private: bool) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        session = self._sessions.get((loop, allow_private))
        if session is None or session.closed:
            for key in [k for k in self._sessions if k[0].is_closed()]:
                del self._sessions[key]
            resolver = None if allow_private else GuardedResolver()
            # No DNS cache: each connection's addresses come from the guard's one lookup.
            connector = aiohttp.TCPConnector(limit=0, use_dns_cache=False, resolver=resolver)
            session = self._sessions[(loop, allow_private)] = aiohttp.ClientSession(
                connector=connector, trust_env=False, auto_decompress=True,
                skip_auto_headers=("User-Agent", "Accept-Encoding"))
        return session

    async def fetch(self, url: str, *, max_bytes: int, timeout: float,
                    allow_private: bool) -> tuple[str, bytes]:
        """(content type, bytes) of an image URL. Refuses addresses the SSRF guard denies unless
        `allow_private`, checks every redirect hop the same way, gives up after `timeout`
        seconds in all, and stops reading past max_bytes."""
        session = self._session(allow_private)
        limit = aiohttp.ClientTimeout(total=timeout)
        for _hop in range(MAX_REDIRECTS + 1):
            target = _parse(url)
            if not allow_private and _is_denied_literal(target.host or ""):
                raise _refused(target.host or "")
            try:
                async with session.get(target, headers={"accept": "image/*"}, timeout=limit,
                                       allow_redirects=False) as response:
                    if response.status in REDIRECTS and "location" in response.headers:
                        url = str(target.join(URL(response.headers["location"])))
                        continue
                    return await _read_image(response, url, max_bytes)
            except aiohttp.ClientConnectorError as exc:
                if isinstance(exc.os_error, RefusedAddress):
                    raise _refused(target.host or "") from exc
                raise _image_error(
                    f"cannot fetch image {url[:100]}: {type(exc).__name__}") from exc
            except (TimeoutError, aiohttp.ClientError) as exc:
                raise _image_error(
                    f"cannot fetch image {url[:100]}: {type(exc).__name__}") from exc
        raise _image_error(f"too many redirects fetching image {url[:100]}")

    async def aclose(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()


def _parse(url: str) -> URL:
    try:
        target = URL(url)
    except ValueError as exc:
        raise _image_error(f"invalid image URL {url[:100]}") from exc
    if target.scheme not in {"http", "https"} or not target.host:
        raise _image_error(f"image URLs must be http(s): {url[:100]}")
    return target


def _is_denied_literal(host: str) -> bool:
    """An IP-literal host (the connector does not resolve those) that the guard denies."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False  # a name: the guarded resolver checks what it resolves to
    return is_denied_address(host)


async def _read_image(response: aiohttp.ClientResponse, url: str,
                      max_bytes: int) -> tuple[str, bytes]:
    if response.status != 200:
        raise _image_error(f"fetching image {url[:100]} gave HTTP {response.status}")
    content_type = response.headers.get("content-type", "").split(";")[0].strip()
    if not content_type.startswith("image/"):
        raise _image_error(f"{url[:100]} is not an image ({content_type or '?'})")
    data = bytearray()
    async for piece in response.content.iter_chunked(65536):
        data += piece
        if len(data) > max_bytes:
            raise _image_error(f"image {url[:100]} is larger than {max_bytes} bytes")
    return content_type, bytes(data)


def _image_error(message: str) -> UpstreamError:
    return UpstreamError(400, message, "invalid_image_url")


def _refused(host: str) -> UpstreamError:
    return _image_error(
        f"image URL host {host[:100]} is or resolves to a private or local address; refused "
        "(IMAGE_ALLOW_PRIVATE_URLS=true allows it)")
