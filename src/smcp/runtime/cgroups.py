"""Resource limits for sandboxed processes: one fresh cgroup per process launch.

The node detects at start which cgroup hierarchy it can use:

- **v1** (this project's reference host): separate `memory`, `cpu` and `pids`
  hierarchies, each mounted on its own (or co-mounted) directory;
- **v2** (the unified hierarchy): one directory per cgroup, controllers enabled
  down the tree through `cgroup.subtree_control`.

Every cgroup the node makes lives below `<own cgroup>/smcp/node-<pid>/` in each
hierarchy it uses (or below `SMCP_CGROUP_PARENT`), so a node manages only its own
subtree and never touches another node's. Each launch gets a fresh child: after a
sandbox exits its pids stay charged for a few seconds, so a reused cgroup with a
small pids cap would refuse the next start. Empty cgroups are removed in the
background, retrying until the kernel lets go.

The process must be inside its cgroup before it execs anything, and an
unprivileged process may not move itself into a root-owned cgroup; so
`spawn_kwargs` opens the `cgroup.procs` files in the parent and its `preexec_fn`
writes "0" (the calling process) to them while still root, then drops privileges
itself: supplementary groups first, then the gid, then the uid (after setuid
nothing else may change).

Memory is limited without swap (v1 `memory.memsw.limit_in_bytes`, v2
`memory.swap.max = 0`), so a limit means RAM. On v1 the memory limit may never sit
above the memory+swap limit: writes are ordered accordingly. When a process exits,
`Cgroup.usage()` reads what the kernel counted (OOM kills, refused forks), which
the runtime turns into instance events.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger("smcp.runtime.cgroups")

Version = Literal["v1", "v2"]
CONTROLLERS = ("memory", "cpu", "pids")
CPU_PERIOD_US = 100_000
_MIB = 1024 * 1024


class CgroupError(RuntimeError):
    """cgroups were asked for but cannot be used here; the message says what to do."""


@dataclass(frozen=True, slots=True)
class Limits:
    """What one process tree may use. None means "no limit of this kind"."""

    memory_mb: int | None = None
    cpu: float | None = None
    pids: int | None = None

    def describe(self) -> str:
        parts = []
        if self.memory_mb:
            parts.append(f"memory {self.memory_mb} MiB")
        if self.cpu:
            parts.append(f"cpu {self.cpu:g}")
        if self.pids:
            parts.append(f"pids {self.pids}")
        return ", ".join(parts) or "none"


@dataclass(slots=True)
class Usage:
    """What the kernel counted for one cgroup, read when its process has exited."""

    oom_kills: int = 0
    pids_refused: int = 0
    memory_peak: int | None = None
    cpu_throttled: int = 0

    def notes(self, limits: Limits, code: int) -> tuple[str | None, list[str]]:
        """(why the process died, if a limit killed it; other limit hits worth an event)."""
        failure = None
        events: list[str] = []
        if self.oom_kills and code != 0:
            failure = f"killed: out of memory (limit {limits.memory_mb} MiB)"
        elif self.oom_kills:
            events.append(f"limit hit: out of memory (limit {limits.memory_mb} MiB), {self.oom_kills} processes killed")
        if self.pids_refused:
            events.append(f"limit hit: process limit ({limits.pids}) refused {self.pids_refused} forks")
        return failure, events


# ---------------------------------------------------------------------------- detection


@dataclass(frozen=True, slots=True)
class _Mount:
    path: Path
    version: Version
    controllers: frozenset[str]


def _mounts() -> list[_Mount]:
    found = []
    with contextlib.suppress(OSError), open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            fstype, _source, super_opts = (right.split() + ["", "", ""])[:3]
            mountpoint = Path(fields[4].replace("\\040", " "))
            if fstype == "cgroup2":
                controllers: frozenset[str] = frozenset()
                with contextlib.suppress(OSError):
                    controllers = frozenset((mountpoint / "cgroup.controllers").read_text().split())
                found.append(_Mount(mountpoint, "v2", controllers))
            elif fstype == "cgroup":
                found.append(_Mount(mountpoint, "v1", frozenset(super_opts.split(","))))
    return found


def _own_paths() -> tuple[dict[str, str], str | None]:
    """This process's cgroup per v1 controller, and its v2 cgroup."""
    v1: dict[str, str] = {}
    v2 = None
    with contextlib.suppress(OSError), open("/proc/self/cgroup", encoding="utf-8") as f:
        for line in f:
            _hid, controllers, path = line.rstrip("\n").split(":", 2)
            if controllers == "" and _hid == "0":
                v2 = path
            for c in controllers.split(","):
                if c:
                    v1[c] = path
    return v1, v2


