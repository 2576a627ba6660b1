"""runtime = "http": a remote MCP server behind the gateway, with the tenant's credentials."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.harness import ROOT, Node, free_port, start_node, wait_for_port

UPSTREAM_TOKEN = "upstream-secret-4f1c"


class Upstream:
    def __init__(self, port: int, seen: Path) -> None:
        self.port, self.seen = port, seen
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.e2e.upstream_server", str(self.port), UPSTREAM_TOKEN, str(self.seen)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, "the upstream")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def remote() -> Iterator[tuple[Node, Upstream, str, str]]:
    base = Path(tempfile.mkdtemp(prefix="smcp-http-"))
    base.chmod(0o711)
    upstream = Upstream(free_port(), base / "seen.txt")
    upstream.start()
    # Loopback is refused for http upstreams in production; this node allows it.
    node = start_node(base / "data", http_upstream_unsafe_allow='["127.0.0.0/8"]')
    try:
        node.create_tenant("remote")
        key = node.create_key("remote")["token"]
        with node.api() as api:
            r = api.put("/tenants/remote/secrets/UPSTREAM_TOKEN", json={"value": UPSTREAM_TOKEN})
            assert r.status_code in (200, 201, 204), r.text
        src = base / "remote"
        src.mkdir()
        (src / "smcp.toml").write_text(
            'name = "remote"\nruntime = "http"\nsecrets = ["UPSTREAM_TOKEN"]\n'
            f'[http]\nurl = "http://127.0.0.1:{upstream.port}/mcp"\n'
            'headers = { Authorization = "Bearer {secret:UPSTREAM_TOKEN}" }\n'
        )
        r = node.deploy("remote", src)
        assert r.status_code == 201, r.text
        yield node, upstream, key, r.json()["url"]
    finally:
        node.stop()
        upstream.stop()
        shutil.rmtree(base, ignore_errors=True)


def _client(url: str, key: str, mode: str = "legacy") -> Client:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=30)
    return Client(streamable_http_client(url, http_client=http), mode=mode)  # type: ignore[arg-type]


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_remote_server_through_the_gateway(remote: tuple[Node, Upstream, str, str], mode: str) -> None:
    node, upstream, key, url = remote
    async with _client(url, key, mode) as client:
        assert "echo" in {t.name for t in (await client.list_tools()).tools}
        assert (await client.call_tool("echo", {"text": f"via {mode}"})).content[0].text == f"via {mode}"
    seen = upstream.seen.read_text().splitlines()
    # The upstream saw the tenant's configured credential, never the client's API key.
    assert seen and all(line == f"Bearer {UPSTREAM_TOKEN}" for line in seen), set(seen)
    assert not any(key in line for line in seen)


@pytest.mark.asyncio
async def test_expired_upstream_session_is_reinitialized(remote: tuple[Node, Upstream, str, str]) -> None:
    node, upstream, key, url = remote
    async with _client(url, key) as client:
        assert (await client.call_tool("echo", {"text": "one"})).content[0].text == "one"
        upstream.stop()  # the upstream forgets every session
        upstream.start()
        assert (await client.call_tool("echo", {"text": "two"})).content[0].text == "two"


def test_a_modern_caller_leaving_closes_the_remote_servers_stream(remote: tuple[Node, Upstream, str, str]) -> None:
    """This era's cancellation, carried to a remote server as this era has it: the
    gateway closes its own request's response stream (no notification is posted)."""
    node, upstream, key, url = remote
    closed = upstream.seen.with_suffix(".closed")
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "0"}}
    body = {"jsonrpc": "2.0", "id": "long", "method": "tools/call", "params": {"name": "countdown", "arguments": {"n": 200}, "_meta": meta}}
    headers = {"authorization": f"Bearer {key}", "accept": "application/json, text/event-stream", "content-type": "application/json",
               "mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": "countdown"}
    with pytest.raises(httpx.ReadTimeout):  # countdown 200 takes ten seconds; the client gives up after one
        httpx.post(url, json=body, headers=headers, timeout=httpx.Timeout(30, read=1))
    deadline = time.monotonic() + 4
    while not (closed.exists() and '"countdown"' in closed.read_text()):
        assert time.monotonic() < deadline, "the remote server's stream stayed open after the caller left"
        time.sleep(0.1)


