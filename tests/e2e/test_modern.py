"""The 2026-07-28 (stateless) era at the same endpoint, bridged onto legacy stdio servers."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import time
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import Hosted

MODERN = "2026-07-28"
ACCEPT = "application/json, text/event-stream"


def _meta(**extra: Any) -> dict[str, Any]:
    return {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "0"},
        "io.modelcontextprotocol/clientCapabilities": {},
        **extra,
    }


def _post(hosted: Hosted, body: dict[str, Any], **headers: str) -> httpx.Response:
    h = {
        "authorization": f"Bearer {hosted.key}",
        "accept": ACCEPT,
        "content-type": "application/json",
        "mcp-protocol-version": MODERN,
        "mcp-method": body.get("method", ""),
        **{k.replace("_", "-"): v for k, v in headers.items()},
    }
    return httpx.post(hosted.url, json=body, headers=h, timeout=30)


@pytest.mark.asyncio
async def test_sdk_client_in_modern_mode(demo: Hosted) -> None:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {demo.key}"}, timeout=30)
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async with Client(streamable_http_client(demo.url, http_client=http), mode=MODERN) as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        assert {"echo", "countdown"} <= tools
        result = await client.call_tool("echo", {"text": "modern hello"})
        assert result.content[0].text == "modern hello"
        result = await client.call_tool("countdown", {"n": 2}, progress_callback=on_progress)
        assert "liftoff" in result.content[0].text
    assert len(seen) == 2


def test_server_discover_is_synthesised(demo: Hosted) -> None:
    r = _post(demo, {"jsonrpc": "2.0", "id": "d1", "method": "server/discover", "params": {"_meta": _meta()}})
    assert r.status_code == 200, r.text
    result = r.json()["result"]
    assert MODERN in result["supportedVersions"] and "2025-11-25" in result["supportedVersions"]
    assert "tools" in result["capabilities"]
    assert result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "demo"


def test_concurrent_clients_with_the_same_id_get_their_own_answers(demo: Hosted) -> None:
    import concurrent.futures

    def call(text: str) -> str:
        body = {
            "jsonrpc": "2.0",
            "id": 1,  # every client uses id 1: the gateway must keep them apart
            "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": text}, "_meta": _meta()},
        }
        r = _post(demo, body, mcp_name="echo")
        assert r.status_code == 200, r.text
        assert r.json()["id"] == 1
        return r.json()["result"]["content"][0]["text"]

    texts = [f"client-{i}" for i in range(12)]
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        assert list(pool.map(call, texts)) == texts


def test_header_mismatch_is_32020(demo: Hosted) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "x"}, "_meta": _meta()}}
    r = _post(demo, body, mcp_name="add")
    assert r.status_code == 400 and r.json()["error"]["code"] == -32020
    r = _post(demo, body)  # Mcp-Name missing
    assert r.status_code == 400 and r.json()["error"]["code"] == -32020
    r = _post(demo, body, mcp_name="echo", mcp_method="tools/list")
    assert r.status_code == 400 and r.json()["error"]["code"] == -32020
    encoded = "=?base64?" + base64.b64encode(b"echo").decode() + "?="
    assert _post(demo, body, mcp_name=encoded).status_code == 200


def test_version_errors(demo: Hosted) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": _meta()}}
    r = _post(demo, body, mcp_protocol_version="2099-01-01")
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == -32022 and MODERN in err["data"]["supported"]
    mismatched = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": _meta(**{"io.modelcontextprotocol/protocolVersion": "2025-11-25"})}}
    r = _post(demo, mismatched)
    assert r.status_code == 400 and r.json()["error"]["code"] == -32020


def test_missing_meta_is_invalid_params(demo: Hosted) -> None:
    meta = _meta()
    del meta["io.modelcontextprotocol/clientCapabilities"]
    r = _post(demo, {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": meta}})
    assert r.status_code == 400 and r.json()["error"]["code"] == -32602


@pytest.mark.parametrize("method", ["initialize", "ping", "logging/setLevel", "resources/subscribe"])
def test_removed_methods_are_404(demo: Hosted, method: str) -> None:
    r = _post(demo, {"jsonrpc": "2.0", "id": 1, "method": method, "params": {"_meta": _meta()}})
    assert r.status_code == 404 and r.json()["error"]["code"] == -32601


def test_unknown_methods_are_forwarded(demo: Hosted) -> None:
    r = _post(demo, {"jsonrpc": "2.0", "id": 5, "method": "vendor/thing", "params": {"_meta": _meta()}})
    # The server, not the gateway, decides; this era maps "method not found" to 404.
    assert r.status_code == 404
    assert r.json()["id"] == 5 and r.json()["error"]["code"] == -32601


def test_progress_streams_with_the_clients_token(demo: Hosted) -> None:
    body = {
        "jsonrpc": "2.0",
        "id": "p1",
        "method": "tools/call",
        "params": {"name": "countdown", "arguments": {"n": 2}, "_meta": _meta(progressToken="mine")},
    }
    r = _post(demo, body, mcp_name="countdown")
    assert r.headers["content-type"].startswith("text/event-stream")
    import json

    messages = [json.loads(line[5:]) for line in r.text.splitlines() if line.startswith("data:") and line[5:].strip()]
    assert [m["params"]["progressToken"] for m in messages[:-1]] == ["mine", "mine"]
    assert messages[-1]["id"] == "p1" and "result" in messages[-1]


def test_modern_requests_fail_cleanly_when_the_server_crashes(probe: Hosted) -> None:
    body = {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "crash", "arguments": {}, "_meta": _meta()}}
    r = _post(probe, body, mcp_name="crash")
    assert r.status_code == 200
    assert r.json()["id"] == 9 and r.json()["error"]["code"] == -32002
    # The shared instance is restarted behind the bridge: the next call works.
    import time

    deadline = time.monotonic() + 15
    while True:
        r = _post(probe, {"jsonrpc": "2.0", "id": 10, "method": "tools/list", "params": {"_meta": _meta()}})
        if r.status_code == 200 and "result" in r.json():
            break
        assert time.monotonic() < deadline, r.text
        time.sleep(0.3)


def _messages(r: httpx.Response) -> list[dict[str, Any]]:
    if r.headers.get("content-type", "").startswith("text/event-stream"):
        import json

        return [json.loads(line[5:]) for line in r.text.splitlines() if line.startswith("data:") and line[5:].strip()]
    return [r.json()]


def _ask_roots(probe: Hosted, id: str, capabilities: dict[str, Any], **params: Any) -> httpx.Response:
    body = {"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": "ask_roots", "arguments": {"timeout": 20}, "_meta": _meta(**{"io.modelcontextprotocol/clientCapabilities": capabilities}), **params}}
    return _post(probe, body, mcp_name="ask_roots")


def test_a_legacy_servers_request_reaches_a_modern_caller_as_input_required(probe: Hosted) -> None:
    # The probe is a handshake-era server: mid-call it asks its client for roots and
    # waits. A modern caller is asked by an input_required result instead...
    r = _ask_roots(probe, "r1", {"roots": {}})
    assert r.status_code == 200, r.text
    result = _messages(r)[-1]["result"]
    assert result["resultType"] == "input_required", result
    (key, asked), = result["inputRequests"].items()
    assert asked["method"] == "roots/list"
    state = result["requestState"]
    # ...and answers by sending the request again with its response: the server gets
    # the answer, and the retry gets the call's own result.
    roots = {"roots": [{"uri": "file:///work", "name": "work"}]}
    r = _ask_roots(probe, "r2", {"roots": {}}, inputResponses={key: roots}, requestState=state)
    assert r.status_code == 200, r.text
    final = _messages(r)[-1]
    assert final["id"] == "r2"
    assert "file:///work" in final["result"]["content"][0]["text"], final
    # The state works once.
    r = _ask_roots(probe, "r3", {"roots": {}}, inputResponses={key: roots}, requestState=state)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == -32602 and "requestState" in r.json()["error"]["message"]


def test_a_modern_caller_without_the_capability_is_not_asked(probe: Hosted) -> None:
    r = _ask_roots(probe, "n1", {})
    final = _messages(r)[-1]
    assert final["result"].get("resultType") != "input_required"
    assert final["result"]["isError"] is True  # the server heard "not available" and failed the call


def test_another_callers_request_state_is_refused(node: Any, probe: Hosted) -> None:
    r = _ask_roots(probe, "o1", {"roots": {}})
    result = _messages(r)[-1]["result"]
    assert result["resultType"] == "input_required"
    other = Hosted(probe.tenant, probe.server, node.create_key(probe.tenant, "another")["token"], probe.url)
    r = _ask_roots(other, "o2", {"roots": {}}, inputResponses={"smcp": {"roots": []}}, requestState=result["requestState"])
    assert r.status_code == 400, r.text
    # The rightful caller still can.
    r = _ask_roots(probe, "o3", {"roots": {}}, inputResponses={"smcp": {"roots": []}}, requestState=result["requestState"])
    assert r.status_code == 200 and "response" in _messages(r)[-1]["result"]["content"][0]["text"]


@pytest.mark.asyncio
async def test_sdk_modern_client_answers_a_legacy_servers_roots_request(probe: Hosted) -> None:
    from mcp import types

    asked: list[bool] = []

    async def list_roots(_context: Any) -> types.ListRootsResult:
        asked.append(True)
        return types.ListRootsResult(roots=[types.Root(uri="file:///from-the-sdk", name="sdk")])

    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {probe.key}"}, timeout=30)
    async with Client(streamable_http_client(probe.url, http_client=http), mode=MODERN, list_roots_callback=list_roots) as client:
        result = await client.call_tool("ask_roots", {"timeout": 20})
    assert asked == [True]
    assert not result.is_error, result
    assert "file:///from-the-sdk" in result.content[0].text


def _tool(probe: Hosted, name: str, id: Any = 1) -> dict[str, Any]:
    body = {"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": name, "arguments": {}, "_meta": _meta()}}
    r = _post(probe, body, mcp_name=name)
    assert r.status_code == 200, r.text
    return r.json()


def _listings(probe: Hosted) -> int:
    answer = _tool(probe, "received")
    return int(json.loads(answer["result"]["content"][0]["text"]).get("tools/list", 0))


def test_the_tool_list_behind_header_checks_is_fetched_once_until_it_changes(probe: Hosted) -> None:
    """Checking a call's Mcp-Param-* headers needs the tool's schema. Calls of tools
    the server does not have, alone or concurrent, must not make the gateway list the
    tools again each time; the server saying its tools changed must."""
    _tool(probe, "tools_changed")
    before = _listings(probe)  # lists once, after the change

    for i in range(5):
        assert _tool(probe, "no_such_tool", id=i)["error"]["code"] == -32602
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: _tool(probe, "no_such_tool", id=i), range(8)))
    assert all(a["error"]["code"] == -32602 for a in answers)
    assert _listings(probe) == before

    _tool(probe, "tools_changed")
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: _tool(probe, "no_such_tool", id=i), range(8)))
    assert all(a["error"]["code"] == -32602 for a in answers)
    assert _listings(probe) == before + 1  # one listing, shared by the concurrent calls


def test_a_modern_callers_task_is_its_own(node: Any, probe: Hosted) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "sleep", "arguments": {"seconds": 0.1}, "task": {}, "_meta": _meta()}}
    task_id = _post(probe, body, mcp_name="sleep").json()["result"]["task"]["taskId"]
    other = Hosted(probe.tenant, probe.server, node.create_key(probe.tenant)["token"], probe.url)
    get = {"jsonrpc": "2.0", "id": 2, "method": "tasks/get", "params": {"taskId": task_id, "_meta": _meta()}}
    error = _post(other, get, mcp_name=task_id).json()["error"]
    assert error["code"] == -32602 and error["message"].startswith("Unknown task: smcp-no-such-task-"), error
    assert _post(probe, get, mcp_name=task_id).json()["result"]["taskId"] == task_id


def _listen(hosted: Hosted, params: dict[str, Any], until: str, timeout: float = 15) -> tuple[int, list[dict[str, Any]]]:
    """Open a subscriptions/listen stream; the messages on it until one has method `until`."""
    body = {"jsonrpc": "2.0", "id": "listen-1", "method": "subscriptions/listen", "params": {**params, "_meta": _meta()}}
    headers = {"authorization": f"Bearer {hosted.key}", "accept": ACCEPT, "content-type": "application/json",
               "mcp-protocol-version": MODERN, "mcp-method": "subscriptions/listen"}
    messages: list[dict[str, Any]] = []
    with httpx.stream("POST", hosted.url, json=body, headers=headers, timeout=timeout) as r:
        if not r.headers.get("content-type", "").startswith("text/event-stream"):
            r.read()
            return r.status_code, [r.json()]
        for line in r.iter_lines():
            if line.startswith("data:") and line[5:].strip():
                messages.append(json.loads(line[5:]))
                if messages[-1].get("method") == until:
                    break
    return r.status_code, messages


def test_a_bridged_listen_stream_carries_what_it_agreed_to(probe: Hosted) -> None:
    """A legacy-only server behind a modern client: the gateway keeps the listen stream
    from the instance's list-changed notifications, tagged with the subscription id."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        listening = pool.submit(_listen, probe, {"notifications": {"toolsListChanged": True, "promptsListChanged": False}},
                                "notifications/tools/list_changed")
        deadline = time.monotonic() + 15
        while not listening.done() and time.monotonic() < deadline:
            _tool(probe, "tools_changed")  # until the stream has been opened to hear one
            time.sleep(0.3)
        status, messages = listening.result(timeout=15)
    assert status == 200
    ack = messages[0]
    assert ack["method"] == "notifications/subscriptions/acknowledged"
    assert ack["params"]["notifications"] == {"toolsListChanged": True}
    changed = messages[-1]
    assert changed["method"] == "notifications/tools/list_changed"
    assert changed["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == "listen-1"


@pytest.mark.parametrize(
    "params, says",
    [
        ({}, "notifications must be an object"),
        ({"notifications": ["toolsListChanged"]}, "notifications must be an object"),
        ({"notifications": {"toolsListChanged": "yes"}}, "toolsListChanged must be a boolean"),
        ({"notifications": {"resourceSubscriptions": [{"uri": "demo://readme"}]}}, "array of strings"),
    ],
)
def test_a_bridged_listen_with_a_malformed_filter_is_invalid_params(probe: Hosted, params: dict[str, Any], says: str) -> None:
    """As a modern server answers it (-32602), not agreed to nothing on a silent stream."""
    status, messages = _listen(probe, params, until="")
    assert status == 200
    error = messages[0]["error"]
    assert error["code"] == -32602 and says in error["message"], error
