"""One HTTP/1.1 request and its response, as the application sees them through ASGI.

The connection (smcp.httpserver) parses and feeds it; this side answers `receive()`
and `send()`: the body as it arrives, `http.disconnect` once the exchange is over or
the client gone, and the response head and body framed (Content-Length, chunked, or
none for HEAD, 1xx, 204 and 304), its head held back for the body written straight
after it so that a small answer leaves in one write.
"""

from __future__ import annotations

import asyncio
import http
import logging
import re
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger("smcp.http")

# The characters a header name or value must not carry (CR and LF above all: an
# application that copied a client's input into a header would otherwise let the
# client write its own headers, or a second response).
_BAD_NAME = re.compile(rb'[\x00-\x1f\x7f()<>@,;:\[\]={} \t\\"]')
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_STATUS: dict[int, bytes] = {}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_DISCONNECT: dict[str, Any] = {"type": "http.disconnect"}


def status_line(code: int) -> bytes:
    line = _STATUS.get(code)
    if line is None:
        try:
            phrase = http.HTTPStatus(code).phrase.encode()
        except ValueError:
            phrase = b""
        line = _STATUS[code] = b"HTTP/1.1 %d %s\r\n" % (code, phrase)
    return line


def plain(code: int, text: str) -> bytes:
    body = text.encode()
    return status_line(code) + (
        b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body)
    ) + body


class Connection(Protocol):
    """What an exchange needs of its connection (smcp.httpserver.HttpProtocol)."""

    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    write_paused: bool

    @property
    def default_headers(self) -> list[tuple[bytes, bytes]]: ...

    def write(self, data: bytes) -> None: ...

    def resume_reading(self) -> None: ...

    async def drain(self) -> None: ...

    def exchange_done(self, exchange: Exchange) -> None: ...


class Exchange:
    """One request and its response, as the application sees them through ASGI."""

    __slots__ = (
        "conn", "scope", "body", "more_body", "waiter", "disconnected", "keep_alive", "expect_continue",
        "started", "complete", "chunked", "remaining", "held", "flush_handle", "head", "delivered",
    )

    def __init__(self, conn: Connection, scope: dict[str, Any], keep_alive: bool, expect_continue: bool) -> None:
        self.conn = conn
        self.scope = scope
        self.body: list[bytes] = []
        self.more_body = True
        self.delivered = False
        self.waiter: asyncio.Future[None] | None = None
        self.disconnected = False
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.started = False
        self.complete = False
        self.chunked = False
        self.remaining = 0
        self.held: bytes | None = None
        self.flush_handle: asyncio.Handle | None = None
        self.head = scope["method"] == "HEAD"

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def run(self, app: Callable[..., Any]) -> None:
        conn = self.conn
        try:
            await app(self.scope, self.receive, self.send)
        except BaseException as exc:
            log.error("exception in the application", exc_info=exc)
            self._fail()
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
        else:
            if not self.complete and not self.disconnected:
                log.error("the application returned without completing its response")
                self._fail()
        finally:
            self._flush()
            conn.exchange_done(self)

    def _fail(self) -> None:
        """500 if nothing was sent yet; otherwise the answer is cut short (a body shorter
        than promised, or no last chunk), which no client takes for whole."""
        if not self.started and not self.disconnected:
            self.conn.write(plain(500, "Internal Server Error"))
        else:
            self._flush()
        self.conn.transport.close()

    async def receive(self) -> dict[str, Any]:
        if self.expect_continue:
            self.expect_continue = False
            if not self.started and not self.conn.transport.is_closing():
                self.conn.transport.write(_CONTINUE)
        while True:
            if self.disconnected or self.complete:
                return _DISCONNECT
            body = self.body
            if body or (not self.more_body and not self.delivered):
                self.body = []
                data = body[0] if len(body) == 1 else b"".join(body)
                if self.more_body:
                    self.conn.resume_reading()
                    return {"type": "http.request", "body": data, "more_body": True}
                self.delivered = True
                return {"type": "http.request", "body": data, "more_body": False}
            # More body to come, or (the body delivered) the end of the exchange:
            # the response completing or the client going away.
            self.conn.resume_reading()
            self.waiter = waiter = self.conn.loop.create_future()
            await waiter

    async def send(self, message: dict[str, Any]) -> None:
        conn = self.conn
        if conn.write_paused and not self.disconnected:
            await conn.drain()
        if self.disconnected:
            return
        kind = message["type"]
        if not self.started:
            if kind != "http.response.start":
                raise RuntimeError(f"expected ASGI message 'http.response.start', got {kind!r}")
            self._start(message)
            return
        if self.complete:
            raise RuntimeError(f"unexpected ASGI message {kind!r} after the response completed")
        if kind != "http.response.body":
            raise RuntimeError(f"expected ASGI message 'http.response.body', got {kind!r}")
        body = message.get("body", b"")
        more = message.get("more_body", False)
        if self.head:
            data = b""
        elif self.chunked:
            data = b"%x\r\n%s\r\n" % (len(body), body) if body else b""
            if not more:
                data += b"0\r\n\r\n"
        else:
            if len(body) > self.remaining:
                raise RuntimeError("response content longer than its Content-Length")
            self.remaining -= len(body)
            data = body
        data = self._unhold() + data
        if data:
            conn.write(data)
        if not more:
            if self.remaining and not self.head:
                raise RuntimeError("response content shorter than its Content-Length")
            self.complete = True
            if not self.keep_alive:
                conn.transport.close()
            self.wake()

    def _start(self, message: dict[str, Any]) -> None:
        # Nothing is marked started until the head is known good: a bad header leaves
        # the exchange free to answer 500 instead.
        status = message["status"]
        parts = [status_line(status)]
        for name, value in self.conn.default_headers:
            parts += (name, b": ", value, b"\r\n")
        length: int | None = None
        chunked = False
        close = False
        for name, value in message.get("headers", ()):
            if _BAD_NAME.search(name) or _BAD_VALUE.search(value):
                raise RuntimeError(f"invalid HTTP header {name!r}")
            name = name.lower()
            if name == b"content-length":
                if length is None:
                    length = int(value)
            elif name == b"transfer-encoding":
                chunked = value.lower() == b"chunked"
            elif name == b"connection" and b"close" in value.lower():
                close = True
                self.keep_alive = False
            parts += (name, b": ", value, b"\r\n")
        if not self.keep_alive and not close:
            parts.append(b"connection: close\r\n")
        if length is not None and not chunked:
            self.remaining = length
        elif self.head or status in (204, 304) or 100 <= status < 200:
            pass
        else:
            self.chunked = True
            if not chunked:
                parts.append(b"transfer-encoding: chunked\r\n")
        parts.append(b"\r\n")
        self.started = True
        self.expect_continue = False
        self.held = b"".join(parts)
        self.flush_handle = self.conn.loop.call_soon(self._flush)

    def _unhold(self) -> bytes:
        """The header block still held back (b"" if none), no longer held."""
        held = self.held
        if held is None:
            return b""
        self.held = None
        if self.flush_handle is not None:
            self.flush_handle.cancel()
        return held

    def _flush(self) -> None:
        held = self._unhold()
        if held:
            self.conn.write(held)
