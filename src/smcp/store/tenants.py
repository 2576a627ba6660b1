"""Tenants: an organisation's name is its id (a DNS-safe slug)."""

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


class TenantRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, name: str) -> Tenant:
        if not valid_tenant_name(name):
            # The API validates first; reaching here is a programming error.
            raise ValueError(f"invalid tenant name {name!r}")
        row = {"id": name, "created_at": t.utcnow()}
        try:
            async with self._db.write() as conn:
                exists = await conn.scalar(sa.select(sa.literal(1)).where(t.tenants.c.id == name))
                if exists:
                    raise Conflict(f"tenant {name!r} already exists")
                await conn.execute(t.tenants.insert().values(**row))
        except IntegrityError as exc:  # a racing writer on a database without BEGIN IMMEDIATE
            raise Conflict(f"tenant {name!r} already exists") from exc
        return Tenant(id=name, name=name, created_at=row["created_at"])

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
