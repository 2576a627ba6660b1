"""A short-lived cache in front of credential checks, kept off the database per request.

Revoking a key takes effect within `ttl_s` on every node; that bound is a setting.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable

from smcp.domain import Principal

Authenticate = Callable[[str], Awaitable[Principal | None]]


class CachedAuthenticator:
    def __init__(self, inner: Authenticate, ttl_s: float, max_entries: int = 10_000) -> None:
        self._inner = inner
        self._ttl = ttl_s
        self._max = max_entries
        self._entries: dict[bytes, tuple[float, Principal | None]] = {}

    async def __call__(self, token: str) -> Principal | None:
        if self._ttl <= 0:
            return await self._inner(token)
        key = hashlib.sha256(token.encode()).digest()
        now = time.monotonic()
        hit = self._entries.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        principal = await self._inner(token)
        if len(self._entries) >= self._max:
            self._entries.clear()
        # Misses are cached too, so a flood of bad keys cannot hammer the database.
        self._entries[key] = (now + self._ttl, principal)
        return principal
