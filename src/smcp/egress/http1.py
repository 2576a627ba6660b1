"""Strict HTTP/1.x head parsing for the egress proxy. Pure functions, no I/O.

The proxy only needs the request line and headers, and it refuses anything a
lenient parser downstream might read differently (request smuggling, header
confusion): obs-folded lines, whitespace before the colon, control characters,
both Content-Length and Transfer-Encoding, several Content-Lengths, and
transfer codings other than plain `chunked`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_TOKEN_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_CTL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

# Headers that describe one hop; never forwarded to the upstream.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "proxy-authenticate",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


class BadRequest(ValueError):
    pass


@dataclass(slots=True)
class Head:
    start: tuple[str, str, str]  # request: method, target, version; response: version, status, reason
    headers: list[tuple[str, str]] = field(default_factory=list)

    def values(self, name: str) -> list[str]:
        name = name.lower()
        return [v for n, v in self.headers if n.lower() == name]


def _parse_headers(lines: list[str]) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    for line in lines:
        if not line:
            raise BadRequest("empty header line")
        if line[0] in " \t":
            raise BadRequest("folded header lines are not accepted")
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN_RE.match(name):
            raise BadRequest("malformed header line")
        value = value.strip(" \t")
        if _CTL_RE.search(value):
            raise BadRequest("control character in a header value")
        headers.append((name, value))
    return headers


def _split(raw: bytes) -> list[str]:
    if not raw.endswith(b"\r\n\r\n"):
        raise BadRequest("incomplete head")
    return raw[:-4].decode("latin-1").split("\r\n")


def parse_request(raw: bytes) -> Head:
    lines = _split(raw)
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise BadRequest("malformed request line")
    method, target, version = parts
    if not _TOKEN_RE.match(method):
        raise BadRequest("malformed method")
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise BadRequest("only HTTP/1.0 and HTTP/1.1 are spoken here")
    if not target or _CTL_RE.search(target) or not target.isascii():
        raise BadRequest("malformed request target")
    return Head((method, target, version), _parse_headers(lines[1:]))


def parse_response(raw: bytes) -> Head:
    lines = _split(raw)
    version, _, rest = lines[0].partition(" ")
    status, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or len(status) != 3 or not status.isdigit():
        raise BadRequest("malformed status line from upstream")
    return Head((version, status, reason), _parse_headers(lines[1:]))


def connection_tokens(head: Head) -> set[str]:
    return {t.strip().lower() for v in head.values("connection") for t in v.split(",") if t.strip()}


def body_framing(head: Head) -> int | str | None:
    """How a request's body is delimited: a byte count, "chunked", or None (no body)."""
    lengths = head.values("content-length")
    codings = head.values("transfer-encoding")
    if lengths and codings:
        raise BadRequest("both Content-Length and Transfer-Encoding")
    if codings:
        if len(codings) != 1 or codings[0].lower() != "chunked":
            raise BadRequest("only 'Transfer-Encoding: chunked' is accepted")
        return "chunked"
    if lengths:
        if len(lengths) != 1 or not lengths[0].isdigit() or len(lengths[0]) > 18:
            raise BadRequest("malformed Content-Length")
        n = int(lengths[0])
        return n or None
    return None


def serialize(start: tuple[str, str, str], headers: list[tuple[str, str]]) -> bytes:
    lines = [" ".join(start)] + [f"{n}: {v}" for n, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def parse_chunk_size(line: bytes) -> int:
    """The size in a chunk-size line (`1a;ext=1\\r\\n`)."""
    size = line.rstrip(b"\r\n").split(b";", 1)[0].strip(b" \t")
    if not size or len(size) > 16 or not all(c in b"0123456789abcdefABCDEF" for c in size):
        raise BadRequest("malformed chunk size")
    return int(size, 16)
