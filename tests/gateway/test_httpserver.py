"""The node's HTTP/1.1 protocol (smcp.httpserver), over real sockets and a real uvicorn server.

A small response leaves in one write and nothing is held back; the ASGI contract the
platform relies on holds (bodies, keep-alive, pipelining, 100-continue, disconnects,
errors); and the limits uvicorn's own protocol lacks are enforced: a head larger than
`max_header_bytes` gets 431, and a head that does not arrive whole within the idle
timeout loses its connection.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import uvicorn

from smcp.gateway.asgi import read_body
from smcp.httpserver import HttpProtocol
from tests.harness import free_port

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


class _Counting:
    """The real socket transport, with its writes counted."""

    def __init__(self, transport: asyncio.Transport, writes: list[bytes]) -> None:
        self._transport = transport
        self._writes = writes

    def write(self, data: bytes) -> None:
        self._writes.append(bytes(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


@pytest.fixture()
async def serve() -> AsyncIterator[Callable[[App], Awaitable[tuple[int, list[bytes]]]]]:
    servers: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []

    async def start(app: App, idle_timeout_s: float = 5, **limits: Any) -> tuple[int, list[bytes]]:
        writes: list[bytes] = []

        class Counted(HttpProtocol):
            def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
                super().connection_made(_Counting(transport, writes))  # type: ignore[arg-type]

        port = free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, http=functools.partial(Counted, **limits), loop="none", lifespan="off",
            log_level="critical", timeout_keep_alive=idle_timeout_s,  # type: ignore[arg-type]
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        servers.append((server, task))
        while not server.started:
            await asyncio.sleep(0.01)
        return port, writes

    yield start
    for server, task in servers:
        server.should_exit = True
        await task


async def _exchange(port: int, request: bytes, *, first_chunk_within: float | None = None) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    try:
        if first_chunk_within is not None:
            return await asyncio.wait_for(reader.read(65536), first_chunk_within)
        data = b""
        while b"\r\n\r\n" not in data or not data.endswith(b"}"):
            chunk = await asyncio.wait_for(reader.read(65536), 5)
            assert chunk, data
            data += chunk
        return data
    finally:
        writer.close()


GET = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"


async def test_header_block_and_body_leave_in_one_write(serve) -> None:  # type: ignore[no-untyped-def]
    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return
        body = b'{"jsonrpc":"2.0","id":1,"result":{}}'
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    port, writes = await serve(app)
    answer = await _exchange(port, GET)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b'{"jsonrpc":"2.0","id":1,"result":{}}')
    # uvicorn alone writes twice (the header block, then the body): two TCP segments.
    assert len(writes) == 1, writes
    assert writes[0] == answer


async def test_a_header_block_is_not_held_while_the_app_waits(serve) -> None:  # type: ignore[no-untyped-def]
    release = asyncio.Event()

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await release.wait()
        await send({"type": "http.response.body", "body": b"data: late\n\n", "more_body": False})

    port, writes = await serve(app)
    try:
        first = await _exchange(port, GET, first_chunk_within=2)
    finally:
        release.set()
    # The stream's headers reached the client while the body did not exist yet.
    assert first.startswith(b"HTTP/1.1 200 OK\r\n") and first.endswith(b"\r\n\r\n")
    assert b"late" not in first


async def test_streamed_chunks_arrive_in_order(serve) -> None:  # type: ignore[no-untyped-def]
    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        for i in range(3):
            await send({"type": "http.response.body", "body": f"data: {i}\n\n".encode(), "more_body": True})
            await asyncio.sleep(0)
        await send({"type": "http.response.body", "body": b'data: {"end":1}\n\n', "more_body": False})

    port, _ = await serve(app)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(GET)
        data = b""
        while not data.endswith(b"0\r\n\r\n"):
            chunk = await asyncio.to_thread(s.recv, 65536)
            assert chunk, data
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head
    assert body.index(b"data: 0") < body.index(b"data: 1") < body.index(b"data: 2") < body.index(b'{"end":1}')


async def _echo_app(scope, receive, send):  # type: ignore[no-untyped-def]
    """Answers with what it read: the method, path, body length and body."""
    if scope["type"] != "http":
        return
    body = await read_body(receive, 1 << 30)  # the gateway's own reader: any disconnect raises
    answer = b"%s %s %d:" % (scope["method"].encode(), scope["raw_path"], len(body)) + body
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(len(answer)).encode())]})
    await send({"type": "http.response.body", "body": answer})


def _read_all(sock: socket.socket, timeout: float = 5) -> bytes:
    """Everything the server sends until it closes the connection."""
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def _responses(data: bytes) -> list[tuple[bytes, bytes]]:
    """Split fixed-length responses: [(head, body), ...]."""
    out = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
        out.append((head, rest[:length]))
        data = rest[length:]
    return out


async def test_a_head_past_the_limit_gets_431_and_the_connection_ends(serve) -> None:  # type: ignore[no-untyped-def]
    port, _ = await serve(_echo_app, max_header_bytes=4096)
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET /ok HTTP/1.1\r\nhost: x\r\nx-pad: " + b"a" * 3000 + b"\r\n\r\n")
        head, body = (await asyncio.to_thread(_responses, await asyncio.to_thread(_read_one, s)))[0]
        assert head.startswith(b"HTTP/1.1 200") and body == b"GET /ok 0:"
    for big in (
        b"GET /big HTTP/1.1\r\nhost: x\r\nx-pad: " + b"a" * 5000 + b"\r\n\r\n",  # arrives whole
        b"GET /big HTTP/1.1\r\nhost: x\r\n" + b"x-many: b\r\n" * 600 + b"\r\n",  # many small lines
        b"GET /" + b"u" * 5000 + b" HTTP/1.1\r\nhost: x\r\n\r\n",  # the request line alone
    ):
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(big)
            data = await asyncio.to_thread(_read_all, s)
        assert data.startswith(b"HTTP/1.1 431 "), (big[:40], data)
        assert b"connection: close" in data


async def test_a_head_that_never_ends_is_not_buffered(serve) -> None:  # type: ignore[no-untyped-def]
    """A header line with no end is refused once it passes the limit, not held until it ends."""
    port, _ = await serve(_echo_app, max_header_bytes=8192)

    def flood() -> int:
        sent = 0
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET / HTTP/1.1\r\nhost: x\r\nx-endless: ")
            try:
                for _ in range(4096):  # 64 MiB, far past any socket buffer
                    s.sendall(b"a" * 16384)
                    sent += 16384
            except OSError:
                return sent
        raise AssertionError("the server read 64 MiB of one header line")

    assert await asyncio.to_thread(flood) < 16 * 1024 * 1024


async def _trickle(port: int, data: bytes, every_s: float, give_up_s: float) -> float | None:
    """Send `data` a byte at a time; how long until the server hung up (None: it did not)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    began = time.monotonic()
    try:
        for byte in data:
            writer.write(bytes([byte]))
            try:
                if await asyncio.wait_for(reader.read(1024), every_s) == b"":
                    return time.monotonic() - began
            except asyncio.TimeoutError:
                pass
            except ConnectionError:
                return time.monotonic() - began
            if time.monotonic() - began > give_up_s:
                return None
        return None
    finally:
        writer.close()


