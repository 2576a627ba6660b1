"""What every `smcp` command module shares: the common options and the API client.

Command modules import from here, never from each other or from main.py, so the CLI's
imports run one way.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from smcp.cli import output as out
from smcp.cli.client import ApiError, Client, Unreachable

DEFAULT_URL = "http://127.0.0.1:8787"

UrlOpt = Annotated[str, typer.Option("--url", envvar="SMCP_URL", help="Base URL of the SMCP node.")]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="SMCP_ADMIN_TOKEN",
        show_default=False,
        help="Admin token [default: contents of $SMCP_DATA_DIR/admin-token, or .smcp/admin-token].",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the API's JSON instead of tables.")]
TenantOpt = Annotated[str, typer.Option("--tenant", "-t", envvar="SMCP_TENANT", help="Tenant name.")]


def resolve_token(explicit: str | None) -> str | None:
    """--token / SMCP_ADMIN_TOKEN, else the token file `smcp up` writes into its data dir."""
    if explicit:
        return explicit
    path = Path(os.environ.get("SMCP_DATA_DIR") or ".smcp") / "admin-token"
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


@contextmanager
def api(url: str, token: str | None) -> Iterator[Client]:
    """A client whose failures become a message on stderr and exit code 1."""
    client = Client(url, resolve_token(token))
    try:
        yield client
    except ApiError as exc:
        message = exc.message
        if exc.status == 401:
            message += " (pass --token, set SMCP_ADMIN_TOKEN, or run where .smcp/admin-token is)"
        out.error(message, exc.detail)
        raise typer.Exit(1) from None
    except Unreachable as exc:
        if exc.refused:
            out.error(f"cannot reach SMCP at {exc.url} (is `smcp up` running?)")
        else:
            out.error(f"lost connection to SMCP at {exc.url}: {exc.reason}")
        raise typer.Exit(1) from None
    finally:
        client.close()
