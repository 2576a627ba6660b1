"""The management API for secrets: values go in once and never come back out."""

from __future__ import annotations

import base64
import importlib.util
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from smcp.config import Settings
from smcp.control import create_control_app
from smcp.runtime.bundles import pack
from smcp.store import Store

ADMIN = "secrets-admin-token"
AUTH = {"authorization": f"Bearer {ADMIN}"}
VALUE = "sk-live-DO-NOT-LEAK-91a7c"


def _fake_runtime() -> object:
    path = Path(__file__).parents[1] / "control" / "fake_runtime.py"
    spec = importlib.util.spec_from_file_location("smcp_tests_fake_runtime", path)
    assert spec and spec.loader
    module = sys.modules.get(spec.name) or importlib.util.module_from_spec(spec)
    if spec.name not in sys.modules:
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return module.FakeRuntime()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, object, Store]]:
    settings = Settings(data_dir=tmp_path / "data", admin_token=ADMIN)
    store = await Store.open(settings)
    runtime = _fake_runtime()
    app = create_control_app(settings, store, runtime)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://c", headers=AUTH) as c:
        assert (await c.post("/tenants", json={"name": "acme"})).status_code == 201
        yield c, runtime, store
    await store.close()


async def test_put_list_delete_never_return_the_value(api: tuple[httpx.AsyncClient, object, Store]) -> None:
    c, _, _ = api
    r = await c.put("/tenants/acme/secrets/API_TOKEN", json={"value": VALUE})
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "API_TOKEN" and r.json()["version"] == 1
    r2 = await c.put("/tenants/acme/secrets/API_TOKEN", json={"value_base64": base64.b64encode(b"\x00\xffbin").decode()})
    assert r2.status_code == 200 and r2.json()["version"] == 2
    listed = await c.get("/tenants/acme/secrets")
    assert listed.status_code == 200
    assert [(s["name"], s["version"]) for s in listed.json()] == [("API_TOKEN", 2)]
    assert set(listed.json()[0]) == {"name", "version", "created_at"}
    for response in (r, r2):
        assert VALUE not in response.text and set(response.json()) == {"name", "version", "created_at"}
    # There is no GET of one secret at all.
    assert (await c.get("/tenants/acme/secrets/API_TOKEN")).status_code == 405
    assert (await c.delete("/tenants/acme/secrets/API_TOKEN")).status_code == 204
    assert (await c.delete("/tenants/acme/secrets/API_TOKEN")).status_code == 404
    assert (await c.get("/tenants/acme/secrets")).json() == []


async def test_bad_input_is_refused_without_echoing_it(api: tuple[httpx.AsyncClient, object, Store]) -> None:
    c, _, _ = api
    cases = [
        ("/tenants/acme/secrets/bad-name", {"value": VALUE}, 422),
        ("/tenants/acme/secrets/OK", {"value": VALUE, "value_base64": "eA=="}, 422),
        ("/tenants/acme/secrets/OK", {"value": VALUE, "extra": 1}, 422),
        ("/tenants/acme/secrets/OK", {"value_base64": VALUE + "!!"}, 422),
        ("/tenants/acme/secrets/OK", {"value": ""}, 422),
        ("/tenants/acme/secrets/OK", {"value": "x" * (64 * 1024 + 1)}, 413),
        ("/tenants/ghost/secrets/OK", {"value": VALUE}, 404),
    ]
    for path, body, status in cases:
        r = await c.put(path, json=body)
        assert r.status_code == status, (path, body, r.text)
        assert VALUE not in r.text
    assert (await c.put("/tenants/acme/secrets/OK", json={"value": VALUE}, headers={"authorization": "Bearer no"})).status_code == 401


async def test_deploy_fails_422_when_a_referenced_secret_is_missing(
    api: tuple[httpx.AsyncClient, object, Store], tmp_path: Path
) -> None:
    c, runtime, _ = api
    root = tmp_path / "srv"
    root.mkdir()
    (root / "server.py").write_text("print('hi')\n")
    (root / "smcp.toml").write_text(
        'name = "needs"\nruntime = "python"\nentrypoint = "server.py"\n'
        'secrets = ["API_TOKEN", { name = "DB_PASSWORD", env = true }]\n'
    )
    bundle = pack(root)
    headers = {**AUTH, "content-type": "application/gzip"}
    await c.put("/tenants/acme/secrets/API_TOKEN", json={"value": VALUE})
    r = await c.post("/tenants/acme/deployments", content=bundle, headers=headers)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_spec"
    assert error["detail"] == {"missing": ["DB_PASSWORD"]}
    assert "DB_PASSWORD" in error["message"] and "smcp secret set DB_PASSWORD --tenant acme" in error["message"]
    assert runtime.prepared == []  # nothing was built
    await c.put("/tenants/acme/secrets/DB_PASSWORD", json={"value": "pw"})
    r = await c.post("/tenants/acme/deployments", content=bundle, headers=headers)
    assert r.status_code == 201, r.text
    spec = r.json()["revision"]["spec"]
    assert spec["secrets"] == [{"name": "API_TOKEN", "env": False}, {"name": "DB_PASSWORD", "env": True}]
    assert VALUE not in r.text


async def test_keyring_status_and_rotate(api: tuple[httpx.AsyncClient, object, Store]) -> None:
    c, _, _ = api
    for i in range(3):
        await c.put(f"/tenants/acme/secrets/S{i}", json={"value": f"v{i}"})
    status = (await c.get("/keyring")).json()
    assert status["active"] == 1 and status["versions"] == [1] and status["data_keys"] == {"1": 3}
    assert status["writable"] is True and status["source"].endswith("keyring.json")
    r = await c.post("/keyring/rotate")
    assert r.status_code == 200, r.text
    assert r.json() == {"active": 2, "added": 2, "rewrapped": 3, "retired": [1], "versions": [2]}
    assert (await c.get("/keyring")).json()["data_keys"] == {"2": 3}
    # The key material itself never appears in any response.
    assert "keys" not in status


