"""Sharing modes: `shared`, `per-principal` and `per-session` map sessions to instances."""

from __future__ import annotations

import shutil

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import Hosted
from tests.harness import EXAMPLES, Node


def _client(url: str, key: str) -> Client:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=30)
    return Client(streamable_http_client(url, http_client=http), mode="legacy")


def _instances(node: Node, tenant: str, server: str) -> list[dict]:
    with node.api() as api:
        r = api.get(f"/tenants/{tenant}/servers/{server}/instances")
        assert r.status_code == 200, r.text
        return [i for i in r.json() if i["state"] in ("running", "starting", "restarting")]


@pytest.fixture(scope="module")
def per_principal(node: Node, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, str]:
    src = tmp_path_factory.mktemp("pp") / "demo"
    shutil.copytree(EXAMPLES / "demo", src)
    spec = (src / "smcp.toml").read_text().replace('name = "demo"', 'name = "demo-pp"\nsharing = "per-principal"')
    (src / "smcp.toml").write_text(spec)
    node.create_tenant("sharing")
    r = node.deploy("sharing", src)
    assert r.status_code == 201, r.text
    return r.json()["url"], node.create_key("sharing", "alice")["token"], node.create_key("sharing", "bob")["token"]


@pytest.mark.asyncio
async def test_per_principal_gives_each_key_its_own_instance(node: Node, per_principal: tuple[str, str, str]) -> None:
    url, alice, bob = per_principal
    async with _client(url, alice) as a1, _client(url, alice) as a2, _client(url, bob) as b1:
        for client, text in ((a1, "a1"), (a2, "a2"), (b1, "b1")):
            assert (await client.call_tool("echo", {"text": text})).content[0].text == text
        assert len(_instances(node, "sharing", "demo-pp")) == 2


@pytest.mark.asyncio
async def test_shared_serves_every_session_from_one_instance(node: Node, demo: Hosted) -> None:
    other_key = node.create_key(demo.tenant, "second-principal")["token"]
    async with _client(demo.url, demo.key) as a, _client(demo.url, demo.key) as b, _client(demo.url, other_key) as c:
        for client, text in ((a, "a"), (b, "b"), (c, "c")):
            assert (await client.call_tool("echo", {"text": text})).content[0].text == text
        assert len(_instances(node, demo.tenant, demo.server)) == 1


@pytest.mark.asyncio
async def test_shared_sessions_get_their_own_progress(demo: Hosted) -> None:
    import asyncio

    seen: dict[str, list[float]] = {"a": [], "b": []}

    def recorder(name: str):  # type: ignore[no-untyped-def]
        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen[name].append(progress)

        return on_progress

    async with _client(demo.url, demo.key) as a, _client(demo.url, demo.key) as b:
        await asyncio.gather(
            a.call_tool("countdown", {"n": 3}, progress_callback=recorder("a")),
            b.call_tool("countdown", {"n": 2}, progress_callback=recorder("b")),
        )
    assert seen == {"a": [1, 2, 3], "b": [1, 2]}
