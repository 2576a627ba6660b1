"""The HTTP/1.1 protocol the node hands uvicorn: httptools, one write per small response.

uvicorn writes a response's header block as soon as the application sends
`http.response.start`, and the body on `http.response.body`: two `send()` calls and,
with TCP_NODELAY, two TCP segments per JSON-RPC answer. On loopback and on most
proxies the receiving side's work is done in the sender's system call, so the second
segment costs the gateway about as much again as the first. Here the header block
waits for the body written straight after it, and the two leave in one write. If no
body write follows in the same pass of the event loop (a handler that sends the start
and then awaits something), the header block is written on its own at the end of that
pass, so nothing is held back longer than the code that produced it runs.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class _HeldTransport:
    """The connection's transport, holding a header block until the next write."""

    __slots__ = ("_transport", "_loop", "_held", "_flush")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._flush: asyncio.Handle | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is not None:
            self._held = None
            assert self._flush is not None
            self._flush.cancel()
            self._transport.write(held + bytes(data))
            return
        if isinstance(data, bytes) and data.startswith(b"HTTP/1.") and data.endswith(b"\r\n\r\n"):
            self._held = data
            self._flush = self._loop.call_soon(self.flush)
            return
        self._transport.write(data)

    def writelines(self, chunks: Any) -> None:
        self.write(b"".join(chunks))

    def flush(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class HttpProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_HeldTransport(transport, self.loop))  # type: ignore[arg-type]
