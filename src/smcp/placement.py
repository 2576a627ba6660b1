"""Which CPUs the node and the processes it hosts run on (SMCP_NODE_CPUS, SMCP_INSTANCE_CPUS).

By default everything may run everywhere. On a machine where a saturated hosted
server shares cores with the gateway, each slows the other: the server's thread
hand-offs and the gateway's wake-ups land on cold caches (measured in bench/ with
`--placement split`: throughput through the gateway 0.76–0.88× the direct baseline
with shared cores, 0.96–1.08× with the node on one core and servers on the other).
Giving the node its own cores is then the usual remedy, as for any proxy.

This is placement, not isolation: a hosted process may widen its own affinity again
(`sched_setaffinity` is not refused), and its `cpu` limit (cgroups) is what bounds it.
"""

from __future__ import annotations

import os

# What this process was allowed when it started, before the node pins itself: hosted
# processes get this (or SMCP_INSTANCE_CPUS), never the node's own narrower set.
STARTED_WITH: frozenset[int] = frozenset(os.sched_getaffinity(0))


def parse_cpus(text: str) -> frozenset[int] | None:
    """A Linux CPU list ("0", "1-3", "0,2-3") as a set; "" means no restriction (None).

    Raises ValueError naming what is wrong, or which CPUs this process may not use.
    """
    text = text.strip()
    if not text:
        return None
    cpus: set[int] = set()
    for part in text.split(","):
        first, sep, last = part.strip().partition("-")
        if not first.isdigit() or (sep and not last.isdigit()):
            raise ValueError(f"{text!r} is not a CPU list (like 0 or 1-3 or 0,2-3)")
        low, high = int(first), int(last) if sep else int(first)
        if high < low:
            raise ValueError(f"{part.strip()!r}: a range must go upwards")
        cpus.update(range(low, high + 1))
    unavailable = cpus - STARTED_WITH
    if unavailable:
        raise ValueError(f"CPUs {sorted(unavailable)} are not available to this process (it may use {sorted(STARTED_WITH)})")
    return frozenset(cpus)


def pin_node(cpus: frozenset[int] | None) -> None:
    """Pin the calling thread, and so every thread it starts later, to `cpus`."""
    if cpus is not None:
        os.sched_setaffinity(0, cpus)


def for_hosted(cpus: frozenset[int] | None) -> frozenset[int]:
    """The CPUs a hosted process or build may use."""
    return cpus if cpus is not None else STARTED_WITH
