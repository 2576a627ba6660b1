"""MCP log levels (RFC 5424 severities, least severe first)."""

from __future__ import annotations

from typing import Any

LEVELS: tuple[str, ...] = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
_RANK = {name: rank for rank, name in enumerate(LEVELS)}


def rank(level: Any) -> int | None:
    """The severity of a level name; None for anything that is not one."""
    return _RANK.get(level) if isinstance(level, str) else None