async def test_a_head_trickled_byte_by_byte_loses_its_connection(serve) -> None:  # type: ignore[no-untyped-def]
    """uvicorn's own protocol keeps such a connection open for as long as bytes come."""
    port, _ = await serve(_echo_app, idle_timeout_s=1)
    head = b"GET / HTTP/1.1\r\nhost: x\r\nx-slow: " + b"s" * 200 + b"\r\n\r\n"
    closed_after = await _trickle(port, head, every_s=0.1, give_up_s=6)
    assert closed_after is not None and closed_after < 3, closed_after


async def test_keep_alive_serves_many_requests_then_closes_when_idle(serve) -> None:  # type: ignore[no-untyped-def]
    port, _ = await serve(_echo_app, idle_timeout_s=1)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for i in range(3):
            writer.write(b"POST /k%d HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc" % i)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            assert await reader.readexactly(length) == b"POST /k%d 3:abc" % i
            assert b"connection: close" not in head
        began = time.monotonic()
        assert await asyncio.wait_for(reader.read(1), 5) == b""
        assert 0.5 < time.monotonic() - began < 3
    finally:
        writer.close()


async def test_pipelined_requests_are_answered_in_order(serve) -> None:  # type: ignore[no-untyped-def]
    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return
        await receive()
        if scope["path"] == "/slow":
            await asyncio.sleep(0.2)
        body = scope["path"].encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    port, _ = await serve(app)
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\nGET /fast HTTP/1.1\r\nhost: x\r\n\r\nGET /last HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        data = await asyncio.to_thread(_read_all, s)
    assert [body for _, body in _responses(data)] == [b"/slow", b"/fast", b"/last"]


