"""API keys: `smcp_<id>_<secret>`. Only the secret's SHA-256 is stored.

The secret is 256 random bits, so a fast hash is enough: a password KDF would add
tens of milliseconds per request and buy nothing against a key this strong.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

PREFIX = "smcp_"


@dataclass(frozen=True, slots=True)
class NewKey:
    key_id: str
    secret_hash: str
    token: str  # shown to the user once

    @property
    def display_prefix(self) -> str:
        return f"{PREFIX}{self.key_id}_"


def generate() -> NewKey:
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return NewKey(key_id=key_id, secret_hash=hash_secret(secret), token=f"{PREFIX}{key_id}_{secret}")


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split(token: str) -> tuple[str, str] | None:
    """Return (key_id, secret) for a well-formed token, else None."""
    if not token.startswith(PREFIX):
        return None
    rest = token[len(PREFIX) :]
    key_id, sep, secret = rest.partition("_")
    if not sep or len(key_id) != 12 or not secret or len(secret) > 128:
        return None
    return key_id, secret


def matches(secret: str, secret_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), secret_hash)
