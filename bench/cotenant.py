"""A stand-in neighbour: a process that uses the gateway's CPU share, without the gateway.

On a machine with few CPUs, anything that runs beside a saturated server takes CPU time
and cache from it. To tell the gateway's *share* of the machine apart from anything the
gateway does *to* the server, `make bench` runs the direct baseline once more beside this
process, set to the CPU the gateway was measured to use per call, in one burst per call
at the gateway run's request rate. If the server loses about as much throughput beside
it as beside the gateway, the gap is what any neighbour of that size costs on this
machine, and it shrinks only with the gateway's CPU per call.

    python -m bench.cotenant WORK_US PERIOD_US SECONDS
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(work_s: float, period_s: float, seconds: float) -> None:
    # Some memory to walk in each burst, as a gateway walks its own objects: a burst
    # that only spins would leave the server's cache alone, which the gateway does not.
    rows = [list(range(256)) for _ in range(256)]
    start = time.perf_counter()
    end = start + seconds
    beat = 0
    while True:
        now = time.perf_counter()
        if now >= end:
            return
        until = now + work_s
        while time.perf_counter() < until:
            for row in rows[:16]:
                sum(row)
        beat += 1
        # Paced on a fixed grid so oversleeping one beat does not slow the rate.
        wake = start + beat * period_s
        delay = wake - time.perf_counter()
        if delay > 0:
            time.sleep(delay)


@contextmanager
def neighbour(work_us: float, period_us: float, seconds: float) -> Iterator[None]:
    """A co-tenant using `work_us` of CPU every `period_us`, for at most `seconds`."""
    proc = subprocess.Popen([sys.executable, "-m", "bench.cotenant", str(work_us), str(period_us), str(seconds)], cwd=ROOT)
    try:
        yield
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    work, period, secs = (float(a) for a in sys.argv[1:4])
    _run(work / 1e6, max(period, work) / 1e6, secs)
