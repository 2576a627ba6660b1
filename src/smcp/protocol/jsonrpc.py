"""JSON-RPC 2.0 envelopes: parse with limits, classify, and build errors.

The gateway reads only the envelope (id, method, a few _meta fields); bodies are
forwarded as the bytes the client sent.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import orjson

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
# Implementation-defined server errors (-32000..-32099).
REQUEST_TIMEOUT = -32001
INSTANCE_LOST = -32002
TOO_MANY_PENDING = -32003
# The MCP server is not reading its input fast enough; the message was not sent.
INSTANCE_BUSY = -32004
# The caller's (or its tenant's) share of the node's sessions is all in use.
TOO_MANY_SESSIONS = -32005


class Kind(enum.Enum):
    request = "request"
    notification = "notification"
    response = "response"


class ProtocolError(Exception):
    def __init__(self, code: int, message: str, id: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.id = id


@dataclass(slots=True)
class Message:
    kind: Kind
    body: dict[str, Any]
    raw: bytes
    _id_key: bytes | None = None

    @property
    def id(self) -> Any:
        return self.body.get("id")

    @property
    def method(self) -> str | None:
        return self.body.get("method")

    @property
    def id_key(self) -> bytes:
        # 1 and "1" are different ids; keep them apart by their JSON spelling.
        key = self._id_key
        if key is None:
            key = self._id_key = orjson.dumps(self.body.get("id"))
        return key

    @property
    def progress_token(self) -> Any:
        params = self.body.get("params")
        if isinstance(params, dict):
            meta = params.get("_meta")
            if isinstance(meta, dict):
                return meta.get("progressToken")
        return None


def _depth_exceeds(value: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values() if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node if isinstance(v, (dict, list)))
    return False


def loads_limited(raw: bytes, *, max_depth: int) -> Any:
    """Parse JSON, refusing nesting deeper than max_depth. Raises ProtocolError(-32700)."""
    # orjson itself refuses nesting past 1024 without recursing, so pathological
    # depth cannot hurt the parser; the configured (lower) limit is checked after.
    # Counting brackets is a cheap C-speed upper bound on depth: only bodies that
    # could be too deep pay for the exact walk.
    could_be_deep = raw.count(b"[") + raw.count(b"{") > max_depth
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(PARSE_ERROR, f"parse error: {exc}") from None
    if could_be_deep and _depth_exceeds(value, max_depth):
        raise ProtocolError(PARSE_ERROR, f"JSON nesting deeper than {max_depth} levels")
    return value


def classify(value: Any, raw: bytes) -> Message:
    """Validate a decoded JSON-RPC 2.0 message. Raises ProtocolError(-32600)."""
    if isinstance(value, list):
        raise ProtocolError(INVALID_REQUEST, "JSON-RPC batches are not supported by this protocol version")
    if not isinstance(value, dict):
        raise ProtocolError(INVALID_REQUEST, "a JSON-RPC message must be a JSON object")
    msg_id = value.get("id")
    if value.get("jsonrpc") != "2.0":
        raise ProtocolError(INVALID_REQUEST, 'jsonrpc must be "2.0"', _safe_id(msg_id))
    has_id = "id" in value
    if has_id and not _valid_id(msg_id):
        raise ProtocolError(INVALID_REQUEST, "id must be a string or an integer", None)
    if "method" in value:
        if not isinstance(value["method"], str) or not value["method"]:
            raise ProtocolError(INVALID_REQUEST, "method must be a non-empty string", msg_id)
        params = value.get("params")
        if params is not None and not isinstance(params, dict):
            if isinstance(params, list):
                # Valid JSON-RPC, but MCP defines no by-position params, and an SDK
                # server may drop such a request unanswered: the caller would wait
                # out the request timeout for nothing.
                raise ProtocolError(INVALID_PARAMS, "params must be an object: MCP has no by-position params", msg_id)
            raise ProtocolError(INVALID_REQUEST, "params must be an object", msg_id)
        return Message(Kind.request if has_id else Kind.notification, value, raw)
    if has_id and ("result" in value) != ("error" in value):
        if "result" in value and not isinstance(value["result"], dict):
            raise ProtocolError(INVALID_REQUEST, "result must be an object", msg_id)
        err = value.get("error")
        if "error" in value and not (
            isinstance(err, dict)
            and isinstance(err.get("code"), int)
            and not isinstance(err.get("code"), bool)
            and isinstance(err.get("message"), str)
        ):
            raise ProtocolError(INVALID_REQUEST, "error must be an object with an integer code and a string message", msg_id)
        return Message(Kind.response, value, raw)
    raise ProtocolError(INVALID_REQUEST, "not a request, notification or response", _safe_id(msg_id))


def from_server(raw: bytes) -> Message | ProtocolError | None:
    """One line an MCP server wrote: a valid message, the refusal of an invalid one
    (whose `id`, if usable, names the request it meant to answer), or None for a line
    that is not JSON at all (noise a server may print; its stderr is logged instead).

    The server's output is as untrusted as a client's input: nothing downstream routes
    on a field this has not checked.
    """
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    try:
        return classify(value, raw)
    except ProtocolError as exc:
        return exc


def invalid_answer(exc: ProtocolError) -> dict[str, Any]:
    """The error a caller gets in place of a server's answer that broke JSON-RPC."""
    return {"code": INTERNAL_ERROR, "message": f"the MCP server sent an invalid answer: {exc.message}"}


def parse(raw: bytes, *, max_depth: int) -> Message:
    return classify(loads_limited(raw, max_depth=max_depth), raw)


def _valid_id(value: Any) -> bool:
    return (isinstance(value, str) and len(value) <= 1024) or (isinstance(value, int) and not isinstance(value, bool))


def _safe_id(value: Any) -> Any:
    return value if _valid_id(value) else None


def error(id: Any, code: int, message: str, data: Any = None) -> bytes:
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return orjson.dumps({"jsonrpc": "2.0", "id": id, "error": err})
