"""Matching a requested target against one server's allowlist.

Entries come normalised from the spec (`smcp.domain.network`): `name:port`,
`*.suffix:port`, `a.b.c.d:port` or `[v6]:port`. A target is matched on exact
port and either exact host, or — for `*.suffix` — any name ending in `.suffix`.
An IP-literal target (in any spelling) only ever matches an IP entry; a name
never matches an IP entry and an IP never matches a wildcard.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from smcp.domain.network import NetworkEntryError, normalize_entry, normalize_host
from smcp.egress.addresses import IPAddress, parse_ip_literal


@dataclass(frozen=True, slots=True)
class Target:
    """What a client asked for, after reading it carefully."""

    host: str  # normalised name, or the canonical text of an IP address
    port: int
    ip: IPAddress | None = None  # set when the host was an IP literal

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if isinstance(self.ip, ipaddress.IPv6Address) else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Match:
    allowed: bool
    entry: str | None = None
    reason: str = ""


class Allowlist:
    def __init__(self, entries: Iterable[str]) -> None:
        self.entries: tuple[str, ...] = tuple(normalize_entry(e) for e in entries)
        self._names: dict[str, set[int]] = {}
        self._suffixes: dict[str, set[int]] = {}
        self._ips: dict[IPAddress, set[int]] = {}
        for entry in self.entries:
            host, _, port_text = entry.rpartition(":")
            port = int(port_text)
            if host.startswith("["):
                self._ips.setdefault(ipaddress.IPv6Address(host[1:-1]), set()).add(port)
            elif host.startswith("*."):
                self._suffixes.setdefault("." + host[2:], set()).add(port)
            else:
                try:
                    self._ips.setdefault(ipaddress.IPv4Address(host), set()).add(port)
                except ValueError:
                    self._names.setdefault(host, set()).add(port)

    def __bool__(self) -> bool:
        return bool(self.entries)

    def match(self, target: Target) -> Match:
        if target.ip is not None:
            ports = self._ips.get(target.ip)
            what = f"address {target.ip}"
            entry_host = target.authority.rpartition(":")[0]
            entry = f"{entry_host}:{target.port}"
        else:
            ports = set(self._names.get(target.host, ()))
            entry = f"{target.host}:{target.port}"
            for suffix, suffix_ports in self._suffixes.items():
                if target.host.endswith(suffix) and len(target.host) > len(suffix):
                    if target.port in suffix_ports:
                        return Match(True, f"*{suffix}:{target.port}", "allowlisted")
                    ports |= suffix_ports
            what = f"host {target.host}"
        if not ports:
            return Match(False, None, f"{what} is not in the allowlist")
        if target.port not in ports:
            return Match(False, None, f"port {target.port} is not allowed for {what}")
        return Match(True, entry, "allowlisted")


def parse_authority(authority: str, *, default_port: int | None) -> Target:
    """`host[:port]` as a client wrote it (CONNECT target or URL authority) → Target.

    Raises ValueError for anything ambiguous: userinfo, bad ports, stray characters.
    """
    if not authority or not authority.isascii() or any(c in authority for c in "@/\\?#% \t\r\n\0"):
        raise ValueError("malformed target")
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise ValueError("malformed IPv6 target")
        host, rest = authority[: end + 1], authority[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError("malformed target")
        port_text = rest[1:] if rest else None
    elif authority.count(":") > 1:
        raise ValueError("IPv6 targets must be in brackets")
    else:
        host, sep, port_text_ = authority.partition(":")
        port_text = port_text_ if sep else None
    if port_text is None:
        if default_port is None:
            raise ValueError("target needs a port")
        port = default_port
    else:
        if not port_text.isdigit() or len(port_text) > 5:
            raise ValueError("bad port")
        port = int(port_text)
        if not 1 <= port <= 65535:
            raise ValueError("bad port")
    ip = parse_ip_literal(host)
    if ip is not None:
        return Target(ip.compressed, port, ip)
    if host.startswith("["):
        raise ValueError("malformed IPv6 target")
    try:
        name = normalize_host(host)
    except NetworkEntryError as exc:
        raise ValueError(str(exc)) from None
    if not name or len(name) > 253 or any(not label for label in name.split(".")):
        raise ValueError("malformed host name")
    if not all(c.isalnum() or c in "-._" for c in name):
        raise ValueError("malformed host name")
    return Target(name, port, None)
