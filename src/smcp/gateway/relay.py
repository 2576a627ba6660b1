"""Relaying one request's answer: JSON when the answer comes first, else an SSE stream.

Shared by both eras; they differ only in what a timeout and a client disconnect mean.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from smcp.gateway.asgi import Receive, Send, respond, start_stream, stream_chunk
from smcp.protocol import sse

# (raw message or None, final?) — None+final ends the exchange without a message.
Item = tuple[bytes | None, bool]


async def next_item(
    queue: asyncio.Queue[Item],
    deadline: float,
    on_timeout: Callable[[], Awaitable[Item]],
    *,
    disconnected: asyncio.Event | None = None,
    keepalive: tuple[Send, float] | None = None,
) -> Item:
    """The next message for the client; (None, False) if the client went away."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return await on_timeout()
        wait = min(remaining, keepalive[1]) if keepalive else remaining
        getter = asyncio.ensure_future(queue.get())
        waiters: set[asyncio.Future[object]] = {getter}  # type: ignore[arg-type]
        stop = asyncio.ensure_future(disconnected.wait()) if disconnected is not None else None
        if stop is not None:
            waiters.add(stop)  # type: ignore[arg-type]
        done, _ = await asyncio.wait(waiters, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
        if stop is not None and not stop.done():
            stop.cancel()
        if getter in done:
            return getter.result()
        getter.cancel()
        if stop is not None and stop in done:
            return (None, False)
        if keepalive is not None and time.monotonic() < deadline:
            await stream_chunk(keepalive[0], sse.comment("keepalive"))


async def relay(
    receive: Receive,
    send: Send,
    queue: asyncio.Queue[Item],
    *,
    timeout_s: float,
    keepalive_s: float,
    on_timeout: Callable[[], Awaitable[Item]],
    on_disconnect: Callable[[], Awaitable[None]],
    event_id: Callable[[], str] | None = None,
    headers: list[tuple[str, str]] | None = None,
    status_of: Callable[[bytes], int] | None = None,
) -> None:
    deadline = time.monotonic() + timeout_s
    hdrs = headers or []
    raw, final = await next_item(queue, deadline, on_timeout)
    if final:
        # Nothing came before the answer: a plain JSON response is cheaper than SSE.
        if raw is None:
            await respond(send, 202, headers=hdrs)
        else:
            await respond(send, status_of(raw) if status_of else 200, raw, headers=hdrs)
        return
    await start_stream(send, hdrs)
    disconnected = asyncio.Event()
    watcher = asyncio.create_task(watch_disconnect(receive, disconnected))
    try:
        while True:
            if raw is not None:
                await stream_chunk(send, sse.event(raw, event_id=event_id() if event_id else None))
            if final:
                break
            raw, final = await next_item(
                queue, deadline, on_timeout, disconnected=disconnected, keepalive=(send, keepalive_s)
            )
            if disconnected.is_set():
                await on_disconnect()
                return
        await stream_chunk(send, b"", more=False)
    finally:
        watcher.cancel()


async def watch_disconnect(receive: Receive, flag: asyncio.Event) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            flag.set()
            return
