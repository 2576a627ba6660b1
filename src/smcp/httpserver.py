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
import logging
from collections import deque
from typing import Any
from urllib.parse import unquote

import httptools

from smcp.httpexchange import Exchange, plain

log = logging.getLogger("smcp.http")
_METHODS: dict[bytes, str] = {}


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
        self.exchange: Exchange | None = None
        self.pending: deque[Exchange] = deque()
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
        self.parsing: Exchange | None = None
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
        for exchange in (self.exchange, self.parsing, *self.pending):
            if exchange is not None and not exchange.complete:
                exchange.disconnected = True
                exchange.wake()
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
            else:
                # Only a body that did not arrive with its head pays for a clock.
                self.last_read = self.loop.time()
                self._clock(self.last_read + self.idle_timeout)

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
        exchange = Exchange(self, scope, keep_alive, self.expect_continue)
        self.parsing = exchange
        if self.exchange is None:
            self._begin(exchange)
        else:
            # A pipelined request waits for the one before it to be answered.
            self.pending.append(exchange)
            self.pause_reading()

    def on_body(self, body: bytes) -> None:
        exchange = self.parsing
        if exchange is None or exchange.complete or exchange.disconnected:
            return
        exchange.body.append(body)
        if sum(map(len, exchange.body)) > 65536:
            self.pause_reading()
        exchange.wake()

    def on_message_complete(self) -> None:
        exchange = self.parsing
        self.parsing = None
        if exchange is None or exchange.complete:
            return
        exchange.more_body = False
        exchange.wake()

    # The protocol's own workings

    def _begin(self, exchange: Exchange) -> None:
        self.exchange = exchange
        task = self.loop.create_task(exchange.run(self.app))
        tasks = self.server_state.tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def exchange_done(self, exchange: Exchange) -> None:
        if self.exchange is not exchange:
            return
        self.exchange = None
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        if not exchange.complete or not exchange.keep_alive:
            self.transport.close()
            return
        if self.pending:
            self._begin(self.pending.popleft())
        self.resume_reading()
        if self.exchange is None:
            self._idle()

    def _idle(self) -> None:
        """Start the clock a connection without a request in progress runs on."""
        self.idle_since = self.loop.time()
        self._clock(self.idle_since + self.idle_timeout)

    def _clock(self, due: float) -> None:
        """One timer per connection: armed if none is, and re-armed only when it fires."""
        if self.timer is None:
            self.timer = self.loop.call_at(due, self._check_idle)

    def _check_idle(self) -> None:
        self.timer = None
        if self.transport.is_closing():
            return
        if self.parsing is not None and not self.read_paused:
            # A body on its way: it must keep moving (a read at least every idle
            # timeout, as nginx's client_body_timeout). Paused reading is the
            # application's doing, not the client's, and does not count.
            due = self.last_read + self.idle_timeout
        elif self.exchange is not None or self.parsing is not None:
            # A request is in progress; the clock starts again when it is answered.
            return
        else:
            due = self.idle_since + self.idle_timeout
        if self.loop.time() >= due:
            # Idle, a request head that did not arrive whole in time, or a stalled body.
            self.transport.close()
        else:
            self._clock(due)

    def _refuse(self, status: int, text: str) -> None:
        """A request that cannot be parsed ends the connection, answered if nothing else is."""
        if self.transport.is_closing():
            return
        self.keep_alive = False
        self.broken = True
        exchange = self.exchange
        if exchange is None:
            self.transport.write(plain(status, text))
            self.transport.close()
        elif exchange.more_body or self.parsing is not None and self.parsing is not exchange:
            # Mid-body, or mid-way through a pipelined request: nothing more can be read,
            # so the exchange in progress is cut short.
            self.transport.close()
        else:
            # The request in progress was read whole; it is answered, then the end.
            exchange.keep_alive = False
            self.pause_reading()

    def _truncate(self) -> None:
        self.keep_alive = False
        self.broken = True
        exchange = self.parsing
        if exchange is not None and exchange.more_body:
            exchange.more_body = False
            exchange.wake()
        if self.exchange is not None:
            self.exchange.keep_alive = False
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
        exchange = self.exchange
        if exchange is None or exchange.complete:
            self.transport.close()
        else:
            exchange.keep_alive = False


class _HeadTooLarge(Exception):
    pass
