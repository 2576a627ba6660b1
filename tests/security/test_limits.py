"""A hosted server tries to exhaust the machine: processes, memory, disk, CPU. Each is
stopped at the instance's own limit, the platform reports it, and other tenants (and
the platform itself) keep being served."""

from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import Hosted
from tests.e2e.probe_client import ProbeSession
from tests.harness import Node
from tests.security.conftest import BURNER_CPU, wait_for_log

SERVERS = Path(__file__).resolve().parent / "servers"
MiB = 1024 * 1024


def _node_cgroups(node: Node) -> list[Path]:
    """This node's cgroup subtree in every hierarchy (runtime/cgroups.py: .../smcp/node-<pid>)."""
    found = []
    for line in Path(f"/proc/{node.proc.pid}/cgroup").read_text().splitlines():
        _hid, controllers, path = line.split(":", 2)
        for c in controllers.split(",") if controllers else [""]:
            if c in ("memory", "cpu", "pids", ""):
                root = Path("/sys/fs/cgroup") / c if c else Path("/sys/fs/cgroup")
                if c == "" and (root / "unified").is_dir():
                    root = root / "unified"
                base = root / path.lstrip("/") / "smcp" / f"node-{node.proc.pid}"
                if c and not base.exists():
                    base = root / "smcp" / f"node-{node.proc.pid}"
                if base.is_dir() and base not in found:
                    found.append(base)
    return found


def test_instance_gets_a_fresh_limited_cgroup_removed_after_exit(node: Node, probe: Hosted) -> None:
    bases = _node_cgroups(node)
    assert bases, "the node made no cgroups"
    before = {d for b in bases for d in b.iterdir() if d.is_dir()}
    s = ProbeSession(probe)
    try:
        uid = s.ok("whoami")["uid"]
        fresh = [d for b in bases for d in b.iterdir() if d.is_dir() and d not in before]
        assert fresh, "no new cgroup for the new instance"
        values: dict[str, str] = {}
        for d in fresh:
            for name in ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes", "memory.max", "memory.swap.max",
                         "pids.max", "cpu.cfs_quota_us", "cpu.max"):  # fmt: skip
                if (d / name).exists():
                    values[name] = (d / name).read_text().strip()
            # Everything in it runs as the tenant's uid: bwrap joined before it exec'd.
            pids = [int(p) for p in (d / "cgroup.procs").read_text().split()]
            assert pids, d
            assert all(Path(f"/proc/{p}").stat().st_uid == uid for p in pids if Path(f"/proc/{p}").exists())
        assert values.get("memory.limit_in_bytes", values.get("memory.max")) == str(128 * MiB)
        assert values.get("memory.memsw.limit_in_bytes", str(128 * MiB)) == str(128 * MiB)  # no swap
        assert values.get("pids.max") == "64"
        assert values.get("cpu.cfs_quota_us", values.get("cpu.max", "").split(" ")[0]) == "100000"
    finally:
        s.close()
    deadline = time.monotonic() + 15
    while any(d.exists() for d in fresh):
        assert time.monotonic() < deadline, f"cgroups not removed: {[d for d in fresh if d.exists()]}"
        time.sleep(0.2)


def test_fork_bomb_is_contained_and_others_are_served(node: Node, probe: Hosted, other_probe: Hosted) -> None:
    bomber = ProbeSession(probe)
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(bomber.ok("fork_bomb", n=5000, hold=3)))
    thread.start()
    try:
        time.sleep(0.7)  # the bomb has filled its pids cgroup by now
        started = time.monotonic()
        other = ProbeSession(other_probe)  # a new sandbox for another tenant starts fine...
        try:
            assert other.ok("whoami")["uid"] != 0  # ...and serves
            assert other.ok("fork_bomb", n=5, hold=0)["started"] == 5  # its own pids budget is untouched
        finally:
            other.close()
        assert time.monotonic() - started < 5
        thread.join(timeout=20)
        assert result, "the fork bomb call did not return"
        assert result["refused"] == "EAGAIN", result
        assert result["started"] < 64, result
        assert bomber.ok("whoami")["uid"] != 0  # the bomber's own server recovers once its children exit
    finally:
        thread.join(timeout=20)
        bomber.close()
    line = wait_for_log(node, probe, lambda x: x["stream"] == "event" and "limit hit: process limit (64)" in x["text"])
    assert "refused" in line["text"]


