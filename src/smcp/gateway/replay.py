"""Resumable SSE streams for the legacy era: each stream is a bounded event log.

What the instance sends for a stream is appended to its log whether or not a client
is connected; a client that lost its connection reconnects with GET and
`Last-Event-ID: <stream>-<seq>` and receives what it missed (as far as the bound
allows), then the rest live. Event ids name their stream, so a replay never mixes
streams.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict, deque

from smcp.gateway.asgi import Receive, Send, start_stream, stream_chunk
from smcp.gateway.relay import watch_disconnect
from smcp.protocol import sse


class StreamLog:
    def __init__(self, stream_id: str, max_events: int) -> None:
        self.id = stream_id
        self.seq = 0
        self.closed = False
        self._events: deque[tuple[int, bytes]] = deque(maxlen=max_events)
        self._changed = asyncio.Event()

    def append(self, raw: bytes) -> None:
        if self.closed:
            return
        self.seq += 1
        self._events.append((self.seq, raw))
        self._changed.set()

    def close(self) -> None:
        self.closed = True
        self._changed.set()

    def after(self, seq: int) -> list[tuple[int, bytes]]:
        return [(s, raw) for s, raw in self._events if s > seq]

    async def changed(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)
        self._changed.clear()


class StreamLogs:
    """A session's logs, bounded in number; closed streams are forgotten first."""

    def __init__(self, max_streams: int, max_events: int) -> None:
        self._logs: OrderedDict[str, StreamLog] = OrderedDict()
        self._max_streams = max_streams
        self._max_events = max_events
        self._counter = 0

    def open(self, prefix: str) -> StreamLog:
        self._counter += 1
        log = StreamLog(f"{prefix}{self._counter}", self._max_events)
        self._logs[log.id] = log
        while len(self._logs) > self._max_streams:
            victim = next((k for k, v in self._logs.items() if v.closed), next(iter(self._logs)))
            self._logs.pop(victim).close()
        return log

    def get(self, stream_id: str) -> StreamLog | None:
        return self._logs.get(stream_id)

    def close_all(self) -> None:
        for log in self._logs.values():
            log.close()


def parse_event_id(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    stream, sep, seq = value.rpartition("-")
    if not sep or not stream or not seq.isdigit():
        return None
    return stream, int(seq)


async def follow(
    receive: Receive,
    send: Send,
    log: StreamLog,
    *,
    after: int,
    keepalive_s: float,
    retry_ms: int,
    headers: list[tuple[str, str]] | None = None,
) -> None:
    """Write a log to one HTTP response until the log closes or the client leaves."""
    await start_stream(send, headers or [])
    # The priming event: an id (and a retry hint) before any data, so a client that
    # is cut off at once still knows where to resume.
    await stream_chunk(send, f"id: {log.id}-{after}\nretry: {retry_ms}\ndata: \n\n".encode())
    disconnected = asyncio.Event()
    watcher = asyncio.create_task(watch_disconnect(receive, disconnected))
    cursor = after
    try:
        while not disconnected.is_set():
            for seq, raw in log.after(cursor):
                await stream_chunk(send, sse.event(raw, event_id=f"{log.id}-{seq}"))
                cursor = seq
            if log.closed and cursor >= log.seq:
                break
            waiter = asyncio.ensure_future(log.changed(keepalive_s))
            stop = asyncio.ensure_future(disconnected.wait())
            done, _ = await asyncio.wait({waiter, stop}, return_when=asyncio.FIRST_COMPLETED)
            for fut in (waiter, stop):
                if not fut.done():
                    fut.cancel()
            if stop in done:
                break
            if not log.after(cursor) and not log.closed:
                await stream_chunk(send, sse.comment("keepalive"))
        with contextlib.suppress(Exception):
            await stream_chunk(send, b"", more=False)
    finally:
        watcher.cancel()