@pytest.mark.parametrize(
    "host",
    # Loopback in several spellings: refused by the default policy, and harmless to this
    # machine even if a check were missing (tests never aim at anything off loopback).
    ["127.0.0.1", "[::ffff:127.0.0.1]", "0x7f.1", "2130706433", "localhost"],
)
def test_private_upstreams_are_refused_by_default(node: Node, tmp_path: Path, host: str) -> None:
    node.create_tenant("ssrf")
    src = tmp_path / "ssrf"
    src.mkdir()
    name = "u" + str(abs(hash(host)) % 10**8)
    (src / "smcp.toml").write_text(f'name = "{name}"\nruntime = "http"\n[http]\nurl = "http://{host}:{node.port}/mcp"\n')
    assert node.deploy("ssrf", src).status_code == 201
    key = node.create_key("ssrf")["token"]
    import httpx

    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}
    r = httpx.post(node.mcp_url("ssrf", name), json=init, timeout=30, headers={
        "authorization": f"Bearer {key}", "accept": "application/json, text/event-stream", "content-type": "application/json"})
    body = json.dumps(r.json())
    assert "error" in r.json() and "public address" in body, body
    assert r.status_code == 503


@pytest.mark.parametrize("sharing", ["per-session", "shared"])
def test_a_remote_servers_tasks_are_bound_to_the_principal_that_created_them(sharing: str) -> None:
    """The remote server shows every task made with the tenant's credential to whoever
    presents it; through SMCP a principal sees, reads and lists its own only."""
    from tests.conftest import Hosted
    from tests.e2e.probe_client import ProbeSession

    base = Path(tempfile.mkdtemp(prefix="smcp-tasks-"))
    base.chmod(0o711)
    port = free_port()
    upstream = subprocess.Popen([sys.executable, "-m", "tests.e2e.tasks_upstream", str(port)], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    node = start_node(base / "data", http_upstream_unsafe_allow='["127.0.0.0/8"]')
    try:
        wait_for_port(port, "the tasks upstream")
        node.create_tenant("tasks")
        src = base / "remote"
        src.mkdir()
        (src / "smcp.toml").write_text(
            f'name = "remote"\nruntime = "http"\nsharing = "{sharing}"\n[http]\nurl = "http://127.0.0.1:{port}/mcp"\n'
        )
        r = node.deploy("tasks", src)
        assert r.status_code == 201, r.text
        url = r.json()["url"]
        mine = ProbeSession(Hosted("tasks", "remote", node.create_key("tasks")["token"], url))
        theirs = ProbeSession(Hosted("tasks", "remote", node.create_key("tasks")["token"], url))

        _, messages = mine.rpc("tools/call", {"name": "work", "arguments": {}, "task": {}})
        task_id = messages[-1]["result"]["task"]["taskId"]
        _, messages = theirs.rpc("tasks/get", {"taskId": task_id})
        # The remote server is asked about an id no task has, and says so.
        assert messages[-1]["error"] == {"code": -32602, "message": "no such task or method"}, messages
        _, messages = theirs.rpc("tasks/list")
        assert messages[-1]["result"]["tasks"] == []
        _, messages = mine.rpc("tasks/get", {"taskId": task_id})
        assert messages[-1]["result"]["taskId"] == task_id
        _, messages = mine.rpc("tasks/list")
        assert [t["taskId"] for t in messages[-1]["result"]["tasks"]] == [task_id]
    finally:
        node.stop()
        upstream.terminate()
        upstream.wait(timeout=10)
        shutil.rmtree(base, ignore_errors=True)
