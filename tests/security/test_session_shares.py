"""One tenant (or one of its keys) cannot take every session on the node.

Found by fuzzing the endpoint: initialize alone, repeated, filled the node's session
table, and every tenant's clients got 503 until the idle timeout. Now each tenant and
each principal has a share; at its cap the owner's own least recently used idle
session gives way, and only an owner whose sessions are all in use is refused (429).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.harness import EXAMPLES, Node, own_node

ACCEPT = "application/json, text/event-stream"
LEGACY = "2025-11-25"


@pytest.fixture(scope="module")
def small_node() -> Iterator[Node]:
    with own_node(
        "smcp-shares-", max_sessions="6", max_sessions_per_tenant="4", max_sessions_per_principal="3",
        session_idle_timeout_s="2",
    ) as node:
        for tenant in ("greedy", "bystander"):
            node.create_tenant(tenant)
            assert node.deploy(tenant, EXAMPLES / "probe").status_code == 201
        yield node


class Client:
    def __init__(self, node: Node, tenant: str, key: str) -> None:
        self.url = node.mcp_url(tenant, "probe")
        self.http = httpx.Client(timeout=15, headers={"authorization": f"Bearer {key}"})

    def initialize(self) -> httpx.Response:
        body = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}
        return self.http.post(self.url, json=body, headers={"accept": ACCEPT, "content-type": "application/json"})

    def session(self) -> str:
        r = self.initialize()
        assert r.status_code == 200, r.text
        return r.headers["mcp-session-id"]

    def ping(self, sid: str) -> httpx.Response:
        return self.http.post(self.url, json={"jsonrpc": "2.0", "id": 2, "method": "ping"},
                              headers={"accept": ACCEPT, "content-type": "application/json", "mcp-session-id": sid,
                                       "mcp-protocol-version": LEGACY})

    @contextlib.contextmanager
    def listening(self, sid: str) -> Iterator[Any]:
        """A GET stream held open on the session, as a client waiting for notifications."""
        with httpx.Client(timeout=30, headers=self.http.headers) as own, own.stream(
            "GET", self.url, headers={"accept": "text/event-stream", "mcp-session-id": sid, "mcp-protocol-version": LEGACY}
        ) as stream:
            assert stream.status_code == 200
            # Kept: a dropped iterator closes the response, and the GET with it.
            chunks = stream.iter_raw()
            next(chunks)  # the priming event: the gateway is following it
            yield chunks


def test_shares_of_the_session_table(small_node: Node) -> None:
    k1 = Client(small_node, "greedy", small_node.create_key("greedy", "k1")["token"])
    k2 = Client(small_node, "greedy", small_node.create_key("greedy", "k2")["token"])
    other = Client(small_node, "bystander", small_node.create_key("bystander", "b")["token"])

    sids = [k1.session() for _ in range(3)]
    with contextlib.ExitStack() as held:
        for sid in sids:
            held.enter_context(k1.listening(sid))
        # The key's three sessions are all in use: a fourth is refused, clearly.
        r = k1.initialize()
        assert r.status_code == 429, r.text
        error = r.json()["error"]
        assert error["code"] == -32005 and "principal" in error["message"] and "3" in error["message"]

    # Nobody listens any more (once the gateway has seen the streams close): the least
    # recently used idle session gives way to a new one, and its client is told it
    # ended (404), never served by half a session.
    deadline = time.monotonic() + 10
    while (r := k1.initialize()).status_code == 429 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert r.status_code == 200, r.text
    fourth = r.headers["mcp-session-id"]
    alive = [sid for sid in sids if k1.ping(sid).status_code == 200]
    assert len(alive) == 2 and k1.ping(fourth).status_code == 200

    # The tenant's share: its second key gets the fourth slot, then no more while all
    # four are in use.
    k2_sid = k2.session()
    with contextlib.ExitStack() as held:
        for client, sid in ((k1, alive[0]), (k1, alive[1]), (k1, fourth), (k2, k2_sid)):
            held.enter_context(client.listening(sid))
        r = k2.initialize()
        assert r.status_code == 429 and "tenant" in r.json()["error"]["message"], r.text
        # Every other tenant still gets sessions on the node.
        bystander_sid = other.session()

        # A session someone listens on is in use, however long since its last request;
        # the bystander's, with nobody listening, is ended after the idle timeout (2 s,
        # reaped every second). A request would count as use, so none is sent meanwhile.
        time.sleep(4)
        assert other.ping(bystander_sid).status_code == 404
        assert k2.ping(k2_sid).status_code == 200
        assert k1.ping(fourth).status_code == 200
