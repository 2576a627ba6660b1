"""A hostile server, hosted for real, tries to get out of its bubblewrap sandbox."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.conftest import Hosted
from tests.e2e.probe_client import ProbeSession
from tests.harness import Node


@pytest.fixture()
def probe_session(probe: Hosted) -> Iterator[ProbeSession]:
    s = ProbeSession(probe)
    yield s
    s.close()


def test_runs_as_unprivileged_tenant_uid(probe_session: ProbeSession) -> None:
    me = probe_session.ok("whoami")
    assert me["uid"] != 0 and me["euid"] != 0
    assert me["hostname"] == "smcp"
    assert me["cwd"] == "/srv/app"


def test_runs_under_the_batch_scheduling_policy(probe_session: ProbeSession) -> None:
    # Set between fork and exec (runtime/cgroups.py): the sandboxed program starts
    # under SCHED_BATCH, so its wake-ups never preempt the gateway.
    assert probe_session.ok("whoami")["sched_policy"] == os.SCHED_BATCH


def test_cannot_read_host_secrets(probe_session: ProbeSession) -> None:
    err = probe_session.fails("read_file", path="/etc/shadow")
    assert "No such file" in err["error"]
    probe_session.fails("read_file", path="/root/.bashrc")
    assert "shadow" not in probe_session.ok("list_dir", path="/etc")["entries"]


def test_sees_no_platform_state(node: Node, probe_session: ProbeSession) -> None:
    # The platform's database, admin token and other tenants' bundles live here on the host.
    probe_session.fails("list_dir", path=str(node.data_dir))
    probe_session.fails("read_file", path=str(node.data_dir / "admin-token"))
    probe_session.fails("read_file", path=str(node.data_dir / "smcp.db"))
    root = set(probe_session.ok("list_dir", path="/")["entries"])
    assert root <= {"bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc", "proc", "dev", "tmp", "srv", "data"}


def test_cannot_see_other_tenants(node: Node, probe_session: ProbeSession, other_probe: Hosted) -> None:
    victim = ProbeSession(other_probe)
    try:
        victim.ok("write_file", path="/data/secret.txt", text="victim data")
        victim_me = victim.ok("whoami")
        me = probe_session.ok("whoami")
        assert victim_me["uid"] != me["uid"], "tenants must run as distinct uids"
        # Each sandbox has its own /data and /tmp; the victim's file is not in ours.
        probe_session.fails("read_file", path="/data/secret.txt")
        assert "secret.txt" not in probe_session.ok("list_dir", path="/data")["entries"]
        # Host paths of the other instance are not mounted at all.
        probe_session.fails("list_dir", path=str(node.data_dir / "instances"))
    finally:
        victim.close()


def test_sees_only_its_own_processes(probe_session: ProbeSession) -> None:
    pids = probe_session.ok("list_pids")["pids"]
    cmdlines = [" ".join(p["cmdline"] or []) for p in pids]
    assert len(pids) <= 3, cmdlines
    assert any("probe.py" in c for c in cmdlines)
    assert not any("smcp" in c and "serve" in c for c in cmdlines)


def test_cannot_signal_host_processes(node: Node, probe_session: ProbeSession) -> None:
    probe_session.fails("kill", pid=node.proc.pid, sig=9)
    assert node.proc.poll() is None


def test_cannot_open_network_connections(node: Node, probe_session: ProbeSession) -> None:
    err = probe_session.fails("connect", host="127.0.0.1", port=node.port, timeout=1)
    # seccomp refuses AF_INET sockets outright; without it the empty net namespace would.
    assert any(w in err["error"].lower() for w in ("address family not supported", "unreachable", "refused"))
    probe_session.fails("connect", host="1.1.1.1", port=443, timeout=1)
    probe_session.fails("connect", host="::1", port=node.port, timeout=1)


def test_cannot_write_outside_its_area(probe_session: ProbeSession) -> None:
    for path in ("/srv/app/probe.py", "/usr/evil", "/etc/evil", "/evil"):
        probe_session.fails("write_file", path=path, text="x")
    assert probe_session.ok("write_file", path="/data/ok.txt", text="fine")["written"] == 4
    assert probe_session.ok("write_file", path="/tmp/ok.txt", text="fine")["written"] == 4


def test_launcher_environment_does_not_leak(probe_session: ProbeSession) -> None:
    env = probe_session.ok("env")["environ"]
    assert "SMCP_ADMIN_TOKEN" not in env
    assert not any(k.startswith("SMCP_") for k in env)
    proc1 = probe_session.ok("proc1_environ")
    assert not any("SMCP_" in e for e in proc1["environ"])


def test_cannot_reach_host_unix_sockets(node: Node, probe_session: ProbeSession, tmp_path_factory) -> None:  # type: ignore[no-untyped-def]
    import socket as pysocket
    import tempfile
    from pathlib import Path

    # A host service listening on a unix socket, in a directory anyone could traverse.
    base = Path(tempfile.mkdtemp(prefix="smcp-host-sock-"))
    base.chmod(0o755)
    path = base / "host.sock"
    server = pysocket.socket(pysocket.AF_UNIX, pysocket.SOCK_STREAM)
    server.bind(str(path))
    path.chmod(0o777)
    server.listen(1)
    try:
        err = probe_session.fails("unix_connect", path=str(path))
        assert "No such file" in err["error"]
        # Nor the platform's own sockets (egress proxies live under data_dir).
        probe_session.fails("list_dir", path=str(node.data_dir / "egress"))
    finally:
        server.close()
