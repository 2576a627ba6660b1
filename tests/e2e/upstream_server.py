"""A remote MCP server for `runtime = "http"` tests: the demo over the SDK's HTTP transport,
behind a bearer-token check that records every Authorization header it is sent, and the
request bodies whose response stream the gateway closed before it ended (`.closed`)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import uvicorn

ROOT = Path(__file__).resolve().parents[2]


def _ended(send):  # type: ignore[no-untyped-def]
    async def wrapped(message):  # type: ignore[no-untyped-def]
        if message["type"] == "http.response.body" and not message.get("more_body"):
            wrapped.done = True  # type: ignore[attr-defined]
        await send(message)

    wrapped.done = False  # type: ignore[attr-defined]
    return wrapped


def _watched(receive, ended, closed_file: Path):  # type: ignore[no-untyped-def]
    body = bytearray()

    async def wrapped():  # type: ignore[no-untyped-def]
        message = await receive()
        if message["type"] == "http.request":
            body.extend(message.get("body", b""))
        elif message["type"] == "http.disconnect" and not ended.done:
            with closed_file.open("a") as f:
                f.write(body.decode(errors="replace").replace("\n", " ") + "\n")
        return message

    return wrapped


def main() -> None:
    port, token, seen_file = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    spec = importlib.util.spec_from_file_location("demo_server", ROOT / "examples" / "servers" / "demo" / "server.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    inner = module.mcp.streamable_http_app()

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] == "http":
            auth = dict(scope["headers"]).get(b"authorization", b"").decode()
            with seen_file.open("a") as f:
                f.write(auth + "\n")
            if auth != f"Bearer {token}":
                await send({"type": "http.response.start", "status": 401, "headers": [(b"www-authenticate", b"Bearer")]})
                await send({"type": "http.response.body", "body": b""})
                return
        ended = _ended(send)
        await inner(scope, _watched(receive, ended, seen_file.with_suffix(".closed")), ended)

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
