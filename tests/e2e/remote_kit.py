"""What the test remote servers (`runtime = "http"` upstreams) share."""

from __future__ import annotations

from typing import Any

import orjson

from smcp.gateway.asgi import read_body, respond


async def posted_request(scope: Any, receive: Any, send: Any) -> dict[str, Any] | None:
    """The JSON-RPC request a client POSTed, or None when there is nothing to answer
    (not HTTP) or it has been answered already (405 for another method, 202 for a
    notification)."""
    if scope["type"] != "http":
        return None
    if scope["method"] != "POST":
        await respond(send, 405)
        return None
    message = orjson.loads(await read_body(receive, 1 << 20))
    if "id" not in message:
        await respond(send, 202)
        return None
    return message
