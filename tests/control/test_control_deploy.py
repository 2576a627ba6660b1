"""Deployments and the server endpoints."""

from __future__ import annotations

import gzip

import httpx

from fake_runtime import FakeRuntime
from smcp.domain import BuildFailed, InvalidBundle
from smcp.store import Store

GZ = {"Content-Type": "application/gzip"}


async def _tenant(client: httpx.AsyncClient, name: str = "acme") -> None:
    assert (await client.post("/tenants", json={"name": name})).status_code == 201


async def test_deploy_creates_live_revision(client: httpx.AsyncClient, store: Store, runtime: FakeRuntime, make_bundle) -> None:
    await _tenant(client)
    bundle = make_bundle()
    r = await client.post("/tenants/acme/deployments", content=bundle, headers=GZ)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["server"] == "echo"
    assert body["url"] == "https://smcp.example/t/acme/echo/mcp"
    rev = body["revision"]
    assert rev["number"] == 1 and rev["spec"]["name"] == "echo" and rev["spec"]["entrypoint"] == "server.py"
    assert rev["build_key"] == f"build-{rev['bundle_digest'][:12]}"
    assert store.blobs.get(rev["bundle_digest"]) == bundle
    assert runtime.prepared[0][0] == "acme"

    live = await store.servers.live_revision("acme", "echo")
    assert live is not None and live.id == rev["id"]


async def test_revision_numbers_increase_and_latest_is_live(client: httpx.AsyncClient, store: Store, make_bundle) -> None:
    await _tenant(client)
    numbers = []
    for i in range(3):
        bundle = make_bundle(files={"server.py": f"print({i})\n"})
        numbers.append((await client.post("/tenants/acme/deployments", content=bundle, headers=GZ)).json()["revision"]["number"])
    assert numbers == [1, 2, 3]
    revs = (await client.get("/tenants/acme/servers/echo/revisions")).json()
    assert [r["number"] for r in revs] == [1, 2, 3]
    server = (await client.get("/tenants/acme/servers/echo")).json()
    assert server["live_revision"]["number"] == 3


async def test_bad_spec_is_422_and_creates_nothing(client: httpx.AsyncClient, store: Store, runtime: FakeRuntime, make_bundle) -> None:
    await _tenant(client)
    for spec in ('name = "echo"\nruntime = "python"\n', "this is not toml", 'name = "Bad!"\nruntime = "command"\ncommand=["x"]\n'):
        r = await client.post("/tenants/acme/deployments", content=make_bundle(spec), headers=GZ)
        assert r.status_code == 422, r.text
        assert r.json()["error"]["code"] == "invalid_spec"
    assert runtime.prepared == []
    assert await store.servers.list("acme") == []


async def test_bad_archives_are_422(client: httpx.AsyncClient, store: Store, runtime: FakeRuntime) -> None:
    await _tenant(client)
    for body in (b"definitely not gzip", gzip.compress(b"not a tar either" * 100)):
        r = await client.post("/tenants/acme/deployments", content=body, headers=GZ)
        assert r.status_code == 422, r.text
        assert r.json()["error"]["code"] == "invalid_bundle"
    r = await client.post("/tenants/acme/deployments", content=b"", headers=GZ)
    assert r.status_code == 422
    assert runtime.prepared == [] and await store.servers.list("acme") == []


async def test_failing_build_keeps_previous_revision_live(
    client: httpx.AsyncClient, store: Store, runtime: FakeRuntime, make_bundle
) -> None:
    await _tenant(client)
    first = (await client.post("/tenants/acme/deployments", content=make_bundle(), headers=GZ)).json()

    runtime.fail_with = BuildFailed("pip install failed", detail="ERROR: No matching distribution for nope==9")
    r = await client.post(
        "/tenants/acme/deployments", content=make_bundle(files={"server.py": "print(2)\n"}), headers=GZ
    )
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "build_failed" and err["message"] == "pip install failed"
    assert "No matching distribution" in err["detail"]

    live = await store.servers.live_revision("acme", "echo")
    assert live is not None and live.id == first["revision"]["id"]
    assert [r.number for r in await store.servers.revisions("acme", "echo")] == [1]

    runtime.fail_with = InvalidBundle("bundle has no requirements.txt")
    r = await client.post("/tenants/acme/deployments", content=make_bundle(files={"x.py": ""}), headers=GZ)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_bundle"

    # The next good deploy takes number 2: failed builds consume no numbers.
    runtime.fail_with = None
    ok = await client.post("/tenants/acme/deployments", content=make_bundle(files={"y.py": ""}), headers=GZ)
    assert ok.json()["revision"]["number"] == 2


async def test_failed_first_deploy_creates_no_server(client: httpx.AsyncClient, store: Store, runtime: FakeRuntime, make_bundle) -> None:
    await _tenant(client)
    runtime.fail_with = BuildFailed("boom", detail="tail")
    r = await client.post("/tenants/acme/deployments", content=make_bundle(), headers=GZ)
    assert r.status_code == 422
    assert await store.servers.get("acme", "echo") is None
    assert (await client.get("/tenants/acme/servers/echo")).status_code == 404


