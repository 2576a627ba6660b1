"""Sharing modes: `shared`, `per-principal` and `per-session` map sessions to instances."""

from __future__ import annotations

import concurrent.futures
import json
import shutil
import time

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import Hosted
from tests.e2e.probe_client import ProbeSession
from tests.harness import EXAMPLES, Node


def _client(url: str, key: str) -> Client:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=30)
    return Client(streamable_http_client(url, http_client=http), mode="legacy")


def _instances(node: Node, tenant: str, server: str) -> list[dict]:
    with node.api() as api:
        r = api.get(f"/tenants/{tenant}/servers/{server}/instances")
        assert r.status_code == 200, r.text
        return [i for i in r.json() if i["state"] in ("running", "starting", "restarting")]


@pytest.fixture(scope="module")
def per_principal(node: Node, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, str]:
    src = tmp_path_factory.mktemp("pp") / "demo"
    shutil.copytree(EXAMPLES / "demo", src)
    spec = (src / "smcp.toml").read_text().replace('name = "demo"', 'name = "demo-pp"\nsharing = "per-principal"')
    (src / "smcp.toml").write_text(spec)
    node.create_tenant("sharing")
    r = node.deploy("sharing", src)
    assert r.status_code == 201, r.text
    return r.json()["url"], node.create_key("sharing", "alice")["token"], node.create_key("sharing", "bob")["token"]


@pytest.mark.asyncio
async def test_per_principal_gives_each_key_its_own_instance(node: Node, per_principal: tuple[str, str, str]) -> None:
    url, alice, bob = per_principal
    async with _client(url, alice) as a1, _client(url, alice) as a2, _client(url, bob) as b1:
        for client, text in ((a1, "a1"), (a2, "a2"), (b1, "b1")):
            assert (await client.call_tool("echo", {"text": text})).content[0].text == text
        assert len(_instances(node, "sharing", "demo-pp")) == 2


@pytest.mark.asyncio
async def test_shared_serves_every_session_from_one_instance(node: Node, demo: Hosted) -> None:
    other_key = node.create_key(demo.tenant, "second-principal")["token"]
    async with _client(demo.url, demo.key) as warm:
        await warm.call_tool("echo", {"text": "warm"})
        before = {i["id"] for i in _instances(node, demo.tenant, demo.server)}
        # A dual-era server may have one instance per era (modern requests use the
        # other); legacy sessions, however many, add none.
        assert 1 <= len(before) <= 2
        async with _client(demo.url, demo.key) as a, _client(demo.url, demo.key) as b, _client(demo.url, other_key) as c:
            for client, text in ((a, "a"), (b, "b"), (c, "c")):
                assert (await client.call_tool("echo", {"text": text})).content[0].text == text
            assert {i["id"] for i in _instances(node, demo.tenant, demo.server)} == before


@pytest.mark.asyncio
async def test_shared_sessions_get_their_own_progress(demo: Hosted) -> None:
    import asyncio

    seen: dict[str, list[float]] = {"a": [], "b": []}

    def recorder(name: str):  # type: ignore[no-untyped-def]
        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen[name].append(progress)

        return on_progress

    async with _client(demo.url, demo.key) as a, _client(demo.url, demo.key) as b:
        await asyncio.gather(
            a.call_tool("countdown", {"n": 3}, progress_callback=recorder("a")),
            b.call_tool("countdown", {"n": 2}, progress_callback=recorder("b")),
        )
    assert seen == {"a": [1, 2, 3], "b": [1, 2]}


