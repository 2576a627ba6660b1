"""The per-tool header annotations behind modern Mcp-Param-* checks: listing rules."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from smcp.gateway.toolheaders import ToolHeaders


def _tool(name: str, header: str | None = None) -> dict[str, Any]:
    prop: dict[str, Any] = {"type": "string"}
    if header:
        prop["x-mcp-header"] = header
    return {"name": name, "inputSchema": {"type": "object", "properties": {"region": prop}}}


class Server:
    """tools/list over pages, recording each page asked for; answers are learnt as the
    upstream would learn them (from every tools/list result that passes)."""

    def __init__(self, headers: ToolHeaders, pages: list[list[dict[str, Any]]], *, delay: float = 0.0) -> None:
        self.headers = headers
        self.pages = pages
        self.asked: list[str | None] = []
        self.delay = delay
        self.silent = False

    async def page(self, cursor: str | None) -> dict[str, Any] | None:
        self.asked.append(cursor)
        await asyncio.sleep(self.delay)
        if self.silent:
            return None
        index = int(cursor) if cursor else 0
        result: dict[str, Any] = {"tools": self.pages[index]}
        if index + 1 < len(self.pages):
            result["nextCursor"] = str(index + 1)
        self.headers.learn(result["tools"])
        return {"jsonrpc": "2.0", "id": 1, "result": result}


async def test_every_page_is_listed_and_the_listing_is_kept() -> None:
    headers = ToolHeaders()
    server = Server(headers, [[_tool("a")], [_tool("b")], [_tool("c", "Region")]])
    assert await headers.of("c", server.page) == {"region": ("region",)}
    assert server.asked == [None, "1", "2"]
    assert await headers.of("a", server.page) == {}
    assert await headers.of("nope", server.page) == {}  # absent from a complete listing
    assert headers.known("nope") == {}
    assert server.asked == [None, "1", "2"]


async def test_concurrent_first_calls_share_one_listing() -> None:
    headers = ToolHeaders()
    server = Server(headers, [[_tool("a", "X-A")]], delay=0.05)
    results = await asyncio.gather(*(headers.of(name, server.page) for name in ["a", "nope"] * 8))
    assert server.asked == [None]
    assert results[0] == {"x-a": ("region",)} and results[1] == {}


async def test_a_change_forgets_and_a_listing_begun_before_it_does_not_count() -> None:
    headers = ToolHeaders()
    server = Server(headers, [[_tool("a")]], delay=0.05)
    listing = asyncio.ensure_future(headers.of("nope", server.page))
    await asyncio.sleep(0.01)
    headers.forget()  # tools changed while the listing was under way
    await listing
    assert headers.known("nope") is None  # not known complete: ask again
    await headers.of("nope", server.page)
    assert server.asked == [None, None]
    assert headers.known("nope") == {}


async def test_no_answer_is_not_a_complete_listing() -> None:
    headers = ToolHeaders()
    server = Server(headers, [[_tool("a")]])
    server.silent = True
    assert await headers.of("a", server.page) == {}
    server.silent = False
    assert await headers.of("a", server.page) == {}
    assert server.asked == [None, None]
    assert headers.known("nope") == {}


async def test_a_cursor_that_never_ends_is_bounded() -> None:
    headers = ToolHeaders(max_pages=5)

    async def endless(cursor: str | None) -> dict[str, Any]:
        asked.append(cursor)
        return {"jsonrpc": "2.0", "id": 1, "result": {"tools": [], "nextCursor": "again"}}

    asked: list[str | None] = []
    assert await headers.of("a", endless) == {}
    assert len(asked) == 5


@pytest.mark.parametrize("answer", [{"jsonrpc": "2.0", "id": 1, "error": {"code": -32601, "message": "no tools"}}])
async def test_an_error_answer_ends_the_listing(answer: dict[str, Any]) -> None:
    headers = ToolHeaders()
    calls: list[str | None] = []

    async def refusing(cursor: str | None) -> dict[str, Any]:
        calls.append(cursor)
        return answer

    assert await headers.of("a", refusing) == {}
    assert await headers.of("b", refusing) == {}
    assert calls == [None]
