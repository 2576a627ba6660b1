"""The restart budget counts crashes in a row, not crashes over an instance's life."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.conftest import Hosted
from tests.e2e.probe_client import ProbeSession
from tests.harness import EXAMPLES, Node, own_node

RESET_S = 1.5


@pytest.fixture(scope="module")
def strict_node() -> Iterator[Node]:
    # One restart in a row allowed; a process that ran RESET_S earns it back.
    with own_node("smcp-budget-", restart_max="1", restart_backoff_s="0.1", restart_budget_reset_s=str(RESET_S)) as node:
        yield node


def _hosted(node: Node, tenant: str) -> Hosted:
    node.create_tenant(tenant)
    key = node.create_key(tenant)["token"]
    r = node.deploy(tenant, EXAMPLES / "probe")
    assert r.status_code == 201, r.text
    server = r.json()["server"]
    return Hosted(tenant, server, key, node.mcp_url(tenant, server))


def _crash_and_recover(s: ProbeSession) -> None:
    r, messages = s.rpc("tools/call", {"name": "crash", "arguments": {"code": 3}})
    assert messages[-1]["error"]["code"] == -32002, messages
    s.wait_until_answering(every=0.1)


def _live(node: Node, hosted: Hosted) -> list[dict]:
    """The server's live instances (one given up on leaves this list)."""
    with node.api() as api:
        r = api.get(f"/tenants/{hosted.tenant}/servers/{hosted.server}/instances")
        assert r.status_code == 200, r.text
        return r.json()


def test_crashes_far_apart_are_each_restarted(strict_node: Node) -> None:
    hosted = _hosted(strict_node, "steady")
    s = ProbeSession(hosted)
    try:
        [first] = _live(strict_node, hosted)
        for _ in range(3):
            time.sleep(RESET_S + 0.5)  # the process has run long enough to earn the budget back
            _crash_and_recover(s)
        assert s.ok("whoami")["uid"] != 0
        # The same instance came back each time: it was never given up on.
        [now] = _live(strict_node, hosted)
        assert now["id"] == first["id"] and now["restarts"] == 3, now
    finally:
        s.close()


def test_crashes_in_a_row_exhaust_the_budget(strict_node: Node) -> None:
    hosted = _hosted(strict_node, "looping")
    s = ProbeSession(hosted)
    try:
        [first] = _live(strict_node, hosted)
        _crash_and_recover(s)  # the one restart allowed
        r, messages = s.rpc("tools/call", {"name": "crash", "arguments": {"code": 3}})
        assert messages[-1]["error"]["code"] == -32002
        # Crashing again at once, it is given up on.
        deadline = time.monotonic() + 10
        while any(i["id"] == first["id"] for i in _live(strict_node, hosted)):
            assert time.monotonic() < deadline, _live(strict_node, hosted)
            time.sleep(0.1)
    finally:
        s.close()
