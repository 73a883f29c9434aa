"""The SSRF guard of image fetching (upstream/ssrf.py, upstream/images.py): the deny
list range by range, and that the address connected to is the address that was checked.

Nothing leaves loopback. The event loop below is the network edge: its DNS answers are
scripted (a test host never reaches a real resolver) and its connect refuses every address
but loopback and one stand-in "public" address that it routes to a loopback server, recording
each attempt. The real UpstreamClient runs on top of it, as the gateway runs it."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.images import image_server, png
from upstream.client import UpstreamClient
from upstream.ssrf import is_denied_address
from upstream.types import UpstreamError

PUBLIC = "93.184.216.34"  # never contacted: EdgeLoop routes it to a loopback server
PUBLIC_PNG = png(padding=11)
INTERNAL_PNG = png(padding=22)


class EdgeLoop(asyncio.SelectorEventLoop):
    """DNS and TCP connect at the edge of the test: `dns` maps a test host name to its
    successive answers (the last one repeats); connects go to 127.0.0.1 only, PUBLIC being
    routed to the loopback port `public_port`."""

    def __init__(self, dns: dict[str, list[list[str]]], public_port: int = 0) -> None:
        super().__init__()
        self.dns = dns
        self.public_port = public_port
        self.lookups: list[str] = []
        self.connects: list[str] = []

    async def getaddrinfo(self, host: Any, port: Any, *, family: int = 0, type: int = 0,
                          proto: int = 0, flags: int = 0) -> list[Any]:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if is_ip_literal(name):  # no DNS involved, as with a real resolver
            addresses = [name]
        elif name in self.dns:
            self.lookups.append(name)
            answers = self.dns[name]
            addresses = answers.pop(0) if len(answers) > 1 else answers[0]
        else:
            raise socket.gaierror(socket.EAI_NONAME, f"{name} is not a test host")
        return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", (a, int(port), 0, 0)) if ":" in a
                else (socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, int(port)))
                for a in addresses]

    async def sock_connect(self, sock: socket.socket, address: Any) -> None:
        self.connects.append(address[0])
        if address[0] == PUBLIC and self.public_port:
            return await super().sock_connect(sock, ("127.0.0.1", self.public_port))
        if address[0] == "127.0.0.1":
            return await super().sock_connect(sock, address)
        raise ConnectionRefusedError(f"the test network does not reach {address[0]}")


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def fetch(loop: EdgeLoop, url: str, *, allow_private: bool = False) -> bytes:
    """The gateway's image fetch of `url`, run on `loop`; the image bytes."""
    async def run() -> bytes:
        client = UpstreamClient()
        try:
            _, data = await client.fetch_image(url, max_bytes=100_000, timeout=10,
                                               allow_private=allow_private)
            return data
        finally:
            await client.aclose()

    with asyncio.Runner(loop_factory=lambda: loop) as runner:
        return runner.run(run())


@contextmanager
def servers() -> Iterator[tuple[int, int, list[str], list[str]]]:
    """A "public" and an "internal" image server on loopback: their ports and request logs."""
    public_seen: list[str] = []
    internal_seen: list[str] = []
    public_files = {"/a.png": ("image/png", PUBLIC_PNG),
                    "/to-loopback": ("redirect", b""), "/to-internal": ("redirect", b"")}
    with image_server({"/a.png": ("image/png", INTERNAL_PNG)}, seen=internal_seen) as internal, \
            image_server(public_files, seen=public_seen) as public:
        internal_port = int(internal.rsplit(":", 1)[1])
        public_files["/to-loopback"] = ("redirect", f"{internal}/a.png".encode())
        public_files["/to-internal"] = (
            "redirect", f"http://internal.test:{internal_port}/a.png".encode())
        yield int(public.rsplit(":", 1)[1]), internal_port, public_seen, internal_seen


def refused(loop: EdgeLoop, url: str) -> str:
    with pytest.raises(UpstreamError) as caught:
        fetch(loop, url)
    assert caught.value.status == 400
    return caught.value.message


def test_a_public_host_is_fetched_from_the_address_that_was_checked():
    with servers() as (public_port, internal_port, public_seen, internal_seen):
        loop = EdgeLoop({"images.test": [[PUBLIC]]}, public_port)
        assert fetch(loop, f"http://images.test:{internal_port}/a.png") == PUBLIC_PNG
    assert loop.connects == [PUBLIC]
    assert internal_seen == [] and public_seen == ["/a.png"]


def test_dns_rebinding_cannot_reach_loopback():
    """The name answers a public address, then 127.0.0.1: resolved once, so the connection goes
    to the public address that was checked, never to loopback."""
    with servers() as (public_port, internal_port, _, internal_seen):
        loop = EdgeLoop({"rebind.test": [[PUBLIC], ["127.0.0.1"]]}, public_port)
        data = fetch(loop, f"http://rebind.test:{internal_port}/a.png")
    assert loop.connects == [PUBLIC], loop.connects
    assert loop.lookups == ["rebind.test"]
    assert internal_seen == [] and data == PUBLIC_PNG


