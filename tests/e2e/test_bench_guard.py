"""`make bench` names the SMCP processes already running on the machine before it
measures: an idle node left behind skewed this project's own figures twice."""

from __future__ import annotations

import httpx

from bench import calibrate
from tests.conftest import Hosted
from tests.harness import Node


def test_bench_finds_a_running_node_and_its_sandboxes(node: Node, demo: Hosted) -> None:
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}
    headers = {"authorization": f"Bearer {demo.key}", "accept": "application/json, text/event-stream"}
    assert httpx.post(demo.url, json=init, headers=headers, timeout=60).status_code == 200  # an instance runs
    found = dict(calibrate.strangers())
    assert node.proc.pid in found and "serve" in found[node.proc.pid]
    assert any(line.startswith("bwrap") or "/bwrap" in line for line in found.values()), found
