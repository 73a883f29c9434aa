"""The SSRF guard's deny list for image URLs fetched on a client's behalf: which addresses an
image may not be fetched from. Pure; the resolver that applies it to every address a host
resolves to, and pins the connection to those, is upstream/images.py's."""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Explicit lists, not ipaddress's is_private/is_global: those changed between Python releases
# (3.11 treats 100.64.0.0/10 and 2002::/16 as public).
DENIED_IPV4 = tuple(ipaddress.IPv4Network(net) for net in (
    "0.0.0.0/8",  # "this network", unspecified
    "10.0.0.0/8",  # private
    "100.64.0.0/10",  # carrier-grade NAT (cloud metadata 100.100.100.200)
    "127.0.0.0/8",  # loopback
    "169.254.0.0/16",  # link-local (cloud metadata 169.254.169.254)
    "172.16.0.0/12",  # private
    "192.0.0.0/24",  # IETF protocol assignments
    "192.0.2.0/24",  # documentation
    "192.88.99.0/24",  # 6to4 relay anycast
    "192.168.0.0/16",  # private
    "198.18.0.0/15",  # benchmarking
    "198.51.100.0/24",  # documentation
    "203.0.113.0/24",  # documentation
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4",  # reserved, and 255.255.255.255 broadcast
))
DENIED_IPV6 = tuple(ipaddress.IPv6Network(net) for net in (
    "::/8",  # unspecified, loopback, IPv4-compatible, reserved
    "64:ff9b:1::/48",  # local-use NAT64
    "100::/64",  # discard-only
    "2001::/23",  # IETF protocol assignments, Teredo (2001::/32) included
    "2001:db8::/32",  # documentation
    "3fff::/20",  # documentation
    "fc00::/7",  # unique-local
    "fe80::/10",  # link-local
    "fec0::/10",  # site-local (deprecated)
    "ff00::/8",  # multicast
))
NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address leads to: IPv4-mapped, NAT64 (64:ff9b::/96), 6to4."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in NAT64_WELL_KNOWN:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def is_denied_address(address: str) -> bool:
    """Whether an image may NOT be fetched from this address: anything that is not a plain
    public unicast address, or that embeds one that is not. Unparsable and scoped IPv6
    addresses (`fe80::1%eth0`) are denied."""
    if "%" in address:
        return True
    try:
        ip: IPAddress = ipaddress.ip_address(address)
    except ValueError:
        return True
    if isinstance(ip, ipaddress.IPv6Address):
        inner = embedded_ipv4(ip)
        if inner is not None:
            return is_denied_address(str(inner))
        return any(ip in net for net in DENIED_IPV6)
    return any(ip in net for net in DENIED_IPV4)

