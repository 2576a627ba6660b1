"""Legacy-era SSE: priming event, retry, and resumption with Last-Event-ID after a drop."""

from __future__ import annotations

import json
import time

import httpx

from tests.conftest import Hosted

ACCEPT = "application/json, text/event-stream"


def _open(hosted: Hosted) -> dict[str, str]:
    headers = {"authorization": f"Bearer {hosted.key}", "accept": ACCEPT, "content-type": "application/json"}
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}
    r = httpx.post(hosted.url, json=init, headers=headers, timeout=30)
    headers = {**headers, "mcp-session-id": r.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
    httpx.post(hosted.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers, timeout=30)
    return headers


def _events(lines: list[str]) -> list[dict[str, str]]:
    events, current = [], {}
    for line in lines:
        if not line:
            if current:
                events.append(current)
            current = {}
            continue
        key, _, value = line.partition(":")
        current[key] = value.lstrip(" ")
    return events


def test_dropped_stream_resumes_with_last_event_id(demo: Hosted) -> None:
    headers = _open(demo)
    call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "countdown", "arguments": {"n": 12}, "_meta": {"progressToken": "t"}}}
    seen: list[str] = []
    with httpx.Client(timeout=30) as client, client.stream("POST", demo.url, json=call, headers=headers) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            seen.append(line)
            events = _events(seen + [""])
            if any(e.get("data") for e in events):
                break  # got one real event: drop the connection mid-stream
    events = _events(seen + [""])
    priming = events[0]
    assert priming["id"].endswith("-0") and priming["retry"].isdigit() and priming.get("data", "") == ""
    last_id = [e for e in events if e.get("data")][-1]["id"]
    first_progress = json.loads([e for e in events if e.get("data")][-1]["data"])
    time.sleep(1.2)  # the countdown finishes while nobody is connected

    r = httpx.get(demo.url, headers={**headers, "accept": "text/event-stream", "last-event-id": last_id}, timeout=30)
    resumed = [json.loads(e["data"]) for e in _events(r.text.splitlines() + [""]) if e.get("data")]
    progress = [m["params"]["progress"] for m in resumed if m.get("method") == "notifications/progress"]
    assert progress == list(range(int(first_progress["params"]["progress"]) + 1, 13))
    assert resumed[-1]["id"] == 7 and "liftoff" in json.dumps(resumed[-1]["result"])


def test_replay_never_crosses_streams(demo: Hosted) -> None:
    headers = _open(demo)
    # An unknown stream id opens a fresh GET stream instead of replaying anything.
    with httpx.Client(timeout=5) as client, client.stream(
        "GET", demo.url, headers={**headers, "accept": "text/event-stream", "last-event-id": "p999-0"}
    ) as r:
        assert r.status_code == 200
        first = next(r.iter_lines())
        assert first.startswith("id: g")
