"""Bounded per-server log rings: instance stderr and lifecycle events."""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime

from smcp.domain import LogLine


class LogRing:
    def __init__(self, max_lines: int, max_line_bytes: int) -> None:
        self._lines: deque[LogLine] = deque(maxlen=max_lines)
        self._max_line_bytes = max_line_bytes

    def add(self, instance: str, stream: str, text: str) -> None:
        if len(text) > self._max_line_bytes:
            text = text[: self._max_line_bytes] + " …[truncated]"
        self._lines.append(LogLine(at=datetime.now(UTC), instance=instance, stream=stream, text=text))

    def tail(self, limit: int) -> list[LogLine]:
        if limit <= 0:
            return []
        lines = list(self._lines)
        return lines[-limit:]
