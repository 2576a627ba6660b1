"""The official Python `mcp` SDK client reaches a sandboxed, SDK-built server through the gateway."""

from __future__ import annotations

import json

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import Hosted

pytestmark = pytest.mark.asyncio


def _client(hosted: Hosted, key: str | None = None) -> Client:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key or hosted.key}"}, timeout=30)
    return Client(streamable_http_client(hosted.url, http_client=http), mode="legacy")


async def test_lists_and_calls_tools(demo: Hosted) -> None:
    async with _client(demo) as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        assert {"echo", "add", "greet", "countdown", "whoami"} <= tools
        result = await client.call_tool("echo", {"text": "through the gateway"})
        assert not result.is_error
        assert result.content[0].text == "through the gateway"
        added = await client.call_tool("add", {"a": 2, "b": 40})
        assert "42" in added.content[0].text


async def test_spec_env_reaches_the_server(demo: Hosted) -> None:
    async with _client(demo) as client:
        result = await client.call_tool("greet", {"name": "Ada"})
        assert result.content[0].text.startswith("Hello")


async def test_progress_notifications_stream_to_the_caller(demo: Hosted) -> None:
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async with _client(demo) as client:
        result = await client.call_tool("countdown", {"n": 3}, progress_callback=on_progress)
        assert "liftoff" in result.content[0].text
    assert len(seen) == 3


async def test_server_runs_sandboxed(demo: Hosted) -> None:
    async with _client(demo) as client:
        result = await client.call_tool("whoami", {})
        text = result.content[0].text
        info = json.loads(text) if text.startswith("{") else result.structured_content
        assert info["uid"] != 0
        assert info["cwd"] == "/srv/app"
        assert info["hostname"] == "smcp"


async def test_sessions_share_one_instance_by_default(demo: Hosted) -> None:
    async with _client(demo) as a, _client(demo) as b:
        who_a = (await a.call_tool("whoami", {})).structured_content
        who_b = (await b.call_tool("whoami", {})).structured_content
        assert who_a is not None and who_b is not None
        # sharing = "shared" (the default): one sandboxed process serves both sessions,
        # and the gateway keeps their requests apart.
        assert who_a["pid"] == who_b["pid"]
        assert (await a.call_tool("echo", {"text": "a"})).content[0].text == "a"
        assert (await b.call_tool("echo", {"text": "b"})).content[0].text == "b"
