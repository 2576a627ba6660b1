"""API keys: created for a tenant, listed without secrets, revoked, and checked per request."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

import sqlalchemy as sa

from smcp.auth import apikeys
from smcp.domain import ApiKey, NotFound, Principal
from smcp.store import tables as t
from smcp.store.db import Database

log = logging.getLogger(__name__)

# last_used_at is advisory; recording it at most this often keeps authenticate()
# a single indexed read on the hot path instead of a write per request.
TOUCH_INTERVAL = timedelta(seconds=60)


def _api_key(row: sa.Row) -> ApiKey:
    return ApiKey(
        id=row.id,
        tenant=row.tenant_id,
        name=row.name,
        prefix=f"{apikeys.PREFIX}{row.id}_",
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
        role=row.role,
        servers=tuple(row.servers) if row.servers is not None else None,
    )


class ApiKeyRepo:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._touches: set[asyncio.Task[None]] = set()
        self._touching: set[str] = set()

    async def create(
        self, tenant: str, name: str, *, role: str = "viewer", servers: tuple[str, ...] | None = None
    ) -> tuple[ApiKey, str]:
        """Create a key with a tenant role, optionally limited to some servers; returns it and
        its token, which is never retrievable again."""
        new = apikeys.generate()
        now = t.utcnow()
        async with self._db.write() as conn:
            if not await conn.scalar(sa.select(sa.literal(1)).where(t.tenants.c.id == tenant)):
                raise NotFound(f"tenant {tenant!r} not found")
            await conn.execute(
                t.api_keys.insert().values(
                    id=new.key_id,
                    tenant_id=tenant,
                    name=name,
                    secret_hash=new.secret_hash,
                    created_at=now,
                    role=role,
                    servers=list(servers) if servers is not None else None,
                )
            )
        key = ApiKey(
            id=new.key_id, tenant=tenant, name=name, prefix=new.display_prefix, created_at=now, role=role, servers=servers
        )
        return key, new.token

    async def list(self, tenant: str) -> list[ApiKey]:
        query = (
            sa.select(
                t.api_keys.c.id,
                t.api_keys.c.tenant_id,
                t.api_keys.c.name,
                t.api_keys.c.created_at,
                t.api_keys.c.revoked_at,
                t.api_keys.c.last_used_at,
                t.api_keys.c.role,
                t.api_keys.c.servers,
            )
            .where(t.api_keys.c.tenant_id == tenant)
            .order_by(t.api_keys.c.created_at, t.api_keys.c.id)
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [_api_key(r) for r in rows]

    async def revoke(self, tenant: str, key_id: str) -> None:
        """Revoke a key of `tenant`. Revoking twice is a no-op; an unknown key is NotFound."""
        async with self._db.write() as conn:
            found = await conn.scalar(
                sa.select(sa.literal(1)).where(t.api_keys.c.id == key_id, t.api_keys.c.tenant_id == tenant)
            )
            if not found:
                raise NotFound(f"key {key_id!r} not found in tenant {tenant!r}")
            await conn.execute(
                t.api_keys.update()
                .where(t.api_keys.c.id == key_id, t.api_keys.c.revoked_at.is_(None))
                .values(revoked_at=t.utcnow())
            )

    async def authenticate(self, token: str) -> Principal | None:
        """The principal a bearer token stands for, or None (malformed, unknown or revoked)."""
        parts = apikeys.split(token)
        if parts is None:
            return None
        key_id, secret = parts
        query = sa.select(
            t.api_keys.c.tenant_id,
            t.api_keys.c.secret_hash,
            t.api_keys.c.revoked_at,
            t.api_keys.c.last_used_at,
            t.api_keys.c.role,
            t.api_keys.c.servers,
        ).where(t.api_keys.c.id == key_id)
        async with self._db.read() as conn:
            row = (await conn.execute(query)).first()
        if row is None or row.revoked_at is not None or not apikeys.matches(secret, row.secret_hash):
            return None
        self._maybe_touch(key_id, row.last_used_at)
        return Principal(
            kind="api_key",
            subject=f"key:{key_id}",
            tenant=row.tenant_id,
            role=row.role,
            servers=tuple(row.servers) if row.servers is not None else None,
        )

    def _maybe_touch(self, key_id: str, last_used_at: datetime | None) -> None:
        now = t.utcnow()
        if last_used_at is not None and now - last_used_at < TOUCH_INTERVAL:
            return
        if key_id in self._touching:
            return
        self._touching.add(key_id)
        task = asyncio.get_running_loop().create_task(self._touch(key_id, now))
        self._touches.add(task)
        task.add_done_callback(self._touches.discard)

    async def _touch(self, key_id: str, now: datetime) -> None:
        try:
            async with self._db.write() as conn:
                await conn.execute(t.api_keys.update().where(t.api_keys.c.id == key_id).values(last_used_at=now))
        except Exception:  # advisory bookkeeping must never fail a request
            log.warning("could not record last use of api key %s", key_id, exc_info=True)
        finally:
            self._touching.discard(key_id)

    async def drain(self) -> None:
        """Wait for pending last-used updates (called on close and by tests)."""
        while self._touches:
            await asyncio.gather(*list(self._touches), return_exceptions=True)
