"""A server that dies, stalls or floods: the client gets an answer, never a hang."""

from __future__ import annotations

import time

from tests.conftest import Hosted
from tests.e2e.probe_client import ProbeSession
from tests.harness import Node


def test_crash_mid_call_is_an_error_not_a_hang(probe: Hosted) -> None:
    s = ProbeSession(probe)
    try:
        started = time.monotonic()
        r, messages = s.rpc("tools/call", {"name": "crash", "arguments": {"code": 3}})
        elapsed = time.monotonic() - started
        assert elapsed < 5
        assert r.status_code == 200
        assert messages[-1]["error"]["code"] == -32002
        assert "exited with code 3" in messages[-1]["error"]["message"]
        # The instance is restarted behind the same session, with the handshake replayed.
        s.wait_until_answering()
        assert s.ok("whoami")["uid"] != 0
    finally:
        s.close()
    # A fresh session works too.
    fresh = ProbeSession(probe)
    try:
        assert fresh.ok("sleep", seconds=0)["slept"] == 0
    finally:
        fresh.close()


def test_slow_call_times_out_with_an_error(probe: Hosted) -> None:
    s = ProbeSession(probe)
    try:
        started = time.monotonic()
        r, messages = s.rpc("tools/call", {"name": "sleep", "arguments": {"seconds": 30}})
        assert time.monotonic() - started < 15  # the node runs with request_timeout_s=8
        assert messages[-1]["error"]["code"] == -32001
    finally:
        s.close()


def test_notifications_stream_before_the_answer(probe: Hosted) -> None:
    s = ProbeSession(probe)
    try:
        r, messages = s.rpc("tools/call", {"name": "notify", "arguments": {"n": 3}})
        assert r.headers["content-type"].startswith("text/event-stream")
        assert [m.get("method") for m in messages[:3]] == ["notifications/message"] * 3
        assert "result" in messages[-1]
    finally:
        s.close()


def test_stderr_reaches_server_logs(node: Node, probe: Hosted) -> None:
    s = ProbeSession(probe)
    try:
        s.ok("stderr", text="probe-log-marker-123", lines=2)
    finally:
        s.close()
    with node.api() as api:
        r = api.get(f"/tenants/{probe.tenant}/servers/{probe.server}/logs", params={"limit": 500})
    assert r.status_code == 200
    texts = [line["text"] for line in r.json()]
    assert texts.count("probe-log-marker-123") >= 2
    assert any("started" in t for t in texts)


def test_instances_are_listed_and_stopped_with_their_session(node: Node, probe: Hosted) -> None:
    s = ProbeSession(probe)
    with node.api() as api:
        listed = api.get(f"/tenants/{probe.tenant}/servers/{probe.server}/instances").json()
        assert any(i["state"] == "running" for i in listed)
        before = len(listed)
        s.close()
        deadline = time.monotonic() + 10
        while len(api.get(f"/tenants/{probe.tenant}/servers/{probe.server}/instances").json()) >= before:
            assert time.monotonic() < deadline
            time.sleep(0.1)
