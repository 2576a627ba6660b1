"""The per-request lookup cache: one load per miss however many callers, refresh ahead, bounded age."""

from __future__ import annotations

import asyncio

import pytest

from smcp.ttlcache import MISS, TTLCache


class Source:
    def __init__(self, delay: float = 0.01) -> None:
        self.loads = 0
        self.value = "v1"
        self.delay = delay
        self.fail = False

    async def __call__(self) -> str:
        self.loads += 1
        value = self.value  # what the database held when the load read it
        await asyncio.sleep(self.delay)
        if self.fail:
            raise RuntimeError("database down")
        return value


@pytest.mark.asyncio
async def test_concurrent_misses_share_one_load() -> None:
    cache: TTLCache[str, str] = TTLCache(10)
    source = Source()
    values = await asyncio.gather(*(cache.get("k", source) for _ in range(32)))
    assert values == ["v1"] * 32
    assert source.loads == 1


@pytest.mark.asyncio
async def test_a_hit_late_in_life_refreshes_in_the_background() -> None:
    cache: TTLCache[str, str] = TTLCache(0.2, refresh_ahead=0.5)
    source = Source()
    assert await cache.get("k", source) == "v1"
    source.value = "v2"
    await asyncio.sleep(0.12)  # inside the last half of the entry's life
    assert await cache.get("k", source) == "v1"  # answered at once from the cache...
    await asyncio.sleep(0.05)
    assert source.loads == 2
    assert await cache.get("k", source) == "v2"  # ...while a reload ran behind it
    assert source.loads == 2


@pytest.mark.asyncio
async def test_nothing_is_served_past_its_ttl() -> None:
    cache: TTLCache[str, str] = TTLCache(0.05, refresh_ahead=0)
    source = Source()
    await cache.get("k", source)
    source.value = "revoked"
    await asyncio.sleep(0.08)
    assert await cache.get("k", source) == "revoked"


@pytest.mark.asyncio
async def test_invalidate_drops_the_entry_and_a_load_in_flight() -> None:
    cache: TTLCache[str, str] = TTLCache(10)
    source = Source(delay=0.05)
    first = asyncio.create_task(cache.get("k", source))
    await asyncio.sleep(0.01)
    cache.invalidate("k")  # the load in flight read the old value
    source.value = "v2"
    assert await first == "v1"
    assert await cache.get("k", source) == "v2"  # not stored: loaded afresh
    assert source.loads == 2


@pytest.mark.asyncio
async def test_a_failed_load_reaches_every_waiter_and_is_not_cached() -> None:
    cache: TTLCache[str, str] = TTLCache(10)
    source = Source()
    source.fail = True
    results = await asyncio.gather(*(cache.get("k", source) for _ in range(4)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results) and source.loads == 1
    source.fail = False
    assert await cache.get("k", source) == "v1"


@pytest.mark.asyncio
async def test_a_cancelled_caller_does_not_cancel_the_shared_load() -> None:
    cache: TTLCache[str, str] = TTLCache(10)
    source = Source(delay=0.05)
    impatient = asyncio.create_task(cache.get("k", source))
    patient = asyncio.create_task(cache.get("k", source))
    await asyncio.sleep(0.01)
    impatient.cancel()
    assert await patient == "v1" and source.loads == 1


@pytest.mark.asyncio
async def test_size_is_bounded() -> None:
    cache: TTLCache[int, str] = TTLCache(10, max_entries=100)
    source = Source(delay=0)
    for i in range(1000):
        await cache.get(i, source)
    assert len(cache._entries) <= 100


async def test_peek_answers_only_while_fresh_and_not_yet_due_for_a_reload() -> None:
    cache: TTLCache[str, int] = TTLCache(0.4, refresh_ahead=0.5)
    assert cache.peek("k") is MISS

    async def load() -> int:
        return 7

    assert await cache.get("k", load) == 7
    assert cache.peek("k") == 7
    await asyncio.sleep(0.25)  # inside the last half of its life: due for a reload
    assert cache.peek("k") is MISS
    assert await cache.get("k", load) == 7  # served, and reloaded in the background
    await asyncio.sleep(0.05)
    assert cache.peek("k") == 7
    await asyncio.sleep(0.45)
    assert cache.peek("k") is MISS  # expired

    off: TTLCache[str, int] = TTLCache(0)
    assert await off.get("k", load) == 7 and off.peek("k") is MISS
