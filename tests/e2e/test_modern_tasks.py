"""Tasks of the 2026-07-28 extension (SEP-2663) on a shared *modern* instance.

The conformance fixture speaks 2026-07-28 itself, so the gateway passes requests
through rather than bridging them; it serves any task id it is asked about, to
whoever asks (one process, one requestor: the gateway). The gateway must still keep
each principal to its own tasks, and must let the server answer what it answers
for an unknown task (its own error codes) rather than inventing one.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Hosted
from tests.harness import EXAMPLES, Node

MODERN = "2026-07-28"
TASKS = "io.modelcontextprotocol/tasks"


@pytest.fixture(scope="module")
def fixture(node: Node, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hosted]:
    source = tmp_path_factory.mktemp("modern-tasks") / "conformance"
    shutil.copytree(EXAMPLES / "conformance", source)
    spec = (source / "smcp.toml").read_text().replace('name = "conformance"', 'name = "modern-tasks"', 1)
    (source / "smcp.toml").write_text(spec)
    node.create_tenant("mtasks")
    r = node.deploy("mtasks", Path(source))
    assert r.status_code == 201, r.text
    yield Hosted("mtasks", "modern-tasks", node.create_key("mtasks")["token"], r.json()["url"])


def _meta(declare: bool = True) -> dict[str, Any]:
    return {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "0"},
        "io.modelcontextprotocol/clientCapabilities": {"extensions": {TASKS: {}}} if declare else {},
    }


def _ask(key: str, url: str, method: str, params: dict[str, Any], *, name: str | None = None, declare: bool = True) -> dict[str, Any]:
    headers = {
        "authorization": f"Bearer {key}",
        "accept": "application/json, text/event-stream",
        "content-type": "application/json",
        "mcp-protocol-version": MODERN,
        "mcp-method": method,
    }
    if name is not None:
        headers["mcp-name"] = name
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": {**params, "_meta": _meta(declare)}}
    r = httpx.post(url, json=body, headers=headers, timeout=30)
    assert r.status_code in (200, 400, 404), r.text
    return r.json()


def test_a_modern_instances_tasks_belong_to_the_principal_that_created_them(node: Node, fixture: Hosted) -> None:
    other = node.create_key(fixture.tenant)["token"]
    created = _ask(fixture.key, fixture.url, "tools/call", {"name": "slow_compute", "arguments": {"seconds": 30}},
                   name="slow_compute")["result"]
    assert created["resultType"] == "task", created
    task_id = created["taskId"]

    mine = _ask(fixture.key, fixture.url, "tasks/get", {"taskId": task_id}, name=task_id)
    assert mine["result"]["taskId"] == task_id and mine["result"]["status"] == "working"
    # Mcp-Name (SEP-2663): a value naming another task is refused; none at all is let through.
    assert _ask(fixture.key, fixture.url, "tasks/get", {"taskId": task_id}, name="another")["error"]["code"] == -32020
    assert _ask(fixture.key, fixture.url, "tasks/get", {"taskId": task_id})["result"]["taskId"] == task_id

    # Another principal: the server answers as for any unknown id, and never about this one.
    for method in ("tasks/get", "tasks/cancel", "tasks/update"):
        theirs = _ask(other, fixture.url, method, {"taskId": task_id, "inputResponses": {}}, name=task_id)
        assert theirs["error"]["code"] == -32602, (method, theirs)
        assert task_id not in json.dumps(theirs), (method, theirs)
    # ... and what it says of a caller that did not declare the extension is the server's own.
    undeclared = _ask(other, fixture.url, "tasks/get", {"taskId": task_id}, name=task_id, declare=False)
    assert undeclared["error"]["code"] == -32021, undeclared
    # tasks/result was removed by the extension: the server says so, not the gateway.
    removed = _ask(other, fixture.url, "tasks/result", {"taskId": task_id})
    assert removed["error"]["code"] == -32601, removed

    # The other principal's cancel did not reach the task: its owner cancels it.
    assert _ask(fixture.key, fixture.url, "tasks/get", {"taskId": task_id}, name=task_id)["result"]["status"] == "working"
    assert "error" not in _ask(fixture.key, fixture.url, "tasks/cancel", {"taskId": task_id}, name=task_id)
    assert _ask(fixture.key, fixture.url, "tasks/get", {"taskId": task_id}, name=task_id)["result"]["status"] == "cancelled"


def _listen(key: str, url: str, task_ids: list[str], until: str, timeout_s: float = 20) -> list[dict[str, Any]]:
    """Open a subscriptions/listen stream for task_ids; its messages until one of method `until`."""
    headers = {
        "authorization": f"Bearer {key}",
        "accept": "application/json, text/event-stream",
        "content-type": "application/json",
        "mcp-protocol-version": MODERN,
        "mcp-method": "subscriptions/listen",
    }
    body = {"jsonrpc": "2.0", "id": "listen-1", "method": "subscriptions/listen",
            "params": {"notifications": {"taskIds": task_ids}, "_meta": _meta()}}
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    with httpx.stream("POST", url, json=body, headers=headers, timeout=timeout_s) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if line.startswith("data:") and line[5:].strip():
                seen.append(json.loads(line[5:]))
                if seen[-1].get("method") == until:
                    return seen
            assert time.monotonic() < deadline, seen
    return seen


def test_status_notifications_of_a_task_reach_its_owner_only(node: Node, fixture: Hosted) -> None:
    other = node.create_key(fixture.tenant)["token"]
    task_id = _ask(fixture.key, fixture.url, "tools/call", {"name": "slow_compute", "arguments": {"seconds": 30}},
                   name="slow_compute")["result"]["taskId"]
    try:
        # The other principal's listen is agreed without the task: the server never hears its id.
        theirs = _listen(other, fixture.url, [task_id], "notifications/subscriptions/acknowledged")
        assert theirs[-1]["params"]["notifications"].get("taskIds", []) == [], theirs
        # The owner's is agreed with it, and hears its status.
        mine = _listen(fixture.key, fixture.url, [task_id], "notifications/tasks")
        acknowledged = next(m for m in mine if m.get("method") == "notifications/subscriptions/acknowledged")
        assert acknowledged["params"]["notifications"]["taskIds"] == [task_id], mine
        assert mine[-1]["params"]["taskId"] == task_id and mine[-1]["params"]["status"] == "working", mine
    finally:
        _ask(fixture.key, fixture.url, "tasks/cancel", {"taskId": task_id}, name=task_id)
