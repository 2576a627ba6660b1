"""Authentication, the error shape, health and the OpenAPI document when mounted."""

from __future__ import annotations

import httpx
import pytest
from control_helpers import ADMIN_TOKEN
from fake_runtime import FakeRuntime
from starlette.applications import Starlette
from starlette.routing import Mount

import smcp
from smcp.config import Settings
from smcp.control import create_control_app
from smcp.store import Store


async def test_health_needs_no_token(client: httpx.AsyncClient) -> None:
    r = await client.get("/health", headers={"Authorization": ""})
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "version": smcp.__version__}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {ADMIN_TOKEN}"},
        {"Authorization": f"Bearer {ADMIN_TOKEN}x"},
    ],
)
@pytest.mark.parametrize("method,path", [("GET", "/tenants"), ("POST", "/tenants"), ("GET", "/status")])
async def test_refused_without_the_admin_token(
    settings: Settings, store: Store, runtime: FakeRuntime, headers: dict[str, str], method: str, path: str
) -> None:
    app = create_control_app(settings, store, runtime)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://c") as c:
        r = await c.request(method, path, headers=headers, json={"name": "acme"})
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == 'Bearer realm="smcp-admin"'
    assert r.json()["error"]["code"] == "unauthorized"
    assert await store.tenants.list() == []  # nothing happened behind the refusal


async def test_unset_admin_token_locks_everything(tmp_path, store: Store, runtime: FakeRuntime) -> None:
    app = create_control_app(Settings(data_dir=tmp_path, admin_token=None), store, runtime)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://c") as c:
        for token in ("", "None", "null"):
            r = await c.get("/tenants", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 401


async def test_status_counts(client: httpx.AsyncClient, runtime: FakeRuntime, make_bundle) -> None:
    await client.post("/tenants", json={"name": "acme"})
    await client.post("/tenants", json={"name": "beta"})
    await client.post("/tenants/acme/deployments", content=make_bundle())
    runtime.add_instance("acme", "echo")
    runtime.add_instance("beta", "x")
    r = await client.get("/status")
    assert r.status_code == 200
    assert r.json() == {
        "version": smcp.__version__,
        "base_url": "https://smcp.example",
        "tenants": 2,
        "servers": 1,
        "instances": 2,
    }


@pytest.mark.parametrize(
    "body",
    [{"name": "Bad Name"}, {"name": ""}, {"name": "-lead"}, {"name": "a" * 64}, {}, {"name": 5}, {"name": "ok", "x": 1}],
)
async def test_bad_tenant_names_are_422_in_the_error_shape(client: httpx.AsyncClient, body: dict) -> None:
    r = await client.post("/tenants", json=body)
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "validation_error" and isinstance(err["detail"], list) and err["detail"]


async def test_malformed_json_is_422_not_500(client: httpx.AsyncClient) -> None:
    r = await client.post("/tenants", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "validation_error"


async def test_unknown_route_and_method_use_the_error_shape(client: httpx.AsyncClient) -> None:
    r = await client.get("/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = await client.put("/tenants")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


async def test_bad_query_parameter_is_422(client: httpx.AsyncClient) -> None:
    await client.post("/tenants", json={"name": "acme"})
    r = await client.get("/tenants/acme/servers/echo/logs", params={"limit": "lots"})
    assert r.status_code == 422


async def test_openapi_and_docs_when_mounted(settings: Settings, store: Store, runtime: FakeRuntime) -> None:
    outer = Starlette(routes=[Mount("/api/v1", app=create_control_app(settings, store, runtime))])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=outer), base_url="http://node") as c:
        r = await c.get("/api/v1/openapi.json")
        assert r.status_code == 200
        doc = r.json()
        for path in (
            "/health",
            "/status",
            "/tenants",
            "/tenants/{tenant}",
            "/tenants/{tenant}/keys",
            "/tenants/{tenant}/keys/{key_id}",
            "/tenants/{tenant}/deployments",
            "/tenants/{tenant}/servers",
            "/tenants/{tenant}/servers/{server}",
            "/tenants/{tenant}/servers/{server}/revisions",
            "/tenants/{tenant}/servers/{server}/instances",
            "/tenants/{tenant}/servers/{server}/logs",
        ):
            assert path in doc["paths"], path
        # Clients resolve the relative paths against the mount point.
        assert doc["servers"][0]["url"] == "/api/v1"
        assert "application/gzip" in doc["paths"]["/tenants/{tenant}/deployments"]["post"]["requestBody"]["content"]

        docs = await c.get("/api/v1/docs")
        assert docs.status_code == 200 and "/api/v1/openapi.json" in docs.text

        # Routes work through the mount, with auth.
        assert (await c.get("/api/v1/health")).status_code == 200
        assert (await c.get("/api/v1/tenants")).status_code == 401
        r = await c.get("/api/v1/tenants", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert r.status_code == 200 and r.json() == []
