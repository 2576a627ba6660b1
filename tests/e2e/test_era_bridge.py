"""A legacy (2025-11-25) client in front of a server that speaks only 2026-07-28."""

from __future__ import annotations

from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.harness import Node

SERVER = Path(__file__).parent / "servers" / "modern_only"


@pytest.fixture(scope="module")
def modern_only(node: Node) -> tuple[str, str]:
    node.create_tenant("bridge")
    key = node.create_key("bridge")["token"]
    r = node.deploy("bridge", SERVER)
    assert r.status_code == 201, r.text
    return r.json()["url"], key


def _client(url: str, key: str, **kw) -> Client:  # type: ignore[no-untyped-def]
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=30)
    return Client(streamable_http_client(url, http_client=http), mode="legacy", **kw)


@pytest.mark.asyncio
async def test_legacy_client_uses_a_modern_only_server(modern_only: tuple[str, str]) -> None:
    url, key = modern_only
    async with _client(url, key) as client:
        assert {t.name for t in (await client.list_tools()).tools} == {"echo", "ask_name"}
        assert (await client.call_tool("echo", {"text": "bridged"})).content[0].text == "bridged"
        await client.send_ping()  # answered by the gateway: the modern era has no ping


@pytest.mark.asyncio
async def test_multi_round_trip_becomes_an_elicitation_request(modern_only: tuple[str, str]) -> None:
    from mcp.types import ElicitResult

    url, key = modern_only
    asked: list[str] = []

    async def on_elicit(context, params):  # type: ignore[no-untyped-def]
        asked.append(params.message)
        return ElicitResult(action="accept", content={"name": "Ada"})

    async with _client(url, key, elicitation_callback=on_elicit) as client:
        result = await client.call_tool("ask_name", {})
    assert asked == ["What is your name?"]
    assert result.content[0].text == "hello, Ada"


@pytest.mark.asyncio
async def test_capabilities_the_client_lacks_are_reported(modern_only: tuple[str, str]) -> None:
    url, key = modern_only
    from mcp.shared.exceptions import MCPError

    async with _client(url, key) as client:  # no elicitation callback: no capability
        with pytest.raises(MCPError) as info:
            await client.call_tool("ask_name", {})
    # The server's own -32021 reaches the legacy client, naming what was missing.
    assert info.value.code == -32021 and "elicitation" in str(info.value)
