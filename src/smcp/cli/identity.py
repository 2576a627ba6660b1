"""`smcp user …` and `smcp member …`: local users and their tenant roles."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from smcp.cli import output as out
from smcp.cli.common import DEFAULT_URL, JsonOpt, TenantOpt, TokenOpt, UrlOpt, api

ROLES = "owner, admin, developer, viewer or auditor"


user_app = typer.Typer(help="Create and list local users (they sign in to authorize MCP clients).", no_args_is_help=True)
member_app = typer.Typer(help="A tenant's members and their roles.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(user_app, name="user")
    app.add_typer(member_app, name="member")


@user_app.command("create")
def user_create(
    name: Annotated[str, typer.Argument(help="Login name (lower-case).")],
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin.")] = False,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a local user; the password is asked for (or read from stdin), never passed as an argument."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    with api(url, token) as client:
        data = client.request("POST", "/users", json={"name": name, "password": password})
    if as_json:
        return out.emit_json(data)
    out.stdout().print(f"Created user [bold]{out.escape(data['name'])}[/]")

@user_app.command("list")
def user_list(url: UrlOpt = DEFAULT_URL, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """List local users."""
    with api(url, token) as client:
        data = client.request("GET", "/users")
    if as_json:
        return out.emit_json(data)
    out.table(["NAME", "CREATED"], [(u["name"], out.ts(u["created_at"])) for u in data])

@member_app.command("set")
def member_set(
    user: Annotated[str, typer.Argument(help="User name.")],
    tenant: TenantOpt,
    role: Annotated[str, typer.Option("--role", "-r", help=f"One of {ROLES}.")],
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a user to a tenant with a role, or change their role."""
    with api(url, token) as client:
        data = client.request("PUT", f"/tenants/{tenant}/members", json={"user": user, "role": role})
    if as_json:
        return out.emit_json(data)
    out.stdout().print(f"{out.escape(data['user'])} is now {data['role']} of tenant {out.escape(tenant)}")

@member_app.command("list")
def member_list(tenant: TenantOpt, url: UrlOpt = DEFAULT_URL, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """List a tenant's members and roles."""
    with api(url, token) as client:
        data = client.request("GET", f"/tenants/{tenant}/members")
    if as_json:
        return out.emit_json(data)
    out.table(["USER", "ROLE", "SINCE"], [(m["user"], m["role"], out.ts(m["created_at"])) for m in data])

@member_app.command("remove")
def member_remove(
    user: Annotated[str, typer.Argument(help="User name.")],
    tenant: TenantOpt,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove a member; their OAuth grants for the tenant end at once."""
    with api(url, token) as client:
        client.request("DELETE", f"/tenants/{tenant}/members/{user}")
    if as_json:
        return out.emit_json({"removed": user, "tenant": tenant})
    out.stdout().print(f"Removed {out.escape(user)} from tenant {out.escape(tenant)}")
