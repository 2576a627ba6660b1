"""A small time-bounded cache for per-request lookups (credentials, live revisions).

Two things a plain dict-with-expiry gets wrong under load: when a busy key expires,
every request in flight misses at once and each runs its own load (a stampede of
database round trips that stalls the whole pipeline), and the request that happens
to arrive after expiry pays the load's latency. Here concurrent misses share one
load, and a hit late in an entry's life starts one reload in the background, so a key
in steady use never expires under its callers. An entry is never served past `ttl_s`
from the moment its load began, which is what bounds revocation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# What peek() returns when the cache cannot answer without a load.
MISS: object = object()

log = logging.getLogger(__name__)


class TTLCache(Generic[K, V]):
    def __init__(self, ttl_s: float, *, max_entries: int = 10_000, refresh_ahead: float = 0.25) -> None:
        self._ttl = ttl_s
        self._max = max_entries
        self._refresh_window = ttl_s * refresh_ahead
        self._entries: dict[K, tuple[float, V]] = {}
        self._loading: dict[K, asyncio.Task[V]] = {}

    def peek(self, key: K) -> V | object:
        """The value when it is fresh and not yet due for a reload, else MISS: the hot
        path's answer without a coroutine, a closure or a lock."""
        hit = self._entries.get(key)
        if hit is not None and hit[0] - time.monotonic() > self._refresh_window:
            return hit[1]
        return MISS

    async def get(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        """The value for `key`, from `load` when it must be (re)loaded."""
        if self._ttl <= 0:
            return await load()
        hit = self._entries.get(key)
        if hit is not None:
            expires, value = hit
            left = expires - time.monotonic()
            if left > 0:
                if left < self._refresh_window and key not in self._loading:
                    self._start(key, load).add_done_callback(_quiet)
                return value
        task = self._loading.get(key) or self._start(key, load)
        # Shielded: one caller giving up must not cancel the load the others await.
        return await asyncio.shield(task)

    def invalidate(self, key: K) -> None:
        self._entries.pop(key, None)
        # A load already running read the old value: it must not store it.
        self._loading.pop(key, None)

    def _start(self, key: K, load: Callable[[], Awaitable[V]]) -> asyncio.Task[V]:
        task = asyncio.get_running_loop().create_task(self._fill(key, load))
        self._loading[key] = task
        return task

    async def _fill(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        began = time.monotonic()
        try:
            value = await load()
        finally:
            task = asyncio.current_task()
            stored = self._loading.get(key) is task
            if stored:
                del self._loading[key]
        if stored:
            if len(self._entries) >= self._max and key not in self._entries:
                self._entries.clear()
            self._entries[key] = (began + self._ttl, value)
        return value


def _quiet(task: asyncio.Task[object]) -> None:
    # A background refresh that fails leaves the current entry to expire on time.
    with contextlib.suppress(asyncio.CancelledError):
        if (exc := task.exception()) is not None:
            log.warning("background cache refresh failed: %s", exc)
