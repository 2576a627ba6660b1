"""Repository behaviour: tenants, keys, servers and revisions."""

from __future__ import annotations

import asyncio

import pytest
from store_helpers import make_spec

from smcp.domain import Conflict, NotFound
from smcp.store import Store


async def test_tenants(store: Store) -> None:
    a = await store.tenants.create("acme")
    assert a.id == a.name == "acme" and a.created_at.tzinfo is not None
    await store.tenants.create("beta-2")
    with pytest.raises(Conflict):
        await store.tenants.create("acme")
    with pytest.raises(ValueError):
        await store.tenants.create("Bad_Name")
    assert [t.id for t in await store.tenants.list()] == ["acme", "beta-2"]
    assert await store.tenants.get("acme") == a
    assert await store.tenants.get("nope") is None
    with pytest.raises(NotFound):
        await store.tenants.require("nope")
    assert await store.tenants.count() == 2


async def test_api_key_lifecycle(store: Store) -> None:
    await store.tenants.create("acme")
    key, token = await store.api_keys.create("acme", "ci")
    assert token.startswith(key.prefix) and key.prefix == f"smcp_{key.id}_"

    principal = await store.api_keys.authenticate(token)
    assert principal is not None
    assert (principal.kind, principal.subject, principal.tenant) == ("api_key", f"key:{key.id}", "acme")

    # A wrong secret for a real key id, garbage, and an unknown id are all refused.
    assert await store.api_keys.authenticate(token[:-4] + "AAAA") is None
    assert await store.api_keys.authenticate("Bearer nonsense") is None
    assert await store.api_keys.authenticate(f"smcp_{'0' * 12}_secret") is None

    await store.api_keys.drain()
    [listed] = await store.api_keys.list("acme")
    assert listed.id == key.id and listed.last_used_at is not None and listed.revoked_at is None

    await store.api_keys.revoke("acme", key.id)
    await store.api_keys.revoke("acme", key.id)  # twice is harmless
    assert await store.api_keys.authenticate(token) is None
    [listed] = await store.api_keys.list("acme")
    assert listed.revoked_at is not None


async def test_api_keys_are_scoped_to_their_tenant(store: Store) -> None:
    await store.tenants.create("acme")
    await store.tenants.create("other")
    key, _ = await store.api_keys.create("acme", "ci")
    assert await store.api_keys.list("other") == []
    with pytest.raises(NotFound):
        await store.api_keys.revoke("other", key.id)
    with pytest.raises(NotFound):
        await store.api_keys.create("ghost", "ci")


async def test_revisions_number_and_go_live(store: Store) -> None:
    await store.tenants.create("acme")
    r1 = await store.servers.create_revision("acme", "echo", make_spec(), bundle_digest="a" * 64, build_key=None)
    r2 = await store.servers.create_revision(
        "acme", "echo", make_spec(description="v2"), bundle_digest="b" * 64, build_key="k2"
    )
    assert (r1.number, r2.number) == (1, 2)
    live = await store.servers.live_revision("acme", "echo")
    assert live is not None and live.id == r2.id and live.spec.description == "v2" and live.build_key == "k2"
    assert [r.number for r in await store.servers.revisions("acme", "echo")] == [1, 2]

    server = await store.servers.get("acme", "echo")
    assert server is not None and server.live_revision == r2
    assert [s.name for s in await store.servers.list("acme")] == ["echo"]
    assert await store.servers.count() == 1 and await store.servers.count("acme") == 1

    await store.servers.set_live("acme", "echo", r1.id)
    assert (await store.servers.live_revision("acme", "echo")).id == r1.id  # type: ignore[union-attr]

    # Another server's numbering starts at 1.
    other = await store.servers.create_revision("acme", "other", make_spec("other"), bundle_digest="c" * 64, build_key=None)
    assert other.number == 1


async def test_unknown_lookups(store: Store) -> None:
    await store.tenants.create("acme")
    assert await store.servers.live_revision("acme", "nope") is None
    assert await store.servers.get("acme", "nope") is None
    with pytest.raises(NotFound):
        await store.servers.create_revision("ghost", "echo", make_spec(), bundle_digest="a" * 64, build_key=None)
    with pytest.raises(NotFound):
        await store.servers.delete("acme", "nope")