def test_shared_session_survives_a_node_restart() -> None:
    """The sealed session id carries its routing state: a restarted node picks it up."""
    import tempfile
    from pathlib import Path

    import httpx

    from tests.harness import start_node

    base = Path(tempfile.mkdtemp(prefix="smcp-restart-"))
    base.chmod(0o711)
    node = start_node(base / "data")
    try:
        node.create_tenant("restart")
        key = node.create_key("restart")["token"]
        assert node.deploy("restart", EXAMPLES / "demo").status_code == 201
        headers = {"authorization": f"Bearer {key}", "accept": "application/json, text/event-stream", "content-type": "application/json"}
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}
        r = httpx.post(node.mcp_url("restart", "demo"), json=init, headers=headers, timeout=30)
        sid = r.headers["mcp-session-id"]
        call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "before"}}}
        session_headers = {**headers, "mcp-session-id": sid, "mcp-protocol-version": "2025-11-25"}
        assert httpx.post(node.mcp_url("restart", "demo"), json=call, headers=session_headers, timeout=30).json()["result"]
        assert node.stop() == 0

        node = start_node(base / "data")
        call["params"]["arguments"]["text"] = "after"
        r = httpx.post(node.mcp_url("restart", "demo"), json=call, headers=session_headers, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["result"]["content"][0]["text"] == "after"
        # Tampering with the id, or another key presenting it, finds nothing.
        forged = sid[:-4] + ("AAAA" if not sid.endswith("AAAA") else "BBBB")
        r = httpx.post(node.mcp_url("restart", "demo"), json=call, headers={**session_headers, "mcp-session-id": forged}, timeout=30)
        assert r.status_code == 404
        other = node.create_key("restart", "other")["token"]
        r = httpx.post(node.mcp_url("restart", "demo"), json=call,
                       headers={**session_headers, "authorization": f"Bearer {other}"}, timeout=30)
        assert r.status_code == 404
        # An ended session stays ended, also for a node that never saw the DELETE
        # (here: the same node restarted, its memory gone; the store remembers).
        assert httpx.delete(node.mcp_url("restart", "demo"), headers=session_headers, timeout=30).status_code == 204
        r = httpx.post(node.mcp_url("restart", "demo"), json=call, headers=session_headers, timeout=30)
        assert r.status_code == 404
        assert node.stop() == 0
        node = start_node(base / "data")
        r = httpx.post(node.mcp_url("restart", "demo"), json=call, headers=session_headers, timeout=30)
        assert r.status_code == 404, r.text
    finally:
        node.stop()
        import shutil

        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def shared_probe(node: Node, tmp_path_factory: pytest.TempPathFactory) -> Hosted:
    return _deploy_shared_probe(node, tmp_path_factory, "logs", "probe-shared")


def _deploy_shared_probe(node: Node, tmp_path_factory: pytest.TempPathFactory, tenant: str, name: str) -> Hosted:
    """The probe, deployed for `tenant` as `name` with sharing = "shared"."""
    src = tmp_path_factory.mktemp(name) / "probe"
    shutil.copytree(EXAMPLES / "probe", src)
    spec = (src / "smcp.toml").read_text().replace('sharing = "per-session"', 'sharing = "shared"').replace('name = "probe"', f'name = "{name}"')
    (src / "smcp.toml").write_text(spec)
    node.create_tenant(tenant)
    r = node.deploy(tenant, src)
    assert r.status_code == 201, r.text
    return Hosted(tenant, name, node.create_key(tenant)["token"], r.json()["url"])


def _logs(messages: list[dict]) -> list[str]:
    return [m["params"]["level"] for m in messages if m.get("method") == "notifications/message"]


def test_log_level_is_per_session_on_a_shared_instance(shared_probe: Hosted) -> None:
    quiet, chatty = ProbeSession(shared_probe), ProbeSession(shared_probe)
    r, messages = quiet.rpc("logging/setLevel", {"level": "warning"})
    assert messages[-1]["result"] == {}
    r, messages = chatty.rpc("logging/setLevel", {"level": "debug"})
    assert messages[-1]["result"] == {}

    # The quiet session is not given info logs, though the shared process sends them...
    r, messages = quiet.rpc("tools/call", {"name": "notify", "arguments": {"n": 2, "level": "info"}})
    assert _logs(messages) == []
    # ...because the process logs as verbosely as its most verbose session wants.
    assert '"server_level": "debug"' in messages[-1]["result"]["content"][0]["text"]
    r, messages = quiet.rpc("tools/call", {"name": "notify", "arguments": {"n": 2, "level": "error"}})
    assert _logs(messages) == ["error", "error"]
    r, messages = chatty.rpc("tools/call", {"name": "notify", "arguments": {"n": 2, "level": "debug"}})
    assert _logs(messages) == ["debug", "debug"]


def test_log_level_must_be_a_known_level(shared_probe: Hosted) -> None:
    session = ProbeSession(shared_probe)
    for bad in ("verbose", 3, None):
        r, messages = session.rpc("logging/setLevel", {"level": bad})
        assert messages[-1]["error"]["code"] == -32602, messages
        assert "level must be one of debug" in messages[-1]["error"]["message"]


def _server_level(session: ProbeSession) -> str | None:
    r, messages = session.rpc("tools/call", {"name": "notify", "arguments": {"n": 0}})
    return json.loads(messages[-1]["result"]["content"][0]["text"])["server_level"]


def test_a_shared_instance_logs_no_more_verbosely_than_its_sessions_still_ask(node: Node, tmp_path_factory: pytest.TempPathFactory) -> None:
    hosted = _deploy_shared_probe(node, tmp_path_factory, "levels", "probe-levels")

    quiet, chatty = ProbeSession(hosted), ProbeSession(hosted)
    quiet.rpc("logging/setLevel", {"level": "warning"})
    assert _server_level(quiet) == "warning"
    chatty.rpc("logging/setLevel", {"level": "debug"})
    assert _server_level(quiet) == "debug"
    chatty.rpc("logging/setLevel", {"level": "error"})  # asks for less: the most verbose left is quiet's
    assert _server_level(quiet) == "warning"
    chatty.rpc("logging/setLevel", {"level": "debug"})
    assert _server_level(quiet) == "debug"
    chatty.close()  # the session that wanted debug is gone
    assert _server_level(quiet) == "warning"

    # A restarted process starts at its default: the level asked for is set again.
    r, messages = quiet.rpc("tools/call", {"name": "crash", "arguments": {}})
    assert messages[-1]["error"]["code"] == -32002
    quiet.wait_until_answering()
    assert _server_level(quiet) == "warning"
    quiet.close()


def test_tasks_on_a_shared_instance_belong_to_the_principal_that_created_them(node: Node, shared_probe: Hosted) -> None:
    """The probe, like a single-user server, serves any task to whoever asks; on a
    shared instance the gateway binds each task to its creator (MCP tasks, Security
    Considerations: reject other contexts' task ids, list only the requestor's own)."""
    other_key = node.create_key(shared_probe.tenant)["token"]
    mine = ProbeSession(shared_probe)
    theirs = ProbeSession(Hosted(shared_probe.tenant, shared_probe.server, other_key, shared_probe.url))
    r, messages = mine.rpc("tools/call", {"name": "sleep", "arguments": {"seconds": 0.8}, "task": {}})
    task_id = messages[-1]["result"]["task"]["taskId"]

    # The probe is never asked about the task for them: it answers as for any unknown id.
    for method in ("tasks/get", "tasks/result", "tasks/cancel"):
        r, messages = theirs.rpc(method, {"taskId": task_id})
        assert messages[-1]["error"]["code"] == -32602, (method, messages)
        assert messages[-1]["error"]["message"].startswith("Unknown task: smcp-no-such-task-"), (method, messages)
    r, messages = theirs.rpc("tasks/list")
    assert task_id not in [t["taskId"] for t in messages[-1]["result"]["tasks"]]
    r, messages = mine.rpc("tasks/get", {"taskId": "task-made-up"})
    assert messages[-1]["error"]["code"] == -32602

    # Its status notification reaches the creator's sessions only: both are busy in a
    # request when the task completes.
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        busy = [pool.submit(s.rpc, "tools/call", {"name": "sleep", "arguments": {"seconds": 1.5}}) for s in (mine, theirs)]
        (_, mine_saw), (_, theirs_saw) = (f.result() for f in busy)
    status = "notifications/tasks/status"
    assert [m["params"]["taskId"] for m in mine_saw if m.get("method") == status] == [task_id]
    assert not [m for m in theirs_saw if m.get("method") == status]

    # The creator, from another session too (tasks outlive sessions).
    again = ProbeSession(shared_probe)
    r, messages = again.rpc("tasks/get", {"taskId": task_id})
    assert messages[-1]["result"]["status"] == "completed"
    r, messages = again.rpc("tasks/list")
    assert task_id in [t["taskId"] for t in messages[-1]["result"]["tasks"]]
    r, messages = mine.rpc("tasks/result", {"taskId": task_id})
    assert '"slept": 0.8' in messages[-1]["result"]["content"][0]["text"]
    for s in (mine, theirs, again):
        s.close()


def _first_event(session: ProbeSession, timeout: float) -> dict:
    """The first message on the session's GET stream (its backlog comes first)."""
    headers = {**session._headers(), "accept": "text/event-stream"}
    with httpx.stream("GET", session.hosted.url, headers=headers, timeout=timeout) as r:
        for line in r.iter_lines():
            if line.startswith("data:") and line[5:].strip():
                return json.loads(line[5:])
    raise AssertionError("the GET stream ended without a message")


def test_a_request_the_server_makes_for_a_task_goes_to_the_tasks_owner(node: Node, shared_probe: Hosted) -> None:
    """Not to whoever has a request in flight: another principal's session must never
    be asked, and answer, for someone else's task."""
    mine = ProbeSession(shared_probe)
    theirs = ProbeSession(Hosted(shared_probe.tenant, shared_probe.server, node.create_key(shared_probe.tenant)["token"], shared_probe.url))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        busy = pool.submit(theirs.rpc, "tools/call", {"name": "sleep", "arguments": {"seconds": 2}})
        time.sleep(0.5)  # theirs is now the newest request in flight
        _, messages = mine.rpc("tools/call", {"name": "ask_roots", "arguments": {"timeout": 15}, "task": {}})
        task_id = messages[-1]["result"]["task"]["taskId"]
        asked = _first_event(mine, 10)
        _, theirs_saw = busy.result()
    assert asked["method"] == "roots/list"
    assert asked["params"]["_meta"]["io.modelcontextprotocol/related-task"] == {"taskId": task_id}
    assert not [m for m in theirs_saw if m.get("method") == "roots/list"], theirs_saw

    r = mine.http.post(shared_probe.url, json={"jsonrpc": "2.0", "id": asked["id"], "result": {"roots": [{"uri": "file:///mine"}]}},
                       headers=mine._headers())
    assert r.status_code == 202, r.text
    _, messages = mine.rpc("tasks/result", {"taskId": task_id})
    assert "file:///mine" in messages[-1]["result"]["content"][0]["text"]
    for s in (mine, theirs):
        s.close()
