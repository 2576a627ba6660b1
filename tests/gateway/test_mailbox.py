"""A request's mailbox: waits end on an item, a wake, or the deadline (one tick late at most)."""

from __future__ import annotations

import asyncio
import time

from smcp.gateway.relay import DeadlineClock, Mailbox


async def test_a_wait_ends_at_its_deadline_give_or_take_one_tick() -> None:
    box = Mailbox()
    began = time.monotonic()
    await box.wait(0.2)
    took = time.monotonic() - began
    assert 0.2 - 0.005 <= took <= 0.2 + DeadlineClock.TICK_S + 0.1
    assert box.empty()


async def test_an_item_or_a_wake_ends_the_wait_at_once() -> None:
    box = Mailbox()
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, box.put_nowait, (b"{}", True))
    began = time.monotonic()
    await box.wait(30)
    assert time.monotonic() - began < 1
    assert box.get_nowait() == (b"{}", True)

    loop.call_later(0.05, box.wake)
    began = time.monotonic()
    await box.wait(30)
    assert time.monotonic() - began < 1 and box.empty()


async def test_waits_ending_in_the_same_tick_share_one_timer_and_leave_nothing_behind() -> None:
    loop = asyncio.get_running_loop()
    scheduled: list[float] = []
    call_at = loop.call_at

    def counting_call_at(when: float, *args: object) -> asyncio.TimerHandle:
        scheduled.append(when)
        return call_at(when, *args)  # type: ignore[arg-type]

    loop.call_at = counting_call_at  # type: ignore[method-assign]
    try:
        boxes = [Mailbox() for _ in range(50)]
        waits = [asyncio.ensure_future(box.wait(0.1)) for box in boxes]
        await asyncio.sleep(0)
        for box in boxes[:25]:
            box.wake()
        await asyncio.gather(*waits)
    finally:
        del loop.call_at
    assert 1 <= len(scheduled) <= 2  # the waits may straddle one tick boundary
    await asyncio.sleep(DeadlineClock.TICK_S * 3)
    from smcp.gateway import relay

    assert not relay._clocks[loop]._slots
