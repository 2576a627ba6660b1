"""Node servers and registry packages, built for real (npm ci / npm install / uv from the
registries) and reached through the gateway with the Python `mcp` SDK client."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.harness import EXAMPLES, Node

pytestmark = pytest.mark.asyncio

# Exact versions, as the spec demands; checked to exist with `npm view` / `pip index versions`.
PYPI_TIME = "mcp-server-time==2026.10.19"
NPM_THINKING = "@modelcontextprotocol/server-sequential-thinking@2026.8.31"


LEFT_PAD_INTEGRITY = "sha512-XI5MPzVNApjAyhQzphX8BkmKsKUxD4LdyK24iZeQGinBN9yTQT3bFlCBy/aVx2HrNcqQGsdot8ghrjyrvMCoEA=="


def _client(url: str, key: str) -> Client:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=60)
    return Client(streamable_http_client(url, http_client=http), mode="legacy")


def _deploy(node: Node, tenant: str, directory: Path) -> tuple[dict, float]:
    started = time.monotonic()
    r = node.deploy(tenant, directory)
    took = time.monotonic() - started
    assert r.status_code == 201, r.text
    return r.json(), took


def _server_dir(tmp: Path, name: str, toml: str, files: dict[str, str] | None = None) -> Path:
    d = tmp / name
    d.mkdir()
    (d / "smcp.toml").write_text(toml)
    for rel, text in (files or {}).items():
        (d / rel).write_text(text)
    return d


@pytest.fixture(scope="module")
def builder_tenant(node: Node) -> tuple[str, str]:
    node.create_tenant("builder")
    return "builder", node.create_key("builder")["token"]


async def test_node_server_from_lockfile(node: Node, builder_tenant: tuple[str, str], tmp_path: Path) -> None:
    tenant, key = builder_tenant
    deployed, cold = _deploy(node, tenant, EXAMPLES / "node-echo")
    assert deployed["revision"]["build_key"], deployed
    url = node.mcp_url(tenant, "node-echo")
    async with _client(url, key) as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        assert {"echo", "runtime"} <= tools
        assert (await client.call_tool("echo", {"text": "from node"})).content[0].text == "from node"
        facts = json.loads((await client.call_tool("runtime", {})).content[0].text)
    assert facts["node"].startswith("v20.")  # the system /usr/bin/node by default
    assert facts["cwd"] == "/srv/app" and facts["uid"] != 0
    assert facts["sdk"].startswith("file:///srv/node_modules/@modelcontextprotocol/sdk/")
    assert facts["env"] == "hello from smcp.toml"

    # A code change with the same package.json + lockfile reuses the build.
    changed = tmp_path / "node-echo"
    shutil.copytree(EXAMPLES / "node-echo", changed, ignore=shutil.ignore_patterns("node_modules"))
    (changed / "server.js").write_text((changed / "server.js").read_text().replace("node-echo: ready", "v2 ready"))
    again, warm = _deploy(node, tenant, changed)
    assert again["revision"]["build_key"] == deployed["revision"]["build_key"]
    assert again["revision"]["number"] == deployed["revision"]["number"] + 1
    print(f"\nnode lockfile build: cold deploy {cold:.1f}s, warm deploy {warm:.2f}s")
    assert warm < cold


async def test_node_build_output_is_read_only_and_offline(node: Node, builder_tenant: tuple[str, str], tmp_path: Path) -> None:
    # A tiny server (no SDK) that reports what it can do to node_modules and the network.
    tenant, key = builder_tenant
    server = r"""
