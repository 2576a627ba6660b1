"""A tenant chooses the URL of a `runtime = "http"` server, so what it answers is
hostile input to the node that dials it.

Whatever it sends (answers over the message size limit, as JSON or SSE, a gzip bomb,
garbage, the wrong content type, a stream closed unanswered), the caller gets a clear
JSON-RPC error at once, not a wait for the timeout, and the node stays within the limit
in memory and keeps serving. Answers under the limit arrive whole, however they are cut
into SSE lines and chunks.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import ROOT, Node, free_port, start_node, wait_for_port

ACCEPT = "application/json, text/event-stream"
LIMIT = 1024 * 1024  # the node's max_message_bytes below


@pytest.fixture(scope="module")
def hostile_remote() -> Iterator[tuple[Node, str, str]]:
    base = Path(tempfile.mkdtemp(prefix="smcp-hostile-up-"))
    base.chmod(0o711)
    port = free_port()
    upstream = subprocess.Popen([sys.executable, "-m", "tests.e2e.hostile_upstream", str(port)], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    node = start_node(base / "data", http_upstream_unsafe_allow='["127.0.0.0/8"]', max_message_bytes=str(LIMIT),
                      request_timeout_s="20")
    try:
        wait_for_port(port, "the hostile upstream")
        node.create_tenant("t")
        key = node.create_key("t")["token"]
        src = base / "remote"
        src.mkdir()
        (src / "smcp.toml").write_text(f'name = "remote"\nruntime = "http"\n[http]\nurl = "http://127.0.0.1:{port}/mcp"\n')
        r = node.deploy("t", src)
        assert r.status_code == 201, r.text
        yield node, key, r.json()["url"]
    finally:
        node.stop()
        upstream.terminate()
        upstream.wait(timeout=10)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def session(hostile_remote: tuple[Node, str, str]) -> Any:
    node, key, url = hostile_remote
    http = httpx.Client(timeout=60, headers={"authorization": f"Bearer {key}", "accept": ACCEPT, "content-type": "application/json"})
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}
    r = http.post(url, json=init)
    assert r.status_code == 200, r.text
    sid = r.headers["mcp-session-id"]
    http.headers.update({"mcp-session-id": sid, "mcp-protocol-version": "2025-11-25"})
    http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
    yield node, http, url
    http.close()


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _call(http: httpx.Client, url: str, tool: str, size: int = 1000) -> tuple[float, dict[str, Any]]:
    started = time.monotonic()
    r = http.post(url, json={"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": tool, "arguments": {"size": size}}})
    assert r.status_code == 200, r.text
    if r.headers["content-type"].startswith("text/event-stream"):
        import json

        messages = [json.loads(line[5:]) for line in r.text.splitlines() if line.startswith("data:") and line[5:].strip()]
        answer = messages[-1]
    else:
        answer = r.json()
    assert answer["id"] == 7
    return time.monotonic() - started, answer


@pytest.mark.parametrize("tool", ["sse_big", "sse_split_event", "json_big"])
def test_answers_under_the_limit_arrive_whole(session: Any, tool: str) -> None:
    _, http, url = session
    size = 600 * 1024  # well past any default line or buffer size, under the limit
    _, answer = _call(http, url, tool, size)
    assert "result" in answer, str(answer)[:500]
    assert sum(len(item["text"]) for item in answer["result"]["content"]) == size


@pytest.mark.parametrize(
    "tool, size, says",
    [
        ("sse_big", 4 * LIMIT, "limit"),
        ("sse_split_event", 4 * LIMIT, "limit"),
        ("json_big", 4 * LIMIT, "limit"),
        ("gzip_bomb", 256 * LIMIT, "limit"),  # 256 MiB once decompressed, ~250 KiB sent
        ("garbage_json", 0, "invalid"),
        ("html", 0, "HTTP 200"),
        ("sse_garbage", 0, "without answering"),
        ("sse_then_close", 0, "without answering"),
    ],
)
def test_a_hostile_answer_is_a_clear_error_at_once(session: Any, tool: str, size: int, says: str) -> None:
    node, http, url = session
    elapsed, answer = _call(http, url, tool, size)
    assert "error" in answer, answer
    assert answer["error"]["code"] == -32603 and says in answer["error"]["message"], answer
    assert elapsed < 10, f"{tool}: answered only after {elapsed:.1f}s"
    # Nothing over the limit was held: the node stays far below the bomb's size.
    assert _rss_mib(node.proc.pid) < 400
    # And the remote server is still usable through the same session.
    _, ok = _call(http, url, "sse_big", 10)
    assert ok["result"]["content"][0]["text"] == "x" * 10