async def test_oversize_bundle_is_413(client: httpx.AsyncClient, store: Store, runtime: FakeRuntime, settings) -> None:
    await _tenant(client)
    too_big = b"\0" * (settings.max_bundle_bytes + 1)
    r = await client.post("/tenants/acme/deployments", content=too_big, headers=GZ)
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"

    # Without Content-Length (a streamed upload) the limit holds while reading.
    async def chunks():
        for _ in range(settings.max_bundle_bytes // 1024 + 2):
            yield b"\0" * 1024

    r = await client.post("/tenants/acme/deployments", content=chunks(), headers=GZ)
    assert "content-length" not in r.request.headers
    assert r.status_code == 413
    assert runtime.prepared == []


async def test_lying_content_length_is_still_bounded(settings, store: Store, runtime: FakeRuntime) -> None:
    """A client that under-declares Content-Length must not get past the limit."""
    from smcp.control import create_control_app

    app = create_control_app(settings, store, runtime)
    await store.tenants.create("acme")
    body = b"\0" * (settings.max_bundle_bytes + 10)
    chunks = [body[i : i + 4096] for i in range(0, len(body), 4096)]
    sent: list[dict] = []

    async def receive() -> dict:
        chunk = chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/tenants/acme/deployments",
        "raw_path": b"/tenants/acme/deployments",
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"c"),
            (b"authorization", f"Bearer {settings.admin_token}".encode()),
            (b"content-type", b"application/gzip"),
            (b"content-length", b"100"),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("c", 80),
    }
    await app(scope, receive, send)
    assert sent[0]["status"] == 413


async def test_wrong_content_type_is_415(client: httpx.AsyncClient, make_bundle) -> None:
    await _tenant(client)
    r = await client.post("/tenants/acme/deployments", content=make_bundle(), headers={"Content-Type": "text/plain"})
    assert r.status_code == 415


async def test_deploy_to_unknown_tenant_is_404(client: httpx.AsyncClient, runtime: FakeRuntime, make_bundle) -> None:
    r = await client.post("/tenants/ghost/deployments", content=make_bundle(), headers=GZ)
    assert r.status_code == 404
    assert runtime.prepared == []


async def test_server_views(client: httpx.AsyncClient, runtime: FakeRuntime, make_bundle) -> None:
    await _tenant(client)
    rev = (await client.post("/tenants/acme/deployments", content=make_bundle(), headers=GZ)).json()["revision"]
    runtime.add_instance("acme", "echo", revision=rev["id"])
    for i in range(5):
        runtime.add_log("acme", "echo", f"line {i}")

    servers = (await client.get("/tenants/acme/servers")).json()
    assert [(s["name"], s["instances"]) for s in servers] == [("echo", 1)]

    server = (await client.get("/tenants/acme/servers/echo")).json()
    assert server["url"] == "https://smcp.example/t/acme/echo/mcp"
    assert server["live_revision"]["id"] == rev["id"] and server["instances"] == 1

    [inst] = (await client.get("/tenants/acme/servers/echo/instances")).json()
    assert inst["state"] == "running" and inst["revision"] == rev["id"] and inst["pid"] == 4242

    logs = (await client.get("/tenants/acme/servers/echo/logs", params={"limit": 2})).json()
    assert [l["text"] for l in logs] == ["line 3", "line 4"]
    assert (await client.get("/tenants/acme/servers/echo/logs", params={"limit": 0})).status_code == 422

    for path in ("", "/revisions", "/instances", "/logs"):
        assert (await client.get(f"/tenants/acme/servers/nope{path}")).status_code == 404


async def test_delete_server_stops_then_deletes(client: httpx.AsyncClient, store: Store, runtime: FakeRuntime, make_bundle) -> None:
    await _tenant(client)
    await client.post("/tenants/acme/deployments", content=make_bundle(), headers=GZ)
    runtime.add_instance("acme", "echo")
    assert (await client.delete("/tenants/acme/servers/echo")).status_code == 204
    assert runtime.stopped == [("acme", "echo")]
    assert await store.servers.get("acme", "echo") is None
    assert await store.servers.live_revision("acme", "echo") is None
    r = await client.delete("/tenants/acme/servers/echo")
    assert r.status_code == 404
    assert runtime.stopped == [("acme", "echo")]  # unknown server: runtime untouched


async def test_redeploy_does_not_stop_running_instances(client: httpx.AsyncClient, runtime: FakeRuntime, make_bundle) -> None:
    await _tenant(client)
    await client.post("/tenants/acme/deployments", content=make_bundle(), headers=GZ)
    runtime.add_instance("acme", "echo")
    await client.post("/tenants/acme/deployments", content=make_bundle(files={"v2.py": ""}), headers=GZ)
    assert runtime.stopped == []
    assert len(runtime.instances("acme", "echo")) == 1
