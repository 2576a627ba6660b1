"""Relaying one request's answer: JSON when the answer comes first, else an SSE stream.

Shared by both eras; they differ only in what a timeout and a client disconnect mean.
"""

from __future__ import annotations

import asyncio
import math
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable

from smcp.gateway.asgi import Receive, Send, respond, start_stream, stream_chunk
from smcp.protocol import sse

# (raw message or None, final?) — None+final ends the exchange without a message.
Item = tuple[bytes | None, bool]

# How long a request waits for its first message before the relay watches for the
# client going away (a task per request otherwise).
WATCH_AFTER_S = 0.5


class Mailbox:
    """What the instance sends for one request, waiting for the relay.

    A queue with one waiter and no tasks: the hot path makes one future and one timer
    per wait, where asyncio.Queue + asyncio.wait made several tasks and futures.
    """

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: deque[Item] = deque()
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Item) -> None:
        self._items.append(item)
        self.wake()

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def empty(self) -> bool:
        return not self._items

    def get_nowait(self) -> Item:
        return self._items.popleft()

    async def wait(self, timeout: float) -> None:
        """Until an item arrives, wake() is called, or the timeout passes (give or
        take one tick of the loop's deadline clock)."""
        if self._items:
            return
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        clock = _clocks.get(loop)
        if clock is None:
            clock = _clocks[loop] = DeadlineClock()
        slot = clock.add(loop, waiter, timeout)
        try:
            await waiter
        finally:
            clock.discard(slot, waiter)
            self._waiter = None


class DeadlineClock:
    """Wakes waiters whose time is up with one timer per tick, not one per wait.

    Every request in flight waits with a deadline that almost never passes; a timer of
    its own (made, then cancelled) cost more than the rest of the wait. Deadlines are
    rounded up to the next tick, so a wait may last up to one tick longer.
    """

    TICK_S = 0.05

    # No reference to its loop: it is the value of a weak mapping keyed by that loop.
    __slots__ = ("_slots",)

    def __init__(self) -> None:
        self._slots: dict[int, set[asyncio.Future[None]]] = {}

    def add(self, loop: asyncio.AbstractEventLoop, waiter: asyncio.Future[None], timeout: float) -> int:
        slot = math.ceil((loop.time() + max(timeout, 0.0)) / self.TICK_S)
        waiters = self._slots.get(slot)
        if waiters is None:
            waiters = self._slots[slot] = set()
            loop.call_at(slot * self.TICK_S, self._fire, slot)
        waiters.add(waiter)
        return slot

    def discard(self, slot: int, waiter: asyncio.Future[None]) -> None:
        waiters = self._slots.get(slot)
        if waiters is not None:
            waiters.discard(waiter)

    def _fire(self, slot: int) -> None:
        for waiter in self._slots.pop(slot, ()):
            if not waiter.done():
                waiter.set_result(None)


_clocks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, DeadlineClock] = weakref.WeakKeyDictionary()


async def next_item(
    box: Mailbox,
    deadline: float,
    on_timeout: Callable[[], Awaitable[Item]],
    *,
    disconnected: asyncio.Event | None = None,
    keepalive: tuple[Send, float] | None = None,
) -> Item:
    """The next message for the client; (None, False) if the client went away."""
    while True:
        if not box.empty():
            return box.get_nowait()
        if disconnected is not None and disconnected.is_set():
            return (None, False)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return await on_timeout()
        wait = min(remaining, keepalive[1]) if keepalive else remaining
        await box.wait(wait)
        if box.empty() and keepalive is not None and time.monotonic() < deadline:
            if disconnected is None or not disconnected.is_set():
                await stream_chunk(keepalive[0], sse.comment("keepalive"))


async def relay(
    receive: Receive,
    send: Send,
    queue: Mailbox,
    *,
    timeout_s: float,
    keepalive_s: float,
    on_timeout: Callable[[], Awaitable[Item]],
    on_disconnect: Callable[[], Awaitable[None]],
    headers: list[tuple[str, str]] | None = None,
    status_of: Callable[[bytes], int] | None = None,
) -> None:
    deadline = time.monotonic() + timeout_s
    hdrs = headers or []
    disconnected: asyncio.Event | None = None
    watcher: asyncio.Task[None] | None = None
    if queue.empty():
        # Most answers come within a moment, and watching for the client to go away
        # costs a task; a request still unanswered after WATCH_AFTER_S gets one, so
        # closing the connection cancels it even before anything was streamed.
        await queue.wait(min(timeout_s, WATCH_AFTER_S))
        if queue.empty():
            disconnected = asyncio.Event()
            watcher = asyncio.create_task(watch_disconnect(receive, disconnected, queue))
    try:
        raw, final = await next_item(queue, deadline, on_timeout, disconnected=disconnected)
        if disconnected is not None and disconnected.is_set() and raw is None and not final:
            await on_disconnect()
            return
        if final:
            # Nothing came before the answer: a plain JSON response is cheaper than SSE.
            if raw is None:
                await respond(send, 202, headers=hdrs)
            else:
                await respond(send, status_of(raw) if status_of else 200, raw, headers=hdrs)
            return
        await start_stream(send, hdrs)
        if disconnected is None:
            disconnected = asyncio.Event()
            watcher = asyncio.create_task(watch_disconnect(receive, disconnected, queue))
        while True:
            if raw is not None:
                await stream_chunk(send, sse.event(raw))
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
        if watcher is not None:
            watcher.cancel()


async def watch_disconnect(receive: Receive, flag: asyncio.Event, box: Mailbox | None = None) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            flag.set()
            if box is not None:
                box.wake()
            return
