"""Tenants: an organisation's name is its id (a DNS-safe slug).

Each tenant also gets a number, handed out once from a counter and never reused,
which the runtime turns into the host uid its sandboxes run as: two tenants must
never share a uid, and a new tenant must not inherit a deleted one's files.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from smcp.domain import Conflict, NotFound, Tenant
from smcp.domain.spec import NAME_RE
from smcp.store import tables as t
from smcp.store.db import Database


def valid_tenant_name(name: str) -> bool:
    return bool(NAME_RE.match(name))


def _tenant(row: sa.Row) -> Tenant:
    return Tenant(id=row.id, name=row.id, created_at=row.created_at)


UID_COUNTER = "tenant_uid_index"


class TenantRepo:
    def __init__(self, db: Database, *, uid_base: int) -> None:
        self._db = db
        self._uid_base = uid_base
        self._uid_cache: dict[str, int] = {}  # numbers never change, so caching is exact

    async def create(self, name: str) -> Tenant:
        if not valid_tenant_name(name):
            # The API validates first; reaching here is a programming error.
            raise ValueError(f"invalid tenant name {name!r}")
        row: dict[str, object] = {"id": name, "created_at": t.utcnow()}
        try:
            async with self._db.write() as conn:
                exists = await conn.scalar(sa.select(sa.literal(1)).where(t.tenants.c.id == name))
                if exists:
                    raise Conflict(f"tenant {name!r} already exists")
                await conn.execute(
                    t.counters.update().where(t.counters.c.name == UID_COUNTER).values(value=t.counters.c.value + 1)
                )
                row["uid_index"] = await conn.scalar(
                    sa.select(t.counters.c.value).where(t.counters.c.name == UID_COUNTER)
                )
                await conn.execute(t.tenants.insert().values(**row))
        except IntegrityError as exc:  # a racing writer on a database without BEGIN IMMEDIATE
            raise Conflict(f"tenant {name!r} already exists") from exc
        return Tenant(id=name, name=name, created_at=row["created_at"])  # type: ignore[arg-type]

    async def get(self, name: str) -> Tenant | None:
        async with self._db.read() as conn:
            row = (await conn.execute(sa.select(t.tenants).where(t.tenants.c.id == name))).first()
        return _tenant(row) if row else None

    async def require(self, name: str) -> Tenant:
        tenant = await self.get(name)
        if tenant is None:
            raise NotFound(f"tenant {name!r} not found")
        return tenant

    async def list(self) -> list[Tenant]:
        async with self._db.read() as conn:
            rows = (await conn.execute(sa.select(t.tenants).order_by(t.tenants.c.id))).all()
        return [_tenant(r) for r in rows]

    async def count(self) -> int:
        async with self._db.read() as conn:
            return int(await conn.scalar(sa.select(sa.func.count()).select_from(t.tenants)) or 0)

    async def sandbox_uid(self, name: str) -> int:
        """The host uid the tenant's sandboxes and builds run as (settings.sandbox_uid_base + n)."""
        cached = self._uid_cache.get(name)
        if cached is not None:
            return cached
        async with self._db.read() as conn:
            index = await conn.scalar(sa.select(t.tenants.c.uid_index).where(t.tenants.c.id == name))
        if index is None:
            raise NotFound(f"tenant {name!r} not found")
        uid = self._uid_base + int(index)
        self._uid_cache[name] = uid
        return uid
