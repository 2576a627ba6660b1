"""Tenant secrets: envelope encryption, the key ring, delivery to sandboxes, log redaction.

    vault = open_vault(settings, store.secrets)
    await vault.set("acme", "API_TOKEN", b"…")        # sealed; never readable through the API
    values = await vault.resolve("acme", ["API_TOKEN"]) # for an instance start only
    await vault.rotate()                               # new KEK, re-wrap every data key
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from smcp.secrets.crypto import SecretUnreadable
from smcp.secrets.keyring import KeyRing, KeyRingError
from smcp.secrets.redact import Redactor
from smcp.secrets.vault import (
    InvalidSecret,
    KeyRingStatus,
    RotationReport,
    SecretTooLarge,
    SecretVault,
    WrappedElsewhere,
)

if TYPE_CHECKING:
    from smcp.config import Settings
    from smcp.secrets.vault import Repo


def open_vault(
    settings: Settings, repo: Repo, *, keyring: KeyRing | None = None, also: Sequence[WrappedElsewhere] = ()
) -> SecretVault:
    """The vault; `also` names other holders of wrapped data keys (the signing keys) for rotation."""
    return SecretVault(
        repo, keyring or KeyRing.from_settings(settings), max_value_bytes=settings.max_secret_bytes, also=also
    )


__all__ = [
    "InvalidSecret",
    "KeyRing",
    "KeyRingError",
    "KeyRingStatus",
    "Redactor",
    "RotationReport",
    "SecretTooLarge",
    "SecretUnreadable",
    "SecretVault",
    "WrappedElsewhere",
    "open_vault",
]
