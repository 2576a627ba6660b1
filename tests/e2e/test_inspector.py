"""The MCP Inspector CLI (Node 22, from the project's npm dev dependencies) calls a hosted tool."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.conftest import Hosted
from tests.harness import NODE_BIN


def _inspector(hosted: Hosted, *args: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
    if not (NODE_BIN / "mcp-inspector").exists():
        pytest.fail("MCP Inspector missing: run `make test`, which installs it")
    env = {**os.environ, "PATH": f"{NODE_BIN}:{os.environ['PATH']}", "DO_NOT_TRACK": "1"}
    cmd = [
        "mcp-inspector",
        "--cli",
        hosted.url,
        "--transport",
        "http",
        "--header",
        f"Authorization: Bearer {key or hosted.key}",
        *args,
    ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


def test_inspector_lists_tools(demo: Hosted) -> None:
    out = _inspector(demo, "--method", "tools/list", "--format", "json")
    assert out.returncode == 0, out.stderr + out.stdout
    names = {t["name"] for t in json.loads(out.stdout)["result"]["tools"]}
    assert {"echo", "add", "countdown"} <= names


def test_inspector_calls_a_tool(demo: Hosted) -> None:
    out = _inspector(
        demo, "--method", "tools/call", "--tool-name", "echo", "--tool-arg", "text=inspected", "--format", "json"
    )
    assert out.returncode == 0, out.stderr + out.stdout
    result = json.loads(out.stdout)["result"]
    assert result["content"][0]["text"] == "inspected"


def test_inspector_without_valid_key_reports_auth_required(demo: Hosted) -> None:
    out = _inspector(demo, "--method", "tools/list", "--format", "json", key="smcp_000000000000_wrong")
    assert out.returncode != 0
