"""A hosted server that stops reading its input costs its callers no hang and the node
bounded memory: what cannot wait in its stdin queue is refused at once (503, -32004),
and what waits times out like any unanswered request."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import Hosted
from tests.harness import EXAMPLES, own_node

MODERN = "2026-07-28"
TIMEOUT_S = 3.0
QUEUE = 256 * 1024


@pytest.fixture(scope="module")
def hosted() -> Iterator[Hosted]:
    with own_node("smcp-backpressure-", request_timeout_s=str(TIMEOUT_S), instance_stdin_queue_bytes=str(QUEUE)) as node:
        node.create_tenant("slow")
        key = node.create_key("slow")["token"]
        r = node.deploy("slow", EXAMPLES / "probe")
        assert r.status_code == 201, r.text
        yield Hosted("slow", r.json()["server"], key, node.mcp_url("slow", r.json()["server"]))


def _call(hosted: Hosted, name: str, arguments: dict[str, Any], id: int = 1) -> httpx.Response:
    meta = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
    body = {"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": name, "arguments": arguments, "_meta": meta}}
    headers = {
        "authorization": f"Bearer {hosted.key}",
        "accept": "application/json, text/event-stream",
        "mcp-protocol-version": MODERN,
        "mcp-method": "tools/call",
        "mcp-name": name,
    }
    return httpx.post(hosted.url, json=body, headers=headers, timeout=60)


def test_a_server_that_stops_reading_gets_no_more_than_its_queue_and_nobody_hangs(hosted: Hosted) -> None:
    assert _call(hosted, "stderr", {"text": "warm", "lines": 0}).status_code == 200
    assert "result" in _call(hosted, "stop_reading", {"seconds": 30}).json()

    text = "x" * (100 * 1024)  # 12 of these are far more than the pipe and the queue hold
    began = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda i: _call(hosted, "stderr", {"text": text, "lines": 0}, id=i), range(12)))
    took = time.monotonic() - began

    assert took < TIMEOUT_S + 5, f"callers waited {took:.1f}s for a server that does not read"
    refused = [r for r in answers if r.status_code == 503]
    waited = [r for r in answers if r.status_code == 200]
    assert refused and waited and len(refused) + len(waited) == 12, [r.status_code for r in answers]
    for r in refused:
        error = r.json()["error"]
        assert error["code"] == -32004 and "not reading its input" in error["message"], error
    for r in waited:
        assert "timed out" in r.json()["error"]["message"], r.text


def test_a_legacy_session_on_a_server_that_stops_reading_is_refused_not_ended(hosted: Hosted) -> None:
    from tests.e2e.probe_client import ProbeSession

    s = ProbeSession(hosted)
    try:
        s.ok("stop_reading", seconds=TIMEOUT_S + 3)
        text = "x" * (100 * 1024)

        def call(i: int) -> httpx.Response:
            body = {"jsonrpc": "2.0", "id": 1000 + i, "method": "tools/call",
                    "params": {"name": "stderr", "arguments": {"text": text, "lines": 0}}}
            return httpx.post(hosted.url, json=body, headers=s._headers(), timeout=60)

        began = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(call, range(12)))
        assert time.monotonic() - began < TIMEOUT_S + 5
        refused = [r for r in answers if r.status_code == 503]
        assert refused, [r.status_code for r in answers]
        assert all(r.json()["error"]["code"] == -32004 for r in refused)
        # The session outlives it: once the server reads again, it answers.
        s.wait_until_answering(timeout=15)
    finally:
        s.close()
