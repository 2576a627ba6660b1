"""Reading a remote MCP server's answers, bounded: a JSON body or an SSE stream.

Whatever the upstream sends is held to the node's message size limit after
decompression, in one data line or many (`MessageTooLarge` past it), and an SSE
stream's event ids and `retry` hint are kept for resumption (`SseCursor`).
"""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp.http_exceptions import LineTooLong


class MessageTooLarge(Exception):
    """The upstream sent more than the node's message size limit in one message."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"upstream sent a message over the {limit}-byte limit")


class SseCursor:
    """Where an upstream SSE stream got to: the last event id and the retry hint."""

    def __init__(self) -> None:
        self.last_id: str | None = None
        self.retry_ms: int | None = None


async def read_capped(stream: aiohttp.StreamReader, limit: int) -> bytes:
    """The whole body, decompressed, or MessageTooLarge as soon as it passes `limit`."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in stream.iter_chunked(1 << 16):
        size += len(chunk)
        if size > limit:
            raise MessageTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def sse_data(stream: aiohttp.StreamReader, limit: int, cursor: SseCursor | None = None) -> Any:
    """Yield the data of each SSE event (multi-line data joined), skipping empty ones.

    An event's data may be as large as one message may be (`limit`), in one line or
    many; past it, MessageTooLarge, without holding more than the limit.
    """
    data: list[bytes] = []
    size = 0
    event_id: str | None = None
    while True:
        try:
            line = await stream.readline(max_line_length=limit + 8)  # "data: " and the line end
        except LineTooLong:
            raise MessageTooLarge(limit) from None
        if not line:
            break
        line = line.rstrip(b"\r\n")
        if not line:
            if cursor is not None and event_id is not None:
                cursor.last_id = event_id
            event_id = None
            if data:
                payload = b"\n".join(data)
                data, size = [], 0
                if payload.strip():
                    yield payload
            continue
        field, _, value = line.partition(b":")
        value = value[1:] if value[:1] == b" " else value
        if field == b"data":
            size += len(value) + 1
            if size > limit + 1:
                raise MessageTooLarge(limit)
            data.append(value)
        elif field == b"id":
            event_id = value.decode("utf-8", "replace")
        elif field == b"retry" and value.isdigit() and cursor is not None:
            cursor.retry_ms = int(value)
    if data and b"".join(data).strip():
        yield b"\n".join(data)
