"""Envelope encryption: round trip, associated-data binding, tamper detection, re-wrap; redaction forms."""

from __future__ import annotations

import base64
import dataclasses
import os
from urllib.parse import quote, quote_plus

import pytest

from smcp.secrets import crypto
from smcp.secrets.redact import REDACTED, Redactor

KEK1 = os.urandom(32)
KEK2 = os.urandom(32)
WHERE = {"tenant": "acme", "name": "API_TOKEN", "version": 3}


def _seal(value: bytes = b"s3cr3t-value") -> crypto.Envelope:
    return crypto.seal(value, **WHERE, kek=KEK1, kek_version=1)


def _open(env: crypto.Envelope, **override: object) -> bytes:
    args = {**WHERE, "kek": KEK1, "kek_version": env.kek_version, **override}
    return crypto.open_value(env.ciphertext, env.wrapped_key, **args)  # type: ignore[arg-type]


def test_round_trip_and_fresh_keys_and_nonces() -> None:
    a, b = _seal(), _seal()
    assert _open(a) == _open(b) == b"s3cr3t-value"
    # A fresh data key and nonces per version: equal values never give equal bytes.
    assert a.ciphertext != b.ciphertext and a.wrapped_key != b.wrapped_key
    assert b"s3cr3t-value" not in a.ciphertext


@pytest.mark.parametrize(
    "override", [{"tenant": "victim"}, {"name": "OTHER"}, {"version": 2}, {"version": 4}], ids=str
)
def test_ciphertext_moved_to_another_tenant_name_or_version_fails(override: dict[str, object]) -> None:
    env = _seal()
    with pytest.raises(crypto.SecretUnreadable):
        _open(env, **override)


def test_data_layer_is_bound_too() -> None:
    # Even with the right data key in hand (re-wrapped for the new place), the value's own
    # ciphertext refuses to open elsewhere.
    env = _seal()
    moved = crypto.rewrap(
        env.wrapped_key, **WHERE, old_kek=KEK1, old_kek_version=1, new_kek=KEK1, new_kek_version=1
    )
    dek = crypto.unwrap_key(moved, **WHERE, kek=KEK1, kek_version=1)
    forged = crypto._seal(KEK1, dek, crypto.wrap_aad("victim", "API_TOKEN", 3, 1))
    with pytest.raises(crypto.SecretUnreadable):
        crypto.open_value(env.ciphertext, forged, tenant="victim", name="API_TOKEN", version=3, kek=KEK1, kek_version=1)


@pytest.mark.parametrize("field", ["ciphertext", "wrapped_key"])
@pytest.mark.parametrize("position", [0, 1, 13, -1])
def test_any_flipped_bit_is_detected(field: str, position: int) -> None:
    env = _seal()
    blob = bytearray(getattr(env, field))
    blob[position] ^= 0x01
    tampered = dataclasses.replace(env, **{field: bytes(blob)})
    with pytest.raises(crypto.SecretUnreadable):
        _open(tampered)


def test_truncated_blobs_are_refused() -> None:
    env = _seal()
    with pytest.raises(crypto.SecretUnreadable):
        crypto.open_value(env.ciphertext[:10], env.wrapped_key, **WHERE, kek=KEK1, kek_version=1)


def test_wrong_kek_or_relabelled_kek_version_fails() -> None:
    env = _seal()
    with pytest.raises(crypto.SecretUnreadable):
        _open(env, kek=KEK2)
    with pytest.raises(crypto.SecretUnreadable):
        _open(env, kek_version=2)  # right key, but the wrapped key says it belongs to v1


def test_rewrap_moves_the_data_key_to_a_new_kek_and_keeps_the_value() -> None:
    env = _seal(b"rotate me")
    wrapped = crypto.rewrap(env.wrapped_key, **WHERE, old_kek=KEK1, old_kek_version=1, new_kek=KEK2, new_kek_version=2)
    assert crypto.open_value(env.ciphertext, wrapped, **WHERE, kek=KEK2, kek_version=2) == b"rotate me"
    with pytest.raises(crypto.SecretUnreadable):
        crypto.open_value(env.ciphertext, wrapped, **WHERE, kek=KEK1, kek_version=1)


# ----------------------------------------------------------------------------- redaction

SECRET = b"tok_3x4mpl3/+=?&\xc3\xa9nd"


def _forms(value: bytes) -> list[str]:
    return [
        value.decode(),
        base64.b64encode(value).decode(),
        base64.b64encode(value).decode().rstrip("="),
        base64.urlsafe_b64encode(value).decode(),
        base64.urlsafe_b64encode(value).decode().rstrip("="),
        value.hex(),
        value.hex().upper(),
        quote(value, safe=""),
        quote_plus(value, safe=""),
        quote(value, safe="").lower(),
    ]


@pytest.mark.parametrize("form", range(10))
def test_redacts_every_encoding(form: int) -> None:
    encoded = _forms(SECRET)[form]
    redact = Redactor([SECRET, b"another-secret"])
    line = f"token={encoded} (done)"
    out = redact(line)
    assert encoded not in out and REDACTED in out
    assert out.startswith("token=") and out.endswith(" (done)")


def test_redactor_leaves_other_text_and_skips_tiny_values() -> None:
    redact = Redactor([b"abc", b"longer-secret"])
    assert redact("abc abc and longer-secret") == f"abc abc and {REDACTED}"
    assert not Redactor([])
    assert Redactor([]).__call__("anything") == "anything"
