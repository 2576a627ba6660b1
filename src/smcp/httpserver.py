"""The node's HTTP/1.1 connection protocol: httptools parsing, ASGI to the platform.

uvicorn still runs the server (sockets, lifespan, signals, graceful shutdown, the Date
header); this is the class it hands each connection. uvicorn's own httptools protocol
spends about 60 µs of CPU per request on a JSON echo at c=32 on the project's 2-vCPU
machines, this one about 40: per request it builds no `asyncio.Event`, arms and
cancels no keep-alive timer and copies no lifespan state. The gateway's hot path is
a tools/call relayed in ~150 µs, so that is a tenth of it (docs/architecture.md). The
ASGI contract is the same:

- a request whose body arrived with its head is handed over without waiting;
- one timer per connection, re-armed only when it fires;
- a small response leaves in one write: the header block waits for the body written
  straight after it (with TCP_NODELAY a separate write is a separate segment, and on
  loopback the receiver's work is done in the sender's system call). If no body write
  follows in the same pass of the event loop, the header block goes out on its own at
  the end of that pass.

It also closes the gaps uvicorn's protocol leaves open, each a way for one client to
hold connections and memory: a head larger than `max_header_bytes` is refused with
431 (uvicorn buffers any size); a request head must arrive whole within the idle
timeout, and a body may not stall for longer than it (uvicorn has no read timeout, so
a client trickling a header byte by byte holds its connection forever).
"""

from __future__ import annotations

import asyncio
import http
import logging
import re
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import httptools

log = logging.getLogger("smcp.http")

# The characters a header name or value must not carry (CR and LF above all: an
# application that copied a client's input into a header would otherwise let the
# client write its own headers, or a second response).
_BAD_NAME = re.compile(rb'[\x00-\x1f\x7f()<>@,;:\[\]={} \t\\"]')
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_STATUS: dict[int, bytes] = {}
_METHODS: dict[bytes, str] = {}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_DISCONNECT: dict[str, Any] = {"type": "http.disconnect"}


def _status_line(code: int) -> bytes:
    line = _STATUS.get(code)
    if line is None:
        try:
            phrase = http.HTTPStatus(code).phrase.encode()
        except ValueError:
            phrase = b""
        line = _STATUS[code] = b"HTTP/1.1 %d %s\r\n" % (code, phrase)
    return line


def _plain(code: int, text: str) -> bytes:
    body = text.encode()
    return _status_line(code) + (
        b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body)
    ) + body


class _Cycle:
    """One request and its response, as the application sees them through ASGI."""

    __slots__ = (
        "conn", "scope", "body", "more_body", "waiter", "disconnected", "keep_alive", "expect_continue",
        "started", "complete", "chunked", "remaining", "held", "flush_handle", "head", "delivered",
    )

    def __init__(self, conn: HttpProtocol, scope: dict[str, Any], keep_alive: bool, expect_continue: bool) -> None:
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
            if not self.started and not self.disconnected:
                conn.write(_plain(500, "Internal Server Error"))
            else:
                # Cut short: a client sees a body shorter than promised, or no last chunk,
                # and cannot take the answer for whole.
                self._flush()
            conn.transport.close()
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
        else:
            if not self.complete and not self.disconnected:
                log.error("the application returned without completing its response")
                if not self.started:
                    conn.write(_plain(500, "Internal Server Error"))
                else:
                    self._flush()
                conn.transport.close()
        finally:
            self._flush()
            conn.cycle_done(self)

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
        held = self.held
        if held is not None:
            self.held = None
            assert self.flush_handle is not None
            self.flush_handle.cancel()
            data = held + data
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
        # the cycle free to answer 500 instead.
        status = message["status"]
        parts = [_status_line(status)]
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

    def _flush(self) -> None:
        held = self.held
        if held is not None:
            self.held = None
            if self.flush_handle is not None:
                self.flush_handle.cancel()
            self.conn.write(held)


