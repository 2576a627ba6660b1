"""The secret service on a real store: versions, listing, AAD binding in the database, key ring, rotation."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from smcp.config import Settings
from smcp.domain import Conflict, InvalidSpec, NotFound
from smcp.secrets import KeyRing, KeyRingError, SecretUnreadable, SecretVault, open_vault
from smcp.store import Store
from smcp.store import tables as t


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", admin_token="x")


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[Store]:
    s = await Store.open(settings)
    await s.tenants.create("acme")
    await s.tenants.create("victim")
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def vault(settings: Settings, store: Store) -> SecretVault:
    return open_vault(settings, store.secrets)


async def test_set_list_delete_and_versions(vault: SecretVault, store: Store) -> None:
    first = await vault.set("acme", "API_TOKEN", b"one")
    second = await vault.set("acme", "API_TOKEN", b"two")
    await vault.set("acme", "DB_URL", b"postgres://u:p@h/db")
    assert (first.version, second.version) == (1, 2)
    listed = {s.name: s.version for s in await vault.list("acme")}
    assert listed == {"API_TOKEN": 2, "DB_URL": 1}
    assert await vault.list("victim") == []
    assert await vault.resolve("acme", ["API_TOKEN", "DB_URL"]) == {"API_TOKEN": b"two", "DB_URL": b"postgres://u:p@h/db"}
    # Only the newest version is kept: the superseded value is gone from the database.
    async with store.db.read() as conn:
        rows = (await conn.execute(sa.select(t.secrets.c.version).where(t.secrets.c.name == "API_TOKEN"))).all()
    assert [r.version for r in rows] == [2]
    await vault.delete("acme", "API_TOKEN")
    with pytest.raises(NotFound):
        await vault.delete("acme", "API_TOKEN")
    with pytest.raises(NotFound):
        await vault.resolve("acme", ["API_TOKEN"])
    with pytest.raises(NotFound):
        await vault.set("ghost", "X_TOKEN", b"v")


async def test_plaintext_never_stored(vault: SecretVault, store: Store, settings: Settings) -> None:
    value = b"plaintext-canary-7f3a9"
    await vault.set("acme", "CANARY", value)
    await store.close()
    raw = b"".join(p.read_bytes() for p in settings.data_dir.glob("smcp.db*"))
    assert value not in raw and base64.b64encode(value) not in raw


async def test_require_names_every_missing_secret(vault: SecretVault) -> None:
    await vault.set("acme", "PRESENT", b"value")
    await vault.require("acme", ["PRESENT"])
    with pytest.raises(InvalidSpec) as err:
        await vault.require("acme", ["PRESENT", "MISSING_A", "MISSING_B"])
    assert err.value.detail == {"missing": ["MISSING_A", "MISSING_B"]}
    assert "smcp secret set MISSING_A --tenant acme" in err.value.message
    with pytest.raises(InvalidSpec):
        await vault.require("victim", ["PRESENT"])  # another tenant's secret does not count


@pytest.mark.parametrize("column", ["tenant_id", "name", "version"])
async def test_row_moved_in_the_database_fails_to_decrypt(vault: SecretVault, store: Store, column: str) -> None:
    """Someone with write access to the database relabels a sealed row: it must not open."""
    await vault.set("acme", "API_TOKEN", b"acme-only")
    await vault.set("victim", "OTHER", b"victim-value")
    new = {"tenant_id": "victim", "name": "OTHER", "version": 7}[column]
    async with store.db.write() as conn:
        if column != "version":
            await conn.execute(t.secrets.delete().where(t.secrets.c.tenant_id == "victim"))
        await conn.execute(t.secrets.update().where(t.secrets.c.tenant_id == "acme").values(**{column: new}))
    tenant = "victim" if column == "tenant_id" else "acme"
    name = "OTHER" if column == "name" else "API_TOKEN"
    with pytest.raises(SecretUnreadable):
        await vault.resolve(tenant, [name])


async def test_swapping_ciphertexts_between_rows_fails(vault: SecretVault, store: Store) -> None:
    await vault.set("acme", "A_TOKEN", b"value-a")
    await vault.set("acme", "B_TOKEN", b"value-b")
    async with store.db.write() as conn:
        rows = {r.name: r for r in (await conn.execute(sa.select(t.secrets))).all()}
        for mine, theirs in (("A_TOKEN", "B_TOKEN"), ("B_TOKEN", "A_TOKEN")):
            await conn.execute(
                t.secrets.update()
                .where(t.secrets.c.name == mine)
                .values(ciphertext=rows[theirs].ciphertext, wrapped_key=rows[theirs].wrapped_key)
            )
    for name in ("A_TOKEN", "B_TOKEN"):
        with pytest.raises(SecretUnreadable):
            await vault.resolve("acme", [name])


async def test_value_limits(settings: Settings, store: Store) -> None:
    small = SecretVault(store.secrets, KeyRing.from_settings(settings), max_value_bytes=8)
    from smcp.secrets import InvalidSecret, SecretTooLarge

    with pytest.raises(SecretTooLarge):
        await small.set("acme", "BIG", b"123456789")
    with pytest.raises(InvalidSecret):
        await small.set("acme", "EMPTY", b"")
    with pytest.raises(InvalidSecret):
        await small.set("acme", "bad-name", b"v")


# ------------------------------------------------------------------------------ key ring


def test_keyring_file_is_created_0600_and_refused_when_readable(settings: Settings) -> None:
    ring = KeyRing.from_settings(settings)
    path = settings.data_dir / "keyring.json"
    assert path.stat().st_mode & 0o777 == 0o600
    assert ring.active_version == 1 and ring.writable
    assert KeyRing.from_settings(settings).active()[1] == ring.active()[1]  # reopened, same key
    path.chmod(0o644)
    with pytest.raises(KeyRingError, match="chmod 600"):
        KeyRing.from_settings(settings)


def test_inline_keyring_from_settings(tmp_path: Path) -> None:
    key = base64.b64encode(os.urandom(32)).decode()
    ring = KeyRing.from_settings(Settings(data_dir=tmp_path, secrets_keyring=key))
    assert ring.versions == [1] and not ring.writable
    assert not (tmp_path / "keyring.json").exists()
    doc = json.dumps({"active": 2, "keys": {"1": key, "2": base64.b64encode(os.urandom(32)).decode()}})
    assert KeyRing.from_settings(Settings(data_dir=tmp_path, secrets_keyring=doc)).active_version == 2
    for bad in ("not base64!", base64.b64encode(b"short").decode(), '{"active": 3, "keys": {"1": "' + key + '"}}'):
        with pytest.raises(KeyRingError):
            KeyRing.from_settings(Settings(data_dir=tmp_path, secrets_keyring=bad))


async def test_rotation_rewraps_everything_and_retires_the_old_kek(
    vault: SecretVault, store: Store, settings: Settings
) -> None:
    values = {f"S{i}": f"value-{i}".encode() for i in range(25)}
    for name, value in values.items():
        await vault.set("acme", name, value)
    old_key = vault.keyring.active()[1]
    report = await vault.rotate(batch=7)
    assert (report.active, report.added, report.rewrapped, report.retired) == (2, 2, 25, [1])
    assert (await vault.status()).data_keys == {2: 25}
    # The file now holds only the new KEK; the old one is gone for good.
    on_disk = json.loads((settings.data_dir / "keyring.json").read_text())
    assert on_disk["active"] == 2 and list(on_disk["keys"]) == ["2"]
    assert base64.b64encode(old_key).decode() not in (settings.data_dir / "keyring.json").read_text()
    # A fresh process (new ring object from the file) decrypts everything.
    fresh = open_vault(settings, store.secrets)
    assert await fresh.resolve("acme", list(values)) == values
    # Values' ciphertexts were not re-encrypted, only their data keys re-wrapped; new sets use v2.
    await vault.set("acme", "NEW", b"after")
    assert (await vault.status()).data_keys == {2: 26}


async def test_reads_never_fail_during_rotation(vault: SecretVault, store: Store) -> None:
    values = {f"K{i}": os.urandom(16).hex().encode() for i in range(60)}
    for name, value in values.items():
        await vault.set("acme", name, value)
    # A second vault object, as another part of the process would hold: its ring learns
    # about the new KEK from the file when it meets a version it does not know.
    other = open_vault(vault_settings(vault), store.secrets)
    reads = 0
    failures: list[BaseException] = []
    done = asyncio.Event()

    async def reader(v: SecretVault) -> None:
        nonlocal reads
        while not done.is_set():
            try:
                assert await v.resolve("acme", list(values)) == values
                reads += 1
            except BaseException as exc:  # noqa: BLE001 - collected and asserted below
                failures.append(exc)
                return
            await asyncio.sleep(0)

    readers = [asyncio.create_task(reader(v)) for v in (vault, vault, other, other)]
    await asyncio.sleep(0.05)
    for _ in range(3):  # three rotations back to back while reads go on
        await vault.rotate(batch=5)
        await asyncio.sleep(0.02)
    done.set()
    await asyncio.gather(*readers)
    assert not failures, failures[0]
    assert reads > 10
    assert (await vault.status()).data_keys == {4: 60}
    assert vault.keyring.versions == [4]


def vault_settings(vault: SecretVault) -> Settings:
    path = Path(vault.keyring.source)
    return Settings(data_dir=path.parent, admin_token="x")


async def test_inline_ring_rotates_by_operator_edit(tmp_path: Path, store: Store) -> None:
    k1, k2 = (base64.b64encode(os.urandom(32)).decode() for _ in range(2))
    v1 = SecretVault(store.secrets, KeyRing.from_settings(Settings(data_dir=tmp_path, secrets_keyring=k1)))
    await v1.set("acme", "TOKEN", b"inline")
    with pytest.raises(Conflict, match="cannot be changed here"):
        await v1.rotate()
    # The operator adds key 2, makes it active and restarts; rotate re-wraps without adding.
    doc = json.dumps({"active": 2, "keys": {"1": k1, "2": k2}})
    v2 = SecretVault(store.secrets, KeyRing.from_settings(Settings(data_dir=tmp_path, secrets_keyring=doc)))
    report = await v2.rotate()
    assert (report.active, report.added, report.rewrapped, report.retired) == (2, None, 1, [])
    assert (await v2.status()).data_keys == {2: 1}
    only2 = json.dumps({"active": 2, "keys": {"2": k2}})
    v3 = SecretVault(store.secrets, KeyRing.from_settings(Settings(data_dir=tmp_path, secrets_keyring=only2)))
    assert await v3.resolve("acme", ["TOKEN"]) == {"TOKEN": b"inline"}
