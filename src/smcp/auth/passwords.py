"""Local user passwords: argon2id (argon2-cffi), parameters from RFC 9106's second recommendation.

A login is rare and interactive, so the KDF's ~50 ms is spent only there, never per
MCP request (access tokens are what the data plane checks).
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_hasher = PasswordHasher()  # argon2id, 64 MiB, t=3, p=4 (argon2-cffi defaults, RFC 9106 low-memory)

MIN_LENGTH = 10
MAX_LENGTH = 1024

# Verifying against this when the user does not exist keeps the timing of "no such
# user" and "wrong password" alike.
_DUMMY = _hasher.hash("smcp-dummy-password")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    if len(password) > MAX_LENGTH:
        return False
    try:
        return _hasher.verify(password_hash or _DUMMY, password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


def check_strength(password: str) -> str | None:
    """Why a new password is refused, or None."""
    if len(password) < MIN_LENGTH:
        return f"password must be at least {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"password must be at most {MAX_LENGTH} characters"
    return None
