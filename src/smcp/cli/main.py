"""`smcp`: manage an SMCP node through its management API.

Every command takes --url, --token and --json, so it can be pointed anywhere and
scripted. Exit codes: 0 success, 1 the API or the network said no, 2 bad usage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from smcp.cli import output as out
from smcp.cli.common import DEFAULT_URL, JsonOpt, TenantOpt, TokenOpt, UrlOpt, api

# Builds can take minutes; the server enforces its own build timeout.
DEPLOY_TIMEOUT_S = 900.0

app = typer.Typer(
    name="smcp",
    help="SMCP: host MCP servers for many tenants.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
tenant_app = typer.Typer(help="Create and list tenants.", no_args_is_help=True)
key_app = typer.Typer(help="Create, list and revoke a tenant's API keys.", no_args_is_help=True)
server_app = typer.Typer(help="Inspect and delete a tenant's servers.", no_args_is_help=True)
app.add_typer(tenant_app, name="tenant")
app.add_typer(key_app, name="key")
app.add_typer(server_app, name="server")

# ----------------------------------------------------------------------------- status


@app.command("status")
def status(url: UrlOpt = DEFAULT_URL, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Show the node's version, URL and counts."""
    with api(url, token) as client:
        data = client.request("GET", "/status")
    if as_json:
        return out.emit_json(data)
    out.fields(
        [
            ("version", data["version"]),
            ("url", data["base_url"]),
            ("tenants", data["tenants"]),
            ("servers", data["servers"]),
            ("instances", data["instances"]),
        ]
    )


# ---------------------------------------------------------------------------- tenants