def _write(path: Path, value: str) -> None:
    with open(path, "w", encoding="ascii") as f:
        f.write(value)


def _read_kv(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            with contextlib.suppress(ValueError):
                out[key] = int(value)
    return out


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _procs(directory: Path) -> list[int]:
    try:
        return [int(p) for p in (directory / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _rmtree_cgroups(directory: Path) -> bool:
    """rmdir a cgroup and every child below it (deepest first); True when it is gone."""
    if not directory.exists():
        return True
    for child in sorted((p for p in directory.iterdir() if p.is_dir()), reverse=True):
        _rmtree_cgroups(child)
    try:
        directory.rmdir()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


# ---------------------------------------------------------------------------- manager


class Cgroups:
    """This node's cgroup subtree: makes, fills, reads and removes per-launch cgroups."""

    def __init__(self, version: Version, bases: dict[str, Path]) -> None:
        # controller -> this node's base directory in the hierarchy that holds it
        self.version = version
        self._bases = bases
        self._pending: set[asyncio.Task[None]] = set()

    @property
    def controllers(self) -> tuple[str, ...]:
        return tuple(c for c in CONTROLLERS if c in self._bases)

    def describe(self) -> str:
        dirs = sorted({str(p) for p in self._bases.values()})
        return f"cgroup {self.version} ({', '.join(self.controllers)}) under {', '.join(dirs)}"

    # -- setup ----------------------------------------------------------------------
    @classmethod
    def detect(cls, mode: str = "auto", parent: str = "", node_tag: str | None = None) -> Cgroups | None:
        """The usable cgroup setup for `mode` ("auto" | "v1" | "v2" | "off").

        Returns None only for "off"; raises CgroupError when cgroups cannot be used.
        """
        if mode == "off":
            return None
        if mode not in ("auto", "v1", "v2"):
            raise CgroupError(f"unknown cgroup mode {mode!r}; use auto, v1, v2 or off")
        tag = node_tag or f"node-{os.getpid()}"
        mounts = _mounts()
        own_v1, own_v2 = _own_paths()
        problems: list[str] = []
        if mode in ("auto", "v1"):
            v1 = {c: m for m in mounts if m.version == "v1" for c in CONTROLLERS if c in m.controllers}
            if v1:
                try:
                    return cls._setup_v1(v1, own_v1, parent, tag)
                except OSError as exc:
                    problems.append(f"v1: {exc}")
            else:
                problems.append("v1: no memory, cpu or pids hierarchy is mounted")
        if mode in ("auto", "v2"):
            v2 = next((m for m in mounts if m.version == "v2"), None)
            if v2 is not None and v2.controllers & set(CONTROLLERS):
                try:
                    return cls._setup_v2(v2, own_v2 or "/", parent, tag)
                except OSError as exc:
                    problems.append(f"v2: {exc}")
            else:
                problems.append("v2: no cgroup2 mount offers memory, cpu or pids")
        raise CgroupError(
            "cannot apply resource limits with cgroups ("
            + "; ".join(problems)
            + "). Run SMCP as root on a host with cgroup v1 or v2 controllers, "
            "or set SMCP_CGROUPS=off to run without limits."
        )

    @staticmethod
    def _subtree(hierarchy: Path, own: str, parent: str) -> Path:
        # parent "" = below our own cgroup (delegation-friendly); "/x" = from the hierarchy root.
        rel = parent if parent.startswith("/") else f"{own.rstrip('/')}/{parent or 'smcp'}"
        return hierarchy / rel.lstrip("/")

    @classmethod
    def _setup_v1(cls, found: dict[str, _Mount], own: dict[str, str], parent: str, tag: str) -> Cgroups:
        bases: dict[str, Path] = {}
        for controller, mount in found.items():
            subtree = cls._subtree(mount.path, own.get(controller, "/"), parent)
            subtree.mkdir(parents=True, exist_ok=True)
            _reap_stale_nodes(subtree, tag)
            base = subtree / tag
            base.mkdir(exist_ok=True)
            bases[controller] = base
        return cls("v1", bases)

    @classmethod
    def _setup_v2(cls, mount: _Mount, own: str, parent: str, tag: str) -> Cgroups:
        subtree = cls._subtree(mount.path, own, parent)
        top = mount.path / own.lstrip("/") if not parent.startswith("/") else mount.path
        # What our parent delegated to us, not what the root has.
        offered = set((top / "cgroup.controllers").read_text().split())
        wanted = [c for c in CONTROLLERS if c in offered]
        if not wanted:
            raise OSError(errno.ENOTSUP, f"no memory, cpu or pids controller is delegated to {top}")
        enable = " ".join(f"+{c}" for c in wanted)
        # Controllers must be enabled in every ancestor's subtree_control, and a
        # non-root cgroup that holds processes may not enable any ("no internal
        # processes"): move this node into a leaf of its own first, as systemd's
        # Delegate= services do.
        chain = [top]
        for part in subtree.relative_to(top).parts:
            chain.append(chain[-1] / part)
        for directory in chain:
            directory.mkdir(exist_ok=True)
            try:
                _write(directory / "cgroup.subtree_control", enable)
            except OSError as exc:
                if exc.errno != errno.EBUSY or directory == mount.path:
                    raise
                leaf = directory / "smcp-supervisor"
                leaf.mkdir(exist_ok=True)
                _write(leaf / "cgroup.procs", "0")
                _write(directory / "cgroup.subtree_control", enable)
        _reap_stale_nodes(subtree, tag)
        base = subtree / tag
        base.mkdir(exist_ok=True)
        _write(base / "cgroup.subtree_control", enable)
        return cls("v2", dict.fromkeys(wanted, base))

    # -- per launch -----------------------------------------------------------------
    def create(self, name: str, limits: Limits) -> Cgroup:
        """A fresh cgroup with these limits; raises OSError if it cannot be made."""
        group = Cgroup(self, name, limits)
        try:
            if self.version == "v1":
                group._apply_v1()
            else:
                group._apply_v2()
        except BaseException:
            _rmtree_all(group.dirs)
            raise
        return group

    def remove_later(self, group: Cgroup, *, timeout_s: float = 30.0) -> None:
        """Kill what is left in the cgroup and rmdir it, retrying in the background."""
        task = asyncio.get_running_loop().create_task(group.remove(timeout_s=timeout_s))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def aclose(self) -> None:
        """Wait for pending removals, then remove this node's own subtree if it is empty."""
        if self._pending:
            await asyncio.wait(list(self._pending), timeout=10)
        for base in set(self._bases.values()):
            for _ in range(20):
                if _rmtree_cgroups(base):
                    break
                await asyncio.sleep(0.25)
            # The shared "smcp" parent goes too once no node uses it.
            with contextlib.suppress(OSError):
                base.parent.rmdir()


def _reap_stale_nodes(subtree: Path, tag: str) -> None:
    """Remove subtrees left by nodes that died without cleaning up (their pid is gone)."""
    with contextlib.suppress(OSError):
        for entry in subtree.iterdir():
            if not entry.is_dir() or not entry.name.startswith("node-") or entry.name == tag:
                continue
            pid = entry.name.removeprefix("node-")
            if pid.isdigit() and not _pid_alive(int(pid)):
                _rmtree_cgroups(entry)


def _rmtree_all(dirs: list[Path]) -> bool:
    return all([_rmtree_cgroups(d) for d in dirs])


@dataclass(slots=True)
class Cgroup:
    """One launch's cgroup (one directory per hierarchy on v1)."""

    owner: Cgroups
    name: str
    limits: Limits
    dirs: list[Path] = field(default_factory=list)
    _by_controller: dict[str, Path] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise ValueError(f"bad cgroup name {self.name!r}")
        for controller in self.owner.controllers:
            path = self.owner._bases[controller] / self.name
            self._by_controller[controller] = path
            if path not in self.dirs:
                self.dirs.append(path)

    def _dir(self, controller: str) -> Path | None:
        return self._by_controller.get(controller)

    def _apply_v1(self) -> None:
        for d in self.dirs:
            d.mkdir()
        mem, cpu, pids = self._dir("memory"), self._dir("cpu"), self._dir("pids")
        if mem is not None and self.limits.memory_mb:
            limit = self.limits.memory_mb * _MIB
            memsw = mem / "memory.memsw.limit_in_bytes"
            # memory.limit_in_bytes <= memory.memsw.limit_in_bytes must hold after every write.
            current_memsw = _read_int(memsw) if memsw.exists() else None
            if current_memsw is not None and limit > current_memsw:
                _write(memsw, str(limit))
                _write(mem / "memory.limit_in_bytes", str(limit))
            else:
                _write(mem / "memory.limit_in_bytes", str(limit))
                if current_memsw is not None:
                    _write(memsw, str(limit))  # no swap: the limit is RAM
        if cpu is not None and self.limits.cpu:
            _write(cpu / "cpu.cfs_period_us", str(CPU_PERIOD_US))
            _write(cpu / "cpu.cfs_quota_us", str(max(1000, int(self.limits.cpu * CPU_PERIOD_US))))
        if pids is not None and self.limits.pids:
            _write(pids / "pids.max", str(self.limits.pids))

    def _apply_v2(self) -> None:
        d = self.dirs[0]
        d.mkdir()
        if "memory" in self._by_controller and self.limits.memory_mb:
            _write(d / "memory.max", str(self.limits.memory_mb * _MIB))
            if (d / "memory.swap.max").exists():
                _write(d / "memory.swap.max", "0")
            if (d / "memory.oom.group").exists():
                _write(d / "memory.oom.group", "1")  # an OOM takes the whole instance down, not one thread of it
        if "cpu" in self._by_controller and self.limits.cpu:
            _write(d / "cpu.max", f"{max(1000, int(self.limits.cpu * CPU_PERIOD_US))} {CPU_PERIOD_US}")
        if "pids" in self._by_controller and self.limits.pids:
            _write(d / "pids.max", str(self.limits.pids))

    # -- joining ----------------------------------------------------------------------
    def open_procs(self) -> list[int]:
        """O_CLOEXEC descriptors of every `cgroup.procs`, for a child to write "0" into."""
        fds: list[int] = []
        try:
            for d in self.dirs:
                fds.append(os.open(d / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC))
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        return fds

    # -- after exit -------------------------------------------------------------------
    def usage(self) -> Usage:
        u = Usage()
        mem, pids, cpu = self._dir("memory"), self._dir("pids"), self._dir("cpu")
        if self.owner.version == "v1":
            if mem is not None:
                u.oom_kills = _read_kv(mem / "memory.oom_control").get("oom_kill", 0)
                u.memory_peak = _read_int(mem / "memory.max_usage_in_bytes")
            if cpu is not None:
                u.cpu_throttled = _read_kv(cpu / "cpu.stat").get("nr_throttled", 0)
        else:
            if mem is not None:
                u.oom_kills = _read_kv(mem / "memory.events").get("oom_kill", 0)
                u.memory_peak = _read_int(mem / "memory.peak")
            if cpu is not None:
                u.cpu_throttled = _read_kv(cpu / "cpu.stat").get("nr_throttled", 0)
        if pids is not None:
            u.pids_refused = _read_kv(pids / "pids.events").get("max", 0)
        return u

    def procs(self) -> list[int]:
        return sorted({p for d in self.dirs for p in _procs(d)})

    def kill_all(self) -> None:
        """SIGKILL every process still in the cgroup (v2: cgroup.kill does it atomically)."""
        if self.owner.version == "v2" and (self.dirs[0] / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                _write(self.dirs[0] / "cgroup.kill", "1")
            return
        for pid in self.procs():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    async def remove(self, *, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        delay = 0.05
        while True:
            self.kill_all()
            if _rmtree_all(self.dirs):
                return
            if time.monotonic() >= deadline:
                log.warning("cgroup %s still busy after %.0fs; left in place", self.name, timeout_s)
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)


# ---------------------------------------------------------------------------- spawning


def spawn_kwargs(
    uid: int, gid: int, cgroup: Cgroup | None, *, batch: bool = True, cpus: frozenset[int] | None = None
) -> tuple[dict[str, Any], Callable[[], None]]:
    """Keyword arguments for `asyncio.create_subprocess_exec` (or Popen) that start the
    child as uid:gid with no supplementary groups, inside `cgroup` before it execs,
    (with `batch`) under the SCHED_BATCH policy, and (with `cpus`) on those CPUs only:
    a child inherits the node's own affinity, which SMCP_NODE_CPUS may have narrowed.

    Everything happens in one `preexec_fn` rather than through `user=`/`group=`: the
    order matters (cgroup while still root, then groups, gid, uid), and uvloop, the
    node's event loop, supports `preexec_fn` but not those keywords.

    Returns (kwargs, cleanup): call cleanup in the parent once the child is started
    (or the start failed) to close the descriptors the child used.
    """
    if uid == 0 or gid == 0:
        raise ValueError("sandboxed processes never run as root")
    fds = cgroup.open_procs() if cgroup is not None else []

    def enter_and_drop() -> None:
        # Runs in the child between fork and exec, still as root.
        for fd in fds:
            os.write(fd, b"0")
        if batch:
            # No wakeup preemption: a hosted process that wakes never displaces the
            # gateway mid-request (docs/security.md, "Scheduling").
            os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
        if cpus is not None:
            os.sched_setaffinity(0, cpus)
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)

    def cleanup() -> None:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)

    return {"preexec_fn": enter_and_drop}, cleanup


# ---------------------------------------------------------------------------- policy


@dataclass(frozen=True, slots=True)
class InstanceLimits:
    """A spec's [resources] resolved against the node's ceilings (config.py)."""

    limits: Limits
    disk_mb: int
    node_heap_mb: int
    clamped: tuple[str, ...] = ()

    @classmethod
    def resolve(cls, resources: Any, settings: Any) -> InstanceLimits:
        clamped: list[str] = []

        def cap(name: str, wanted: Any, ceiling: Any) -> Any:
            if wanted > ceiling:
                clamped.append(f"{name} {wanted:g} capped at the node's limit {ceiling:g}")
                return ceiling
            return wanted

        memory = cap("memory_mb", resources.memory_mb, settings.instance_memory_mb_max)
        cpu = cap("cpu", resources.cpu, settings.instance_cpu_max)
        pids = cap("pids", resources.pids, settings.instance_pids_max)
        disk = cap("disk_mb", getattr(resources, "disk_mb", None) or settings.instance_disk_mb, settings.instance_disk_mb_max)
        heap = max(16, memory * settings.node_heap_percent // 100)
        return cls(Limits(memory_mb=memory, cpu=cpu, pids=pids), disk, heap, tuple(clamped))

    def describe(self) -> str:
        return f"{self.limits.describe()}, disk {self.disk_mb} MiB each for /data and /tmp"