def test_memory_exhaustion_is_an_oom_event_and_an_error(node: Node, probe: Hosted) -> None:
    s = ProbeSession(probe)
    try:
        started = time.monotonic()
        r, messages = s.rpc("tools/call", {"name": "alloc", "arguments": {"mb": 512}})
        assert time.monotonic() - started < 6, "an OOM must be answered, not left to time out"
        assert r.status_code == 200
        error = messages[-1]["error"]
        assert error["code"] == -32002
        assert "out of memory (limit 128 MiB)" in error["message"]
        wait_for_log(node, probe, lambda x: x["stream"] == "event" and "killed: out of memory (limit 128 MiB)" in x["text"])
        # The instance is restarted behind the session and serves again.
        s.wait_until_answering()
        assert s.ok("alloc", mb=16)["allocated_mb"] == 16  # within the limit, memory is there
    finally:
        s.close()


def test_node_heap_cap_is_in_every_environment(attacker: ProbeSession) -> None:
    # Any node a server starts (e.g. a `command` server's child) sees the cap too.
    assert "--max-old-space-size=96" in attacker.ok("env")["environ"]["NODE_OPTIONS"]


def test_disk_fill_stops_at_the_cap(attacker: ProbeSession) -> None:
    mounts = attacker.ok("read_file", path="/proc/self/mounts")["text"]
    for path in ("/data", "/tmp"):
        line = next(m for m in mounts.splitlines() if m.split()[1] == path)
        assert line.split()[2] == "tmpfs" and "size=32768k" in line, line  # [resources] disk_mb = 32
        result = attacker.ok("fill_disk", path=f"{path}/fill", mb=200)
        assert result["error"] == "ENOSPC", result
        assert 24 <= result["written_mb"] <= 32, result
    # Space is back once the file is gone.
    assert attacker.ok("write_file", path="/data/after.txt", text="ok")["written"] == 2


def test_cpu_burn_leaves_other_tenants_latency_flat(burner: Hosted, victim: ProbeSession) -> None:
    def median_ping(n: int = 15) -> float:
        samples = []
        for _ in range(n):
            t = time.perf_counter()
            r, messages = victim.rpc("ping")
            samples.append(time.perf_counter() - t)
            assert r.status_code == 200 and "result" in messages[-1]
        return statistics.median(samples)

    attacker = ProbeSession(burner)
    try:
        median_ping(5)  # warm up
        baseline = median_ping()
        seconds, workers = 4.0, 4
        result: dict[str, Any] = {}
        thread = threading.Thread(target=lambda: result.update(attacker.ok("cpu_burn", seconds=seconds, workers=workers)))
        thread.start()
        try:
            time.sleep(0.5)
            loaded = median_ping()
        finally:
            thread.join(timeout=seconds + 10)
    finally:
        attacker.close()
    assert result, "cpu_burn did not return"
    # Four spinning processes got about their quota (cpu = 0.25 → 1 CPU-second in 4 s), not the
    # machine (up to 8 CPU-seconds on 2 cores) ...
    assert result["cpu_s"] <= seconds * BURNER_CPU * 1.5, result
    # ... and another tenant's round-trips stayed roughly where they were (generous: 2 shared cores).
    assert loaded <= max(3 * baseline, baseline + 0.03), (baseline, loaded)


def test_node_heap_is_capped_so_node_fails_readably(node: Node) -> None:
    node.create_tenant("hog")
    key = node.create_key("hog")["token"]
    r = node.deploy("hog", SERVERS / "nodehog")
    assert r.status_code == 201, r.text
    hosted = Hosted("hog", "nodehog", key, node.mcp_url("hog", "nodehog"))
    try:
        with httpx.Client(timeout=30) as http:
            http.post(
                hosted.url,
                json={"jsonrpc": "2.0", "id": 1, "method": "initialize",
                      "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}},
                headers={"authorization": f"Bearer {key}", "accept": "application/json, text/event-stream"},
            )  # fmt: skip
        limit = wait_for_log(node, hosted, lambda x: x["stream"] == "stderr" and x["text"].startswith("heap limit"))
        # NODE_OPTIONS=--max-old-space-size=96 (75% of 128 MiB); V8 adds its young generation on top
        # (unbounded, the limit would be a few GiB here).
        assert int(limit["text"].split()[2]) <= 96 + 64, limit
        wait_for_log(node, hosted, lambda x: "JavaScript heap out of memory" in x["text"], timeout=20)
        wait_for_log(node, hosted, lambda x: x["stream"] == "event" and "exited with code 134" in x["text"])
    finally:
        with node.api() as api:
            api.delete("/tenants/hog/servers/nodehog")
