"""Tenants and API keys over the API."""

from __future__ import annotations

import httpx

from smcp.store import Store


async def test_tenant_create_list_get(client: httpx.AsyncClient) -> None:
    r = await client.post("/tenants", json={"name": "acme"})
    assert r.status_code == 201
    assert r.json()["name"] == "acme" and r.json()["created_at"]
    r = await client.post("/tenants", json={"name": "acme"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"

    await client.post("/tenants", json={"name": "beta"})
    r = await client.get("/tenants")
    assert [t["name"] for t in r.json()] == ["acme", "beta"]

    assert (await client.get("/tenants/acme")).json()["name"] == "acme"
    r = await client.get("/tenants/ghost")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


async def test_key_shown_once_listed_without_secret_and_revocable(client: httpx.AsyncClient, store: Store) -> None:
    await client.post("/tenants", json={"name": "acme"})
    r = await client.post("/tenants/acme/keys", json={"name": "ci"})
    assert r.status_code == 201
    created = r.json()
    token = created["token"]
    assert token.startswith(created["prefix"]) and created["prefix"] == f"smcp_{created['id']}_"
    assert created["name"] == "ci" and created["tenant"] == "acme"

    principal = await store.api_keys.authenticate(token)
    assert principal is not None and principal.tenant == "acme"

    listing = await client.get("/tenants/acme/keys")
    assert listing.status_code == 200
    [key] = listing.json()
    assert key["id"] == created["id"] and key["revoked_at"] is None
    secret = token.removeprefix(created["prefix"])
    assert "token" not in key and "secret_hash" not in key
    assert secret not in listing.text  # the secret never appears again

    assert (await client.delete(f"/tenants/acme/keys/{created['id']}")).status_code == 204
    assert await store.api_keys.authenticate(token) is None
    [key] = (await client.get("/tenants/acme/keys")).json()
    assert key["revoked_at"] is not None

    r = await client.delete("/tenants/acme/keys/000000000000")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


async def test_key_name_defaults_and_unknown_tenant(client: httpx.AsyncClient) -> None:
    await client.post("/tenants", json={"name": "acme"})
    r = await client.post("/tenants/acme/keys", json={})
    assert r.status_code == 201 and r.json()["name"] == "default"
    assert (await client.post("/tenants/ghost/keys", json={"name": "x"})).status_code == 404
    assert (await client.get("/tenants/ghost/keys")).status_code == 404


async def test_key_of_another_tenant_cannot_be_revoked_through_this_one(client: httpx.AsyncClient, store: Store) -> None:
    await client.post("/tenants", json={"name": "acme"})
    await client.post("/tenants", json={"name": "evil"})
    created = (await client.post("/tenants/acme/keys", json={"name": "ci"})).json()
    assert (await client.delete(f"/tenants/evil/keys/{created['id']}")).status_code == 404
    assert await store.api_keys.authenticate(created["token"]) is not None
