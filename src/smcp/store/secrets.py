"""Tenant secrets as sealed rows. This repository never sees a plaintext value.

Encryption lives in smcp.secrets; `put` asks its caller to seal the value only once
the version number is known, because the version is bound into the ciphertext.
Only the newest version of a secret is kept: setting a value replaces the old one
in the same transaction, so a superseded value is not kept around to leak.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from smcp.domain import Conflict, NotFound
from smcp.domain.models import SecretInfo
from smcp.store import tables as t
from smcp.store.db import Database

_s = t.secrets


@dataclass(frozen=True, slots=True)
class SealedSecret:
    """One stored secret version: ciphertext, its wrapped data key and the KEK version."""

    id: str
    tenant: str
    name: str
    version: int
    ciphertext: bytes
    wrapped_key: bytes
    kek_version: int
    created_at: datetime

    @property
    def info(self) -> SecretInfo:
        return SecretInfo(tenant=self.tenant, name=self.name, version=self.version, created_at=self.created_at)


@dataclass(frozen=True, slots=True)
class Sealed:
    """What a sealer returns for a new version."""

    ciphertext: bytes
    wrapped_key: bytes
    kek_version: int


# Called inside the write transaction with the new version number.
Sealer = Callable[[int], Sealed]


def _sealed(row: sa.Row) -> SealedSecret:
    return SealedSecret(
        id=row.id,
        tenant=row.tenant_id,
        name=row.name,
        version=row.version,
        ciphertext=bytes(row.ciphertext),
        wrapped_key=bytes(row.wrapped_key),
        kek_version=row.kek_version,
        created_at=row.created_at,
    )


class SecretRepo:
    def __init__(self, db: Database, *, max_per_tenant: int = 1000) -> None:
        self._db = db
        self._max_per_tenant = max_per_tenant

    async def put(self, tenant: str, name: str, seal: Sealer) -> SecretInfo:
        """Store a new version of tenant/name (1 for a new secret) and drop older ones."""
        async with self._db.write() as conn:
            if not await conn.scalar(sa.select(sa.literal(1)).where(t.tenants.c.id == tenant)):
                raise NotFound(f"tenant {tenant!r} not found")
            latest = await conn.scalar(
                sa.select(sa.func.max(_s.c.version)).where(_s.c.tenant_id == tenant, _s.c.name == name)
            )
            if latest is None:
                count = await conn.scalar(
                    sa.select(sa.func.count(sa.distinct(_s.c.name))).where(_s.c.tenant_id == tenant)
                )
                if int(count or 0) >= self._max_per_tenant:
                    raise Conflict(f"tenant {tenant!r} already has {self._max_per_tenant} secrets (the limit)")
            version = int(latest or 0) + 1
            sealed = seal(version)
            now = t.utcnow()
            await conn.execute(
                _s.insert().values(
                    id=uuid.uuid4().hex,
                    tenant_id=tenant,
                    name=name,
                    version=version,
                    ciphertext=sealed.ciphertext,
                    wrapped_key=sealed.wrapped_key,
                    kek_version=sealed.kek_version,
                    created_at=now,
                )
            )
            await conn.execute(
                _s.delete().where(_s.c.tenant_id == tenant, _s.c.name == name, _s.c.version < version)
            )
        return SecretInfo(tenant=tenant, name=name, version=version, created_at=now)

    async def list(self, tenant: str) -> list[SecretInfo]:
        query = (
            sa.select(_s.c.tenant_id, _s.c.name, _s.c.version, _s.c.created_at)
            .where(_s.c.tenant_id == tenant)
            .order_by(_s.c.name, _s.c.version)
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        latest: dict[str, SecretInfo] = {}
        for r in rows:  # ordered by version, so the last one per name wins
            latest[r.name] = SecretInfo(tenant=r.tenant_id, name=r.name, version=r.version, created_at=r.created_at)
        return list(latest.values())

    async def delete(self, tenant: str, name: str) -> None:
        async with self._db.write() as conn:
            result = await conn.execute(_s.delete().where(_s.c.tenant_id == tenant, _s.c.name == name))
        if not result.rowcount:
            raise NotFound(f"secret {name!r} not found in tenant {tenant!r}")

    async def existing(self, tenant: str, names: Iterable[str]) -> set[str]:
        wanted = sorted(set(names))
        if not wanted:
            return set()
        query = sa.select(_s.c.name).where(_s.c.tenant_id == tenant, _s.c.name.in_(wanted)).distinct()
        async with self._db.read() as conn:
            return set((await conn.scalars(query)).all())

    async def get_many(self, tenant: str, names: Iterable[str]) -> dict[str, SealedSecret]:
        """The newest sealed version of each named secret that exists."""
        wanted = sorted(set(names))
        if not wanted:
            return {}
        query = (
            sa.select(_s).where(_s.c.tenant_id == tenant, _s.c.name.in_(wanted)).order_by(_s.c.name, _s.c.version)
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        return {r.name: _sealed(r) for r in rows}

    async def get(self, secret_id: str) -> SealedSecret | None:
        async with self._db.read() as conn:
            row = (await conn.execute(sa.select(_s).where(_s.c.id == secret_id))).first()
        return _sealed(row) if row else None

    async def not_wrapped_by(self, kek_version: int, *, limit: int) -> list[SealedSecret]:
        """Rows whose data key is wrapped by a KEK other than `kek_version` (rotation's work list)."""
        query = sa.select(_s).where(_s.c.kek_version != kek_version).order_by(_s.c.id).limit(limit)
        async with self._db.read() as conn:
            return [_sealed(r) for r in (await conn.execute(query)).all()]

    async def rewrap(self, secret_id: str, *, old_kek_version: int, wrapped_key: bytes, kek_version: int) -> bool:
        """Swap in a re-wrapped data key, only if nobody changed the row meanwhile."""
        async with self._db.write() as conn:
            result = await conn.execute(
                _s.update()
                .where(_s.c.id == secret_id, _s.c.kek_version == old_kek_version)
                .values(wrapped_key=wrapped_key, kek_version=kek_version)
            )
        return bool(result.rowcount)

    async def kek_usage(self) -> dict[int, int]:
        """How many stored data keys each KEK version wraps."""
        query = sa.select(_s.c.kek_version, sa.func.count()).group_by(_s.c.kek_version)
        async with self._db.read() as conn:
            return {int(v): int(n) for v, n in (await conn.execute(query)).all()}
