"""A minimal MCP server of the 2026-07-28 era only, over stdio, standard library only.

It refuses `initialize`, answers `server/discover`, checks the per-request `_meta`, and
has a tool that needs user input through a multi-round-trip result (elicitation).
"""

import json
import sys

VERSION = "2026-07-28"
TOOLS = [
    {"name": "echo", "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}}},
    {"name": "ask_name", "description": "Asks the user for their name (MRTR elicitation).",
     "inputSchema": {"type": "object", "properties": {}}},
]


def answer(msg_id, result=None, error=None):
    out = {"jsonrpc": "2.0", "id": msg_id}
    out.update({"error": error} if error else {"result": result})
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()


def handle(message):
    method, msg_id = message.get("method"), message.get("id")
    params = message.get("params") or {}
    meta = params.get("_meta") or {}
    if method == "initialize":
        return answer(msg_id, error={"code": -32601, "message": f"initialize is not supported; this server speaks {VERSION} only"})
    if meta.get("io.modelcontextprotocol/protocolVersion") != VERSION:
        return answer(msg_id, error={"code": -32022, "message": "Unsupported protocol version",
                                     "data": {"supported": [VERSION]}})
    if method == "server/discover":
        return answer(msg_id, {"resultType": "complete", "supportedVersions": [VERSION],
                               "capabilities": {"tools": {}}, "ttlMs": 0, "cacheScope": "public",
                               "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "modern-only", "version": "1"}}})
    if method == "tools/list":
        return answer(msg_id, {"resultType": "complete", "tools": TOOLS, "ttlMs": 0, "cacheScope": "public"})
    if method == "tools/call":
        name, args = params.get("name"), params.get("arguments") or {}
        if name == "echo":
            return answer(msg_id, {"resultType": "complete", "content": [{"type": "text", "text": args.get("text", "")}]})
        if name == "ask_name":
            caps = meta.get("io.modelcontextprotocol/clientCapabilities") or {}
            if "elicitation" not in caps:
                return answer(msg_id, error={"code": -32021, "message": "elicitation is required",
                                             "data": {"requiredCapabilities": {"elicitation": {}}}})
            responses = params.get("inputResponses") or {}
            if "name" not in responses:
                return answer(msg_id, {"resultType": "input_required", "requestState": "asked-once",
                                       "inputRequests": {"name": {"method": "elicitation/create", "params": {
                                           "mode": "form", "message": "What is your name?",
                                           "requestedSchema": {"type": "object", "properties": {"name": {"type": "string"}},
                                                               "required": ["name"]}}}}})
            if params.get("requestState") != "asked-once":
                return answer(msg_id, error={"code": -32602, "message": "requestState missing or altered"})
            got = responses["name"]
            if got.get("action") != "accept":
                return answer(msg_id, {"resultType": "complete", "content": [{"type": "text", "text": "no name given"}]})
            return answer(msg_id, {"resultType": "complete",
                                   "content": [{"type": "text", "text": f"hello, {got['content']['name']}"}]})
        return answer(msg_id, error={"code": -32602, "message": f"unknown tool {name}"})
    if msg_id is not None:
        return answer(msg_id, error={"code": -32601, "message": f"Method not found: {method}"})


for line in sys.stdin:
    if line.strip():
        handle(json.loads(line))
