"""The node's HTTP protocol: a small response leaves in one write, nothing is held back."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import uvicorn

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

    async def start(app: App) -> tuple[int, list[bytes]]:
        writes: list[bytes] = []

        class Counted(HttpProtocol):
            def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
                super().connection_made(_Counting(transport, writes))  # type: ignore[arg-type]

        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, http=Counted, loop="none", lifespan="off", log_level="warning"))
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
