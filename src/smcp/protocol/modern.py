"""Rules of the stateless 2026-07-28 era: per-request `_meta`, mirrored headers, errors.

Pure functions: the gateway calls `check` before anything routes on a header, so a
header that disagrees with the body can never steer a request.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import orjson

from smcp.protocol import jsonrpc
from smcp.protocol.headers import LEGACY_VERSIONS

MODERN_VERSIONS = ("2026-07-28",)
SUPPORTED_VERSIONS = MODERN_VERSIONS + LEGACY_VERSIONS

HEADER_MISMATCH = -32020
MISSING_CLIENT_CAPABILITY = -32021
UNSUPPORTED_PROTOCOL_VERSION = -32022

META_VERSION = "io.modelcontextprotocol/protocolVersion"
META_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
META_CLIENT_INFO = "io.modelcontextprotocol/clientInfo"
META_SERVER_INFO = "io.modelcontextprotocol/serverInfo"
META_SUBSCRIPTION = "io.modelcontextprotocol/subscriptionId"
META_LOG_LEVEL = "io.modelcontextprotocol/logLevel"

# Legacy-only methods: a modern request for them is "method not found" (HTTP 404).
REMOVED_METHODS = frozenset(
    {"initialize", "ping", "logging/setLevel", "resources/subscribe", "resources/unsubscribe"}
)
# Methods whose target is mirrored into Mcp-Name, and the params field it mirrors.
# The tasks extension (SEP-2663) extends the rule to its by-id methods: the task id is
# the name a routing intermediary may act on, so a value that differs from the body is
# refused like the others. A missing one is let through there: nothing can have
# routed on it, and the official Python SDK (2.3) does not send it for tasks/*.
NAMED_METHODS = {
    "tools/call": "name",
    "prompts/get": "name",
    "resources/read": "uri",
    "tasks/get": "taskId",
    "tasks/update": "taskId",
    "tasks/cancel": "taskId",
}
_NAME_OPTIONAL = frozenset(m for m in NAMED_METHODS if m.startswith("tasks/"))

_B64_PREFIX = "=?base64?"
_B64_SUFFIX = "?="


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    body: bytes


def meta_of(body: dict[str, Any]) -> dict[str, Any] | None:
    params = body.get("params")
    if isinstance(params, dict):
        meta = params.get("_meta")
        if isinstance(meta, dict):
            return meta
    return None


def is_modern(version_header: str | None, body: dict[str, Any]) -> bool:
    """A request belongs to the modern era if its header or its `_meta` says so."""
    if version_header is not None and version_header not in LEGACY_VERSIONS:
        return True
    meta = meta_of(body)
    return meta is not None and META_VERSION in meta


def decode_header_value(value: str) -> str | None:
    """Undo the `=?base64?…?=` sentinel; None if the value is malformed."""
    if value.startswith(_B64_PREFIX) and value.endswith(_B64_SUFFIX) and len(value) >= len(_B64_PREFIX + _B64_SUFFIX):
        try:
            return base64.b64decode(value[len(_B64_PREFIX) : -len(_B64_SUFFIX)], validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
    if any(ord(c) < 0x20 and c != "\t" or ord(c) > 0x7E for c in value):
        return None
    return value


def _refuse(status: int, id: Any, code: int, message: str, data: Any = None) -> Refusal:
    return Refusal(status, jsonrpc.error(id, code, message, data))


def check(message: jsonrpc.Message, headers: dict[str, str]) -> Refusal | None:
    """Validate a modern-era POST against its headers. None means it may proceed."""
    body = message.body
    msg_id = message.id
    version = headers.get("mcp-protocol-version")
    meta = meta_of(body)
    body_version = meta.get(META_VERSION) if meta else None

    if version is None:
        return _refuse(400, msg_id, HEADER_MISMATCH, "Header mismatch: MCP-Protocol-Version header is required")
    if version not in SUPPORTED_VERSIONS:
        return _refuse(
            400,
            msg_id,
            UNSUPPORTED_PROTOCOL_VERSION,
            "Unsupported protocol version",
            {"supported": list(SUPPORTED_VERSIONS), "requested": version},
        )
    if message.kind is jsonrpc.Kind.notification:
        return None
    # A request without the required per-request fields is malformed (-32602) before
    # anything can be compared with the headers.
    if meta is None or not isinstance(body_version, str) or not isinstance(meta.get(META_CAPABILITIES), dict):
        missing = [
            key
            for key, ok in (
                (META_VERSION, meta is not None and isinstance(body_version, str)),
                (META_CAPABILITIES, meta is not None and isinstance(meta.get(META_CAPABILITIES), dict)),
            )
            if not ok
        ]
        return _refuse(400, msg_id, jsonrpc.INVALID_PARAMS, f"Invalid params: _meta is missing {', '.join(missing)}")
    if body_version != version:
        return _refuse(
            400,
            msg_id,
            HEADER_MISMATCH,
            f"Header mismatch: MCP-Protocol-Version header value {version!r} does not match body value {body_version!r}",
        )
    if version not in MODERN_VERSIONS:
        return _refuse(
            400,
            msg_id,
            UNSUPPORTED_PROTOCOL_VERSION,
            "Unsupported protocol version for a request without initialize",
            {"supported": list(MODERN_VERSIONS), "requested": version},
        )
    method = message.method
    header_method = headers.get("mcp-method")
    if header_method is None:
        return _refuse(400, msg_id, HEADER_MISMATCH, "Header mismatch: Mcp-Method header is required")
    if header_method != method:
        return _refuse(
            400,
            msg_id,
            HEADER_MISMATCH,
            f"Header mismatch: Mcp-Method header value {header_method!r} does not match body value {method!r}",
        )
    if method in REMOVED_METHODS:
        return _refuse(404, msg_id, jsonrpc.METHOD_NOT_FOUND, f"Method not found: {method} is not part of {version}")
    field = NAMED_METHODS.get(method or "")
    if field is not None:
        params = body.get("params") if isinstance(body.get("params"), dict) else {}
        body_name = params.get(field)
        raw_name = headers.get("mcp-name")
        if raw_name is None:
            if method in _NAME_OPTIONAL:
                return None
            return _refuse(400, msg_id, HEADER_MISMATCH, "Header mismatch: Mcp-Name header is required")
        name = decode_header_value(raw_name)
        if name is None:
            return _refuse(400, msg_id, HEADER_MISMATCH, "Header mismatch: Mcp-Name header value is malformed")
        if name != body_name:
            return _refuse(
                400,
                msg_id,
                HEADER_MISMATCH,
                f"Header mismatch: Mcp-Name header value {name!r} does not match body value {body_name!r}",
            )
    return None


def check_param_headers(message: jsonrpc.Message, headers: dict[str, str], mirrored: dict[str, tuple[str, ...]]) -> Refusal | None:
    """Validate Mcp-Param-* headers of a tools/call against the tool's x-mcp-header map.

    `mirrored` maps a header name (lower case, without the prefix) to the property path
    in the arguments, as the tool's inputSchema declared it.
    """
    params = message.body.get("params")
    arguments = params.get("arguments") if isinstance(params, dict) else None
    for name, path in mirrored.items():
        value: Any = arguments
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        header = headers.get(f"mcp-param-{name}")
        if value is None:
            continue
        if header is None:
            return _refuse(400, message.id, HEADER_MISMATCH, f"Header mismatch: Mcp-Param-{name} header is required")
        decoded = decode_header_value(header)
        if decoded is None or not _same_value(decoded, value):
            return _refuse(
                400, message.id, HEADER_MISMATCH, f"Header mismatch: Mcp-Param-{name} header does not match the arguments"
            )
    return None


def _same_value(header: str, value: Any) -> bool:
    if isinstance(value, bool):
        return header == ("true" if value else "false")
    if isinstance(value, int):
        try:
            return float(header) == value
        except ValueError:
            return False
    return isinstance(value, str) and header == value


def mirrored_params(tool: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    """The x-mcp-header annotations of one tool, as {header name: property path}."""
    out: dict[str, tuple[str, ...]] = {}

    def walk(schema: Any, path: tuple[str, ...]) -> None:
        if not isinstance(schema, dict):
            return
        props = schema.get("properties")
        if not isinstance(props, dict):
            return
        for key, sub in props.items():
            if not isinstance(sub, dict):
                continue
            header = sub.get("x-mcp-header")
            if isinstance(header, str) and header:
                out[header.lower()] = (*path, key)
            walk(sub, (*path, key))

    walk(tool.get("inputSchema"), ())
    return out


LISTEN_FLAGS = ("toolsListChanged", "promptsListChanged", "resourcesListChanged")


def listen_filter_problem(params: Any) -> str | None:
    """What is wrong with a `subscriptions/listen` request's filter, or None.

    `notifications` is required and typed (SubscriptionFilter); keys this era does not
    define are an extension's (the tasks extension's `taskIds`) and are not judged here.
    """
    wanted = params.get("notifications") if isinstance(params, dict) else None
    if not isinstance(wanted, dict):
        return "notifications must be an object (a SubscriptionFilter)"
    for flag in LISTEN_FLAGS:
        if flag in wanted and not isinstance(wanted[flag], bool):
            return f"notifications.{flag} must be a boolean"
    uris = wanted.get("resourceSubscriptions")
    if "resourceSubscriptions" in wanted and not (isinstance(uris, list) and all(isinstance(u, str) for u in uris)):
        return "notifications.resourceSubscriptions must be an array of strings"
    return None


# The HTTP status this era gives a JSON-RPC error an instance answered with.
_ERROR_STATUS = {
    jsonrpc.METHOD_NOT_FOUND: 404,
    HEADER_MISMATCH: 400,
    MISSING_CLIENT_CAPABILITY: 400,
    UNSUPPORTED_PROTOCOL_VERSION: 400,
}


def status_for_answer(raw: bytes) -> int:
    if b'"error"' not in raw:
        return 200
    try:
        error = orjson.loads(raw).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return 200
    code = error.get("code") if isinstance(error, dict) else None
    return _ERROR_STATUS.get(code, 200) if isinstance(code, int) else 200


CACHEABLE = frozenset(
    {"server/discover", "tools/list", "prompts/list", "resources/list", "resources/templates/list", "resources/read"}
)


def to_modern_result(method: str | None, result: dict[str, Any]) -> None:
    """Give a handshake-era result the fields the 2026-07-28 era requires of it.

    A legacy server gives no caching hints, so the bridge promises nothing: stale at
    once, and private (the answer may depend on who asked).
    """
    result.setdefault("resultType", "complete")
    if method in CACHEABLE:
        result.setdefault("ttlMs", 0)
        result.setdefault("cacheScope", "private")
