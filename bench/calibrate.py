"""What one wake from idle costs on this machine: the yardstick for CPU-per-call figures.

A gateway relaying for a saturated server sleeps between messages, and each wake-up
is paid in CPU time (on a virtual machine whose idle vCPU halts, in cold caches
after the host ran something else). The cost varies several-fold between machines and,
on a shared host, over the day. So `make bench` measures it beside the gateway's
figures: a child process (an asyncio loop, like the gateway) answers a byte on a pipe,
sent every 1.4 ms (a saturated demo server's pace) or back to back, and its CPU time
per message is reported.
"""

from __future__ import annotations

import asyncio
import os
import time


async def _echo(source: int, sink: int, messages: int) -> None:
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    seen = 0

    def readable() -> None:
        nonlocal seen
        data = os.read(source, 4096)
        os.write(sink, data)
        seen += len(data)
        if seen >= messages and not done.done():
            done.set_result(None)

    loop.add_reader(source, readable)
    await done


def wake_cost_us(interval_s: float, messages: int = 3000) -> float:
    """CPU-µs the answering process spends per message when messages come every `interval_s`."""
    to_child_r, to_child_w = os.pipe()
    to_parent_r, to_parent_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the answering process: an asyncio loop echoing the pipe, like the gateway
        os.close(to_child_w)
        os.close(to_parent_r)
        start = os.times()
        asyncio.run(_echo(to_child_r, to_parent_w, messages))
        end = os.times()
        spent = (end.user + end.system) - (start.user + start.system)
        os.write(to_parent_w, f"{spent * 1e6 / messages:.3f}".encode())
        os._exit(0)
    os.close(to_child_r)
    os.close(to_parent_w)
    try:
        for _ in range(messages):
            os.write(to_child_w, b"x")
            os.read(to_parent_r, 1)
            until = time.perf_counter() + interval_s
            while time.perf_counter() < until:  # spin, so only the child sleeps
                pass
        return float(os.read(to_parent_r, 64))
    finally:
        os.close(to_child_w)
        os.close(to_parent_r)
        os.waitpid(pid, 0)


def strangers() -> list[tuple[int, str]]:
    """Other SMCP nodes and sandboxes running here (pid, command line). Idle, they still
    wake on timers and hold memory: a figure measured beside them is not this code's."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        line = b" ".join(argv).decode("utf-8", "replace").strip()
        node = "smcp.cli.main serve" in line or (" serve" in line and line.split()[0].endswith("/smcp"))
        if node or argv[0].endswith(b"bwrap"):
            found.append((int(entry), line[:120]))
    return found


def describe() -> str:
    hot, idle = wake_cost_us(0.0), wake_cost_us(0.0014)
    return (f"machine: a pipe message costs an asyncio reader {hot:.0f} µs of CPU back to back, "
            f"{idle:.0f} µs after 1.4 ms idle (os.times resolution: ~3 µs)")


if __name__ == "__main__":
    print(describe())
