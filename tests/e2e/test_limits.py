"""Limits are settings and each one holds: server message size, pending requests per session."""

from __future__ import annotations

import concurrent.futures
import time

from tests.conftest import Hosted
from tests.e2e.probe_client import ProbeSession


def test_server_message_over_the_limit_is_an_error_and_the_session_recovers(probe: Hosted) -> None:
    s = ProbeSession(probe)
    try:
        started = time.monotonic()
        # The node runs with max_message_bytes = 1 MiB (tests/conftest.py).
        # Over twice the limit: the reader pauses its pipe, the case that once hid the exit.
        r, messages = s.rpc("tools/call", {"name": "big", "arguments": {"nbytes": 4 * 1024 * 1024}})
        assert time.monotonic() - started < 10
        assert r.status_code == 200
        error = messages[-1]["error"]
        assert error["code"] == -32002 and "limit" in error["message"]
        s.wait_until_answering(timeout=15, every=0.3)
        assert len(s.ok("big", nbytes=1000)) == 1000
    finally:
        s.close()


def test_pending_requests_per_session_are_capped(probe: Hosted) -> None:
    s = ProbeSession(probe)
    try:
        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            results = list(pool.map(lambda _: s.rpc("tools/call", {"name": "sleep", "arguments": {"seconds": 1.5}}), range(12)))
        statuses = sorted(r.status_code for r, _ in results)
        # max_pending_per_session = 8 on the test node: the rest are refused at once.
        assert statuses.count(200) == 8 and statuses.count(429) == 4, statuses
        refused = next(m for r, m in results if r.status_code == 429)
        assert refused[-1]["error"]["code"] == -32003
    finally:
        s.close()
