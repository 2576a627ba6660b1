"""Server-Sent Events framing for MCP Streamable HTTP."""

from __future__ import annotations


def event(data: bytes, *, event_id: str | None = None) -> bytes:
    # JSON-RPC messages arrive as one line (the stdio framing guarantees it), so a
    # single data: field carries each message whole.
    head = b"event: message\n"
    if event_id is not None:
        head += b"id: " + event_id.encode() + b"\n"
    return head + b"data: " + data + b"\n\n"


def comment(text: str = "") -> bytes:
    return b": " + text.encode() + b"\n\n"
