"""Bubblewrap sandboxes: the argv and file descriptors that confine one process.

Every hosted process and every build runs through `bwrap`, started as the tenant's
own unprivileged uid inside a fresh user namespace (so bwrap needs no setuid and
the process holds no capability on the host). Options travel over `--args FD`
rather than argv, so env values never show in the host's `ps`, and bwrap itself
starts with an empty environment (its PID 1 would otherwise expose ours at
/proc/1/environ inside).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

# Host directories a process may need to run at all; everything else of the host is absent.
_SYSTEM_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
# Single /etc entries that programs read at start; /etc/shadow, /etc/ssh etc. never enter.
_ETC_ENTRIES = (
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "ssl",
    "ca-certificates",
    "ca-certificates.conf",
    "alternatives",
    "nsswitch.conf",
    "mime.types",
)
# Only builds reach the network; they need name resolution.
_ETC_NET_ENTRIES = ("resolv.conf", "hosts", "gai.conf")

APP_DIR = "/srv/app"
VENV_DIR = "/srv/venv"
# A node build's node_modules: Node resolves /srv/app's imports by walking up to it.
NODE_MODULES_DIR = "/srv/node_modules"
DATA_DIR = "/data"


@dataclass(slots=True)
class SandboxPlan:
    """What to run and what it may see. Paths on the left are host paths."""

    argv: list[str]
    uid: int
    gid: int
    cwd: str = APP_DIR
    env: dict[str, str] = field(default_factory=dict)
    ro_binds: list[tuple[Path, str]] = field(default_factory=list)
    rw_binds: list[tuple[Path, str]] = field(default_factory=list)
    network: bool = False
    hostname: str = "smcp"
    # Read-only files made from bytes: (data, path inside). They travel as memfds via
    # --ro-bind-data, so they never exist on a host disk or in any argv (secrets).
    files: list[tuple[bytes, str]] = field(default_factory=list)
    # Size cap (bytes) of the private /tmp tmpfs; None: the kernel default (half of RAM).
    tmp_size: int | None = None
    # Further private tmpfs mounts: (path inside, size cap in bytes or None).
    tmpfs: list[tuple[str, int | None]] = field(default_factory=list)
    # A compiled seccomp BPF program (runtime/seccomp.py); bwrap loads it right before exec.
    seccomp: bytes | None = None


@dataclass(slots=True)
class Launch:
    """The host-side command plus descriptors the caller must pass and then close."""

    argv: list[str]
    pass_fds: tuple[int, ...]

    def close(self) -> None:
        for fd in self.pass_fds:
            try:
                os.close(fd)
            except OSError:
                pass


def _memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(name, 0)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _system_args() -> list[str]:
    args: list[str] = []
    for name in _SYSTEM_DIRS:
        host = Path("/") / name
        if host.is_symlink():
            args += ["--symlink", os.readlink(host), f"/{name}"]
        elif host.is_dir():
            args += ["--ro-bind", str(host), f"/{name}"]
    return args


def _etc_args(names: tuple[str, ...]) -> list[str]:
    args: list[str] = []
    for name in names:
        host = Path("/etc") / name
        if host.exists():
            args += ["--ro-bind", str(host), f"/etc/{name}"]
    return args


def _identity_files(uid: int, gid: int) -> tuple[bytes, bytes]:
    # Programs call getpwuid() at start (Python's getpass, Node's os.userInfo);
    # give them a one-line passwd naming only the sandbox user.
    passwd = f"root:x:0:0:root:/nonexistent:/usr/sbin/nologin\nsmcp:x:{uid}:{gid}:smcp:{DATA_DIR}:/usr/sbin/nologin\n"
    group = f"root:x:0:\nsmcp:x:{gid}:\n"
    return passwd.encode(), group.encode()


def build_launch(plan: SandboxPlan, *, bwrap: str = "bwrap") -> Launch:
    """Turn a plan into `bwrap --args FD` plus the memfds that carry options and files."""
    fds: list[int] = []
    passwd, group = _identity_files(plan.uid, plan.gid)
    passwd_fd = _memfd("passwd", passwd)
    group_fd = _memfd("group", group)
    fds += [passwd_fd, group_fd]

    args: list[str] = [
        "--unshare-user",
        "--uid", str(plan.uid),
        "--gid", str(plan.gid),
        # Forbid creating further user namespaces inside: the usual first step of an escape.
        "--disable-userns",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--hostname", plan.hostname,
        "--die-with-parent",
        # setsid(): the process cannot push keystrokes into a host terminal (TIOCSTI).
        "--new-session",
        "--cap-drop", "ALL",
    ]
    if not plan.network:
        args.append("--unshare-net")
    args += _system_args()
    args += ["--dir", "/etc"]
    args += _etc_args(_ETC_ENTRIES + (_ETC_NET_ENTRIES if plan.network else ()))
    args += ["--ro-bind-data", str(passwd_fd), "/etc/passwd", "--ro-bind-data", str(group_fd), "/etc/group"]
    args += ["--proc", "/proc", "--dev", "/dev"]
    for path, size in [("/tmp", plan.tmp_size), *plan.tmpfs]:
        # tmpfs pages are charged to the instance's memory cgroup as well as to this cap.
        args += (["--size", str(size)] if size else []) + ["--tmpfs", path]
    args += ["--dir", "/srv"]
    for host, inside in plan.ro_binds:
        args += ["--ro-bind", str(host), inside]
    for host, inside in plan.rw_binds:
        args += ["--bind", str(host), inside]
    for index, (data, inside) in enumerate(plan.files):
        file_fd = _memfd(f"file-{index}", data)
        fds.append(file_fd)
        args += ["--perms", "0400", "--ro-bind-data", str(file_fd), inside]
    # Until this point the sandbox root is a writable tmpfs; seal it.
    args += ["--remount-ro", "/"]
    args += ["--clearenv"]
    for key, value in plan.env.items():
        args += ["--setenv", key, value]
    args += ["--chdir", plan.cwd]
    if plan.seccomp is not None:
        seccomp_fd = _memfd("seccomp", plan.seccomp)
        fds.append(seccomp_fd)
        args += ["--seccomp", str(seccomp_fd)]

    for arg in args:
        if "\0" in arg:
            raise ValueError("sandbox argument contains a NUL byte")
    args_fd = _memfd("bwrap-args", b"".join(a.encode() + b"\0" for a in args))
    fds.append(args_fd)
    # bwrap takes the command itself only from its real argv; it is not secret.
    return Launch(argv=[bwrap, "--args", str(args_fd), "--", *plan.argv], pass_fds=tuple(fds))