class HttpProtocol(asyncio.Protocol):
    """One client connection. uvicorn builds it with its config and shared server state."""

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        max_header_bytes: int = 64 * 1024,
    ) -> None:
        if not config.loaded:
            config.load()
        self.app = config.loaded_app
        self.loop = _loop or asyncio.get_running_loop()
        self.idle_timeout: float = config.timeout_keep_alive
        self.max_header_bytes = max_header_bytes
        self.server_state = server_state
        self.app_state = app_state
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.server: tuple[str, int] | None = None
        self.client: tuple[str, int] | None = None
        self.cycle: _Cycle | None = None
        self.pending: deque[_Cycle] = deque()
        self.keep_alive = True
        self.read_paused = False
        self.write_paused = False
        self.drained: asyncio.Future[None] | None = None
        self.idle_since = 0.0
        self.last_read = 0.0
        self.timer: asyncio.TimerHandle | None = None
        # The request being parsed.
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_bytes = 0  # read since the last complete head: bounds one still arriving
        self.head_size = 0  # the head's lines as parsed
        self.expect_continue = False
        self.parsing: _Cycle | None = None
        self.broken = False

    @property
    def default_headers(self) -> list[tuple[bytes, bytes]]:
        return self.server_state.default_headers  # type: ignore[no-any-return]

    # Transport callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = transport  # type: ignore[assignment]
        self.server_state.connections.add(self)
        server = transport.get_extra_info("sockname")
        peer = transport.get_extra_info("peername")
        self.server = (str(server[0]), int(server[1])) if isinstance(server, tuple) else None
        self.client = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None
        self._idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server_state.connections.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        for cycle in (self.cycle, self.parsing, *self.pending):
            if cycle is not None and not cycle.complete:
                cycle.disconnected = True
                cycle.wake()
        self.pending.clear()
        self._resume_writing()
        self.parser = None  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.parsing is None:
            # Between requests or inside a head: httptools buffers a header line until
            # it ends, so the head's size is bounded here, by what was read.
            self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # No protocol upgrades here (the gateway speaks HTTP/1.1 only): the request
            # is answered as a plain one, and the connection ends after it.
            self._truncate()
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _HeadTooLarge):
                self._refuse(431, "Request header fields too large.")
            else:
                log.error("could not take in a request", exc_info=exc.__context__)
                self._refuse(400, "Invalid HTTP request.")
        except httptools.HttpParserError:
            self._refuse(400, "Invalid HTTP request.")
        else:
            if self.parsing is None:
                if self.head_bytes > self.max_header_bytes:
                    self._refuse(431, "Request header fields too large.")
            elif self.timer is None:
                # Only a body that did not arrive with its head pays for a clock.
                self.last_read = self.loop.time()
                self.timer = self.loop.call_at(self.last_read + self.idle_timeout, self._check_idle)
            else:
                self.last_read = self.loop.time()

    def eof_received(self) -> bool | None:
        return None

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self._resume_writing()

    # Parser callbacks

    def on_message_begin(self) -> None:
        self.head_size = 0
        self.url = b""
        self.headers = []
        self.expect_continue = False

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_size += len(url)
        if self.head_size > self.max_header_bytes:
            raise _HeadTooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_size += len(name) + len(value) + 4
        if self.head_size > self.max_header_bytes:
            raise _HeadTooLarge
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.head_bytes = 0
        parser = self.parser
        raw_method = parser.get_method()
        method = _METHODS.get(raw_method)
        if method is None:
            method = _METHODS[raw_method] = raw_method.decode("ascii")
        url = httptools.parse_url(self.url)
        raw_path = url.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = unquote(path)
        version = parser.get_http_version()
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": version,
            "server": self.server,
            "client": self.client,
            "scheme": "http",
            "method": method,
            "root_path": "",
            "path": path,
            "raw_path": raw_path,
            "query_string": url.query or b"",
            "headers": self.headers,
        }
        if self.app_state:
            scope["state"] = self.app_state.copy()
        keep_alive = self.keep_alive and version != "1.0" and parser.should_keep_alive()
        cycle = _Cycle(self, scope, keep_alive, self.expect_continue)
        self.parsing = cycle
        if self.cycle is None:
            self._begin(cycle)
        else:
            # A pipelined request waits for the one before it to be answered.
            self.pending.append(cycle)
            self.pause_reading()

    def on_body(self, body: bytes) -> None:
        cycle = self.parsing
        if cycle is None or cycle.complete or cycle.disconnected:
            return
        cycle.body.append(body)
        if sum(map(len, cycle.body)) > 65536:
            self.pause_reading()
        cycle.wake()

    def on_message_complete(self) -> None:
        cycle = self.parsing
        self.parsing = None
        if cycle is None or cycle.complete:
            return
        cycle.more_body = False
        cycle.wake()

    # The protocol's own workings

    def _begin(self, cycle: _Cycle) -> None:
        self.cycle = cycle
        task = self.loop.create_task(cycle.run(self.app))
        tasks = self.server_state.tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def cycle_done(self, cycle: _Cycle) -> None:
        if self.cycle is not cycle:
            return
        self.cycle = None
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        if not cycle.complete or not cycle.keep_alive:
            self.transport.close()
            return
        if self.pending:
            self._begin(self.pending.popleft())
        self.resume_reading()
        if self.cycle is None:
            self._idle()

    def _idle(self) -> None:
        """Start the clock a connection without a request in progress runs on."""
        self.idle_since = self.loop.time()
        if self.timer is None:
            self.timer = self.loop.call_at(self.idle_since + self.idle_timeout, self._check_idle)

    def _check_idle(self) -> None:
        self.timer = None
        if self.transport.is_closing():
            return
        if self.parsing is not None and not self.read_paused:
            # A body on its way: it must keep moving (a read at least every idle
            # timeout, as nginx's client_body_timeout). Paused reading is the
            # application's doing, not the client's, and does not count.
            due = self.last_read + self.idle_timeout
        elif self.cycle is not None or self.parsing is not None:
            # A request is in progress; the clock starts again when it is answered.
            return
        else:
            due = self.idle_since + self.idle_timeout
        if self.loop.time() >= due:
            # Idle, a request head that did not arrive whole in time, or a stalled body.
            self.transport.close()
        else:
            self.timer = self.loop.call_at(due, self._check_idle)

    def _refuse(self, status: int, text: str) -> None:
        """A request that cannot be parsed ends the connection, answered if nothing else is."""
        if self.transport.is_closing():
            return
        self.keep_alive = False
        self.broken = True
        cycle = self.cycle
        if cycle is None:
            self.transport.write(_plain(status, text))
            self.transport.close()
        elif cycle.more_body or self.parsing is not None and self.parsing is not cycle:
            # Mid-body, or mid-way through a pipelined request: nothing more can be read,
            # so the exchange in progress is cut short.
            self.transport.close()
        else:
            # The request in progress was read whole; it is answered, then the end.
            cycle.keep_alive = False
            self.pause_reading()

    def _truncate(self) -> None:
        self.keep_alive = False
        self.broken = True
        cycle = self.parsing
        if cycle is not None and cycle.more_body:
            cycle.more_body = False
            cycle.wake()
        if self.cycle is not None:
            self.cycle.keep_alive = False
        self.pause_reading()

    def write(self, data: bytes) -> None:
        self.transport.write(data)

    def pause_reading(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused and not self.pending and not self.broken:
            self.read_paused = False
            self.transport.resume_reading()

    async def drain(self) -> None:
        if self.write_paused:
            if self.drained is None:
                self.drained = self.loop.create_future()
            await self.drained

    def _resume_writing(self) -> None:
        self.write_paused = False
        drained, self.drained = self.drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown: finish the request in progress, then close."""
        self.keep_alive = False
        cycle = self.cycle
        if cycle is None or cycle.complete:
            self.transport.close()
        else:
            cycle.keep_alive = False


class _HeadTooLarge(Exception):
    pass