async def test_bodies_arrive_whole_chunked_or_after_100_continue(serve) -> None:  # type: ignore[no-untyped-def]
    port, _ = await serve(_echo_app)
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"POST /c HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n")
        assert _responses(await asyncio.to_thread(_read_one, s))[0][1] == b"POST /c 7:abcdefg"
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.settimeout(5)
        s.sendall(b"POST /e HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 70000\r\n\r\n")
        assert await asyncio.to_thread(s.recv, 100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(b"z" * 70000)
        head, body = _responses(await asyncio.to_thread(_read_one, s))[0]
        assert head.startswith(b"HTTP/1.1 200") and body == b"POST /e 70000:" + b"z" * 70000


def _read_one(sock: socket.socket) -> bytes:
    """One fixed-length response."""
    sock.settimeout(5)
    data = b""
    while True:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if sep:
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
            if len(rest) >= length:
                return data
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk


async def test_a_client_going_away_is_an_http_disconnect(serve) -> None:  # type: ignore[no-untyped-def]
    seen: asyncio.Queue[str] = asyncio.Queue()

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return
        assert (await receive())["type"] == "http.request"
        await seen.put("waiting")
        await seen.put((await receive())["type"])  # blocks until the end of the exchange

    port, _ = await serve(app)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nhi")
    assert await asyncio.wait_for(seen.get(), 5) == "waiting"
    writer.close()
    assert await asyncio.wait_for(seen.get(), 5) == "http.disconnect"


async def test_application_errors_are_500_or_a_cut_connection(serve) -> None:  # type: ignore[no-untyped-def]
    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return
        if scope["path"] == "/after":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]})
            await send({"type": "http.response.body", "body": b"12345", "more_body": True})
        if scope["path"] == "/inject":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"x-echo", b"a\r\nset-cookie: stolen=1")]})
        raise RuntimeError("boom")

    port, _ = await serve(app)
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET /before HTTP/1.1\r\nhost: x\r\n\r\n")
        data = await asyncio.to_thread(_read_all, s)
    assert data.startswith(b"HTTP/1.1 500 ") and data.endswith(b"Internal Server Error")
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET /after HTTP/1.1\r\nhost: x\r\n\r\n")
        data = await asyncio.to_thread(_read_all, s)
    # The client sees a response shorter than its length: it cannot take it for whole.
    assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"\r\n\r\n12345")
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET /inject HTTP/1.1\r\nhost: x\r\n\r\n")
        data = await asyncio.to_thread(_read_all, s)
    # A header value carrying CR LF never reaches the wire.
    assert b"stolen" not in data and data.startswith(b"HTTP/1.1 500 ")


async def test_head_and_no_content_answers_carry_no_body(serve) -> None:  # type: ignore[no-untyped-def]
    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return
        status = 204 if scope["path"] == "/none" else 200
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"" if status == 204 else b"body"})

    port, _ = await serve(app)
    for request in (b"HEAD / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n", b"GET /none HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(request)
            data = await asyncio.to_thread(_read_all, s)
        head, _, rest = data.partition(b"\r\n\r\n")
        assert rest == b"" and b"transfer-encoding" not in head, data


async def test_unparseable_requests_get_400_and_upgrades_a_plain_answer(serve) -> None:  # type: ignore[no-untyped-def]
    port, _ = await serve(_echo_app)
    for bad in (b"GET / HTTP/1.1\r\nho st: x\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", b"POST / HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(bad)
            data = await asyncio.to_thread(_read_all, s)
        assert data.startswith(b"HTTP/1.1 400 "), (bad, data)
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET /up HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n")
        data = await asyncio.to_thread(_read_all, s)
    # No protocol switch: the request is answered as HTTP/1.1 and the connection ends.
    assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"GET /up 0:")


async def test_http_1_0_gets_one_answer_and_a_close(serve) -> None:  # type: ignore[no-untyped-def]
    port, _ = await serve(_echo_app)
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET /old HTTP/1.0\r\n\r\n")
        data = await asyncio.to_thread(_read_all, s)
    assert data.endswith(b"GET /old 0:") and b"connection: close" in data


async def test_a_large_answer_to_a_slow_reader_arrives_intact(serve) -> None:  # type: ignore[no-untyped-def]
    chunk = bytes(range(256)) * 256  # 64 KiB

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(len(chunk) * 128).encode())]})
        for _ in range(127):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": chunk})

    port, _ = await serve(app)
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    try:
        writer.write(GET)
        head = await reader.readuntil(b"\r\n\r\n")
        assert b"content-length: 8388608" in head
        await asyncio.sleep(0.3)  # the server meets a full socket buffer and must wait
        body = await asyncio.wait_for(reader.readexactly(len(chunk) * 128), 10)
        assert body == chunk * 128
    finally:
        writer.close()


async def test_a_stalled_body_loses_its_connection_and_the_app_hears_of_it(serve) -> None:  # type: ignore[no-untyped-def]
    """A client that sends a head and part of its body, then nothing, holds no connection."""
    seen: asyncio.Queue[str] = asyncio.Queue()

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return
        while True:
            message = await receive()
            await seen.put(message["type"])
            if message["type"] == "http.disconnect" or not message.get("more_body"):
                return

    port, _ = await serve(app, idle_timeout_s=1)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n0123456789")
        began = time.monotonic()
        assert await asyncio.wait_for(seen.get(), 5) == "http.request"
        assert await asyncio.wait_for(seen.get(), 5) == "http.disconnect"
        assert await asyncio.wait_for(reader.read(1), 5) == b""
        assert 0.5 < time.monotonic() - began < 3
    finally:
        writer.close()
    # A body that keeps moving, however slowly against the whole, is read to its end.
    port, _ = await serve(_echo_app, idle_timeout_s=1)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"POST /slow HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\n")
        for byte in b"abcde":
            await asyncio.sleep(0.5)
            writer.write(bytes([byte]))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200") and await reader.readexactly(18) == b"POST /slow 5:abcde"
    finally:
        writer.close()
