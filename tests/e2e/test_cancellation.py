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
from tests.e2e.test_sharing import _deploy_shared_probe
from tests.harness import Node


@pytest.fixture(scope="module")
def shared_probe(node: Node, tmp_path_factory: pytest.TempPathFactory) -> Hosted:
    """The probe with sharing = "shared": every session of a key on one instance."""
    return _deploy_shared_probe(node, tmp_path_factory, "cancels", "probe-cancels")


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


def test_a_legacy_clients_cancellation_ends_its_own_call_only(shared_probe: Hosted) -> None:
    """Two sessions on one shared instance each call with id 77; one cancels 77. Its call
    ends at once (-32800), the server hears the id it gave that call (the gateway's, not
    77), and the other session's call with the same id runs to its answer."""

    def post(http: httpx.Client, sid: str, body: dict[str, object]) -> httpx.Response:
        h = {"accept": ACCEPT, "content-type": "application/json", "mcp-session-id": sid, "mcp-protocol-version": "2025-11-25"}
        return http.post(shared_probe.url, headers=h, json=body)

    def answer(r: httpx.Response) -> dict[str, object]:
        text = r.text if r.headers["content-type"].startswith("application/json") else r.text.split("data: ", 1)[1]
        return json.loads(text)  # type: ignore[no-any-return]

    def seen(http: httpx.Client, sid: str) -> dict[str, list[object]]:
        r = post(http, sid, {"jsonrpc": "2.0", "id": "c", "method": "tools/call", "params": {"name": "cancellations", "arguments": {}}})
        return json.loads(answer(r)["result"]["content"][0]["text"])  # type: ignore[index]

    sleep = {"jsonrpc": "2.0", "id": 77, "method": "tools/call", "params": {"name": "sleep", "arguments": {"seconds": 3}}}
    with httpx.Client(headers={"authorization": f"Bearer {shared_probe.key}"}, timeout=30) as http:
        a, b = open_legacy_session(http, shared_probe.url, {}), open_legacy_session(http, shared_probe.url, {})
        before = seen(http, a)
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            call_a = pool.submit(post, http, a, sleep)
            call_b = pool.submit(post, http, b, sleep)
            deadline = time.monotonic() + 5
            while len(seen(http, a)["slept"]) < len(before["slept"]) + 2:
                assert time.monotonic() < deadline, "the two calls never reached the server"
                time.sleep(0.05)
            began = time.monotonic()
            r = post(http, a, {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 77, "reason": "changed my mind"}})
            assert r.status_code == 202, r.text
            ended = answer(call_a.result(timeout=5))
            assert time.monotonic() - began < 1.5, "the cancelled call was not ended at once"
            assert ended["id"] == 77 and ended["error"]["code"] == -32800, ended  # type: ignore[index]
            finished = answer(call_b.result(timeout=10))
        assert finished["id"] == 77 and "result" in finished, finished
        after = seen(http, b)
    slept = after["slept"][len(before["slept"]):]
    cancelled = after["cancelled"][len(before["cancelled"]):]
    assert len(slept) == 2 and 77 not in slept, slept
    # The server heard of exactly one cancellation, for one of the two calls it served.
    assert len(cancelled) == 1 and cancelled[0] in slept, (cancelled, slept)