@tenant_app.command("create")
def tenant_create(
    name: Annotated[str, typer.Argument(help="Tenant name: a-z, 0-9 and '-'.")],
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a tenant."""
    with api(url, token) as client:
        data = client.request("POST", "/tenants", json={"name": name})
    if as_json:
        return out.emit_json(data)
    out.stdout().print(f"Created tenant [bold]{out.escape(data['name'])}[/]")


@tenant_app.command("list")
def tenant_list(url: UrlOpt = DEFAULT_URL, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """List tenants."""
    with api(url, token) as client:
        data = client.request("GET", "/tenants")
    if as_json:
        return out.emit_json(data)
    out.table(["NAME", "CREATED"], [(t["name"], out.ts(t["created_at"])) for t in data])


# ------------------------------------------------------------------------------- keys


@key_app.command("create")
def key_create(
    tenant: TenantOpt,
    name: Annotated[str, typer.Option("--name", "-n", help="A label for the key.")] = "default",
    role: Annotated[
        str, typer.Option("--role", "-r", help="Tenant role: owner, admin, developer, viewer or auditor.")
    ] = "viewer",
    servers: Annotated[
        list[str] | None, typer.Option("--server", "-s", help="Limit the key to this server (repeatable).")
    ] = None,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an API key. Its token is printed once and cannot be shown again."""
    body: dict[str, Any] = {"name": name, "role": role}
    if servers:
        body["servers"] = servers
    with api(url, token) as client:
        data = client.request("POST", f"/tenants/{tenant}/keys", json=body)
    if as_json:
        return out.emit_json(data)
    out.stdout().print(f"Created key [bold]{data['id']}[/] ({out.escape(data['name'])}) for tenant {tenant}.")
    out.stderr().print("This token is shown only once; store it now:")
    typer.echo(data["token"])  # plain, unwrapped, so it can be copied or piped


@key_app.command("list")
def key_list(tenant: TenantOpt, url: UrlOpt = DEFAULT_URL, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """List a tenant's API keys (never their secrets)."""
    with api(url, token) as client:
        data = client.request("GET", f"/tenants/{tenant}/keys")
    if as_json:
        return out.emit_json(data)
    out.table(
        ["ID", "NAME", "PREFIX", "CREATED", "LAST USED", "STATE"],
        [
            (
                k["id"],
                k["name"],
                k["prefix"],
                out.ts(k["created_at"]),
                out.ts(k["last_used_at"]),
                "revoked" if k["revoked_at"] else "active",
            )
            for k in data
        ],
    )


@key_app.command("revoke")
def key_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (from `smcp key list`).")],
    tenant: TenantOpt,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke an API key; requests using it are refused from now on."""
    with api(url, token) as client:
        client.request("DELETE", f"/tenants/{tenant}/keys/{key_id}")
    if as_json:
        return out.emit_json({"revoked": key_id, "tenant": tenant})
    out.stdout().print(f"Revoked key {out.escape(key_id)}")


# ----------------------------------------------------------------------------- deploy


@app.command("deploy")
def deploy(
    directory: Annotated[
        Path, typer.Argument(help="Server directory with smcp.toml at its root.", file_okay=False, exists=True)
    ],
    tenant: TenantOpt,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Pack DIRECTORY and deploy it as the server's new live revision."""
    from smcp.domain import SmcpError
    from smcp.runtime.bundles import pack

    try:
        bundle = pack(directory)
    except SmcpError as exc:
        out.error(exc.message, exc.detail)
        raise typer.Exit(1) from None
    with api(url, token) as client:
        data = client.request(
            "POST",
            f"/tenants/{tenant}/deployments",
            content=bundle,
            headers={"Content-Type": "application/gzip"},
            timeout=DEPLOY_TIMEOUT_S,
        )
    if as_json:
        return out.emit_json(data)
    rev = data["revision"]
    out.stdout().print(f"Deployed [bold]{out.escape(data['server'])}[/] revision {rev['number']}")
    out.fields([("url", data["url"]), ("revision", rev["id"]), ("bundle", rev["bundle_digest"][:16])])


# ---------------------------------------------------------------------------- servers


def _server_rows(items: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [
        (
            s["name"],
            s["live_revision"]["number"] if s["live_revision"] else None,
            s["instances"],
            s["url"],
        )
        for s in items
    ]


@server_app.command("list")
def server_list(tenant: TenantOpt, url: UrlOpt = DEFAULT_URL, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """List a tenant's servers."""
    with api(url, token) as client:
        data = client.request("GET", f"/tenants/{tenant}/servers")
    if as_json:
        return out.emit_json(data)
    out.table(["NAME", "REVISION", "INSTANCES", "URL"], _server_rows(data))


@server_app.command("show")
def server_show(
    name: Annotated[str, typer.Argument(help="Server name.")],
    tenant: TenantOpt,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a server: its URL, live revision and spec."""
    with api(url, token) as client:
        data = client.request("GET", f"/tenants/{tenant}/servers/{name}")
    if as_json:
        return out.emit_json(data)
    rev = data["live_revision"] or {}
    spec = rev.get("spec", {})
    run = spec.get("entrypoint") or " ".join(spec.get("command") or [])
    out.fields(
        [
            ("server", data["name"]),
            ("tenant", data["tenant"]),
            ("url", data["url"]),
            ("revision", f"{rev['number']} ({rev['id']})" if rev else None),
            ("deployed", out.ts(rev.get("created_at"))),
            ("runtime", f"{spec.get('runtime')}: {run}" if spec else None),
            ("instances", data["instances"]),
        ]
    )


@server_app.command("delete")
def server_delete(
    name: Annotated[str, typer.Argument(help="Server name.")],
    tenant: TenantOpt,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Stop a server's instances and delete it with all its revisions."""
    if not yes:
        typer.confirm(f"Delete server {name!r} of tenant {tenant!r} and all its revisions?", abort=True)
    with api(url, token) as client:
        client.request("DELETE", f"/tenants/{tenant}/servers/{name}")
    if as_json:
        return out.emit_json({"deleted": name, "tenant": tenant})
    out.stdout().print(f"Deleted server {out.escape(name)}")


@server_app.command("logs")
def server_logs(
    name: Annotated[str, typer.Argument(help="Server name.")],
    tenant: TenantOpt,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=10_000, help="Most recent lines to show.")] = 200,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a server's recent log lines (stderr of its instances and runtime events)."""
    with api(url, token) as client:
        data = client.request("GET", f"/tenants/{tenant}/servers/{name}/logs", params={"limit": limit})
    if as_json:
        return out.emit_json(data)
    console = out.stdout()
    for line in data:
        text = f"{out.ts(line['at'])} {line['instance']} {line['stream']}: {line['text']}"
        console.print(text, markup=False, soft_wrap=True)


from smcp.cli import serve as _serve  # noqa: E402  (registers `smcp up` and `smcp serve`)

_serve.register(app)

from smcp.cli import identity as _identity  # noqa: E402  (registers `smcp user …` and `smcp member …`)

_identity.register(app)

from smcp.cli import secrets as _secrets  # noqa: E402  (registers `smcp secret` and `smcp keys`)

_secrets.register(app)

if __name__ == "__main__":  # `python -m smcp.cli.main` (what the test harness runs)
    app()
