"""The authorization server's private signing keys, sealed with the secrets key ring.

    stored = "smcp-sk1." <KEK version> "." b64url(wrapped data key) "." b64url(ciphertext)

The envelope is the tenant secrets' (smcp.secrets.crypto): a fresh AES-256-GCM data
key encrypts the private JWK, the key ring's active KEK wraps the data key. The key id
is associated data of both layers (and the KEK version of the wrapping one), so a row
copied to another kid fails authentication instead of signing under a name that is
not its own; the AAD labels differ from the secrets' so neither blob opens as the other.

The column and schema are unchanged: the version prefix tells sealed rows from rows
written before sealing, which hold the private JWK in clear (a JSON object, or PEM).
Those are still read, and sealed at their first load (tokens.KeyRing.reload) or by
the next KEK rotation. SealedSigningKeys lets SecretVault.rotate re-wrap these data
keys with the secrets' and count them before it retires a KEK, so a rotation never
leaves a signing key unreadable.
"""

from __future__ import annotations

import base64
import binascii
from collections import Counter

from smcp.secrets import crypto
from smcp.secrets.crypto import SecretUnreadable
from smcp.secrets.keyring import KeyRing as KekRing
from smcp.store.identity import OAuthRepo

PREFIX = "smcp-sk1."
_LEGACY_STARTS = ("{", "-----BEGIN")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def is_sealed(stored: str) -> bool:
    return stored.startswith(PREFIX)


def is_legacy(stored: str) -> bool:
    return stored.lstrip().startswith(_LEGACY_STARTS)


def _parse(stored: str, kid: str) -> tuple[int, bytes, bytes]:
    try:
        version_text, wrapped, ciphertext = stored[len(PREFIX) :].split(".")
        version = int(version_text)
        if version < 1:
            raise ValueError(version)
        return version, _unb64(wrapped), _unb64(ciphertext)
    except (ValueError, binascii.Error):
        raise SecretUnreadable(f"signing key {kid}: the stored form is malformed") from None


def kek_version(stored: str) -> int | None:
    """The KEK version a sealed row is wrapped by; None for plaintext or unreadable rows."""
    if not is_sealed(stored):
        return None
    try:
        return _parse(stored, "")[0]
    except SecretUnreadable:
        return None


def _seal(private_key: str, *, kid: str, kek_version: int, kek: bytes) -> str:
    ciphertext, wrapped = crypto.seal_envelope(
        private_key.encode("utf-8"),
        aad=crypto.signing_key_aad(kid),
        wrap_aad=crypto.signing_wrap_aad(kid, kek_version),
        kek=kek,
    )
    return f"{PREFIX}{kek_version}.{_b64(wrapped)}.{_b64(ciphertext)}"


def seal(private_key: str, *, kid: str, keyring: KekRing) -> str:
    """The stored form of a private key (JWK JSON) under the ring's active KEK."""
    version, kek = keyring.active()
    return _seal(private_key, kid=kid, kek_version=version, kek=kek)


def _kek(keyring: KekRing, version: int, kid: str) -> bytes:
    kek = keyring.get(version)
    if kek is None:
        raise SecretUnreadable(
            f"signing key {kid} is wrapped by KEK v{version}, which is not in the key ring ({keyring.source}); "
            "restore that key, or delete the signing key (tokens it signed stop working)"
        )
    return kek


def unseal(stored: str, *, kid: str, keyring: KekRing) -> str:
    """The private key (JWK JSON, or PEM for some old rows) of a stored row."""
    if not is_sealed(stored):
        if is_legacy(stored):
            return stored
        raise SecretUnreadable(f"signing key {kid}: unknown stored format (written by a newer SMCP?)")
    version, wrapped, ciphertext = _parse(stored, kid)
    try:
        plain = crypto.open_envelope(
            ciphertext,
            wrapped,
            aad=crypto.signing_key_aad(kid),
            wrap_aad=crypto.signing_wrap_aad(kid, version),
            kek=_kek(keyring, version, kid),
            what=f"signing key {kid}",
        )
    except SecretUnreadable as exc:
        if "failed authentication" not in exc.message:
            raise
        raise SecretUnreadable(
            f"signing key {kid} does not decrypt: it was altered, copied from another key id, "
            f"or sealed with another key ring ({exc.message})"
        ) from None
    return plain.decode("utf-8")


def rewrap(stored: str, *, kid: str, keyring: KekRing, target: int) -> str:
    """The stored form under KEK `target`: a sealed row gets its data key re-wrapped (the
    ciphertext is kept), a plaintext row is sealed."""
    new_kek = _kek(keyring, target, kid)
    if not is_sealed(stored):
        return _seal(unseal(stored, kid=kid, keyring=keyring), kid=kid, kek_version=target, kek=new_kek)
    version, wrapped, ciphertext = _parse(stored, kid)
    if version == target:
        return stored
    new_wrapped = crypto.rewrap_data_key(
        wrapped,
        old_aad=crypto.signing_wrap_aad(kid, version),
        old_kek=_kek(keyring, version, kid),
        new_aad=crypto.signing_wrap_aad(kid, target),
        new_kek=new_kek,
        what=f"signing key {kid}'s wrapped data key",
    )
    return f"{PREFIX}{target}.{_b64(new_wrapped)}.{_b64(ciphertext)}"


class SealedSigningKeys:
    """The signing keys as the secrets vault sees them: data keys a KEK rotation must
    re-wrap, and count before it retires a KEK (smcp.secrets.vault.WrappedElsewhere)."""

    def __init__(self, repo: OAuthRepo) -> None:
        self._repo = repo

    async def kek_usage(self) -> dict[int, int]:
        versions = (kek_version(k.private_jwk) for k in await self._repo.signing_keys())
        return dict(Counter(v for v in versions if v is not None))

    async def rewrap(self, keyring: KekRing, target: int) -> int:
        done = 0
        # A handful of rows at most; a row another node changed meanwhile (minted, dropped,
        # sealed) fails its compare-and-swap and is looked at again on the next pass.
        for _ in range(5):
            stale = [k for k in await self._repo.signing_keys() if kek_version(k.private_jwk) != target]
            if not stale:
                break
            for key in stale:
                new = rewrap(key.private_jwk, kid=key.kid, keyring=keyring, target=target)
                if await self._repo.replace_private_key(key.kid, old=key.private_jwk, new=new):
                    done += 1
        return done
