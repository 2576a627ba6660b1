"""Fuzzing the gateway's MCP endpoint with malformed and unexpected requests, both eras.

Every request, whatever it holds, gets an answer within the timeout: a status below
500, and when the body is JSON, well-formed JSON-RPC (an error object with an integer
code and a string message for a 4xx). Afterwards the node and the hosted demo still
serve a well-formed call, so nothing was lost on the way. The cases are derandomized
(the same on every CI run); `SMCP_FUZZ_RANDOM=1` explores new ones locally.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import Hosted, _host
from tests.harness import Node
from tests.e2e.probe_client import open_legacy_session
from tests.fuzzing import envelopes, fuzz_settings, header_values, json_values

ACCEPT = "application/json, text/event-stream"
MODERN = "2026-07-28"

LIVE = fuzz_settings(150)

# Methods a hosted server answers at once, whatever their params: a fuzzed request
# must not start a long-running tool or open a stream meant to stay open.
methods = st.one_of(
    st.sampled_from(
        ["initialize", "tools/call", "tools/list", "resources/read", "resources/subscribe", "resources/unsubscribe",
         "prompts/get", "completion/complete", "logging/setLevel", "ping", "tasks/get", "tasks/cancel", "tasks/list",
         "tasks/result", "tasks/update", "server/discover", "notifications/cancelled", "notifications/progress",
         "notifications/initialized", "notifications/roots/list_changed", "", "rpc.discover"]
    ),
    st.text(max_size=12).filter(lambda m: not m.startswith("subscriptions/")),
)
# Tools of the demo and the probe that answer at once and touch nothing.
tool_names = st.one_of(st.sampled_from(["echo", "add", "greet", "whoami", "env", "received", "nope"]), json_values)


def _often(draw: st.DrawFn, percent: int) -> bool:
    # Hypothesis favours small integers: the rare branch sits at the top of the range.
    return draw(st.integers(min_value=0, max_value=99)) >= 100 - percent


plausible_params = st.fixed_dictionaries(
    {},
    optional={
        "name": tool_names,
        "arguments": st.one_of(st.fixed_dictionaries({}, optional={"text": json_values, "a": json_values, "b": json_values,
                                                                   "name": json_values}), json_values),
        "uri": st.one_of(st.sampled_from(["demo://readme", "demo://nope", "file:///etc/passwd", ""]), json_values),
        "taskId": st.one_of(st.sampled_from(["t-1", "smcp-no-such-task-0"]), json_values),
        "requestId": st.one_of(st.integers(min_value=-3, max_value=3), st.sampled_from(["g1", "0"]), json_values),
        "progressToken": json_values,
        "level": st.one_of(st.sampled_from(["debug", "info", "emergency", "loud"]), json_values),
        "cursor": json_values,
        "ref": st.one_of(st.just({"type": "ref/prompt", "name": "introduce"}), json_values),
        "argument": st.one_of(st.just({"name": "name", "value": "a"}), json_values),
        "protocolVersion": st.one_of(st.sampled_from(["2025-11-25", MODERN, "2024-11-05", "1.0"]), json_values),
        "capabilities": json_values,
        "_meta": json_values,
    },
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, dict[str, str], bytes]:
    """Mostly well-formed envelopes with odd contents: the gateway's deeper paths."""
    era = draw(st.sampled_from(["session", "sessionless", "modern"]))
    body: dict[str, Any]
    if _often(draw, 8):
        body = draw(envelopes)
    else:
        body = {"jsonrpc": "2.0"}
        shape = draw(st.sampled_from(["request"] * 7 + ["notification"] * 2 + ["response"]))
        if shape != "notification":
            body["id"] = draw(st.one_of(st.integers(min_value=-(2**53), max_value=2**53), st.text(max_size=12)))
        if shape == "response":
            body[draw(st.sampled_from(["result", "error"]))] = draw(json_values)
        else:
            # Without a session, a legacy client's one useful request is initialize.
            body["method"] = "initialize" if era == "sessionless" and not _often(draw, 30) else draw(methods)
            if not _often(draw, 10):
                body["params"] = draw(st.one_of(plausible_params, json_values) if _often(draw, 15) else plausible_params)
    params = body.get("params")
    if era == "modern" and isinstance(params, dict) and not _often(draw, 20):
        params["_meta"] = {"io.modelcontextprotocol/protocolVersion": MODERN,
                           "io.modelcontextprotocol/clientCapabilities": draw(st.one_of(st.just({}), json_values))}
    raw = json.dumps(body).encode()
    if _often(draw, 5):
        cut = draw(st.integers(min_value=0, max_value=len(raw)))
        raw = raw[:cut] + draw(st.binary(max_size=4)) + raw[cut:]
    headers = {"accept": ACCEPT, "content-type": "application/json"}
    if era == "modern":
        headers["mcp-protocol-version"] = MODERN
        if isinstance(body.get("method"), str) and not _often(draw, 10):
            headers["mcp-method"] = body["method"]
        name = params.get("name", params.get("uri", params.get("taskId"))) if isinstance(params, dict) else None
        if isinstance(name, str) and not _often(draw, 10):
            headers["mcp-name"] = name
    if _often(draw, 20):
        key = draw(st.sampled_from(["accept", "content-type", "mcp-protocol-version", "mcp-method", "mcp-name",
                                    "mcp-session-id", "last-event-id", "origin"]))
        headers[key] = draw(st.one_of(header_values, st.sampled_from(["application/json", "text/event-stream", "*/*"])))
    # Header values go out as UTF-8 bytes (a client may send any), but never with
    # control characters or surrounding blanks, which HTTP itself forbids (the client
    # library refuses them before the gateway could).
    sendable = {
        k: v for k, v in headers.items() if v == v.strip(" \t") and not any(ord(c) < 0x20 or ord(c) == 0x7F for c in v)
    }
    return era, sendable, raw


