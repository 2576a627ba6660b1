"""`smcp serve` runs a node; `smcp up` runs one with a ready-to-use demo tenant and server."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import shlex
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
import uvicorn
from rich.console import Console

from smcp import placement
from smcp.app import create_app
from smcp.config import Settings
from smcp.httpserver import HttpProtocol
from smcp.runtime import bundles

console = Console()
_REPO_DEMO = Path(__file__).resolve().parents[3] / "examples" / "servers" / "demo"


def register(app: typer.Typer) -> None:
    app.command("serve", help="Run the platform (control API + gateway + runtime) in the foreground.")(serve)
    app.command("up", help="Run the platform with a demo tenant, API key and server, and print how to connect.")(up)


def _settings(host: str | None, port: int | None, data_dir: Path | None) -> Settings:
    overrides: dict[str, Any] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    return Settings(**overrides)


def _server(settings: Settings) -> uvicorn.Server:
    platform = create_app(settings)
    config = uvicorn.Config(
        platform,
        host=settings.host,
        port=settings.port,
        lifespan="on",
        log_level="warning",
        # The node's own connection protocol (httptools, lean per request, bounded heads).
        http=functools.partial(HttpProtocol, max_header_bytes=settings.max_header_bytes),
        timeout_keep_alive=settings.http_idle_timeout_s,  # type: ignore[arg-type]
        # The loop is ours (_run_until_interrupted), not uvicorn's to choose.
        loop="none",
        access_log=False,
        # No "server: uvicorn" on every answer: it tells a prober what to aim at, and
        # costs a header per response.
        server_header=False,
        timeout_graceful_shutdown=5,
        # uvicorn would believe X-Forwarded-For from 127.0.0.1 by default and rewrite the
        # client address; SMCP_TRUSTED_PROXIES alone decides that (smcp.auth.ratelimit).
        proxy_headers=False,
    )
    return uvicorn.Server(config)


HostOpt = Annotated[str | None, typer.Option(help="Address to listen on (SMCP_HOST).")]
PortOpt = Annotated[int | None, typer.Option(help="Port to listen on (SMCP_PORT).")]
DataOpt = Annotated[Path | None, typer.Option("--data-dir", help="Where state lives (SMCP_DATA_DIR).")]


def serve(host: HostOpt = None, port: PortOpt = None, data_dir: DataOpt = None) -> None:
    settings = _settings(host, port, data_dir)
    server = _server(settings)
    console.print(f"SMCP listening on [bold]{settings.base_url}[/] (data in {settings.data_dir})")
    _run_until_interrupted(server.serve(), settings)
    if not server.started:
        raise typer.Exit(1)


def up(
    host: HostOpt = None,
    port: PortOpt = None,
    data_dir: DataOpt = None,
    demo: Annotated[Path, typer.Option(help="Server directory to deploy as the demo.")] = _REPO_DEMO,
) -> None:
    settings = _settings(host, port, data_dir)
    server = _server(settings)

    async def main() -> None:
        serving = asyncio.create_task(server.serve())
        while not server.started:
            if serving.done():
                raise typer.Exit(1)
            await asyncio.sleep(0.05)
        try:
            info = await _provision_demo(settings, demo)
        except Exception as exc:
            console.print(f"[red]demo setup failed:[/] {exc}")
            server.should_exit = True
            await serving
            raise typer.Exit(1) from None
        _print_demo(info)
        console.print("\nPress Ctrl-C to stop.")
        await serving

    _run_until_interrupted(main(), settings)


def _loop_factory(settings: Settings) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if settings.event_loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            console.print("[yellow]uvloop is not installed; running on the standard asyncio loop[/]")
            return None
        return uvloop.new_event_loop
    return None


def _run_until_interrupted(main: Coroutine[Any, Any, None], settings: Settings) -> None:
    # Before the loop and its threads exist, so that they all inherit it.
    placement.pin_node(settings.node_cpu_set)
    # uvicorn re-raises the SIGINT it handled once shutdown is complete; by then every
    # instance is stopped, so Ctrl-C is a clean, successful exit.
    try:
        with asyncio.Runner(loop_factory=_loop_factory(settings)) as runner:
            runner.run(main)
    except KeyboardInterrupt:
        console.print("SMCP stopped.")


async def _provision_demo(settings: Settings, demo_dir: Path) -> dict[str, str]:
    tenant = "demo"
    demo_file = settings.data_dir / "demo.json"
    headers = {"authorization": f"Bearer {settings.admin_token}"}
    async with httpx.AsyncClient(base_url=f"{settings.base_url}/api/v1", headers=headers, timeout=900) as api:
        r = await api.post("/tenants", json={"name": tenant})
        if r.status_code not in (201, 409):
            raise RuntimeError(f"creating tenant: {r.status_code} {r.text}")
        api_key = _reusable_key(demo_file, await api.get(f"/tenants/{tenant}/keys"))
        if api_key is None:
            r = await api.post(f"/tenants/{tenant}/keys", json={"name": "demo"})
            r.raise_for_status()
            api_key = r.json()["token"]
        console.print(f"Deploying {demo_dir} (the first build installs its requirements; later starts reuse it)…")
        data = bundles.pack(demo_dir)
        r = await api.post(
            f"/tenants/{tenant}/deployments", content=data, headers={"content-type": "application/gzip"}
        )
        if r.status_code != 201:
            raise RuntimeError(f"deploying the demo: {r.status_code} {r.text}")
        deployed = r.json()
    info = {"url": deployed["url"], "api_key": api_key, "tenant": tenant, "server": deployed["server"]}
    demo_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(demo_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(info, f, indent=2)
    os.chmod(demo_file, 0o600)
    return info


def _reusable_key(demo_file: Path, listing: httpx.Response) -> str | None:
    """Keep the key from an earlier `smcp up` while it is still active."""
    if not demo_file.exists() or listing.status_code != 200:
        return None
    try:
        token = json.loads(demo_file.read_text())["api_key"]
    except (ValueError, KeyError):
        return None
    active = {k["id"] for k in listing.json() if not k.get("revoked_at")}
    key_id = token.removeprefix("smcp_").split("_", 1)[0]
    return token if key_id in active else None


def _print_demo(info: dict[str, str]) -> None:
    url, key = info["url"], info["api_key"]
    auth = f"Authorization: Bearer {key}"
    inspector = " ".join(
        [
            'PATH="$PWD/node_modules/.bin:$PATH" mcp-inspector --cli',
            shlex.quote(url),
            "--transport http",
            "--header",
            shlex.quote(auth),
        ]
    )
    claude = {
        "mcpServers": {
            "smcp-demo": {
                "command": "npx",
                "args": ["-y", "mcp-remote", url, "--transport", "http-only", "--header", "Authorization:${SMCP_AUTH}"],
                "env": {"SMCP_AUTH": f"Bearer {key}"},
            }
        }
    }
    console.print("\n[bold green]SMCP is up[/] with a demo server.\n")
    console.print(f"  endpoint  {url}")
    console.print(f"  API key   {key}")
    console.print(f"  tenant    {info['tenant']}   server {info['server']}")
    console.print("  (also in .smcp/demo.json, mode 0600)\n")
    console.print("[bold]MCP Inspector CLI[/] (Node 22 from `npm install`):")
    console.print(f"  {inspector} --method tools/list", soft_wrap=True, highlight=False)
    console.print(
        f"  {inspector} --method tools/call --tool-name echo --tool-arg text=hello", soft_wrap=True, highlight=False
    )
    console.print("\n[bold]Claude Desktop / any stdio client via mcp-remote[/] (claude_desktop_config.json):")
    console.print(json.dumps(claude, indent=2), soft_wrap=True, highlight=False)
