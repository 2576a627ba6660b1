"""Servers and their revisions. A server points at one live revision; revisions never change."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from smcp.domain import Conflict, NotFound, Revision, Server, ServerSpec
from smcp.store import tables as t
from smcp.store.db import Database
from smcp.ttlcache import MISS, TTLCache

_srv = t.servers
_rev = t.revisions

# The revision columns, labelled so they can ride along a servers row in one query.
_REV_COLS = [c.label(f"rev_{c.name}") for c in _rev.c]


def _revision(row: Any, prefix: str = "") -> Revision:
    m = row._mapping
    return Revision(
        id=m[f"{prefix}id"],
        tenant=m[f"{prefix}tenant_id"],
        server=m[f"{prefix}server_name"],
        number=m[f"{prefix}number"],
        spec=ServerSpec.model_validate(m[f"{prefix}spec"]),
        bundle_digest=m[f"{prefix}bundle_digest"],
        build_key=m[f"{prefix}build_key"],
        created_at=m[f"{prefix}created_at"],
    )


def _server(row: Any) -> Server:
    live = _revision(row, "rev_") if row.rev_id is not None else None
    return Server(tenant=row.tenant_id, name=row.name, created_at=row.created_at, live_revision=live)


def _servers_with_live() -> sa.Select:
    return sa.select(_srv.c.tenant_id, _srv.c.name, _srv.c.created_at, *_REV_COLS).select_from(
        _srv.outerjoin(_rev, _rev.c.id == _srv.c.live_revision_id)
    )


class ServerRepo:
    def __init__(self, db: Database, *, live_cache_ttl_s: float = 2.0) -> None:
        self._db = db
        # The gateway asks for the live revision on every request; a database round trip
        # (a thread hop in aiosqlite) each time cost more than the rest of the proxy. Our
        # own writes invalidate at once; other nodes' writes show within the TTL.
        self._live: TTLCache[tuple[str, str], Revision | None] = TTLCache(live_cache_ttl_s, max_entries=100_000)

    def _invalidate(self, tenant: str, server: str) -> None:
        self._live.invalidate((tenant, server))

    async def live_revision(self, tenant: str, server: str) -> Revision | None:
        """The revision new sessions of tenant/server go to (the gateway's per-request lookup)."""
        key = (tenant, server)
        hit = self._live.peek(key)
        if hit is not MISS:
            return hit  # type: ignore[return-value]
        return await self._live.get(key, lambda: self._load_live(tenant, server))

    async def _load_live(self, tenant: str, server: str) -> Revision | None:
        query = (
            sa.select(_rev)
            .select_from(_srv.join(_rev, _rev.c.id == _srv.c.live_revision_id))
            .where(_srv.c.tenant_id == tenant, _srv.c.name == server)
        )
        async with self._db.read() as conn:
            row = (await conn.execute(query)).first()
        return _revision(row) if row else None

    async def get(self, tenant: str, name: str) -> Server | None:
        query = _servers_with_live().where(_srv.c.tenant_id == tenant, _srv.c.name == name)
        async with self._db.read() as conn:
            row = (await conn.execute(query)).first()
        return _server(row) if row else None

    async def require(self, tenant: str, name: str) -> Server:
        server = await self.get(tenant, name)
        if server is None:
            raise NotFound(f"server {name!r} not found in tenant {tenant!r}")
        return server

    async def list(self, tenant: str) -> list[Server]:
        query = _servers_with_live().where(_srv.c.tenant_id == tenant).order_by(_srv.c.name)
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [_server(r) for r in rows]

    async def count(self, tenant: str | None = None) -> int:
        query = sa.select(sa.func.count()).select_from(_srv)
        if tenant is not None:
            query = query.where(_srv.c.tenant_id == tenant)
        async with self._db.read() as conn:
            return int(await conn.scalar(query) or 0)

    async def revisions(self, tenant: str, server: str) -> list[Revision]:
        query = (
            sa.select(_rev)
            .where(_rev.c.tenant_id == tenant, _rev.c.server_name == server)
            .order_by(_rev.c.number)
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [_revision(r) for r in rows]

    async def get_revision(self, revision_id: str) -> Revision | None:
        async with self._db.read() as conn:
            row = (await conn.execute(sa.select(_rev).where(_rev.c.id == revision_id))).first()
        return _revision(row) if row else None

    async def create_revision(
        self,
        tenant: str,
        server: str,
        spec: ServerSpec,
        *,
        bundle_digest: str,
        build_key: str | None,
        make_live: bool = True,
    ) -> Revision:
        """Record a deployed revision, creating the server if new, in one transaction.

        Numbers are 1, 2, 3… per server. On SQLite the write transaction holds the
        write lock from the start, so concurrent deploys queue; the unique constraint
        backs that up on databases where they could race, surfacing as Conflict.
        """
        now = t.utcnow()
        revision_id = uuid.uuid4().hex
        try:
            async with self._db.write() as conn:
                if not await conn.scalar(sa.select(sa.literal(1)).where(t.tenants.c.id == tenant)):
                    raise NotFound(f"tenant {tenant!r} not found")
                exists = await conn.scalar(
                    sa.select(sa.literal(1))
                    .where(_srv.c.tenant_id == tenant, _srv.c.name == server)
                    .with_for_update()
                )
                if not exists:
                    await conn.execute(_srv.insert().values(tenant_id=tenant, name=server, created_at=now))
                number = 1 + int(
                    await conn.scalar(
                        sa.select(sa.func.coalesce(sa.func.max(_rev.c.number), 0)).where(
                            _rev.c.tenant_id == tenant, _rev.c.server_name == server
                        )
                    )
                    or 0
                )
                await conn.execute(
                    _rev.insert().values(
                        id=revision_id,
                        tenant_id=tenant,
                        server_name=server,
                        number=number,
                        spec=spec.to_json(),
                        bundle_digest=bundle_digest,
                        build_key=build_key,
                        created_at=now,
                    )
                )
                if make_live:
                    await conn.execute(
                        _srv.update()
                        .where(_srv.c.tenant_id == tenant, _srv.c.name == server)
                        .values(live_revision_id=revision_id)
                    )
        except IntegrityError as exc:
            raise Conflict(f"a concurrent deploy of {tenant}/{server} won; retry", detail=str(exc.orig)) from exc
        finally:
            self._invalidate(tenant, server)
        return Revision(
            id=revision_id,
            tenant=tenant,
            server=server,
            number=number,
            spec=spec,
            bundle_digest=bundle_digest,
            build_key=build_key,
            created_at=now,
        )

    async def set_live(self, tenant: str, server: str, revision_id: str) -> None:
        """Point the server at one of its own revisions (rollback)."""
        self._invalidate(tenant, server)
        async with self._db.write() as conn:
            owned = await conn.scalar(
                sa.select(sa.literal(1)).where(
                    _rev.c.id == revision_id, _rev.c.tenant_id == tenant, _rev.c.server_name == server
                )
            )
            if not owned:
                raise NotFound(f"revision {revision_id!r} not found for {tenant}/{server}")
            await conn.execute(
                _srv.update()
                .where(_srv.c.tenant_id == tenant, _srv.c.name == server)
                .values(live_revision_id=revision_id)
            )
        self._invalidate(tenant, server)

    async def delete(self, tenant: str, name: str) -> None:
        """Delete a server and its revisions. Bundles stay in the blob store (shared by digest)."""
        where_srv = (_srv.c.tenant_id == tenant, _srv.c.name == name)
        async with self._db.write() as conn:
            if not await conn.scalar(sa.select(sa.literal(1)).where(*where_srv)):
                raise NotFound(f"server {name!r} not found in tenant {tenant!r}")
            # Break the servers→revisions pointer first so no foreign key dangles mid-way.
            await conn.execute(_srv.update().where(*where_srv).values(live_revision_id=None))
            await conn.execute(_rev.delete().where(_rev.c.tenant_id == tenant, _rev.c.server_name == name))
            await conn.execute(_srv.delete().where(*where_srv))
        self._invalidate(tenant, name)