async def test_delete_server_removes_revisions(store: Store) -> None:
    await store.tenants.create("acme")
    r = await store.servers.create_revision("acme", "echo", make_spec(), bundle_digest="a" * 64, build_key=None)
    await store.servers.delete("acme", "echo")
    assert await store.servers.get("acme", "echo") is None
    assert await store.servers.get_revision(r.id) is None
    # Re-deploying after delete starts numbering afresh.
    again = await store.servers.create_revision("acme", "echo", make_spec(), bundle_digest="a" * 64, build_key=None)
    assert again.number == 1


async def test_concurrent_revisions_get_distinct_numbers(store: Store) -> None:
    await store.tenants.create("acme")
    results = await asyncio.gather(
        *(
            store.servers.create_revision("acme", "echo", make_spec(), bundle_digest=f"{i:064x}", build_key=None)
            for i in range(12)
        )
    )
    assert sorted(r.number for r in results) == list(range(1, 13))
    stored = await store.servers.revisions("acme", "echo")
    assert [r.number for r in stored] == list(range(1, 13))
    live = await store.servers.live_revision("acme", "echo")
    assert live is not None and live.number in range(1, 13)


async def test_unique_constraint_rejects_duplicate_number(store: Store) -> None:
    import sqlalchemy as sa
    from sqlalchemy.exc import IntegrityError

    from smcp.store import tables as t

    await store.tenants.create("acme")
    r = await store.servers.create_revision("acme", "echo", make_spec(), bundle_digest="a" * 64, build_key=None)
    with pytest.raises(IntegrityError):
        async with store.db.write() as conn:
            await conn.execute(
                t.revisions.insert().values(
                    id="f" * 32,
                    tenant_id="acme",
                    server_name="echo",
                    number=r.number,
                    spec={},
                    bundle_digest="b" * 64,
                    created_at=t.utcnow(),
                )
            )
    async with store.db.read() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(t.revisions)) == 1


async def test_sandbox_uids_are_distinct_stable_and_never_reused(store: Store, settings) -> None:
    import sqlalchemy as sa

    from smcp.store import tables as t

    await store.tenants.create("acme")
    await store.tenants.create("beta")
    base = settings.sandbox_uid_base
    assert await store.tenants.sandbox_uid("acme") == base + 1
    assert await store.tenants.sandbox_uid("beta") == base + 2
    with pytest.raises(NotFound):
        await store.tenants.sandbox_uid("ghost")

    # Deleting the newest tenant must not hand its uid (and files) to the next one.
    async with store.db.write() as conn:
        await conn.execute(sa.delete(t.tenants).where(t.tenants.c.id == "beta"))
    await store.tenants.create("gamma")
    assert await store.tenants.sandbox_uid("gamma") == base + 3


async def test_concurrent_tenant_creation_gets_distinct_uids(store: Store) -> None:
    names = [f"t{i}" for i in range(10)]
    await asyncio.gather(*(store.tenants.create(n) for n in names))
    uids = [await store.tenants.sandbox_uid(n) for n in names]
    assert len(set(uids)) == 10


async def test_ended_sessions_are_remembered_until_the_id_expires(store: Store) -> None:
    from datetime import UTC, datetime, timedelta

    from smcp.store import tables as t

    soon = datetime.now(UTC) + timedelta(hours=1)
    assert not await store.ended_sessions.ended("sid-a")
    await store.ended_sessions.add("sid-a", soon)
    await store.ended_sessions.add("sid-a", soon)  # a second DELETE of the same id is fine
    assert await store.ended_sessions.ended("sid-a")
    assert not await store.ended_sessions.ended("sid-b")
    # Only a hash is stored, never the id (which is a bearer of routing state).
    async with store.db.read() as conn:
        rows = (await conn.execute(t.ended_sessions.select())).all()
    assert len(rows) == 1 and rows[0].id_hash != "sid-a" and len(rows[0].id_hash) == 64
    # An expired record no longer counts, and is swept by the next add.
    await store.ended_sessions.add("sid-old", datetime.now(UTC) - timedelta(seconds=1))
    assert not await store.ended_sessions.ended("sid-old")
    await store.ended_sessions.add("sid-c", soon)
    async with store.db.read() as conn:
        assert len((await conn.execute(t.ended_sessions.select())).all()) == 2