import fs from "node:fs"; import net from "node:net"; import readline from "node:readline";
const rl = readline.createInterface({ input: process.stdin });
const send = (m) => process.stdout.write(JSON.stringify(m) + "\n");
rl.on("line", async (line) => {
  const msg = JSON.parse(line);
  if (msg.method === "initialize") return send({ jsonrpc: "2.0", id: msg.id, result: { protocolVersion: msg.params.protocolVersion, capabilities: { tools: {} }, serverInfo: { name: "bare", version: "1" } } });
  if (msg.method === "tools/list") return send({ jsonrpc: "2.0", id: msg.id, result: { tools: [{ name: "check", inputSchema: { type: "object" } }] } });
  if (msg.method === "tools/call") {
    let write = "ok"; try { fs.writeFileSync("/srv/node_modules/pwned", "x"); } catch (e) { write = e.code; }
    const net_ = await new Promise((res) => { const s = net.connect(443, "104.16.0.35"); s.on("connect", () => res("connected")); s.on("error", (e) => res(e.code)); setTimeout(() => res("timeout"), 2000); });
    const dep = fs.existsSync("/srv/node_modules/left-pad/index.js");
    return send({ jsonrpc: "2.0", id: msg.id, result: { content: [{ type: "text", text: JSON.stringify({ write, net: net_, dep }) }] } });
  }
  if (msg.id !== undefined) send({ jsonrpc: "2.0", id: msg.id, result: {} });
});
"""
    lock = {
        "name": "bare", "version": "1.0.0", "lockfileVersion": 3, "requires": True,
        "packages": {
            "": {"name": "bare", "version": "1.0.0", "dependencies": {"left-pad": "1.3.0"}},
            "node_modules/left-pad": {
                "version": "1.3.0",
                "resolved": "https://registry.npmjs.org/left-pad/-/left-pad-1.3.0.tgz",
                "integrity": LEFT_PAD_INTEGRITY,
                "license": "WTFPL",
            },
        },
    }
    d = _server_dir(
        tmp_path, "bare",
        'name = "bare"\nruntime = "node"\nentrypoint = "server.mjs"\n',
        {
            "server.mjs": server,
            "package.json": json.dumps({"name": "bare", "version": "1.0.0", "dependencies": {"left-pad": "1.3.0"}}),
            "package-lock.json": json.dumps(lock),
        },
    )
    _deploy(node, tenant, d)
    async with _client(node.mcp_url(tenant, "bare"), key) as client:
        result = json.loads((await client.call_tool("check", {})).content[0].text)
    assert result["dep"] is True
    assert result["write"] in ("EROFS", "EACCES")
    assert result["net"] != "connected"  # ENETUNREACH (no interface) or EAFNOSUPPORT (seccomp)


async def test_lockfile_integrity_is_enforced(node: Node, builder_tenant: tuple[str, str], tmp_path: Path) -> None:
    tenant, _ = builder_tenant
    forged = LEFT_PAD_INTEGRITY[:-12] + "AAAAAAAAAA=="
    lock = {
        "name": "forged", "version": "1.0.0", "lockfileVersion": 3, "requires": True,
        "packages": {
            "": {"name": "forged", "version": "1.0.0", "dependencies": {"left-pad": "1.3.0"}},
            "node_modules/left-pad": {"version": "1.3.0", "integrity": forged},
        },
    }
    d = _server_dir(
        tmp_path, "forged", 'name = "forged"\nruntime = "node"\nentrypoint = "index.js"\n',
        {
            "index.js": "",
            "package.json": json.dumps({"name": "forged", "version": "1.0.0", "dependencies": {"left-pad": "1.3.0"}}),
            "package-lock.json": json.dumps(lock),
        },
    )
    r = node.deploy(tenant, d)
    assert r.status_code == 422 and r.json()["error"]["code"] == "build_failed", r.text
    assert "EINTEGRITY" in r.json()["error"]["detail"]


async def test_node_missing_lockfile_is_a_clear_422(node: Node, builder_tenant: tuple[str, str], tmp_path: Path) -> None:
    tenant, _ = builder_tenant
    d = _server_dir(
        tmp_path, "nolock", 'name = "nolock"\nruntime = "node"\nentrypoint = "index.js"\n',
        {"index.js": "", "package.json": json.dumps({"name": "nolock", "dependencies": {"left-pad": "^1.3.0"}})},
    )
    r = node.deploy(tenant, d)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_spec", r.text
    assert "package-lock.json" in r.json()["error"]["message"]
    d2 = _server_dir(tmp_path, "floaty", 'name = "floaty"\nruntime = "node"\nnpm = "left-pad@^1.3.0"\n')
    r = node.deploy(tenant, d2)
    assert r.status_code == 422 and "exact version" in r.text


async def test_pypi_registry_package(node: Node, builder_tenant: tuple[str, str], tmp_path: Path) -> None:
    tenant, key = builder_tenant
    d = _server_dir(tmp_path, "clock", f'name = "clock"\nruntime = "python"\npypi = "{PYPI_TIME}"\nargs = ["--local-timezone", "UTC"]\n')
    deployed, cold = _deploy(node, tenant, d)
    assert deployed["revision"]["build_key"]
    async with _client(node.mcp_url(tenant, "clock"), key) as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        assert "get_current_time" in tools
        result = await client.call_tool("get_current_time", {"timezone": "Europe/Paris"})
        assert not result.is_error, result
        assert "Europe/Paris" in result.content[0].text
    _, warm = _deploy(node, tenant, d)
    print(f"\npypi {PYPI_TIME}: cold deploy {cold:.1f}s, warm deploy {warm:.2f}s")
    assert warm < cold


async def test_npm_registry_package(node: Node, builder_tenant: tuple[str, str], tmp_path: Path) -> None:
    tenant, key = builder_tenant
    d = _server_dir(tmp_path, "thinker", f'name = "thinker"\nruntime = "node"\nnpm = "{NPM_THINKING}"\n')
    deployed, cold = _deploy(node, tenant, d)
    print(f"\nnpm {NPM_THINKING}: cold deploy {cold:.1f}s")
    async with _client(node.mcp_url(tenant, "thinker"), key) as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        assert "sequentialthinking" in tools or "sequential_thinking" in tools, tools


async def test_registry_package_with_unknown_bin_fails_clearly(node: Node, builder_tenant: tuple[str, str], tmp_path: Path) -> None:
    tenant, _ = builder_tenant
    d = _server_dir(tmp_path, "wrongbin", f'name = "wrongbin"\nruntime = "python"\npypi = "{PYPI_TIME}"\nbin = "nope"\n')
    r = node.deploy(tenant, d)
    assert r.status_code == 422 and r.json()["error"]["code"] == "build_failed", r.text
    assert "has no console script 'nope'" in r.json()["error"]["message"]
    assert "mcp-server-time" in r.json()["error"]["message"]
