from __future__ import annotations

import base64
from typing import Any

import pytest

from smcp.protocol import jsonrpc, modern


def _msg(method: str, params: dict | None = None, meta: dict | None = None) -> jsonrpc.Message:
    p = dict(params or {})
    p["_meta"] = meta if meta is not None else {
        modern.META_VERSION: "2026-07-28",
        modern.META_CAPABILITIES: {},
    }
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": p}
    return jsonrpc.Message(jsonrpc.Kind.request, body, b"")


def _h(**extra: str) -> dict[str, str]:
    return {"mcp-protocol-version": "2026-07-28", **{k.replace("_", "-"): v for k, v in extra.items()}}


def _code(refusal: modern.Refusal | None) -> int | None:
    import orjson

    return None if refusal is None else orjson.loads(refusal.body)["error"]["code"]


def test_a_well_formed_call_passes() -> None:
    assert modern.check(_msg("tools/call", {"name": "x"}), _h(mcp_method="tools/call", mcp_name="x")) is None


def test_mismatches_are_32020() -> None:
    m = _msg("tools/call", {"name": "x"})
    assert _code(modern.check(m, _h(mcp_method="tools/call", mcp_name="y"))) == -32020
    assert _code(modern.check(m, _h(mcp_method="tools/list", mcp_name="x"))) == -32020
    assert _code(modern.check(m, _h(mcp_method="tools/call"))) == -32020
    assert _code(modern.check(m, {"mcp-method": "tools/call", "mcp-name": "x"})) == -32020


def test_task_methods_mirror_the_task_id_into_mcp_name() -> None:
    # SEP-2663: tasks/get, tasks/update and tasks/cancel carry Mcp-Name: <taskId>; one
    # that differs is refused, a missing one tolerated (SDK clients that omit it).
    for method in ("tasks/get", "tasks/update", "tasks/cancel"):
        m = _msg(method, {"taskId": "t-1"})
        assert modern.check(m, _h(mcp_method=method, mcp_name="t-1")) is None
        assert _code(modern.check(m, _h(mcp_method=method, mcp_name="t-2"))) == -32020
        assert modern.check(m, _h(mcp_method=method)) is None
    # tasks/list names no task.
    assert modern.check(_msg("tasks/list"), _h(mcp_method="tasks/list")) is None


def test_base64_sentinel_names_are_decoded() -> None:
    name = "héllo wörld"
    encoded = "=?base64?" + base64.b64encode(name.encode()).decode() + "?="
    m = _msg("tools/call", {"name": name})
    assert modern.check(m, _h(mcp_method="tools/call", mcp_name=encoded)) is None
    assert _code(modern.check(m, _h(mcp_method="tools/call", mcp_name="=?base64?!!!?="))) == -32020


def test_unsupported_version_lists_supported() -> None:
    import orjson

    refusal = modern.check(_msg("tools/list"), _h(mcp_protocol_version="1999-01-01", mcp_method="tools/list"))
    assert refusal is not None and refusal.status == 400
    error = orjson.loads(refusal.body)["error"]
    assert error["code"] == -32022 and "2026-07-28" in error["data"]["supported"]


def test_missing_capabilities_is_invalid_params() -> None:
    m = _msg("tools/list", meta={modern.META_VERSION: "2026-07-28"})
    assert _code(modern.check(m, _h(mcp_method="tools/list"))) == -32602


def test_removed_methods_are_404() -> None:
    refusal = modern.check(_msg("ping"), _h(mcp_method="ping"))
    assert refusal is not None and refusal.status == 404 and _code(refusal) == -32601


def test_param_headers_follow_x_mcp_header() -> None:
    tool = {"name": "sql", "inputSchema": {"type": "object", "properties": {
        "region": {"type": "string", "x-mcp-header": "Region"},
        "limit": {"type": "integer", "x-mcp-header": "Limit"},
        "nested": {"type": "object", "properties": {"flag": {"type": "boolean", "x-mcp-header": "Flag"}}},
    }}}
    mirrored = modern.mirrored_params(tool)
    assert mirrored == {"region": ("region",), "limit": ("limit",), "flag": ("nested", "flag")}
    m = _msg("tools/call", {"name": "sql", "arguments": {"region": "eu", "limit": 42, "nested": {"flag": True}}})
    ok = {"mcp-param-region": "eu", "mcp-param-limit": "42", "mcp-param-flag": "true"}
    assert modern.check_param_headers(m, ok, mirrored) is None
    assert _code(modern.check_param_headers(m, {**ok, "mcp-param-region": "us"}, mirrored)) == -32020
    missing = {k: v for k, v in ok.items() if k != "mcp-param-limit"}
    assert _code(modern.check_param_headers(m, missing, mirrored)) == -32020
    # A parameter absent from the arguments needs no header.
    m2 = _msg("tools/call", {"name": "sql", "arguments": {"region": "eu"}})
    assert modern.check_param_headers(m2, {"mcp-param-region": "eu"}, mirrored) is None


@pytest.mark.parametrize(
    "params, problem",
    [
        ({"notifications": {}}, None),
        ({"notifications": {"toolsListChanged": True, "resourceSubscriptions": ["a://b"], "taskIds": ["t"]}}, None),
        ({}, "notifications must be an object"),
        (None, "notifications must be an object"),
        ({"notifications": 5}, "notifications must be an object"),
        ({"notifications": {"toolsListChanged": "yes"}}, "notifications.toolsListChanged must be a boolean"),
        ({"notifications": {"resourcesListChanged": 1}}, "notifications.resourcesListChanged must be a boolean"),
        ({"notifications": {"resourceSubscriptions": "a://b"}}, "resourceSubscriptions must be an array of strings"),
        ({"notifications": {"resourceSubscriptions": ["a://b", 5]}}, "resourceSubscriptions must be an array of strings"),
    ],
)
def test_listen_filters_are_typed(params: Any, problem: str | None) -> None:
    found = modern.listen_filter_problem(params)
    assert found == problem if problem is None else problem in (found or "")
