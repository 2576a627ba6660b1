"""A remote MCP server (`runtime = "http"`) that misbehaves on request: what a tenant
could point its server at to hurt the node dialling it.

    python -m tests.e2e.hostile_upstream PORT

Legacy era, no session. `tools/call` picks its misbehaviour by tool name; `size` in
the arguments sets how many bytes the answer is padded to.
"""

from __future__ import annotations

import asyncio
import gzip
import sys
from typing import Any

import orjson
import uvicorn

from smcp.gateway.asgi import respond, respond_json
from tests.e2e.remote_kit import posted_request

TOOLS = ["sse_big", "json_big", "gzip_bomb", "garbage_json", "html", "sse_garbage", "sse_then_close", "sse_split_event"]


def _result(call_id: Any, text: str) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "id": call_id, "result": {"content": [{"type": "text", "text": text}], "isError": False}})


async def _sse(send: Any, chunks: list[bytes]) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
    for chunk in chunks:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await asyncio.sleep(0)
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def app(scope: Any, receive: Any, send: Any) -> None:
    message = await posted_request(scope, receive, send)
    if message is None:
        return
    call_id, method = message["id"], message.get("method")
    if method == "initialize":
        await respond_json(send, 200, {"jsonrpc": "2.0", "id": call_id, "result": {
            "protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": {"name": "hostile", "version": "0"}}})
        return
    if method == "tools/list":
        tools = [{"name": name, "inputSchema": {"type": "object", "properties": {"size": {"type": "integer"}}}} for name in TOOLS]
        await respond_json(send, 200, {"jsonrpc": "2.0", "id": call_id, "result": {"tools": tools}})
        return
    if method != "tools/call":
        await respond_json(send, 200, {"jsonrpc": "2.0", "id": call_id, "error": {"code": -32601, "message": "no"}})
        return
    params = message.get("params") or {}
    tool, size = params.get("name"), int((params.get("arguments") or {}).get("size", 1000))
    if tool == "sse_big":
        await _sse(send, [b"data: " + _result(call_id, "x" * size) + b"\n\n"])
    elif tool == "sse_split_event":
        # One event whose data arrives in many data lines (SSE joins them with "\n",
        # so the JSON is cut where it may hold a line break) and many chunks.
        content = [{"type": "text", "text": "y" * min(4096, size - i)} for i in range(0, size, 4096)]
        body = orjson.dumps({"jsonrpc": "2.0", "id": call_id, "result": {"content": content, "isError": False}},
                            option=orjson.OPT_INDENT_2)
        await _sse(send, [b"event: message\n", *(b"data: " + line + b"\n" for line in body.split(b"\n")), b"\n"])
    elif tool == "json_big":
        await respond(send, 200, _result(call_id, "z" * size))
    elif tool == "gzip_bomb":
        bomb = gzip.compress(b'{"jsonrpc":"2.0","id":1,"result":{"pad":"' + b" " * size + b'"}}', compresslevel=9)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-encoding", b"gzip")]})
        await send({"type": "http.response.body", "body": bomb})
    elif tool == "garbage_json":
        await respond(send, 200, b"{this is not json")
    elif tool == "html":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/html")]})
        await send({"type": "http.response.body", "body": b"<html>hello</html>"})
    elif tool == "sse_garbage":
        await _sse(send, [b"data: {not json\n\n", b": comment\n\n", b"retry: x\n\n"])
    elif tool == "sse_then_close":
        await _sse(send, [b"data: \n\n"])
    else:
        await respond_json(send, 200, {"jsonrpc": "2.0", "id": call_id, "error": {"code": -32602, "message": "unknown tool"}})


def main() -> None:
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")


if __name__ == "__main__":
    main()
