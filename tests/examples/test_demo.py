"""The demo server works end to end through the official SDK's stdio client, unsandboxed."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from smcp.domain import RuntimeKind, parse_spec

DEMO = Path(__file__).resolve().parents[2] / "examples" / "servers" / "demo"


def test_demo_spec_is_valid() -> None:
    spec = parse_spec((DEMO / "smcp.toml").read_bytes())
    assert spec.name == "demo"
    assert spec.runtime is RuntimeKind.python
    assert spec.entrypoint == "server.py" and (DEMO / spec.entrypoint).is_file()
    assert spec.env == {"GREETING": "Hello"}
    assert spec.description
    assert (DEMO / "requirements.txt").read_text().split() == ["mcp==2.3.0"]


def _params(**env: str) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=[str(DEMO / "server.py")], env=env, cwd=str(DEMO))


def _text(result: object) -> str:
    content = result.content  # type: ignore[attr-defined]
    assert len(content) == 1 and content[0].type == "text"
    return content[0].text


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_demo_tools_over_stdio(mode: str) -> None:
    async with Client(_params(GREETING="Ahoy"), mode=mode, read_timeout_seconds=30) as client:
        assert client.server_info is not None and client.server_info.name == "demo"
        tools = {t.name for t in (await client.list_tools()).tools}
        assert tools == {"echo", "add", "greet", "countdown", "whoami"}

        assert _text(await client.call_tool("echo", {"text": "héllo ✓"})) == "héllo ✓"

        added = await client.call_tool("add", {"a": 1.5, "b": 2.25})
        assert not added.is_error and float(_text(added)) == 3.75
        assert added.structured_content == {"result": 3.75}

        # GREETING comes from the environment, as smcp.toml's [env] would set it.
        assert _text(await client.call_tool("greet", {"name": "Ada"})) == "Ahoy, Ada!"

        seen: list[tuple[float, float | None, str | None]] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen.append((progress, total, message))

        result = await client.call_tool("countdown", {"n": 3}, progress_callback=on_progress)
        assert _text(result) == "liftoff"
        assert seen == [(1, 3, "T-minus 2"), (2, 3, "T-minus 1"), (3, 3, "T-minus 0")]

        who = await client.call_tool("whoami", {})
        facts = who.structured_content
        assert facts == json.loads(_text(who))
        assert facts["uid"] == os.getuid()
        assert facts["pid"] != os.getpid() and facts["pid"] > 0
        assert facts["cwd"] == str(DEMO)
        assert isinstance(facts["hostname"], str) and facts["hostname"]

        bad = await client.call_tool("add", {"a": "not a number", "b": 1})
        assert bad.is_error


async def test_demo_default_greeting_resource_and_prompt() -> None:
    async with Client(_params(), mode="legacy", read_timeout_seconds=30) as client:
        assert _text(await client.call_tool("greet", {"name": "Bob"})) == "Hello, Bob!"

        resources = (await client.list_resources()).resources
        assert [str(r.uri) for r in resources] == ["demo://readme"]
        contents = (await client.read_resource("demo://readme")).contents
        assert contents[0].text.startswith("# demo")

        prompts = (await client.list_prompts()).prompts
        assert [p.name for p in prompts] == ["introduce"]
        prompt = await client.get_prompt("introduce", {"name": "Grace"})
        assert "Grace" in prompt.messages[0].content.text
