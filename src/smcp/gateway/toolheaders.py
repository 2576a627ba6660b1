"""Which headers a modern `tools/call` must mirror, per tool, learnt from `tools/list`.

A tool's `x-mcp-header` annotations live in its input schema, so the gateway needs the
server's tool list to check a call's `Mcp-Param-*` headers. It lists every page once
and keeps the answer until the server says its tools changed (or its instance
closes). A name missing from a complete listing is known to have no annotations: a
client calling tools that do not exist must not make the gateway list them again on
every call, and concurrent first calls share one listing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from smcp.protocol.modern import mirrored_params

Mirrored = dict[str, tuple[str, ...]]
# One page of tools/list: the decoded answer, or None when none came in time.
FetchPage = Callable[[str | None], Awaitable[dict[str, Any] | None]]

_NONE: Mirrored = {}


class ToolHeaders:
    def __init__(self, *, max_pages: int = 100) -> None:
        self._by_tool: dict[str, Mirrored] = {}
        self._complete = False
        # Bumped by forget(): a listing begun before the change must not mark the
        # newer state complete.
        self._generation = 0
        self._listing: asyncio.Task[None] | None = None
        self._max_pages = max_pages

    def learn(self, tools: list[Any]) -> None:
        """Record the annotations of tools seen in any tools/list result."""
        for tool in tools:
            if isinstance(tool, dict) and isinstance(tool.get("name"), str):
                self._by_tool[tool["name"]] = mirrored_params(tool)

    def forget(self) -> None:
        """The server's tools changed: list them again when next needed."""
        self._by_tool.clear()
        self._complete = False
        self._generation += 1

    def known(self, name: str) -> Mirrored | None:
        """The tool's headers when no listing is needed to tell them."""
        found = self._by_tool.get(name)
        return found if found is not None or not self._complete else _NONE

    async def of(self, name: str, fetch: FetchPage) -> Mirrored:
        found = self._by_tool.get(name)
        if found is not None:
            return found
        if not self._complete:
            if self._listing is None or self._listing.done():
                self._listing = asyncio.get_running_loop().create_task(self._list_all(fetch))
            # Shielded: one caller giving up must not cancel the listing others await.
            await asyncio.shield(self._listing)
        return self._by_tool.get(name, _NONE)

    async def _list_all(self, fetch: FetchPage) -> None:
        generation = self._generation
        cursor: str | None = None
        for _ in range(self._max_pages):
            answer = await fetch(cursor)
            if answer is None:
                return  # no answer in time: not known to be complete, ask again next time
            # The pages' tools are learnt as their answers pass (learn()); an error
            # answer means there is nothing (more) to list.
            result = answer.get("result")
            cursor = result.get("nextCursor") if isinstance(result, dict) else None
            if not isinstance(cursor, str) or not cursor:
                break
        if generation == self._generation:
            self._complete = True
