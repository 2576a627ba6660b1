"""A hosted server tries the system calls that escape a sandbox or reach kernel attack
surface: every one is refused by the seccomp filter (EPERM / ENOSYS), and sockets of
every address family but AF_UNIX are refused (EAFNOSUPPORT)."""

from __future__ import annotations

import pytest

from tests.e2e.probe_client import ProbeSession

ESCAPES = [
    "unshare_userns",
    "clone_userns",
    "setns",
    "mount",
    "umount",
    "pivot_root",
    "ptrace_traceme",
    "ptrace_attach",
    "process_vm_readv",
    "process_vm_writev",
    "bpf",
    "keyctl",
    "add_key",
    "request_key",
    "userfaultfd",
    "perf_event_open",
    "io_uring_setup",
    "init_module",
    "finit_module",
    "kexec_load",
    "open_by_handle_at",
]


def test_every_hosted_process_runs_under_seccomp(attacker: ProbeSession) -> None:
    status = attacker.ok("read_file", path="/proc/self/status")["text"]
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert fields["Seccomp"].strip() == "2", "filter mode"
    assert int(fields["Seccomp_filters"]) >= 1
    assert fields["NoNewPrivs"].strip() == "1"


@pytest.mark.parametrize("name", ESCAPES)
def test_escape_syscall_is_refused(attacker: ProbeSession, name: str) -> None:
    result = attacker.ok("syscall", name=name)
    assert result["result"] == -1, result
    assert result["error"] in ("EPERM", "ENOSYS"), result


@pytest.mark.parametrize("family", ["AF_INET", "AF_INET6", "AF_NETLINK", "AF_PACKET"])
def test_socket_family_is_refused(attacker: ProbeSession, family: str) -> None:
    result = attacker.ok("socket", family=family)
    assert result["opened"] is False
    assert result["error"] in ("EAFNOSUPPORT", "EPERM"), result


def test_unix_sockets_still_work(attacker: ProbeSession) -> None:
    # The filter is a denylist: ordinary programs (and the egress proxy's unix socket) keep working.
    assert attacker.ok("socket", family="AF_UNIX")["opened"] is True
