from __future__ import annotations

import pytest

from smcp.protocol import jsonrpc


def test_classifies_requests_notifications_and_responses() -> None:
    assert jsonrpc.parse(b'{"jsonrpc":"2.0","id":1,"method":"x"}', max_depth=8).kind is jsonrpc.Kind.request
    assert jsonrpc.parse(b'{"jsonrpc":"2.0","method":"x"}', max_depth=8).kind is jsonrpc.Kind.notification
    assert jsonrpc.parse(b'{"jsonrpc":"2.0","id":"a","result":{}}', max_depth=8).kind is jsonrpc.Kind.response


def test_id_keys_keep_1_and_string_1_apart() -> None:
    a = jsonrpc.parse(b'{"jsonrpc":"2.0","id":1,"method":"x"}', max_depth=8)
    b = jsonrpc.parse(b'{"jsonrpc":"2.0","id":"1","method":"x"}', max_depth=8)
    assert a.id_key != b.id_key


@pytest.mark.parametrize(
    "raw,code",
    [
        (b"[" * 5000 + b"]" * 5000, jsonrpc.PARSE_ERROR),
        (b'{"a":' * 70 + b"1" + b"}" * 70, jsonrpc.PARSE_ERROR),  # over max_depth=64, under orjson's own cap
        (b'{"jsonrpc":"2.0","id":1,"method":"x","params":"\\ud800"}', jsonrpc.PARSE_ERROR),
        (b'{"jsonrpc":"2.0","id":1,"method":"x","params":{"n":NaN}}', jsonrpc.PARSE_ERROR),
        (b"\xff\xfe", jsonrpc.PARSE_ERROR),
        (b'[{"jsonrpc":"2.0","id":1,"method":"x"}]', jsonrpc.INVALID_REQUEST),
        (b'{"jsonrpc":"1.0","id":1,"method":"x"}', jsonrpc.INVALID_REQUEST),
        (b'{"jsonrpc":"2.0","id":true,"method":"x"}', jsonrpc.INVALID_REQUEST),
        (b'{"jsonrpc":"2.0","id":1.5,"method":"x"}', jsonrpc.INVALID_REQUEST),
        (b'{"jsonrpc":"2.0","id":1,"method":""}', jsonrpc.INVALID_REQUEST),
        (b'{"jsonrpc":"2.0","id":1,"method":"x","params":3}', jsonrpc.INVALID_REQUEST),
        # JSON-RPC allows by-position params; MCP does not, and an SDK server drops them.
        (b'{"jsonrpc":"2.0","id":1,"method":"tools/list","params":[1]}', jsonrpc.INVALID_PARAMS),
        (b'{"jsonrpc":"2.0","method":"notifications/x","params":[]}', jsonrpc.INVALID_PARAMS),
        (b'{"jsonrpc":"2.0","id":1}', jsonrpc.INVALID_REQUEST),
        # What an MCP result and a JSON-RPC error must be, whoever sends them.
        (b'{"jsonrpc":"2.0","id":1,"result":null}', jsonrpc.INVALID_REQUEST),
        (b'{"jsonrpc":"2.0","id":1,"result":[]}', jsonrpc.INVALID_REQUEST),
        (b'{"jsonrpc":"2.0","id":1,"error":5}', jsonrpc.INVALID_REQUEST),
        (b'{"jsonrpc":"2.0","id":1,"error":{"code":"x","message":"m"}}', jsonrpc.INVALID_REQUEST),
        (b'{"jsonrpc":"2.0","id":1,"error":{"code":true,"message":"m"}}', jsonrpc.INVALID_REQUEST),
        (b'{"jsonrpc":"2.0","id":1,"error":{"code":1}}', jsonrpc.INVALID_REQUEST),
        (b'"just a string"', jsonrpc.INVALID_REQUEST),
    ],
)
def test_bad_input_gets_the_right_error(raw: bytes, code: int) -> None:
    with pytest.raises(jsonrpc.ProtocolError) as info:
        jsonrpc.parse(raw, max_depth=64)
    assert info.value.code == code


def test_depth_limit_is_exact() -> None:
    ok = b'{"a":' * 63 + b"1" + b"}" * 63
    assert jsonrpc.loads_limited(ok, max_depth=64)
    with pytest.raises(jsonrpc.ProtocolError):
        jsonrpc.loads_limited(b'{"a":' * 65 + b"1" + b"}" * 65, max_depth=64)
