"""Small raw-ASGI helpers: the hot path avoids framework request objects."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import orjson

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class BodyTooLarge(Exception):
    pass


def header_map(scope: Scope) -> dict[str, str]:
    # Repeated headers are joined, as HTTP allows for list-valued fields. Names come
    # lower-cased: the node's server (uvicorn) lowers them, as ASGI asks.
    out: dict[str, str] = {}
    for key, value in scope["headers"]:
        name = key.decode("latin-1")
        # HTTP ignores whitespace around a field value; some parsers keep it.
        text = value.decode("latin-1").strip(" \t")
        out[name] = f"{out[name]}, {text}" if name in out else text
    return out


async def read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionError("client went away")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


_JSON = (b"content-type", b"application/json")


def _headers(content_type: str | None, extra: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    if content_type is None:
        out = []
    else:
        out = [_JSON if content_type == "application/json" else (b"content-type", content_type.encode())]
    if extra:
        out += [(k.encode(), v.encode()) for k, v in extra]
    return out


async def respond(
    send: Send,
    status: int,
    body: bytes = b"",
    *,
    content_type: str | None = "application/json",
    headers: Iterable[tuple[str, str]] = (),
) -> None:
    hdrs = _headers(content_type if body else None, headers)
    hdrs.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": body})


async def respond_json(send: Send, status: int, payload: Any, *, headers: Iterable[tuple[str, str]] = ()) -> None:
    await respond(send, status, orjson.dumps(payload), headers=headers)


async def start_stream(send: Send, headers: Iterable[tuple[str, str]] = ()) -> None:
    hdrs = _headers("text/event-stream", [("cache-control", "no-cache, no-transform"), ("x-accel-buffering", "no"), *headers])
    await send({"type": "http.response.start", "status": 200, "headers": hdrs})


async def stream_chunk(send: Send, data: bytes, *, more: bool = True) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": more})
