"""A short-lived cache in front of credential checks, kept off the database per request.

Revoking a key takes effect within `ttl_s` on every node; that bound is a setting.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable

from smcp.domain import Principal
from smcp.ttlcache import MISS, TTLCache

Authenticate = Callable[[str], Awaitable[Principal | None]]


class CachedAuthenticator:
    def __init__(self, inner: Authenticate, ttl_s: float, max_entries: int = 10_000) -> None:
        self._inner = inner
        # Keyed by the token's hash, so the cache holds no token. Misses are cached
        # too, so a flood of bad keys cannot hammer the database.
        self._cache: TTLCache[bytes, Principal | None] = TTLCache(ttl_s, max_entries=max_entries)

    async def __call__(self, token: str) -> Principal | None:
        key = hashlib.sha256(token.encode()).digest()
        hit = self._cache.peek(key)
        if hit is not MISS:
            return hit  # type: ignore[return-value]
        return await self._cache.get(key, lambda: self._inner(token))
