"""CPU placement settings: parsed strictly, and applied to the node and to what it hosts."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from pydantic import ValidationError

from smcp import placement
from smcp.config import Settings
from tests.conftest import Hosted
from tests.e2e.probe_client import ProbeSession
from tests.harness import EXAMPLES, start_node

CPUS = sorted(os.sched_getaffinity(0))


def test_cpu_lists_parse() -> None:
    assert placement.parse_cpus("") is None
    assert placement.parse_cpus(f" {CPUS[0]} ") == {CPUS[0]}
    if len(CPUS) > 1:
        assert placement.parse_cpus(f"{CPUS[0]}-{CPUS[1]}") == {CPUS[0], CPUS[1]}
        assert placement.parse_cpus(f"{CPUS[1]},{CPUS[0]}") == {CPUS[0], CPUS[1]}


@pytest.mark.parametrize(
    ("value", "says"),
    [("x", "not a CPU list"), ("1,,2", "not a CPU list"), ("-1", "not a CPU list"), ("3-1", "upwards"), ("4096", "not available")],
)
def test_bad_cpu_lists_are_refused_with_the_reason(value: str, says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        Settings(node_cpus=value)
    with pytest.raises(ValidationError, match=says):
        Settings(instance_cpus=value)


def test_hosted_processes_default_to_what_the_node_started_with() -> None:
    # Not the node's own set: a node pinned by SMCP_NODE_CPUS must not drag its
    # instances onto its cores.
    assert Settings(node_cpus=str(CPUS[0])).instance_cpu_set == placement.STARTED_WITH


def _tasks_cpus(pid: int) -> set[str]:
    out = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                out.add(line.split(":", 1)[1].strip())
    return out


@pytest.mark.skipif(len(CPUS) < 2 or os.geteuid() != 0, reason="needs two CPUs and root (sandboxes)")
def test_node_and_instances_run_where_they_are_told() -> None:
    base = Path(tempfile.mkdtemp(prefix="smcp-placement-"))
    base.chmod(0o711)
    node_cpu, hosted_cpu = CPUS[0], CPUS[-1]
    node = start_node(base / "data", node_cpus=str(node_cpu), instance_cpus=str(hosted_cpu))
    try:
        node.create_tenant("pin")
        key = node.create_key("pin")["token"]
        r = node.deploy("pin", EXAMPLES / "probe")
        assert r.status_code == 201, r.text
        hosted = Hosted("pin", r.json()["server"], key, node.mcp_url("pin", r.json()["server"]))
        session = ProbeSession(hosted)
        try:
            me = session.ok("whoami")
        finally:
            session.close()
        assert me["cpus"] == [hosted_cpu]
        # Every thread of the node (the loop, the database's, the runtime's) is pinned.
        assert _tasks_cpus(node.proc.pid) == {str(node_cpu)}
    finally:
        node.stop()
        shutil.rmtree(base, ignore_errors=True)
