"""An exited process is waited for without noise, whatever still holds its pipes.

A hosted program may leave a child behind that keeps its stderr open. Waiting for
the program then waits a while for its pipes and gives up; and at shutdown (Ctrl-C
on `smcp up`) that wait is cancelled. Neither may leave asyncio an unretrieved
error to log, nor a reader task pending.
"""

from __future__ import annotations

import asyncio
import gc
import os
from typing import Any

import pytest
import uvloop

from smcp.runtime import process
from smcp.runtime.process import StdioProcess
from smcp.runtime.sandbox import Launch

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="hosted processes drop to an unprivileged uid: needs root")

UID = 200_996

# Exits at once; its background child inherits stderr and holds it open for 5 s.
LEAVES_STDERR_OPEN = ["/bin/sh", "-c", "sleep 5 & exit 0"]


def _run(scenario: Any) -> list[dict[str, Any]]:
    """Run `scenario` on uvloop (as the node does); what the loop reported as errors."""
    reported: list[dict[str, Any]] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, context: reported.append(context))
        async with asyncio.timeout(30):
            await scenario()
        # Unretrieved exceptions are reported when their futures are collected.
        gc.collect()
        await asyncio.sleep(0)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
    return reported


async def _started(lines: list[str]) -> StdioProcess:
    proc = StdioProcess(
        Launch(LEAVES_STDERR_OPEN, ()),
        uid=UID,
        gid=UID,
        max_message_bytes=1 << 20,
        on_stdout=lambda _line: None,
        on_stderr=lines.append,
    )
    await proc.start()
    return proc


def _others() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]


def test_a_wait_cancelled_at_shutdown_leaves_no_error_and_no_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(process, "_PIPES_DRAIN_S", 3.0, raising=False)

    async def scenario() -> None:
        proc = await _started([])
        waiting = asyncio.create_task(proc.wait())
        await asyncio.sleep(0.5)  # the program has exited; the wait is on its pipes
        assert not waiting.done()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await asyncio.sleep(0)
        assert _others() == []
        proc.kill()

    assert _run(scenario) == []


def test_a_pipe_still_open_is_given_up_on_quietly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(process, "_PIPES_DRAIN_S", 0.3, raising=False)

    async def scenario() -> None:
        proc = await _started([])
        assert await asyncio.wait_for(proc.wait(), timeout=3) == 0
        await asyncio.sleep(0)
        assert _others() == []
        proc.kill()

    assert _run(scenario) == []
