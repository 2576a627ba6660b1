"""Property-based fuzzing of the pure protocol rules that face untrusted input.

Every function here reads what a client (or a hosted server) sent before anything
else looks at it. The promise under test is the one the gateway makes for bad input:
a JSON-RPC error of the documented kind, never another exception. Examples are
derandomized, so CI sees the same cases on every run; `SMCP_FUZZ_RANDOM=1` explores
new ones locally.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from smcp.gateway.sealing import SessionSealer
from smcp.protocol import headers as legacy_headers
from smcp.protocol import jsonrpc, modern
from tests.fuzzing import envelopes, fuzz_settings, header_maps, json_values

FUZZ = fuzz_settings(400)

MAX_DEPTH = 16


def _raw_bodies() -> st.SearchStrategy[bytes]:
    # The standard library spells integers past 64 bits, which orjson refuses to write.
    dumped = envelopes.map(lambda v: json.dumps(v).encode())
    mutated = st.tuples(dumped, st.integers(min_value=0), st.binary(max_size=3)).map(
        lambda t: t[0][: t[1] % (len(t[0]) + 1)] + t[2] + t[0][t[1] % (len(t[0]) + 1) :]
    )
    spelled = st.sampled_from(
        [b'{"jsonrpc":"2.0","id":1,"method":"\\ud800"}', b'{"jsonrpc":"2.0","id":NaN,"method":"x"}',
         b'{"jsonrpc":"2.0","id":1,"id":2,"method":"x"}', b'{"jsonrpc":"2.0","id":1e400,"method":"x"}',
         b"\xef\xbb\xbf{}", b'"\xff"', b"[" * 2000 + b"]" * 2000]
    )
    return st.one_of(st.binary(max_size=200), dumped, mutated, spelled)


def _assert_error_body(body: bytes, code: int | None = None) -> dict[str, Any]:
    decoded = orjson.loads(body)
    assert decoded["jsonrpc"] == "2.0"
    assert isinstance(decoded["error"]["code"], int) and isinstance(decoded["error"]["message"], str)
    assert decoded["id"] is None or isinstance(decoded["id"], (str, int))
    if code is not None:
        assert decoded["error"]["code"] == code
    return decoded


@FUZZ
@given(_raw_bodies())
def test_any_body_parses_or_is_a_json_rpc_error(raw: bytes) -> None:
    try:
        message = jsonrpc.parse(raw, max_depth=MAX_DEPTH)
    except jsonrpc.ProtocolError as exc:
        assert exc.code in (jsonrpc.PARSE_ERROR, jsonrpc.INVALID_REQUEST, jsonrpc.INVALID_PARAMS)
        # The answer the gateway builds from the refusal is itself valid JSON-RPC.
        _assert_error_body(jsonrpc.error(exc.id, exc.code, exc.message), exc.code)
        return
    body = message.body
    assert isinstance(body, dict) and body["jsonrpc"] == "2.0"
    if message.kind is jsonrpc.Kind.response:
        assert ("result" in body) != ("error" in body) and "method" not in body
        if "result" in body:
            assert isinstance(body["result"], dict)
        else:
            assert isinstance(body["error"]["code"], int) and isinstance(body["error"]["message"], str)
    else:
        # Anything routed by method name has one, and a structured params if any.
        assert isinstance(message.method, str) and message.method
        assert body.get("params") is None or isinstance(body["params"], dict)
    if message.kind is not jsonrpc.Kind.notification:
        assert isinstance(message.id, (str, int)) and not isinstance(message.id, bool)
    # What the gateway reads off every accepted message never raises.
    assert orjson.loads(message.id_key) == message.id
    message.progress_token  # noqa: B018
    modern.is_modern(None, message.body)


@FUZZ
@given(_raw_bodies())
def test_any_line_from_a_server_is_a_message_a_refusal_or_noise(raw: bytes) -> None:
    parsed = jsonrpc.from_server(raw)
    if isinstance(parsed, jsonrpc.ProtocolError):
        # A refusal names a request only by an id that could be one.
        assert parsed.id is None or (isinstance(parsed.id, (str, int)) and not isinstance(parsed.id, bool))
        _assert_error_body(orjson.dumps({"jsonrpc": "2.0", "id": parsed.id, "error": jsonrpc.invalid_answer(parsed)}))
    elif parsed is not None:
        assert isinstance(parsed, jsonrpc.Message)


@FUZZ
@given(st.integers(min_value=1, max_value=40), st.sampled_from([b"[", b'{"a":']), st.integers(min_value=1, max_value=30))
def test_nesting_is_refused_exactly_past_the_limit(depth: int, opener: bytes, limit: int) -> None:
    closer = b"]" if opener == b"[" else b"}"
    raw = opener * depth + b"1" + closer * depth
    if depth > limit:
        try:
            jsonrpc.loads_limited(raw, max_depth=limit)
        except jsonrpc.ProtocolError as exc:
            assert exc.code == jsonrpc.PARSE_ERROR and "nesting" in exc.message
        else:
            raise AssertionError(f"depth {depth} passed a limit of {limit}")
    else:
        jsonrpc.loads_limited(raw, max_depth=limit)


@FUZZ
@given(envelopes, header_maps)
def test_modern_checks_answer_every_request_with_a_status_and_an_error(body: dict[str, Any], headers: dict[str, str]) -> None:
    raw = json.dumps(body).encode()
    try:
        message = jsonrpc.parse(raw, max_depth=MAX_DEPTH)
    except jsonrpc.ProtocolError:
        return
    refusal = modern.check(message, headers)
    if refusal is None:
        if message.kind is jsonrpc.Kind.request:
            # Nothing passes unless the version and method headers agree with the body.
            assert headers["mcp-protocol-version"] == message.body["params"]["_meta"][modern.META_VERSION]
            assert headers["mcp-method"] == message.method
        return
    assert refusal.status in (400, 404)
    decoded = _assert_error_body(refusal.body)
    assert decoded["id"] == message.id
    expected = {400: {modern.HEADER_MISMATCH, modern.UNSUPPORTED_PROTOCOL_VERSION, jsonrpc.INVALID_PARAMS},
                404: {jsonrpc.METHOD_NOT_FOUND}}
    assert decoded["error"]["code"] in expected[refusal.status]


@FUZZ
@given(
    st.dictionaries(st.text(max_size=6), json_values, max_size=4),
    header_maps,
    st.dictionaries(st.sampled_from(["region", "limit", "flag"]), st.lists(st.text(max_size=5), min_size=1, max_size=3).map(tuple), max_size=3),
)
def test_mirrored_parameter_checks_never_raise(arguments: dict[str, Any], headers: dict[str, str], mirrored: dict[str, tuple[str, ...]]) -> None:
    message = jsonrpc.Message(jsonrpc.Kind.request, {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                                     "params": {"name": "t", "arguments": arguments}}, b"")
    refusal = modern.check_param_headers(message, headers, mirrored)
    if refusal is not None:
        assert refusal.status == 400
        _assert_error_body(refusal.body, modern.HEADER_MISMATCH)
    modern.mirrored_params({"inputSchema": arguments})


@FUZZ
@given(st.text(max_size=60))
def test_header_values_decode_or_are_malformed(value: str) -> None:
    decoded = modern.decode_header_value(value)
    assert decoded is None or isinstance(decoded, str)
    if decoded is not None and not value.startswith("=?base64?"):
        assert decoded == value and all(0x20 <= ord(c) <= 0x7E or c == "\t" for c in value)


@FUZZ
@given(st.binary(max_size=300))
def test_status_for_any_upstream_answer(raw: bytes) -> None:
    assert modern.status_for_answer(raw) in (200, 400, 404)


@FUZZ
@given(st.text(max_size=60), st.sampled_from(["application/json", "text/event-stream"]))
def test_accept_parsing_never_raises(accept: str, media_type: str) -> None:
    assert legacy_headers.accepts(accept, media_type) in (True, False)


_SEALER = SessionSealer(bytes(range(32)), max_age_s=3600)
_SEALED = _SEALER.seal({"tenant": "t", "server": "s", "principal": "p"})


@FUZZ
@given(st.text(max_size=200))
def test_any_session_id_opens_to_nothing(token: str) -> None:
    assert _SEALER.open(token) is None


@FUZZ
@given(st.integers(min_value=0, max_value=len(_SEALED) - 1), st.sampled_from("AQgw_-"))
def test_a_sealed_session_id_altered_anywhere_opens_to_nothing(position: int, replacement: str) -> None:
    assert _SEALER.open(_SEALED)["principal"] == "p"  # type: ignore[index]
    altered = _SEALED[:position] + replacement + _SEALED[position + 1 :]
    if altered != _SEALED:
        opened = _SEALER.open(altered)
        # The last character carries only some bits of the tag; a change confined to
        # the padding bits decodes to the same bytes and is the same id.
        assert opened is None or (position == len(_SEALED) - 1 and opened == _SEALER.open(_SEALED))