@pytest.mark.parametrize("answer", [
    ["100.100.100.200"],  # Alibaba Cloud's metadata service, in carrier-grade NAT space
    ["169.254.169.254"],
    ["127.0.0.1"],
    ["10.0.0.5"],
    [PUBLIC, "192.168.1.10"],  # one private address refuses the host
    ["2002:7f00:1::1"],  # 6to4 embedding 127.0.0.1
    ["64:ff9b::a9fe:a9fe"],  # NAT64 embedding 169.254.169.254
    ["::ffff:127.0.0.1"],
    ["fd00::1"],
])
def test_a_host_resolving_to_a_denied_address_is_refused_without_connecting(answer):
    loop = EdgeLoop({"inside.test": [answer]})
    assert "private or local" in refused(loop, "http://inside.test/a.png")
    assert loop.connects == []


@pytest.mark.parametrize("host", [
    "127.0.0.1", "100.100.100.200", "169.254.169.254", "[2002:7f00:1::1]", "[::1]",
    "[::ffff:10.0.0.1]", "[64:ff9b::7f00:1]", "0.0.0.0",
])
def test_denied_ip_literals_are_refused_without_connecting(host):
    loop = EdgeLoop({})
    assert "private or local" in refused(loop, f"http://{host}:9/a.png")
    assert loop.connects == []


@pytest.mark.parametrize("path", ["/to-loopback", "/to-internal"])
def test_a_redirect_to_a_denied_address_is_refused(path):
    with servers() as (public_port, internal_port, public_seen, internal_seen):
        loop = EdgeLoop({"images.test": [[PUBLIC]], "internal.test": [["10.1.2.3"]]},
                        public_port)
        assert "private or local" in refused(loop, f"http://images.test:{internal_port}{path}")
    assert loop.connects == [PUBLIC]
    assert public_seen == [path] and internal_seen == []


def test_allow_private_urls_reaches_loopback():
    """IMAGE_ALLOW_PRIVATE_URLS=true (the gateway tests' image servers live on loopback)."""
    with servers() as (_, internal_port, _, internal_seen):
        loop = EdgeLoop({})
        data = fetch(loop, f"http://127.0.0.1:{internal_port}/a.png", allow_private=True)
    assert data == INTERNAL_PNG and internal_seen == ["/a.png"]


DENIED = [
    # IPv4: unspecified, private, CGNAT, loopback, link-local, special-purpose, documentation,
    # benchmarking, multicast, reserved, broadcast
    "0.0.0.0", "0.1.2.3", "10.0.0.1", "10.255.255.255", "100.64.0.0", "100.100.100.200",
    "100.127.255.255", "127.0.0.1", "127.255.255.254", "169.254.0.1", "169.254.169.254",
    "172.16.0.1", "172.31.255.255", "192.0.0.8", "192.0.2.1", "192.88.99.1", "192.168.0.1",
    "198.18.0.1", "198.19.255.255", "198.51.100.7", "203.0.113.9", "224.0.0.1",
    "239.255.255.250", "240.0.0.1", "255.255.255.255",
    # IPv6: unspecified, loopback, IPv4-compatible, unique-local, link-local (scoped too),
    # site-local, multicast, discard, documentation, Teredo, local NAT64
    "::", "::1", "::127.0.0.1", "fc00::1", "fd12:3456:789a::1", "fe80::1", "fe80::1%eth0",
    "fec0::1", "ff02::1", "ff05::1:3", "100::1", "2001:db8::1", "3fff::1",
    "2001:0:4136:e378:8000:63bf:3fff:fdd2", "2001:2::1", "64:ff9b:1::a00:1",
    # IPv6 embeddings of denied IPv4: IPv4-mapped, NAT64, 6to4
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:100.100.100.200", "::ffff:169.254.169.254",
    "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "64:ff9b::6464:64c8",
    "2002:7f00:1::1", "2002:a00:1::", "2002:6464:64c8::1", "2002:a9fe:a9fe::",
    # not addresses at all
    "", "localhost", "127.1", "2130706433", "1.2.3",
]
ALLOWED = [
    "8.8.8.8", "1.1.1.1", PUBLIC, "100.63.255.255", "100.128.0.0", "172.15.255.255",
    "172.32.0.0", "192.169.0.1", "169.255.0.1", "223.255.255.255",
    "2606:4700:4700::1111", "2a00:1450:4001::200e",
    "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1",  # embeddings of a public address
]


@pytest.mark.parametrize("address", DENIED)
def test_denied_addresses(address):
    assert is_denied_address(address)


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_are_allowed(address):
    assert not is_denied_address(address)
