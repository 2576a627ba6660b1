"""The seccomp filter every hosted process and every build runs under.

bubblewrap loads it (`bwrap --seccomp FD`) just before it execs the sandboxed
command, so bwrap itself may still create its namespaces while nothing inside can.
The filter allows by default and refuses, with an errno rather than a kill (so a
program fails readably), the system calls that serve to escape a sandbox or to reach
kernel attack surface a hosted MCP server has no use for:

- new user namespaces (`unshare`/`clone` with CLONE_NEWUSER; `clone3`, whose flags a
  filter cannot see, answers ENOSYS so libc falls back to `clone`), `setns`;
- mounts of any kind (old and new mount API), `pivot_root`, `chroot`;
- reading or steering other processes: `ptrace`, `process_vm_readv/writev`,
  `pidfd_getfd`, `kcmp`;
- kernel surfaces: `bpf`, the keyring (`keyctl`, `add_key`, `request_key`),
  `userfaultfd`, `perf_event_open`, io_uring, kexec, module loading,
  `open_by_handle_at` (the classic container breakout), swap, reboot, accounting;
- sockets of every address family except AF_UNIX (AF_INET/AF_INET6 too when
  `allow_inet`, for instances whose egress goes through an in-sandbox loopback
  forwarder, and for builds, which fetch from the package registry).

Only the native architecture's system calls are allowed at all: a 32-bit `int 0x80`
or x32 call (another way around a filter) gets ENOSYS.

pyseccomp (a ctypes binding to the system's libseccomp.so.2) compiles the rules to
classic BPF; the program is built once per variant and cached.
"""

from __future__ import annotations

import errno
import functools
import os
import socket
import tempfile

# Linux clone flag; not exported by Python's os module on 3.11.
CLONE_NEWUSER = 0x10000000

# System calls refused outright with EPERM.
DENIED_SYSCALLS: tuple[str, ...] = (
    # namespaces and mounts
    "setns",
    "mount",
    "umount",
    "umount2",
    "pivot_root",
    "chroot",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "mount_setattr",
    # other processes
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "pidfd_getfd",
    "kcmp",
    # kernel surfaces
    "bpf",
    "keyctl",
    "add_key",
    "request_key",
    "userfaultfd",
    "perf_event_open",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "open_by_handle_at",
    "name_to_handle_at",
    "swapon",
    "swapoff",
    "reboot",
    "acct",
    "quotactl",
    "lookup_dcookie",
    "iopl",
    "ioperm",
    "uselib",
    "vhangup",
    "syslog",
)

# Highest address family number we enumerate; every family at or above it is refused too.
_AF_LIMIT = 64


def allowed_families(allow_inet: bool) -> frozenset[int]:
    families = {socket.AF_UNIX}
    if allow_inet:
        families |= {socket.AF_INET, socket.AF_INET6}
    return frozenset(families)


@functools.lru_cache(maxsize=4)
def filter_bpf(*, allow_inet: bool = False) -> bytes:
    """The compiled filter (classic BPF, native byte order), ready for `bwrap --seccomp`."""
    import pyseccomp as sc  # imported lazily: loading libseccomp is only needed to build filters

    f = sc.SyscallFilter(sc.ALLOW)
    # Foreign-ABI calls (i386 int 0x80, x32) could sidestep every rule below.
    f.set_attr(sc.Attr.ACT_BADARCH, sc.ERRNO(errno.ENOSYS))
    eperm = sc.ERRNO(errno.EPERM)

    def rule(action: int, name: str, *args: object) -> None:
        if sc.resolve_syscall(sc.Arch.NATIVE, name) < 0:
            return  # not a system call on this architecture
        f.add_rule(action, name, *args)  # type: ignore[arg-type]

    for name in DENIED_SYSCALLS:
        rule(eperm, name)
    for name in ("unshare", "clone"):
        rule(eperm, name, sc.Arg(0, sc.MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER))
    rule(sc.ERRNO(errno.ENOSYS), "clone3")

    refuse = sc.ERRNO(errno.EAFNOSUPPORT)
    allowed = allowed_families(allow_inet)
    for name in ("socket", "socketpair"):
        for family in range(_AF_LIMIT):
            if family not in allowed:
                rule(refuse, name, sc.Arg(0, sc.EQ, family))
        # Catches larger families and any value with high bits set (the kernel would truncate it).
        rule(refuse, name, sc.Arg(0, sc.GE, _AF_LIMIT))

    with tempfile.TemporaryFile() as out:
        f.export_bpf(out)
        out.seek(0)
        program = out.read()
    if not program or len(program) % 8:
        raise RuntimeError("libseccomp produced an invalid BPF program")
    return program


def describe(*, allow_inet: bool) -> str:
    """One line for logs: what the filter refuses."""
    families = "AF_UNIX, AF_INET, AF_INET6" if allow_inet else "AF_UNIX"
    return f"seccomp: {len(DENIED_SYSCALLS)} system calls refused, new user namespaces refused, sockets limited to {families}"


def available() -> str | None:
    """None when filters can be built here, else why not."""
    try:
        filter_bpf(allow_inet=False)
    except Exception as exc:  # missing libseccomp.so.2, old version, ...
        return f"{type(exc).__name__}: {exc}"
    return None


__all__ = ["CLONE_NEWUSER", "DENIED_SYSCALLS", "allowed_families", "available", "describe", "filter_bpf"]

if __name__ == "__main__":  # pragma: no cover - a debugging aid: print the filter's size
    print(len(filter_bpf(allow_inet=False)) // 8, "BPF instructions;", os.uname().machine)