def _check_answer(r: httpx.Response, sent: bytes) -> None:
    assert r.status_code < 500, f"{r.status_code} for {sent[:300]!r}: {r.text[:500]}"
    # The demo answers every request it can read at once: a timeout means the gateway
    # forwarded something an MCP server could not take, and kept the caller waiting.
    assert b'"code":-32001' not in r.content, f"timed out for {sent[:300]!r}"
    kind = r.headers.get("content-type", "")
    if kind.startswith("application/json") and r.content:
        answer = orjson.loads(r.content)
        _check_json_rpc(answer, error=r.status_code >= 400, sent=sent)
    elif kind.startswith("text/event-stream"):
        for line in r.text.splitlines():
            if line.startswith("data:") and line[5:].strip():
                _check_json_rpc(orjson.loads(line[5:]), error=False, sent=sent)


def _check_json_rpc(answer: Any, *, error: bool, sent: bytes) -> None:
    assert isinstance(answer, dict) and answer.get("jsonrpc") == "2.0", (sent[:300], answer)
    if error or "error" in answer:
        err = answer["error"]
        assert isinstance(err.get("code"), int) and isinstance(err.get("message"), str), (sent[:300], answer)


@pytest.fixture(scope="module", params=["demo", "probe"])
def fuzz_target(request: pytest.FixtureRequest, node: Node, demo: Hosted) -> Any:
    """A legacy session on the SDK-built demo (it speaks both eras), or on the hand-written
    probe (legacy only, so every modern request is bridged). The probe gets a tenant of
    its own: whatever the fuzzing does to it stays away from the other tests' probe."""
    if request.param == "demo":
        # A key of its own: the sessions its initialize requests pile up make room by
        # ending the same principal's idle ones, never another test's.
        hosted = Hosted(demo.tenant, demo.server, node.create_key(demo.tenant, "fuzz")["token"], demo.url)
    else:
        hosted = _host(node, "fuzz", "probe")
    with httpx.Client(timeout=20, headers={"authorization": f"Bearer {hosted.key}"}) as http:
        yield hosted, http, _session(hosted, http)


def _session(hosted: Hosted, http: httpx.Client) -> str:
    return open_legacy_session(http, hosted.url, {"roots": {}, "sampling": {}})


@LIVE
@given(requests())
def test_fuzzed_requests_get_clear_answers(fuzz_target: Any, request_: tuple[str, dict[str, str], bytes]) -> None:
    hosted, http, sid = fuzz_target
    era, headers, raw = request_
    if era == "session":
        headers.setdefault("mcp-session-id", sid)
        headers.setdefault("mcp-protocol-version", "2025-11-25")
    encoded = {k: v.encode() for k, v in headers.items()}
    _check_answer(http.post(hosted.url, content=raw, headers=encoded), raw)


