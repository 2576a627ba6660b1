"""The gateway's answers to bad or hostile HTTP: statuses, headers and JSON-RPC errors."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import Hosted
from tests.harness import Node

ACCEPT = "application/json, text/event-stream"
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
}


def _headers(key: str | None, **extra: str) -> dict[str, str]:
    h = {"accept": ACCEPT, "content-type": "application/json", **extra}
    if key:
        h["authorization"] = f"Bearer {key}"
    return h


def _session(hosted: Hosted) -> str:
    r = httpx.post(hosted.url, json=INIT, headers=_headers(hosted.key), timeout=30)
    assert r.status_code == 200, r.text
    sid = r.headers["mcp-session-id"]
    r = httpx.post(
        hosted.url,
        json={"jsonrpc": "2.0", "method": "notifications/initialized"},
        headers=_headers(hosted.key, **{"mcp-session-id": sid, "mcp-protocol-version": "2025-11-25"}),
    )
    assert r.status_code == 202
    return sid


def test_missing_key_is_401_with_challenge(demo: Hosted) -> None:
    r = httpx.post(demo.url, json=INIT, headers=_headers(None))
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer ")


def test_wrong_key_is_401(demo: Hosted) -> None:
    r = httpx.post(demo.url, json=INIT, headers=_headers("smcp_000000000000_nope"))
    assert r.status_code == 401
    assert "www-authenticate" in r.headers
    r = httpx.post(demo.url, json=INIT, headers=_headers(demo.key[:-2] + "xx"))
    assert r.status_code == 401


def test_foreign_tenant_key_looks_like_unknown_server(node: Node, demo: Hosted, probe: Hosted) -> None:
    # mallory's key on acme's server, and on a server that does not exist at all.
    foreign = httpx.post(demo.url, json=INIT, headers=_headers(probe.key))
    missing = httpx.post(node.mcp_url(probe.tenant, "no-such-server"), json=INIT, headers=_headers(probe.key))
    other_tenant_missing = httpx.post(node.mcp_url("nobody", "demo"), json=INIT, headers=_headers(probe.key))
    assert foreign.status_code == missing.status_code == other_tenant_missing.status_code == 404
    assert foreign.content == missing.content == other_tenant_missing.content


def test_revoked_key_stops_working(node: Node, demo: Hosted) -> None:
    created = node.create_key(demo.tenant, "short-lived")
    ok = httpx.post(demo.url, json=INIT, headers=_headers(created["token"]), timeout=30)
    assert ok.status_code == 200
    with node.api() as api:
        assert api.delete(f"/tenants/{demo.tenant}/keys/{created['id']}").status_code == 204
    r = httpx.post(demo.url, json=INIT, headers=_headers(created["token"]))
    assert r.status_code == 401


def test_bad_origin_is_403(demo: Hosted) -> None:
    r = httpx.post(demo.url, json=INIT, headers=_headers(demo.key, origin="https://evil.example.com"))
    assert r.status_code == 403


def test_bad_host_is_refused(demo: Hosted) -> None:
    r = httpx.post(demo.url, json=INIT, headers=_headers(demo.key, host="evil.example.com"))
    assert r.status_code == 403


def test_same_origin_is_allowed(node: Node, demo: Hosted) -> None:
    r = httpx.post(demo.url, json=INIT, headers=_headers(demo.key, origin=node.base_url), timeout=30)
    assert r.status_code == 200


def test_oversized_body_is_413(demo: Hosted) -> None:
    big = b'{"jsonrpc":"2.0","id":1,"method":"x","params":{"p":"' + b"a" * (5 * 1024 * 1024) + b'"}}'
    r = httpx.post(demo.url, content=big, headers=_headers(demo.key))
    assert r.status_code == 413


def test_malformed_json_is_parse_error(demo: Hosted) -> None:
    r = httpx.post(demo.url, content=b'{"jsonrpc": "2.0", "id": 1, "method": ', headers=_headers(demo.key))
    assert r.status_code == 400
    assert r.json()["error"]["code"] == -32700


@pytest.mark.parametrize(
    "body",
    [b"[" * 5000 + b"]" * 5000, b'{"jsonrpc":"2.0","id":1,"method":"x","params":{"s":"\\ud800"}}', b'{"a": NaN}'],
    ids=["deep", "lone-surrogate", "nan"],
)
def test_pathological_json_is_parse_error(demo: Hosted, body: bytes) -> None:
    sid = _session(demo)
    r = httpx.post(demo.url, content=body, headers=_headers(demo.key, **{"mcp-session-id": sid}))
    assert r.status_code == 400
    assert r.json()["error"]["code"] == -32700


def test_missing_session_is_400(demo: Hosted) -> None:
    r = httpx.post(demo.url, json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, headers=_headers(demo.key))
    assert r.status_code == 400


def test_unknown_session_is_404(demo: Hosted) -> None:
    r = httpx.post(
        demo.url,
        json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        headers=_headers(demo.key, **{"mcp-session-id": "not-a-session"}),
    )
    assert r.status_code == 404


def test_session_is_bound_to_its_principal(node: Node, demo: Hosted) -> None:
    sid = _session(demo)
    second_key = node.create_key(demo.tenant, "same-tenant-other-key")["token"]
    r = httpx.post(
        demo.url,
        json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        headers=_headers(second_key, **{"mcp-session-id": sid}),
    )
    assert r.status_code == 404
    r = httpx.post(
        demo.url,
        json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        headers=_headers(demo.key, **{"mcp-session-id": sid}),
    )
    assert r.status_code == 200
    assert r.json()["result"]["tools"]


def test_unsupported_protocol_version_is_400(demo: Hosted) -> None:
    sid = _session(demo)
    r = httpx.post(
        demo.url,
        json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        headers=_headers(demo.key, **{"mcp-session-id": sid, "mcp-protocol-version": "1999-01-01"}),
    )
    assert r.status_code == 400


def test_wrong_accept_and_content_type(demo: Hosted) -> None:
    r = httpx.post(demo.url, json=INIT, headers={**_headers(demo.key), "accept": "application/json"})
    assert r.status_code == 406
    r = httpx.post(demo.url, content=b"{}", headers={**_headers(demo.key), "content-type": "text/plain"})
    assert r.status_code == 415


def test_duplicate_in_flight_id_is_refused(probe: Hosted) -> None:
    sid = _session(probe)
    headers = _headers(probe.key, **{"mcp-session-id": sid})
    call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "sleep", "arguments": {"seconds": 1.5}}}
    with httpx.Client(timeout=30) as c:
        import threading

        results: list[httpx.Response] = []
        t = threading.Thread(target=lambda: results.append(c.post(probe.url, json=call, headers=headers)))
        t.start()
        import time

        time.sleep(0.4)
        dup = c.post(probe.url, json=call, headers=headers)
        t.join()
    assert dup.status_code == 400
    assert "already in flight" in dup.json()["error"]["message"]
    assert results[0].status_code == 200


def test_get_stream_and_delete(demo: Hosted) -> None:
    sid = _session(demo)
    h = {"authorization": f"Bearer {demo.key}", "mcp-session-id": sid, "accept": "text/event-stream"}
    with httpx.stream("GET", demo.url, headers=h, timeout=10) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
    r = httpx.get(demo.url, headers={**h, "mcp-session-id": ""})
    assert r.status_code == 400
    r = httpx.delete(demo.url, headers=h)
    assert r.status_code == 204
    r = httpx.post(
        demo.url,
        json={"jsonrpc": "2.0", "id": 3, "method": "tools/list"},
        headers=_headers(demo.key, **{"mcp-session-id": sid}),
    )
    assert r.status_code == 404


def test_unknown_methods_are_forwarded(demo: Hosted) -> None:
    sid = _session(demo)
    r = httpx.post(
        demo.url,
        json={"jsonrpc": "2.0", "id": 9, "method": "vendor/unknown", "params": {}},
        headers=_headers(demo.key, **{"mcp-session-id": sid}),
    )
    # The server, not the gateway, answers: method not found from the SDK.
    assert r.status_code == 200
    assert r.json()["error"]["code"] == -32601


def test_answers_do_not_name_the_server_software(node: Node, demo: Hosted) -> None:
    for r in (httpx.get(demo.url, timeout=10), httpx.get(node.mcp_url("acme", "nope"), timeout=10)):
        assert "server" not in r.headers, r.headers
