"""Which addresses the egress proxy may dial, and how to read an address a client wrote.

Two jobs, both about not being fooled:

* `parse_ip_literal` reads a host the way C resolvers do (`inet_aton`): `127.1`,
  `0x7f.1`, `2130706433`, `017700000001` all mean 127.0.0.1. A host that parses as
  a number is an address, never a name to look up, so the allowlist and the address
  check both see the address it really is.
* `AddressPolicy.refusal` says why an address is not public, or None. Python's
  `is_global` alone is not enough (on 3.11 it calls the NAT64 and 6to4 forms of
  169.254.169.254 global), so embedded IPv4 is decoded first (IPv4-mapped, NAT64
  64:ff9b::/96, 6to4 2002::/16) and checked as IPv4; ranges that translate to
  somewhere we cannot see (Teredo 2001::/32, local-use NAT64 64:ff9b:1::/48,
  IPv4-compatible ::/96, SIIT ::ffff:0:0:0/96) are refused outright.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_V6_REFUSED = (
    (ipaddress.IPv6Network("::/96"), "IPv4-compatible IPv6"),
    (ipaddress.IPv6Network("::ffff:0:0:0/96"), "IPv4-translated IPv6 (SIIT)"),
    (ipaddress.IPv6Network("64:ff9b:1::/48"), "local-use NAT64"),
    (ipaddress.IPv6Network("2001::/32"), "Teredo"),
    (ipaddress.IPv6Network("100::/64"), "discard-only"),
    (ipaddress.IPv6Network("2001:db8::/32"), "documentation"),
    (ipaddress.IPv6Network("fc00::/7"), "unique-local"),
    (ipaddress.IPv6Network("fe80::/10"), "link-local"),
    (ipaddress.IPv6Network("fec0::/10"), "site-local"),
    (ipaddress.IPv6Network("ff00::/8"), "multicast"),
)
_V4_REFUSED = (
    (ipaddress.IPv4Network("0.0.0.0/8"), "this-network"),
    (ipaddress.IPv4Network("10.0.0.0/8"), "private"),
    (ipaddress.IPv4Network("100.64.0.0/10"), "shared address space (CGNAT)"),
    (ipaddress.IPv4Network("127.0.0.0/8"), "loopback"),
    (ipaddress.IPv4Network("169.254.0.0/16"), "link-local (cloud metadata)"),
    (ipaddress.IPv4Network("172.16.0.0/12"), "private"),
    (ipaddress.IPv4Network("192.0.0.0/24"), "IETF protocol assignments"),
    (ipaddress.IPv4Network("192.0.2.0/24"), "documentation"),
    (ipaddress.IPv4Network("192.88.99.0/24"), "6to4 relay anycast"),
    (ipaddress.IPv4Network("192.168.0.0/16"), "private"),
    (ipaddress.IPv4Network("198.18.0.0/15"), "benchmarking"),
    (ipaddress.IPv4Network("198.51.100.0/24"), "documentation"),
    (ipaddress.IPv4Network("203.0.113.0/24"), "documentation"),
    (ipaddress.IPv4Network("224.0.0.0/4"), "multicast"),
    (ipaddress.IPv4Network("240.0.0.0/4"), "reserved"),
)


def _ipv4_part(text: str) -> int | None:
    if not text:
        return None
    if text[:2] in ("0x", "0X"):
        digits, base = text[2:], 16
        if digits == "":
            return 0  # inet_aton reads a bare "0x" as zero
    elif len(text) > 1 and text[0] == "0":
        digits, base = text[1:], 8
    else:
        digits, base = text, 10
    try:
        return int(digits, base) if digits.isascii() and digits.isalnum() else None
    except ValueError:
        return None


def parse_ipv4_any(host: str) -> ipaddress.IPv4Address | None:
    """IPv4 in any form inet_aton accepts (1 to 4 parts, decimal/octal/hex), else None."""
    host = host.removesuffix(".")
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values = [_ipv4_part(p) for p in parts]
    if any(v is None for v in values):
        return None
    nums: list[int] = values  # type: ignore[assignment]
    # Every part but the last is one byte; the last fills the remaining bytes.
    if any(v > 255 for v in nums[:-1]) or nums[-1] >= 256 ** (5 - len(nums)):
        return None
    value = 0
    for v in nums[:-1]:
        value = value * 256 + v
    value = value * 256 ** (5 - len(nums)) + nums[-1]
    return ipaddress.IPv4Address(value)


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address a host string denotes if it is an IP literal in any spelling, else None."""
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            return None
    return parse_ipv4_any(host)


def embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, str] | None:
    """The IPv4 address a translation form of IPv6 carries, with the form's name."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped, "IPv4-mapped"
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), "NAT64"
    if ip.sixtofour is not None:
        return ip.sixtofour, "6to4"
    return None


def _v4_refusal(ip: ipaddress.IPv4Address) -> str | None:
    for net, why in _V4_REFUSED:
        if ip in net:
            return why
    if not ip.is_global or ip.is_multicast or ip.is_reserved or ip.is_loopback or ip.is_link_local:
        return "not a global address"
    return None


def _v6_refusal(ip: ipaddress.IPv6Address) -> str | None:
    for net, why in _V6_REFUSED:
        if ip in net:
            return why
    if (
        not ip.is_global
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_site_local
        or ip.is_unspecified
    ):
        return "not a global address"
    return None


class AddressPolicy:
    """Refuses every address that is not plainly public.

    `unsafe_allow` lists networks exempt from the check. It exists for tests, whose
    only upstream can be loopback; production leaves it empty, and then loopback,
    private, link-local and metadata addresses are all refused.
    """

    def __init__(self, unsafe_allow: Iterable[str | IPNetwork] = ()) -> None:
        self.unsafe_allow: tuple[IPNetwork, ...] = tuple(
            n
            if isinstance(n, (ipaddress.IPv4Network, ipaddress.IPv6Network))
            else ipaddress.ip_network(n, strict=False)
            for n in unsafe_allow
        )

    def refusal(self, ip: IPAddress) -> str | None:
        """Why `ip` may not be dialled, or None if it may."""
        if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
            return "scoped IPv6 address"
        if any(ip.version == n.version and ip in n for n in self.unsafe_allow):
            return None
        if isinstance(ip, ipaddress.IPv4Address):
            why = _v4_refusal(ip)
            return f"{why} ({ip})" if why else None
        inner = embedded_ipv4(ip)
        if inner is not None:
            v4, form = inner
            if any(n.version == 4 and v4 in n for n in self.unsafe_allow):
                return None
            why = _v4_refusal(v4)
            return f"{form} form of {v4}: {why}" if why else None
        why = _v6_refusal(ip)
        return f"{why} ({ip})" if why else None