def test_the_node_serves_well_formed_calls_after_the_fuzzing(fuzz_target: Any) -> None:
    hosted, http, _ = fuzz_target
    # A new session: the fuzzing's own may have been ended to make room for the
    # sessions its initialize requests started.
    sid = _session(hosted, http)
    call = {"jsonrpc": "2.0", "id": "after", "method": "tools/call", "params": {"name": "whoami", "arguments": {}}}
    legacy = http.post(hosted.url, json=call, headers={"accept": ACCEPT, "content-type": "application/json",
                                                    "mcp-session-id": sid, "mcp-protocol-version": "2025-11-25"})
    assert legacy.status_code == 200, legacy.text
    assert '"result"' in legacy.text and '"isError":true' not in legacy.text.replace(" ", "")
    call["params"]["_meta"] = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
    modern = http.post(hosted.url, json=call, headers={"accept": ACCEPT, "content-type": "application/json",
                                                    "mcp-protocol-version": MODERN, "mcp-method": "tools/call", "mcp-name": "whoami"})
    assert modern.status_code == 200, modern.text
    assert '"result"' in modern.text and '"isError":true' not in modern.text.replace(" ", "")


def test_by_position_params_are_refused_at_once(fuzz_target: Any) -> None:
    """Found by the fuzzing: the SDK server drops a request whose params is an array,
    so forwarding it left the caller waiting out the request timeout."""
    hosted, http, _ = fuzz_target
    sid = _session(hosted, http)
    r = http.post(hosted.url, content=b'{"jsonrpc":"2.0","id":7,"method":"tools/list","params":[]}',
                  headers={"accept": ACCEPT, "content-type": "application/json", "mcp-session-id": sid,
                           "mcp-protocol-version": "2025-11-25"}, timeout=3)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == -32602 and r.json()["id"] == 7


event_ids = st.one_of(
    st.sampled_from(["g-0", "g-1", "p1-2", "g-99999999999999999999", "-1", "g--1", "a-b-c", "g-", "-", "g-1.5", "g-１"]),
    st.text(max_size=24),
)


@LIVE
@given(
    st.sampled_from(["GET", "DELETE", "listen"]),
    st.sampled_from(["own", "garbage", "none"]),
    st.one_of(st.none(), event_ids),
    st.sampled_from([ACCEPT, "text/event-stream", "application/json", "*/*", ""]),
    st.one_of(st.just({"toolsListChanged": True}), json_values),
)
def test_streams_and_deletes_get_clear_answers(
    fuzz_target: Any, verb: str, session: str, last_event_id: str | None, accept: str, listen_filter: Any
) -> None:
    """GET (resumption with any Last-Event-ID), DELETE and modern subscriptions/listen
    with any filter: a stream the gateway opens starts with its priming or acknowledging
    event, and everything else is a clear error."""
    hosted, http, _ = fuzz_target
    sid = _session(hosted, http) if session == "own" else ("AAAA" * 20 if session == "garbage" else None)
    headers = {"accept": accept}
    if sid is not None:
        headers["mcp-session-id"] = sid
    if last_event_id is not None and last_event_id == last_event_id.strip() and last_event_id.isprintable():
        headers["last-event-id"] = last_event_id
    if verb == "listen":
        body = {"jsonrpc": "2.0", "id": 1, "method": "subscriptions/listen",
                "params": {"notifications": listen_filter, "_meta": {"io.modelcontextprotocol/protocolVersion": MODERN,
                                                                      "io.modelcontextprotocol/clientCapabilities": {}}}}
        headers.update({"content-type": "application/json", "mcp-protocol-version": MODERN, "mcp-method": "subscriptions/listen"})
        request = http.build_request("POST", hosted.url, json=body, headers={k: v.encode() for k, v in headers.items()})
    else:
        request = http.build_request(verb, hosted.url, headers={k: v.encode() for k, v in headers.items()})
    r = http.send(request, stream=True)
    try:
        assert r.status_code < 500, (verb, headers, r.status_code)
        if r.headers.get("content-type", "").startswith("text/event-stream"):
            assert r.status_code == 200
            first = b""
            for chunk in r.iter_raw():
                first += chunk
                if b"\n\n" in first:
                    break
            event = first.split(b"\n\n")[0]
            # The legacy priming event (an id, no data), or a listen's acknowledgement.
            assert event.startswith(b"id: ") or b"notifications/subscriptions/acknowledged" in event, (verb, headers, first)
        else:
            r.read()
            if r.content and r.headers.get("content-type", "").startswith("application/json"):
                _check_json_rpc(orjson.loads(r.content), error=r.status_code >= 400, sent=repr((verb, headers)).encode())
    finally:
        r.close()
