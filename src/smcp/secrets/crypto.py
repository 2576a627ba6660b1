"""Envelope encryption of one secret version with AES-256-GCM.

    value ──AES-256-GCM(data key, aad)──► ciphertext
    data key ──AES-256-GCM(KEK v, aad + v)──► wrapped key

Every version gets a fresh random 256-bit data key and fresh 96-bit nonces. The
tenant, secret name and version are the associated data of both layers, so a
ciphertext (or a wrapped key) copied to another tenant, name or version fails its
authentication tag instead of decrypting there. The KEK version is bound into the
wrapping layer too, so a wrapped key cannot be relabelled as another KEK's.

Stored layout of both blobs: a format byte, the 12-byte nonce, then ciphertext+tag.

The same envelope seals the authorization server's private signing keys
(smcp.auth.keyseal), with associated data of their own: the key id on both layers, the
KEK version on the wrapping one. Each purpose has its own AAD label, so a blob of one
kind can never be opened as the other.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from smcp.domain import SmcpError

FORMAT = 1
KEY_BYTES = 32
_NONCE_BYTES = 12


class SecretUnreadable(SmcpError):
    """A stored secret failed authentication: tampered, moved, or its key is gone."""

    code = "secret_unreadable"
    status = 500


@dataclass(frozen=True, slots=True)
class Envelope:
    ciphertext: bytes
    wrapped_key: bytes
    kek_version: int


def _frame(*parts: str | int) -> bytes:
    out = bytearray()
    for part in parts:
        data = str(part).encode("utf-8")
        out += len(data).to_bytes(4, "big") + data
    return bytes(out)


def data_aad(tenant: str, name: str, version: int) -> bytes:
    return b"smcp-secret-v1\0" + _frame(tenant, name, version)


def wrap_aad(tenant: str, name: str, version: int, kek_version: int) -> bytes:
    return b"smcp-dek-v1\0" + _frame(tenant, name, version, kek_version)


def signing_key_aad(kid: str) -> bytes:
    return b"smcp-signing-key-v1\0" + _frame(kid)


def signing_wrap_aad(kid: str, kek_version: int) -> bytes:
    return b"smcp-signing-dek-v1\0" + _frame(kid, kek_version)


def _seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(_NONCE_BYTES)
    return bytes([FORMAT]) + nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def _open(key: bytes, blob: bytes, aad: bytes, what: str) -> bytes:
    if len(blob) < 1 + _NONCE_BYTES + 16 or blob[0] != FORMAT:
        raise SecretUnreadable(f"{what} is malformed")
    try:
        return AESGCM(key).decrypt(blob[1 : 1 + _NONCE_BYTES], blob[1 + _NONCE_BYTES :], aad)
    except InvalidTag:
        raise SecretUnreadable(f"{what} failed authentication (tampered, moved or wrong key)") from None


def seal_envelope(value: bytes, *, aad: bytes, wrap_aad: bytes, kek: bytes) -> tuple[bytes, bytes]:
    """(ciphertext, wrapped data key) of `value` under a fresh data key wrapped by `kek`."""
    data_key = AESGCM.generate_key(bit_length=256)
    return _seal(data_key, value, aad), _seal(kek, data_key, wrap_aad)


def unwrap_data_key(wrapped_key: bytes, *, wrap_aad: bytes, kek: bytes, what: str) -> bytes:
    data_key = _open(kek, wrapped_key, wrap_aad, what)
    if len(data_key) != KEY_BYTES:
        raise SecretUnreadable(f"{what} has the wrong length")
    return data_key


def open_envelope(ciphertext: bytes, wrapped_key: bytes, *, aad: bytes, wrap_aad: bytes, kek: bytes, what: str) -> bytes:
    data_key = unwrap_data_key(wrapped_key, wrap_aad=wrap_aad, kek=kek, what=f"{what}'s wrapped data key")
    return _open(data_key, ciphertext, aad, what)


def rewrap_data_key(wrapped_key: bytes, *, old_aad: bytes, old_kek: bytes, new_aad: bytes, new_kek: bytes, what: str) -> bytes:
    """The same data key under another KEK; the ciphertext it protects is untouched."""
    return _seal(new_kek, unwrap_data_key(wrapped_key, wrap_aad=old_aad, kek=old_kek, what=what), new_aad)


def seal(value: bytes, *, tenant: str, name: str, version: int, kek: bytes, kek_version: int) -> Envelope:
    ciphertext, wrapped = seal_envelope(
        value, aad=data_aad(tenant, name, version), wrap_aad=wrap_aad(tenant, name, version, kek_version), kek=kek
    )
    return Envelope(ciphertext=ciphertext, wrapped_key=wrapped, kek_version=kek_version)


def unwrap_key(wrapped_key: bytes, *, tenant: str, name: str, version: int, kek: bytes, kek_version: int) -> bytes:
    return unwrap_data_key(
        wrapped_key, wrap_aad=wrap_aad(tenant, name, version, kek_version), kek=kek, what="wrapped data key"
    )


def open_value(
    ciphertext: bytes, wrapped_key: bytes, *, tenant: str, name: str, version: int, kek: bytes, kek_version: int
) -> bytes:
    data_key = unwrap_key(wrapped_key, tenant=tenant, name=name, version=version, kek=kek, kek_version=kek_version)
    return _open(data_key, ciphertext, data_aad(tenant, name, version), f"secret {name!r}")


def rewrap(
    wrapped_key: bytes,
    *,
    tenant: str,
    name: str,
    version: int,
    old_kek: bytes,
    old_kek_version: int,
    new_kek: bytes,
    new_kek_version: int,
) -> bytes:
    """The same data key under another KEK; the value's ciphertext is untouched."""
    return rewrap_data_key(
        wrapped_key,
        old_aad=wrap_aad(tenant, name, version, old_kek_version),
        old_kek=old_kek,
        new_aad=wrap_aad(tenant, name, version, new_kek_version),
        new_kek=new_kek,
        what="wrapped data key",
    )
