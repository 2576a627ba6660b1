"""Printing for the CLI: JSON for machines, rich tables for people, errors on stderr."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import typer
from rich.console import Console
from rich.table import Table


def stdout() -> Console:
    # Made per call so it binds to the sys.stdout in effect (tests swap it).
    return Console(highlight=False)


def stderr() -> Console:
    return Console(stderr=True, highlight=False)


def emit_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=False))


def ts(value: str | None) -> str:
    """An ISO timestamp shortened to the second, for tables."""
    if not value:
        return "-"
    return value[:19].replace("T", " ")


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], *, title: str | None = None) -> None:
    t = Table(*columns, title=title, show_edge=False, header_style="bold")
    for row in rows:
        t.add_row(*("-" if v is None else str(v) for v in row))
    stdout().print(t)


def fields(pairs: Iterable[tuple[str, Any]]) -> None:
    t = Table(show_header=False, show_edge=False, box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column(overflow="fold")
    for key, value in pairs:
        t.add_row(key, "-" if value is None else str(value))
    stdout().print(t)


def error(message: str, detail: Any = None) -> None:
    err = stderr()
    err.print(f"[bold red]error:[/] {escape(message)}")
    if detail is None or detail == "":
        return
    if isinstance(detail, str):
        err.print(detail, markup=False)
    elif isinstance(detail, list):
        for item in detail:
            if isinstance(item, dict) and "msg" in item:
                loc = ".".join(str(p) for p in item.get("loc", []))
                err.print(f"  {loc}: {item['msg']}", markup=False)
            else:
                err.print(f"  {item}", markup=False)
    else:
        err.print(json.dumps(detail, indent=2), markup=False)


def escape(text: str) -> str:
    from rich.markup import escape as _escape

    return _escape(text)
