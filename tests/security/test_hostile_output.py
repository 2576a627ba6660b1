"""A hosted server's output is as untrusted as a client's input.

The probe's `emit` tool writes whatever lines it is given to its stdout: notifications,
requests and answers of every shape, some answering the very request being served,
and plain garbage. Whatever a server says, the gateway routes it or drops it: the
caller still gets a well-formed answer in time, no handler raises (the node logs each
exception it catches on the way), and the instance keeps serving. Cases are
derandomized; `SMCP_FUZZ_RANDOM=1` explores new ones.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import Hosted, _host
from tests.e2e.test_sharing import _deploy_shared_probe
from tests.harness import Node
from tests.e2e.probe_client import open_legacy_session
from tests.fuzzing import fuzz_settings, json_values

ACCEPT = "application/json, text/event-stream"
LEGACY = "2025-11-25"
MODERN = "2026-07-28"
HANDLER_FAILED = "handling a message from the MCP server failed"

HOSTILE = fuzz_settings(120)

ids = st.one_of(st.just("{ID}"), st.sampled_from(["g1", "g2", "g999999", "0", ""]), json_values)
weird = st.one_of(json_values, st.just({"": {}}), st.lists(json_values, max_size=3))
meta = st.fixed_dictionaries(
    {},
    optional={
        "progressToken": weird,
        "io.modelcontextprotocol/related-task": st.one_of(st.fixed_dictionaries({"taskId": weird}), weird),
        "io.modelcontextprotocol/subscriptionId": st.one_of(st.sampled_from(["g1", "s"]), weird),
    },
)
params = st.one_of(
    weird,
    st.fixed_dictionaries(
        {},
        optional={
            "progressToken": weird, "progress": weird, "level": st.one_of(st.sampled_from(["info", "debug"]), weird),
            "uri": weird, "taskId": weird, "status": weird, "requestId": ids, "data": weird, "_meta": st.one_of(meta, weird),
        },
    ),
)
notification_methods = st.one_of(
    st.sampled_from([
        "notifications/progress", "notifications/message", "notifications/resources/updated",
        "notifications/resources/list_changed", "notifications/tools/list_changed", "notifications/tasks/status",
        "notifications/tasks", "notifications/cancelled", "notifications/elicitation/complete",
    ]),
    st.text(max_size=10),
)
request_methods = st.one_of(
    st.sampled_from(["sampling/createMessage", "elicitation/create", "roots/list", "ping", "tasks/get"]),
    weird,
)


@st.composite
def messages(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["notification", "request", "answer", "garbage"]))
    if kind == "garbage":
        return draw(st.one_of(st.text(max_size=40), st.just("[" * 200 + "]" * 200), st.just('{"id":1e999}'),
                              st.just('{"jsonrpc":"2.0","id":"{ID}","result":{"n":' + "9" * 400 + "}}")))
    body: dict[str, Any] = {"jsonrpc": draw(st.one_of(st.just("2.0"), weird))}
    if kind == "notification":
        body["method"] = draw(notification_methods)
    elif kind == "request":
        body["id"] = draw(ids)
        body["method"] = draw(request_methods)
    else:
        body["id"] = draw(ids)
        body[draw(st.sampled_from(["result", "error"]))] = draw(st.one_of(
            weird, st.fixed_dictionaries({}, optional={"code": weird, "message": weird, "content": weird,
                                                        "task": weird, "tasks": weird, "_meta": st.one_of(meta, weird)}),
        ))
    if kind != "answer" and draw(st.booleans()):
        body["params"] = draw(params)
    # "{ID}" stands for the served request's id; as a JSON string it would not be replaced.
    return json.dumps(body).replace('"{ID}"', "{ID}")


@pytest.fixture(scope="module", params=["per-session", "shared"])
def hostile(request: pytest.FixtureRequest, node: Node, tmp_path_factory: pytest.TempPathFactory) -> Hosted:
    """The probe on its own instance per session, or one instance every session shares
    (the gateway then rewrites ids and routes everything the instance says)."""
    if request.param == "shared":
        return _deploy_shared_probe(node, tmp_path_factory, "hostile-shared", "probe-shared")
    return _host(node, "hostile", "probe")


@pytest.fixture(scope="module")
def hostile_session(hostile: Hosted) -> Any:
    with httpx.Client(timeout=20, headers={"authorization": f"Bearer {hostile.key}"}) as http:
        yield http, open_legacy_session(http, hostile.url, {"roots": {}, "sampling": {}, "elicitation": {}})


def _call(http: httpx.Client, hosted: Hosted, sid: str, modern: bool, lines: list[str], call_id: int) -> httpx.Response:
    params: dict[str, Any] = {"name": "emit", "arguments": {"lines": lines}}
    headers = {"accept": ACCEPT, "content-type": "application/json"}
    if modern:
        params["_meta"] = {"io.modelcontextprotocol/protocolVersion": MODERN,
                           "io.modelcontextprotocol/clientCapabilities": {"sampling": {}, "roots": {}}}
        headers.update({"mcp-protocol-version": MODERN, "mcp-method": "tools/call", "mcp-name": "emit"})
    else:
        headers.update({"mcp-session-id": sid, "mcp-protocol-version": LEGACY})
    return http.post(hosted.url, json={"jsonrpc": "2.0", "id": call_id, "method": "tools/call", "params": params},
                     headers=headers)


def _answers(r: httpx.Response) -> list[dict[str, Any]]:
    if r.headers.get("content-type", "").startswith("text/event-stream"):
        return [json.loads(line[5:]) for line in r.text.splitlines() if line.startswith("data:") and line[5:].strip()]
    return [r.json()]


_calls = iter(range(1, 10**9))


@HOSTILE
@given(st.booleans(), st.lists(messages(), min_size=1, max_size=4))
def test_whatever_a_server_says_the_caller_gets_an_answer(
    node: Node, hostile: Hosted, hostile_session: Any, modern: bool, lines: list[str]
) -> None:
    http, sid = hostile_session
    call_id = next(_calls)
    log_before = len(node.log_text())
    r = _call(http, hostile, sid, modern, lines, call_id)
    assert r.status_code < 500, (lines, r.text[:500])
    answers = _answers(r)
    assert answers, (lines, r.status_code)
    final = answers[-1]
    # The call's own answer comes last, under the caller's id: the server's forged one
    # or its real one, never a stranger's and never nothing.
    assert final.get("jsonrpc") == "2.0" and final.get("id") == call_id, (lines, answers)
    assert ("result" in final) != ("error" in final), (lines, final)
    assert b'"code":-32001' not in r.content, ("timed out", lines)
    logged = node.log_text()[log_before:]
    assert HANDLER_FAILED not in logged, (lines, logged[-3000:])


def test_the_hostile_instance_still_serves(hostile: Hosted, hostile_session: Any) -> None:
    http, sid = hostile_session
    r = _call(http, hostile, sid, False, ['{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info"}}'], 0)
    assert r.status_code == 200
    assert json.loads(_answers(r)[-1]["result"]["content"][0]["text"]) == {"emitted": 1}
