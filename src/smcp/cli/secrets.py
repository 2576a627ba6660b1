"""`smcp secret …` (a tenant's secrets) and `smcp keys …` (the platform's key ring).

A secret's value is read from stdin (a hidden prompt on a terminal) or --value-file,
so it never sits in argv where `ps` and shell history would show it. `--value`
exists for throwaway setups and warns. Values are write-only: no command prints one.
"""

from __future__ import annotations

import base64
import sys
from pathlib import Path
from typing import Annotated

import typer

from smcp.cli import output as out
from smcp.cli.common import api

secret_app = typer.Typer(help="Set, list and delete a tenant's secrets (values are write-only).", no_args_is_help=True)
keys_app = typer.Typer(help="The secret key ring: key-encryption keys and their rotation.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(secret_app, name="secret")
    app.add_typer(keys_app, name="keys")


def _read_value(value: str | None, value_file: Path | None) -> bytes:
    if value is not None and value_file is not None:
        out.error("give --value or --value-file, not both")
        raise typer.Exit(2)
    if value is not None:
        out.stderr().print(
            "[yellow]warning:[/] --value puts the secret in shell history and in `ps` output; "
            "pipe it on stdin or use --value-file instead"
        )
        return value.encode("utf-8")
    if value_file is not None:
        try:
            return Path(value_file).read_bytes()
        except OSError as exc:
            out.error(f"cannot read {value_file}: {exc.strerror}")
            raise typer.Exit(2) from None
    if sys.stdin.isatty():
        return typer.prompt("Secret value", hide_input=True, confirmation_prompt=True).encode("utf-8")
    data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode()
    # `echo value | smcp secret set` should not store the newline echo added.
    if data.endswith(b"\r\n"):
        data = data[:-2]
    elif data.endswith(b"\n"):
        data = data[:-1]
    return data


@secret_app.command("set")
def secret_set(
    name: Annotated[str, typer.Argument(help="Secret name: A-Z, a-z, 0-9 and '_' (e.g. API_TOKEN).")],
    tenant: Annotated[str, typer.Option("--tenant", "-t", envvar="SMCP_TENANT", help="Tenant name.")],
    value_file: Annotated[
        Path | None, typer.Option("--value-file", "-f", help="Read the value from this file (as is).")
    ] = None,
    value: Annotated[
        str | None, typer.Option("--value", help="The value itself (visible in ps and history: avoid).")
    ] = None,
    url: Annotated[str, typer.Option("--url", envvar="SMCP_URL", help="Base URL of the SMCP node.")] = "http://127.0.0.1:8787",
    token: Annotated[str | None, typer.Option("--token", envvar="SMCP_ADMIN_TOKEN", show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's JSON.")] = False,
) -> None:
    """Set a secret from stdin (or --value-file): a new version replaces the old one.

    One trailing newline on stdin is dropped; --value-file is taken byte for byte.
    """
    data = _read_value(value, value_file)
    if not data:
        out.error("the secret value is empty")
        raise typer.Exit(2)
    try:
        body: dict[str, str] = {"value": data.decode("utf-8")}
    except UnicodeDecodeError:
        body = {"value_base64": base64.b64encode(data).decode()}
    with api(url, token) as client:
        result = client.request("PUT", f"/tenants/{tenant}/secrets/{name}", json=body)
    if as_json:
        return out.emit_json(result)
    out.stdout().print(f"Set secret [bold]{out.escape(result['name'])}[/] (version {result['version']}) for tenant {tenant}")


@secret_app.command("list")
def secret_list(
    tenant: Annotated[str, typer.Option("--tenant", "-t", envvar="SMCP_TENANT", help="Tenant name.")],
    url: Annotated[str, typer.Option("--url", envvar="SMCP_URL")] = "http://127.0.0.1:8787",
    token: Annotated[str | None, typer.Option("--token", envvar="SMCP_ADMIN_TOKEN", show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's JSON.")] = False,
) -> None:
    """List a tenant's secrets: names, versions and when they were set (never values)."""
    with api(url, token) as client:
        data = client.request("GET", f"/tenants/{tenant}/secrets")
    if as_json:
        return out.emit_json(data)
    out.table(["NAME", "VERSION", "SET AT"], [(s["name"], s["version"], out.ts(s["created_at"])) for s in data])


@secret_app.command("delete")
def secret_delete(
    name: Annotated[str, typer.Argument(help="Secret name.")],
    tenant: Annotated[str, typer.Option("--tenant", "-t", envvar="SMCP_TENANT", help="Tenant name.")],
    url: Annotated[str, typer.Option("--url", envvar="SMCP_URL")] = "http://127.0.0.1:8787",
    token: Annotated[str | None, typer.Option("--token", envvar="SMCP_ADMIN_TOKEN", show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's JSON.")] = False,
) -> None:
    """Delete a secret. Running instances keep their copy; new ones fail to start until it is set again."""
    with api(url, token) as client:
        client.request("DELETE", f"/tenants/{tenant}/secrets/{name}")
    if as_json:
        return out.emit_json({"deleted": name, "tenant": tenant})
    out.stdout().print(f"Deleted secret {out.escape(name)}")


@keys_app.command("status")
def keys_status(
    url: Annotated[str, typer.Option("--url", envvar="SMCP_URL")] = "http://127.0.0.1:8787",
    token: Annotated[str | None, typer.Option("--token", envvar="SMCP_ADMIN_TOKEN", show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's JSON.")] = False,
) -> None:
    """Show the key ring: where it lives, the active KEK and how many data keys each wraps."""
    with api(url, token) as client:
        data = client.request("GET", "/keyring")
    if as_json:
        return out.emit_json(data)
    out.fields(
        [
            ("source", data["source"]),
            ("rotatable", "yes" if data["writable"] else "no (inline ring: edit it, restart, then rotate)"),
            ("active", f"v{data['active']}"),
            ("versions", ", ".join(f"v{v}" for v in data["versions"])),
            ("data keys", ", ".join(f"v{k}: {n}" for k, n in sorted(data["data_keys"].items())) or "none"),
        ]
    )


@keys_app.command("rotate")
def keys_rotate(
    url: Annotated[str, typer.Option("--url", envvar="SMCP_URL")] = "http://127.0.0.1:8787",
    token: Annotated[str | None, typer.Option("--token", envvar="SMCP_ADMIN_TOKEN", show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's JSON.")] = False,
) -> None:
    """Add a new key-encryption key and re-wrap every secret's data key under it (no downtime)."""
    with api(url, token) as client:
        data = client.request("POST", "/keyring/rotate", timeout=600)
    if as_json:
        return out.emit_json(data)
    out.stdout().print(
        f"KEK v{data['active']} is active; re-wrapped {data['rewrapped']} data keys"
        + (f"; retired {', '.join(f'v{v}' for v in data['retired'])}" if data["retired"] else "")
    )
