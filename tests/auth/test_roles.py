"""Tenant roles on the management API (through control/auth.py's authorize seam) and users/members."""

from __future__ import annotations

import httpx
from oauth_helpers import BASE, Flow

from smcp.auth import roles


def test_role_table() -> None:
    assert roles.permits("viewer", "servers.list") and not roles.permits("viewer", "servers.deploy")
    assert roles.permits("developer", "servers.deploy") and not roles.permits("developer", "keys.create")
    assert roles.permits("auditor", "audit.read") and roles.permits("auditor", "servers.logs")
    assert not any(roles.permits("auditor", a) for a in ("servers.list", "servers.read", "mcp.use", "tenants.read"))
    assert not roles.permits(None, "servers.list") and not roles.permits("root", "servers.list")
    assert roles.may_grant("owner", "owner") and not roles.may_grant("admin", "owner") and roles.may_grant("admin", "auditor")
    assert not roles.may_grant("developer", "viewer")


async def key_client(idp, role: str, tenant: str = "acme", servers: tuple[str, ...] | None = None) -> httpx.AsyncClient:
    _, token = await idp.store.api_keys.create(tenant, role, role=role, servers=servers)
    return httpx.AsyncClient(transport=idp.transport, base_url=BASE + "/api/v1", headers={"authorization": f"Bearer {token}"})


async def test_viewer_reads_but_cannot_deploy_delete_or_manage(idp) -> None:
    async with await key_client(idp, "viewer") as api:
        assert (await api.get("/tenants/acme/servers")).status_code == 200
        assert (await api.get("/tenants/acme/servers/echo")).status_code == 200
        r = await api.post("/tenants/acme/deployments", content=b"x", headers={"content-type": "application/gzip"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        assert (await api.delete("/tenants/acme/servers/echo")).status_code == 403
        assert (await api.post("/tenants/acme/keys", json={"name": "x"})).status_code == 403
        assert (await api.get("/tenants/acme/servers/echo/logs")).status_code == 403


async def test_auditor_reads_only_logs(idp) -> None:
    async with await key_client(idp, "auditor") as api:
        assert (await api.get("/tenants/acme/servers/echo/logs")).status_code == 200
        for path in ("/tenants/acme/servers", "/tenants/acme/servers/echo", "/tenants/acme", "/tenants/acme/keys", "/tenants/acme/members"):
            assert (await api.get(path)).status_code == 403, path
    r = await idp.http.post("/t/acme/echo/mcp", headers={"authorization": f"Bearer {(await idp.store.api_keys.create('acme', 'a2', role='auditor'))[1]}"})
    assert r.status_code == 403


async def test_developer_may_deploy_and_delete(idp) -> None:
    async with await key_client(idp, "developer") as api:
        r = await api.post("/tenants/acme/deployments", content=b"not a bundle", headers={"content-type": "application/gzip"})
        assert r.status_code == 422  # past authorization, refused as a bundle
        assert (await api.delete("/tenants/acme/servers/files")).status_code == 204


async def test_keys_never_cross_tenants_or_reach_platform_routes(idp) -> None:
    async with await key_client(idp, "owner") as api:
        assert (await api.get("/tenants/other/servers")).status_code == 403
        assert (await api.get("/tenants")).status_code == 403
        assert (await api.post("/tenants", json={"name": "new"})).status_code == 403
        assert (await api.get("/status")).status_code == 403
        assert (await api.post("/users", json={"name": "eve", "password": "long enough password"})).status_code == 403


async def test_no_one_grants_more_than_they_hold(idp) -> None:
    async with await key_client(idp, "admin") as api:
        assert (await api.post("/tenants/acme/keys", json={"name": "o", "role": "owner"})).status_code == 403
        r = await api.post("/tenants/acme/keys", json={"name": "d", "role": "developer", "servers": ["echo"]})
        assert r.status_code == 201 and r.json()["role"] == "developer" and r.json()["servers"] == ["echo"]
        assert (await api.put("/tenants/acme/members", json={"user": "carol", "role": "owner"})).status_code == 403
        assert (await api.put("/tenants/acme/members", json={"user": "carol", "role": "viewer"})).status_code == 200
    async with await key_client(idp, "owner") as api:
        assert (await api.post("/tenants/acme/keys", json={"name": "o", "role": "owner"})).status_code == 201


async def test_server_limited_keys(idp) -> None:
    async with await key_client(idp, "developer", servers=("echo",)) as api:
        assert (await api.get("/tenants/acme/servers/echo")).status_code == 200
        assert (await api.get("/tenants/acme/servers/files")).status_code == 403
        assert (await api.delete("/tenants/acme/servers/files")).status_code == 403


async def test_admin_token_is_platform_super_admin(idp) -> None:
    assert (await idp.api.get("/tenants")).status_code == 200
    r = await idp.api.post("/tenants/acme/keys", json={"name": "o", "role": "owner"})
    assert r.status_code == 201 and r.json()["role"] == "owner"
    assert (await idp.api.post("/tenants/acme/keys", json={"name": "x", "role": "root"})).status_code == 422


async def test_users_and_members_lifecycle(idp) -> None:
    r = await idp.api.post("/users", json={"name": "dave", "password": "short"})
    assert r.status_code == 400
    r = await idp.api.post("/users", json={"name": "dave", "password": "a long enough password"})
    assert r.status_code == 201 and "password" not in r.text
    assert (await idp.api.post("/users", json={"name": "dave", "password": "a long enough password"})).status_code == 409
    assert (await idp.api.put("/tenants/acme/members", json={"user": "dave", "role": "viewer"})).status_code == 200
    members = {m["user"]: m["role"] for m in (await idp.api.get("/tenants/acme/members")).json()}
    assert members == {"alice": "developer", "bob": "auditor", "dave": "viewer"}
    # Removing a member ends their OAuth grants at once.
    flow = Flow(idp.http, idp.public_client)
    tokens = await flow.tokens("alice")
    assert (await idp.api.delete("/tenants/acme/members/alice")).status_code == 204
    assert (await flow.refresh(tokens["refresh_token"])).json()["error"] == "invalid_grant"
    r = await idp.http.post("/t/acme/echo/mcp", headers={"authorization": f"Bearer {tokens['access_token']}"})
    assert r.status_code == 401


async def test_role_downgrade_stops_new_tokens(idp) -> None:
    flow = Flow(idp.http, idp.public_client)
    tokens = await flow.tokens("alice")
    await idp.store.users.set_member("acme", "alice", "auditor")
    r = await flow.refresh(tokens["refresh_token"])
    assert r.status_code == 400 and "no longer has access" in r.json()["error_description"]
