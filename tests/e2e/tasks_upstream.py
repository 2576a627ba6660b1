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

import uvicorn

from smcp.gateway.asgi import respond_json
from tests.e2e.remote_kit import posted_request

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
    message = await posted_request(scope, receive, send)
    if message is None:
        return
    try:
        reply = {"jsonrpc": "2.0", "id": message["id"], "result": _answer(message)}
    except KeyError:
        reply = {"jsonrpc": "2.0", "id": message["id"], "error": {"code": -32602, "message": "no such task or method"}}
    session = [("mcp-session-id", secrets.token_hex(8))] if message.get("method") == "initialize" else []
    await respond_json(send, 200, reply, headers=session)


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
