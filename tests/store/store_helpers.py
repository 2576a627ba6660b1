"""Helpers for the store tests (a module of its own: conftest modules are not importable by name)."""

from __future__ import annotations

from smcp.domain import ServerSpec, parse_spec


def make_spec(name: str = "echo", **extra: str) -> ServerSpec:
    lines = [f'name = "{name}"', 'runtime = "python"', 'entrypoint = "server.py"']
    lines += [f'{k} = "{v}"' for k, v in extra.items()]
    return parse_spec("\n".join(lines))
