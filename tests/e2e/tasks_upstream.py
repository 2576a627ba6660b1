"""A remote MCP server with tasks bound to its caller's credential, not to a session.

    python -m tests.e2e.tasks_upstream PORT

That is what a server with one API key per tenant does: every session presenting the
key sees every task created with it. Behind SMCP every principal of the tenant
presents the tenant's key, so binding tasks per principal is the gateway's job.
Streamable HTTP, 2025-11-25, JSON answers only.
"""

from __future__ import annotations

import itertools
import secrets
import sys
from typing import Any

import orjson
import uvicorn

TASKS: dict[str, dict[str, Any]] = {}
_ids = itertools.count(1)


def _answer(message: dict[str, Any]) -> dict[str, Any]:
    method, params = message.get("method"), message.get("params") or {}
    if method == "initialize":
        return {"protocolVersion": "2025-11-25", "serverInfo": {"name": "tasks-upstream", "version": "0"},
                "capabilities": {"tools": {}, "tasks": {"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}}}}
    if method == "tools/list":
        return {"tools": [{"name": "work", "inputSchema": {"type": "object", "properties": {}}}]}
    if method == "tools/call":
        result = {"content": [{"type": "text", "text": "done"}], "isError": False}
        if not isinstance(params.get("task"), dict):
            return result
        task_id = f"remote-{next(_ids)}"
        TASKS[task_id] = {"taskId": task_id, "status": "completed", "createdAt": "2026-11-26T00:00:00Z", "ttl": None}
        return {"task": TASKS[task_id]}
    if method == "tasks/list":
        return {"tasks": list(TASKS.values())}
    if method in ("tasks/get", "tasks/cancel") and params.get("taskId") in TASKS:
        return TASKS[params["taskId"]]
    raise KeyError(method)


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    if scope["method"] != "POST":
        await send({"type": "http.response.start", "status": 405, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    body = b""
    while True:
        event = await receive()
        body += event.get("body", b"")
        if not event.get("more_body"):
            break
    message = orjson.loads(body)
    if "id" not in message:
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    try:
        reply = {"jsonrpc": "2.0", "id": message["id"], "result": _answer(message)}
    except KeyError:
        reply = {"jsonrpc": "2.0", "id": message["id"], "error": {"code": -32602, "message": "no such task or method"}}
    headers = [(b"content-type", b"application/json")]
    if message.get("method") == "initialize":
        headers.append((b"mcp-session-id", secrets.token_hex(8).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": orjson.dumps(reply)})


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
