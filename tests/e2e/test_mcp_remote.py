"""mcp-remote bridges a stdio-only client (as Claude Desktop is) to the hosted server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from tests.conftest import Hosted
from tests.harness import NODE_BIN


@pytest.mark.asyncio
async def test_stdio_client_through_mcp_remote(demo: Hosted, tmp_path: Path) -> None:
    if not (NODE_BIN / "mcp-remote").exists():
        pytest.fail("mcp-remote missing: run `make test`, which installs it")
    params = StdioServerParameters(
        command=str(NODE_BIN / "mcp-remote"),
        # The header travels as an env value, the way the printed Claude Desktop snippet
        # passes it (a space inside an argument breaks some launchers).
        args=[demo.url, "--transport", "http-only", "--header", "Authorization:${SMCP_AUTH}"],
        env={
            "PATH": f"{NODE_BIN}:{os.environ['PATH']}",
            "HOME": str(tmp_path),  # mcp-remote keeps its state under ~/.mcp-auth
            "SMCP_AUTH": f"Bearer {demo.key}",
            "DO_NOT_TRACK": "1",
        },
    )
    async with Client(params, mode="legacy", read_timeout_seconds=60) as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        assert {"echo", "add"} <= tools
        assert (await client.call_tool("echo", {"text": "via mcp-remote"})).content[0].text == "via mcp-remote"
