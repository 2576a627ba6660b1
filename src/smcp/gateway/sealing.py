"""Session ids that carry their own routing state, sealed with AES-256-GCM.

A legacy session on a shared instance needs nothing from the node that created it:
its tenant, server, revision, principal and negotiated client capabilities travel
inside the id, so any gateway process holding the key can serve it (or the same
process after a restart). The key is random, not derived from a password, so opening
an id costs microseconds rather than a KDF per request.
"""

from __future__ import annotations

import base64
import os
import secrets
import time
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_AAD = b"smcp-session-v1"


def load_or_create_key(path: Path) -> bytes:
    if path.exists():
        return base64.b64decode(path.read_text().strip())
    path.parent.mkdir(parents=True, exist_ok=True)
    key = AESGCM.generate_key(bit_length=256)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(base64.b64encode(key).decode() + "\n")
    return key


class SessionSealer:
    def __init__(self, key: bytes, *, max_age_s: float) -> None:
        self._aead = AESGCM(key)
        self._max_age_s = max_age_s

    def seal(self, state: dict[str, Any]) -> str:
        nonce = secrets.token_bytes(12)
        payload = orjson.dumps({**state, "iat": int(time.time())})
        return base64.urlsafe_b64encode(nonce + self._aead.encrypt(nonce, payload, _AAD)).decode().rstrip("=")

    def open(self, token: str) -> dict[str, Any] | None:
        """The sealed state, or None for anything forged, altered, expired or malformed."""
        if len(token) > 4096:
            return None
        try:
            blob = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            if len(blob) < 12 + 16:
                return None
            state = orjson.loads(self._aead.decrypt(blob[:12], blob[12:], _AAD))
        except (ValueError, InvalidTag, orjson.JSONDecodeError):
            return None
        if not isinstance(state, dict) or time.time() - state.get("iat", 0) > self._max_age_s:
            return None
        return state
