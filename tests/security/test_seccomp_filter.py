"""The filter itself, outside the platform: the same probe code in the same bubblewrap
sandbox, once without and once with the filter. The control run shows each call would
otherwise have reached the kernel (EFAULT, EINVAL, success, ...), so the refusals in
test_syscalls.py are the filter's doing, not an accident of missing privileges."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from smcp.runtime import seccomp
from smcp.runtime.sandbox import SandboxPlan, build_launch

PROBE_DIR = Path(__file__).resolve().parents[2] / "examples" / "servers" / "probe"
UID = 200_999  # a sandbox uid no tenant of the test node uses

# Runs inside the sandbox: the probe's own syscall/socket tools, results as JSON.
_SCRIPT = r"""
import json, sys
sys.path.insert(0, "/srv/app")
import probe
skip = set(sys.argv[1:])
out = {n: probe.syscall(n)["error"] for n in sorted(probe._SYSCALLS_X86_64) if n not in skip}
out.update({f: probe.socket_family(f)["error"] for f in probe._FAMILIES})
print(json.dumps(out))
"""
# Unfiltered, these would stop or trace the sandbox's own processes and hang the run.
_UNSAFE_UNFILTERED = ("ptrace_traceme", "ptrace_attach")

pytestmark = [
    pytest.mark.skipif(os.uname().machine != "x86_64", reason="the probe's syscall table is x86_64"),
    pytest.mark.skipif(shutil.which("bwrap") is None or os.geteuid() != 0, reason="needs root and bubblewrap"),
]


def _run(bpf: bytes | None, skip: tuple[str, ...] = ()) -> dict[str, str | None]:
    plan = SandboxPlan(
        argv=["/usr/bin/python3", "-c", _SCRIPT, *skip],
        uid=UID,
        gid=UID,
        ro_binds=[(PROBE_DIR, "/srv/app")],
        seccomp=bpf,
    )
    launch = build_launch(plan)
    try:
        done = subprocess.run(
            launch.argv, pass_fds=launch.pass_fds, capture_output=True, env={}, timeout=30, user=UID, group=UID, extra_groups=[]
        )
    finally:
        launch.close()
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def unfiltered() -> dict[str, str | None]:
    return _run(None, _UNSAFE_UNFILTERED)


@pytest.fixture(scope="module")
def filtered() -> dict[str, str | None]:
    return _run(seccomp.filter_bpf(allow_inet=False))


def test_filter_refuses_what_the_kernel_would_have_run(unfiltered: dict, filtered: dict) -> None:
    # Without the filter, these reach the kernel (success or an argument error), proving the probe's
    # calls are live; the filter turns every one of them into a policy refusal.
    reached = {n for n, err in unfiltered.items() if n in filtered and err not in ("EPERM", "ENOSYS") and not n.startswith("AF_")}
    assert {"unshare_userns", "clone_userns", "bpf", "keyctl", "add_key", "userfaultfd", "perf_event_open",
            "io_uring_setup", "process_vm_readv", "open_by_handle_at", "setns"} <= reached  # fmt: skip
    for name in sorted(set(filtered) - {f for f in filtered if f.startswith("AF_")}):
        assert filtered[name] in ("EPERM", "ENOSYS"), (name, filtered[name])


def test_filter_limits_socket_families(unfiltered: dict, filtered: dict) -> None:
    for family in ("AF_INET", "AF_INET6", "AF_NETLINK"):
        assert unfiltered[family] is None, f"{family} opens without the filter"
        assert filtered[family] == "EAFNOSUPPORT"
    assert filtered["AF_PACKET"] == "EAFNOSUPPORT"
    assert filtered["AF_UNIX"] is None


def test_allow_inet_variant_opens_only_ip_sockets() -> None:
    result = _run(seccomp.filter_bpf(allow_inet=True), _UNSAFE_UNFILTERED)
    assert result["AF_INET"] is None and result["AF_INET6"] is None and result["AF_UNIX"] is None
    assert result["AF_NETLINK"] == "EAFNOSUPPORT" and result["AF_PACKET"] == "EAFNOSUPPORT"
    assert result["unshare_userns"] == "EPERM" and result["bpf"] == "EPERM"


def test_foreign_abi_and_high_bits_cannot_bypass() -> None:
    # Rules compare full 64-bit arguments: a family with high bits set (which the kernel
    # would truncate to AF_INET) is refused by the catch-all rule; clone3, whose flags a
    # filter cannot read, is refused so libc falls back to clone; and a 32-bit system call
    # (int 0x80) meets the filter's bad-architecture action instead of slipping past it.
    code = r"""
import ctypes, errno, json
libc = ctypes.CDLL(None, use_errno=True); libc.syscall.restype = ctypes.c_long
def err(*a):
    r = libc.syscall(*[ctypes.c_long(x) for x in a]); return errno.errorcode.get(ctypes.get_errno()) if r == -1 else None
# i386 getpid through int 0x80: another ABI, which a native-only rule set would not see.
import mmap
m = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
m.write(bytes([0xB8, 0x14, 0, 0, 0, 0xCD, 0x80, 0x48, 0x63, 0xC0, 0xC3]))  # mov eax,20; int 0x80; movsxd rax,eax; ret
int80 = ctypes.CFUNCTYPE(ctypes.c_long)(ctypes.addressof(ctypes.c_char.from_buffer(m)))()
print(json.dumps({"socket_high_bits": err(41, (1 << 32) | 2, 1, 0), "clone3": err(435, 0, 0),
                  "i386_getpid": errno.errorcode.get(-int80) if int80 < 0 else "ran"}))
"""
    plan = SandboxPlan(argv=["/usr/bin/python3", "-c", code], uid=UID, gid=UID, cwd="/tmp", seccomp=seccomp.filter_bpf(allow_inet=False))
    launch = build_launch(plan)
    try:
        done = subprocess.run(launch.argv, pass_fds=launch.pass_fds, capture_output=True, env={}, timeout=30, user=UID, group=UID, extra_groups=[])
    finally:
        launch.close()
    assert done.returncode == 0, done.stderr.decode()
    assert json.loads(done.stdout) == {"socket_high_bits": "EAFNOSUPPORT", "clone3": "ENOSYS", "i386_getpid": "ENOSYS"}
