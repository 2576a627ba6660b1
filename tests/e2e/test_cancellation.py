"""Cancellation in both eras, through the gateway to a shared stdio instance (the probe).

2026-07-28: closing the response stream is the cancellation, whether or not anything
was streamed yet. 2025-11-25: a dropped connection is not one (the client may resume);
notifications/cancelled is, and it names the client's id, which the gateway maps to
the id the instance knows.
"""

from __future__ import annotations

import concurrent.futures
import json
import time

import httpx
import pytest

from tests.conftest import Hosted
from tests.e2e.probe_client import ACCEPT, open_legacy_session
from tests.e2e.test_modern import MODERN, _meta, _tool


def _received(probe: Hosted, method: str) -> int:
    answer = _tool(probe, "received")
    return int(json.loads(answer["result"]["content"][0]["text"]).get(method, 0))


def test_closing_the_response_stream_cancels_the_request(probe: Hosted) -> None:
    """This era's cancellation: the client closes its response before any answer or
    progress came, and the server hears notifications/cancelled for that request."""
    before = _received(probe, "notifications/cancelled")
    body = {"jsonrpc": "2.0", "id": "slow", "method": "tools/call", "params": {"name": "sleep", "arguments": {"seconds": 8}, "_meta": _meta()}}
    headers = {"authorization": f"Bearer {probe.key}", "accept": ACCEPT, "content-type": "application/json",
               "mcp-protocol-version": MODERN, "mcp-method": "tools/call", "mcp-name": "sleep"}
    with httpx.Client(timeout=30) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.post(probe.url, json=body, headers=headers, timeout=httpx.Timeout(30, read=0.5))
    # The client gave up after half a second; the tool would answer after eight.
    deadline = time.monotonic() + 4
    while _received(probe, "notifications/cancelled") == before:
        assert time.monotonic() < deadline, "the server never heard of the cancellation"
        time.sleep(0.1)


def test_a_legacy_clients_cancellation_reaches_the_server_and_ends_the_call(probe: Hosted) -> None:
    """notifications/cancelled naming the client's own id ends the call at once
    (-32800) and reaches the server."""
    with httpx.Client(headers={"authorization": f"Bearer {probe.key}"}, timeout=30) as http:
        sid = open_legacy_session(http, probe.url, {})
        h = {"accept": ACCEPT, "content-type": "application/json", "mcp-session-id": sid, "mcp-protocol-version": "2025-11-25"}

        def received(method: str) -> int:
            r = http.post(probe.url, headers=h, json={"jsonrpc": "2.0", "id": "r", "method": "tools/call", "params": {"name": "received", "arguments": {}}})
            text = r.text if r.headers["content-type"].startswith("application/json") else r.text.split("data: ", 1)[1]
            return int(json.loads(json.loads(text)["result"]["content"][0]["text"]).get(method, 0))

        before = received("notifications/cancelled")
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            slow = pool.submit(http.post, probe.url, headers=h, json={"jsonrpc": "2.0", "id": 77, "method": "tools/call", "params": {"name": "sleep", "arguments": {"seconds": 8}}})
            time.sleep(0.5)
            began = time.monotonic()
            r = http.post(probe.url, headers=h, json={"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 77, "reason": "changed my mind"}})
            assert r.status_code == 202, r.text
            answer = slow.result(timeout=5)
            assert time.monotonic() - began < 3
        assert "-32800" in answer.text or "cancel" in answer.text, answer.text
        deadline = time.monotonic() + 4
        while received("notifications/cancelled") == before:
            assert time.monotonic() < deadline, "the server never heard of the cancellation"
            time.sleep(0.1)
