"""The cgroup and build plumbing, without a node: a process is inside its limited
cgroup before it execs, runs with no privileges, and builds are limited and filtered too."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from smcp.domain import BuildFailed
from smcp.runtime import seccomp
from smcp.runtime.builds import Builder
from smcp.runtime.cgroups import Cgroups, Limits, spawn_kwargs
from smcp.runtime.sandbox import SandboxPlan

UID = 200_998
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="cgroups and uid switching need root")


@pytest.fixture()
async def cgroups() -> AsyncIterator[Cgroups]:
    cg = Cgroups.detect()
    assert cg is not None
    yield cg
    await cg.aclose()


async def test_child_is_in_its_cgroup_before_exec_and_unprivileged(cgroups: Cgroups) -> None:
    group = cgroups.create("t-join", Limits(memory_mb=64, cpu=0.5, pids=16))
    kwargs, release = spawn_kwargs(UID, UID, group)
    try:
        out = subprocess.run(["/bin/sh", "-c", "cat /proc/self/cgroup; grep -E '^(Uid|Gid|Groups|CapEff)' /proc/self/status"],
                             capture_output=True, text=True, check=True, env={}, **kwargs).stdout  # fmt: skip
    finally:
        release()
    # The shell *is* the exec'd program, so what it reports held from its first instruction.
    lines = out.splitlines()
    for controller in cgroups.controllers:
        assert any(controller in line.split(":")[1].split(",") and line.endswith("/t-join") for line in lines if line.count(":") >= 2) or (
            cgroups.version == "v2" and any(line.startswith("0::") and line.endswith("/t-join") for line in lines)
        ), (controller, out)
    status = {line.split(":")[0]: line.split(":", 1)[1].split() for line in lines if line.startswith(("Uid", "Gid", "Groups", "CapEff"))}
    assert set(status["Uid"]) == {str(UID)} and set(status["Gid"]) == {str(UID)}
    assert status["Groups"] == []
    assert status["CapEff"] == ["0000000000000000"]
    await group.remove(timeout_s=10)
    assert not any(d.exists() for d in group.dirs)


@pytest.mark.parametrize("batch", [True, False])
@pytest.mark.parametrize("in_cgroup", [True, False])
async def test_child_policy_placement_and_privileges_with_and_without_a_cgroup(cgroups: Cgroups, batch: bool, in_cgroup: bool) -> None:
    group = cgroups.create(f"t-policy-{int(batch)}{int(in_cgroup)}", Limits(memory_mb=64, cpu=0.5, pids=16)) if in_cgroup else None
    # The parent is narrowed to one CPU, as SMCP_NODE_CPUS narrows the node; the child
    # must get the set it is given, not inherit the parent's.
    mine = os.sched_getaffinity(0)
    wanted = frozenset({max(mine)})
    kwargs, release = spawn_kwargs(UID, UID, group, batch=batch, cpus=wanted)
    if len(mine) > 1:
        os.sched_setaffinity(0, {min(mine)})
    try:
        # Field 41 of /proc/self/stat is the scheduling policy (0 normal, 3 batch).
        out = subprocess.run(["/bin/sh", "-c", "cut -d' ' -f41 /proc/self/stat; grep -E '^(Uid|Gid|Groups|Cpus_allowed_list)' /proc/self/status"],
                             capture_output=True, text=True, check=True, env={}, **kwargs).stdout  # fmt: skip
    finally:
        os.sched_setaffinity(0, mine)
        release()
    policy, *lines = out.splitlines()
    assert int(policy) == (os.SCHED_BATCH if batch else os.SCHED_OTHER)
    status = {line.split(":")[0]: line.split(":", 1)[1].split() for line in lines}
    assert status["Cpus_allowed_list"] == [str(max(mine))]
    assert set(status["Uid"]) == {str(UID)} and set(status["Gid"]) == {str(UID)}
    assert status["Groups"] == []
    if group is not None:
        await group.remove(timeout_s=10)


def test_root_is_refused_with_or_without_a_cgroup() -> None:
    with pytest.raises(ValueError, match="never run as root"):
        spawn_kwargs(0, UID, None)
    with pytest.raises(ValueError, match="never run as root"):
        spawn_kwargs(UID, 0, None)


async def test_limits_are_written_in_a_valid_order(cgroups: Cgroups) -> None:
    group = cgroups.create("t-limits", Limits(memory_mb=48, cpu=0.25, pids=8))
    try:
        wanted = ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes", "memory.max", "cpu.cfs_quota_us",
                  "cpu.cfs_period_us", "cpu.max", "pids.max")  # fmt: skip
        read = {p.name: p.read_text().strip() for g in group.dirs for p in g.iterdir() if p.name in wanted}
        if cgroups.version == "v1":
            assert read["memory.limit_in_bytes"] == str(48 << 20)
            if "memory.memsw.limit_in_bytes" in read:  # memory+swap == memory: no swap
                assert read["memory.memsw.limit_in_bytes"] == str(48 << 20)
            assert read["cpu.cfs_quota_us"] == "25000" and read["cpu.cfs_period_us"] == "100000"
        else:
            assert read["memory.max"] == str(48 << 20) and read["cpu.max"] == "25000 100000"
        assert read["pids.max"] == "8"
    finally:
        await group.remove(timeout_s=10)


async def test_fresh_cgroup_per_launch_despite_lingering_pids(cgroups: Cgroups) -> None:
    # A tight pids cap, used up and released: the next launch gets its own cgroup and starts.
    for n in range(2):
        group = cgroups.create(f"t-fresh-{n}", Limits(pids=4))
        kwargs, release = spawn_kwargs(UID, UID, group)
        try:
            proc = subprocess.run(["/bin/sh", "-c", "sleep 0 & sleep 0 & wait; echo ok"], capture_output=True, text=True, env={}, **kwargs)
        finally:
            release()
        assert proc.stdout.strip() == "ok", proc.stderr
        cgroups.remove_later(group)
    await asyncio.sleep(0)


def _builder(tmp: Path, cgroups: Cgroups, memory_mb: int) -> Builder:
    tmp.chmod(0o711)
    return Builder(
        tmp / "builds", tmp / "cache", python="/usr/bin/python3", bwrap="bwrap", timeout_s=60,
        cgroups=cgroups, limits=Limits(memory_mb=memory_mb, cpu=2, pids=256),
        seccomp=seccomp.filter_bpf(allow_inet=True), tmp_mb=64,
    )  # fmt: skip


def _plan(script: str, work: Path) -> SandboxPlan:
    work.mkdir(parents=True, exist_ok=True)
    return SandboxPlan(argv=["/usr/bin/python3", "-c", script], uid=UID, gid=UID, cwd="/tmp", network=True, hostname="smcp-build")


async def test_builds_are_filtered_and_limited(tmp_path: Path, cgroups: Cgroups) -> None:
    builder = _builder(tmp_path, cgroups, memory_mb=64)
    script = (
        "import socket\n"
        "status = dict(l.split(':\\t', 1) for l in open('/proc/self/status').read().splitlines() if ':\\t' in l)\n"
        "print('seccomp', status['Seccomp'].strip())\n"
        "socket.socket(socket.AF_INET, socket.SOCK_STREAM).close(); print('inet ok')\n"  # builds reach the registry
        "try:\n socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM)\nexcept OSError as e: print('netlink', e.errno)\n"
    )
    log = await builder._run(tmp_path / "w1", _plan(script, tmp_path / "w1"), "probe build")
    assert "seccomp 2" in log and "inet ok" in log and "netlink 97" in log, log

    hog = "blocks = [bytearray(1 << 20) for _ in range(256)]\nfor b in blocks: b[::4096] = b'x' * 256\n"
    with pytest.raises(BuildFailed, match=r"out of memory \(limit 64 MiB\)"):
        await builder._run(tmp_path / "w2", _plan(hog, tmp_path / "w2"), "memory hog")


def test_v2_layout_on_a_fake_hierarchy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # This host's controllers are on v1; check what the v2 path would write on a v2 host.
    from smcp.runtime import cgroups as cg

    root = tmp_path / "cgroup2"
    own = root / "system.slice" / "smcp.service"
    own.mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids\n")
    (own / "cgroup.controllers").write_text("cpu memory pids\n")
    monkeypatch.setattr(cg, "_mounts", lambda: [cg._Mount(root, "v2", frozenset({"cpu", "memory", "pids"}))])
    monkeypatch.setattr(cg, "_own_paths", lambda: ({}, "/system.slice/smcp.service"))
    manager = cg.Cgroups.detect("auto", node_tag="node-1")
    assert manager is not None and manager.version == "v2" and manager.controllers == ("memory", "cpu", "pids")
    base = own / "smcp" / "node-1"
    for d in (own, own / "smcp", base):
        assert (d / "cgroup.subtree_control").read_text() == "+memory +cpu +pids"
    group = manager.create("i-x", cg.Limits(memory_mb=64, cpu=0.5, pids=32))
    d = base / "i-x"
    assert group.dirs == [d]
    assert (d / "memory.max").read_text() == str(64 << 20)
    assert (d / "cpu.max").read_text() == "50000 100000"
    assert (d / "pids.max").read_text() == "32"
    (d / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    (d / "pids.events").write_text("max 7\n")
    usage = group.usage()
    assert (usage.oom_kills, usage.pids_refused) == (1, 7)
    assert usage.notes(group.limits, 137)[0] == "killed: out of memory (limit 64 MiB)"
