"""Opening, migrating and reopening the SQLite database."""

from __future__ import annotations

import sqlite3

from store_helpers import make_spec

from smcp.config import Settings
from smcp.store import Store
from smcp.store.db import current_revision, head_revision, migrate


async def test_open_creates_dirs_and_migrates_to_head(settings: Settings) -> None:
    store = await Store.open(settings)
    try:
        assert (settings.data_dir / "smcp.db").is_file()
        assert (settings.data_dir / "blobs").is_dir()
        assert await current_revision(store.db) == head_revision() is not None
    finally:
        await store.close()
    tables = {
        r[0] for r in sqlite3.connect(settings.data_dir / "smcp.db").execute("select name from sqlite_master")
    }
    assert {"tenants", "api_keys", "servers", "revisions", "alembic_version"} <= tables


async def test_pragmas_applied_on_every_connection(store: Store) -> None:
    async with store.db.read() as conn:
        assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
        assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
        assert (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar() >= 1000


async def test_migrations_twice_are_idempotent(store: Store) -> None:
    await store.tenants.create("acme")
    await migrate(store.db)
    await migrate(store.db)
    assert await current_revision(store.db) == head_revision()
    assert [t.id for t in await store.tenants.list()] == ["acme"]


async def test_data_survives_reopen(settings: Settings) -> None:
    store = await Store.open(settings)
    await store.tenants.create("acme")
    uid = await store.tenants.sandbox_uid("acme")
    _, token = await store.api_keys.create("acme", "ci")
    rev = await store.servers.create_revision("acme", "echo", make_spec(), bundle_digest="a" * 64, build_key="bk1")
    await store.close()

    store = await Store.open(settings)  # runs the upgrade again on an existing database
    try:
        assert [t.id for t in await store.tenants.list()] == ["acme"]
        assert await store.tenants.sandbox_uid("acme") == uid
        principal = await store.api_keys.authenticate(token)
        assert principal is not None and principal.tenant == "acme"
        live = await store.servers.live_revision("acme", "echo")
        assert live == rev
    finally:
        await store.close()


async def test_foreign_keys_enforced(store: Store) -> None:
    import sqlalchemy as sa
    from sqlalchemy.exc import IntegrityError

    from smcp.store import tables as t

    try:
        async with store.db.write() as conn:
            await conn.execute(
                t.api_keys.insert().values(
                    id="x" * 12, tenant_id="ghost", name="n", secret_hash="h", created_at=t.utcnow()
                )
            )
    except IntegrityError:
        pass
    else:  # pragma: no cover - the assertion below explains
        raise AssertionError("an api key for a missing tenant was accepted")
    async with store.db.read() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(t.api_keys)) == 0
