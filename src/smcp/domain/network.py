"""The `[network]` table of smcp.toml: which hosts a server may reach through its egress proxy.

    [network]
    allow = ["api.example.com:443", "*.example.org:443", "static.example.net"]

An entry is `host[:port]`; the port defaults to 443. `host` is a DNS name, or
`*.` followed by a DNS name of at least two labels (matches any name *below* it,
at any depth, never the name itself), or a public IP address written canonically
(`203.0.113.7`, `[2606:4700::1111]`). Anything that a resolver might read as a
number in disguise (`0x7f.1`, `2130706433`, `017700000001`, `127.1`, a last label
that is all digits) is refused here, so an allowlist says plainly what it allows.
The proxy (smcp.egress) checks the *resolved* address of every connection again;
this module only keeps the list honest. Entries are stored normalised
(`host:port`, lower case, no trailing dot, IDNA as punycode), so comparisons are
exact strings.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_ALLOW_ENTRIES = 256
DEFAULT_PORT = 443

_LABEL_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_NUMERIC_LABEL_RE = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$")
# IPv6 ranges that smuggle another address inside, or route to nothing public.
_V6_NEVER = tuple(
    ipaddress.ip_network(n)
    for n in ("::/96", "::ffff:0:0/96", "::ffff:0:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48", "2001::/32", "2002::/16")
)


class NetworkEntryError(ValueError):
    pass


def _split_port(entry: str) -> tuple[str, int]:
    if entry.startswith("["):
        end = entry.find("]")
        if end < 0:
            raise NetworkEntryError(f"{entry!r}: unclosed '[' in an IPv6 address")
        host, rest = entry[: end + 1], entry[end + 1 :]
        if rest and not rest.startswith(":"):
            raise NetworkEntryError(f"{entry!r}: expected ':port' after the IPv6 address")
        port_text = rest[1:] if rest else None
    elif entry.count(":") > 1:
        raise NetworkEntryError(f"{entry!r}: write an IPv6 address in brackets, e.g. [2606:4700::1111]:443")
    elif ":" in entry:
        host, port_text = entry.split(":", 1)
    else:
        host, port_text = entry, None
    if port_text is None:
        return host, DEFAULT_PORT
    if not port_text.isascii() or not port_text.isdigit() or len(port_text) > 5 or port_text.startswith("0"):
        raise NetworkEntryError(f"{entry!r}: port must be a number from 1 to 65535")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise NetworkEntryError(f"{entry!r}: port must be a number from 1 to 65535")
    return host, port


def _public_literal(entry: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    if (
        isinstance(ip, ipaddress.IPv6Address)
        and not (ip.is_loopback or ip.is_unspecified)
        and any(ip in n for n in _V6_NEVER)
    ):
        raise NetworkEntryError(
            f"{entry!r}: IPv6 addresses that embed or translate IPv4 are not allowed; name the host"
        )
    if not ip.is_global or ip.is_multicast or ip.is_reserved or ip.is_link_local or ip.is_loopback:
        raise NetworkEntryError(f"{entry!r}: {ip} is not a public address")


def normalize_host(host: str) -> str:
    """Lower-case, drop one trailing dot, punycode non-ASCII labels. Raises on a malformed name."""
    host = host.strip().lower()
    host = host.removesuffix(".")
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise NetworkEntryError(f"{host!r} is not a valid host name") from exc
    return host


def normalize_entry(raw: str) -> str:
    """One allowlist entry → `host:port` (IPv6 as `[addr]:port`), or NetworkEntryError saying why not."""
    if not isinstance(raw, str):
        raise NetworkEntryError("entries must be strings like 'api.example.com:443'")
    entry = raw.strip()
    if not entry:
        raise NetworkEntryError("empty entry")
    if any(c in entry for c in "/@\\?#% \t\r\n\0"):
        raise NetworkEntryError(f"{raw!r}: write host[:port] only, without scheme, path, user or spaces")
    host, port = _split_port(entry)
    if host.startswith("["):
        try:
            ip6 = ipaddress.IPv6Address(host[1:-1])
        except ValueError as exc:
            raise NetworkEntryError(f"{raw!r}: not a valid IPv6 address") from exc
        _public_literal(raw, ip6)
        if host[1:-1].lower() != ip6.compressed:
            raise NetworkEntryError(f"{raw!r}: write the IPv6 address in its canonical form, [{ip6.compressed}]")
        return f"[{ip6.compressed}]:{port}"
    wildcard = host.startswith("*.")
    name = normalize_host(host[2:] if wildcard else host)
    labels = name.split(".")
    if "*" in name:
        raise NetworkEntryError(f"{raw!r}: a wildcard is allowed only as the whole first label ('*.example.com')")
    if len(name) > 253 or not all(_LABEL_RE.match(label) for label in labels):
        raise NetworkEntryError(f"{raw!r}: {name!r} is not a valid host name")
    if _NUMERIC_LABEL_RE.match(labels[-1]):
        # Either a canonical dotted quad, or a number in disguise (127.1, 0x7f.1, 2130706433, ...).
        try:
            ip4 = ipaddress.IPv4Address(name)
        except ValueError:
            raise NetworkEntryError(
                f"{raw!r}: looks like a disguised IP address; write IPv4 as four decimal numbers, or name the host"
            ) from None
        if wildcard:
            raise NetworkEntryError(f"{raw!r}: a wildcard cannot apply to an IP address")
        _public_literal(raw, ip4)
        return f"{ip4}:{port}"
    if wildcard and len(labels) < 2:
        raise NetworkEntryError(f"{raw!r}: a wildcard needs at least two labels after '*.' (e.g. '*.example.com')")
    return f"{'*.' if wildcard else ''}{name}:{port}"


class Network(BaseModel):
    """Outbound network a server may use. Empty `allow` (the default) means no network at all."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    allow: Annotated[tuple[str, ...], Field(max_length=MAX_ALLOW_ENTRIES)] = ()

    @field_validator("allow", mode="before")
    @classmethod
    def _allow(cls, v: object) -> tuple[str, ...]:
        if isinstance(v, str) or not isinstance(v, (list, tuple)):
            raise ValueError('allow must be a list of "host[:port]" strings, e.g. ["api.example.com:443"]')
        out: list[str] = []
        for item in v:
            try:
                entry = normalize_entry(item)
            except NetworkEntryError as exc:
                raise ValueError(str(exc)) from None
            if entry not in out:
                out.append(entry)
        return tuple(out)
