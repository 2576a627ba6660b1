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


def test_inspector_in_the_modern_era(demo: Hosted, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The Inspector's 2026-07-28 client (per-request _meta, no initialize) through the gateway."""
    config = tmp_path / "mcp.json"
    config.write_text(
        json.dumps(
            {
                "mcpServers": {
                    "smcp": {
                        "type": "streamable-http",
                        "url": demo.url,
                        "headers": {"Authorization": f"Bearer {demo.key}"},
                        "protocolEra": "modern",
                    }
                }
            }
        )
    )
    env = {**os.environ, "PATH": f"{NODE_BIN}:{os.environ['PATH']}", "DO_NOT_TRACK": "1"}
    base = ["mcp-inspector", "--cli", "--config", str(config), "--server", "smcp", "--format", "json"]
    listed = subprocess.run([*base, "--method", "tools/list"], env=env, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr + listed.stdout
    assert "echo" in {t["name"] for t in json.loads(listed.stdout)["result"]["tools"]}
    called = subprocess.run(
        [*base, "--method", "tools/call", "--tool-name", "echo", "--tool-arg", "text=modern inspector"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert called.returncode == 0, called.stderr + called.stdout
    assert json.loads(called.stdout)["result"]["content"][0]["text"] == "modern inspector"
