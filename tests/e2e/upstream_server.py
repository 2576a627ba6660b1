"""A remote MCP server for `runtime = "http"` tests: the demo over the SDK's HTTP transport,
behind a bearer-token check that records every Authorization header it is sent, and the
request bodies whose response stream the gateway closed before it ended (`.closed`)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import uvicorn

ROOT = Path(__file__).resolve().parents[2]


class _Watched:
    """One request's receive and send, noting (in `closed_file`, by request body) a
    response stream the client closed before its end."""

    def __init__(self, receive, send, closed_file: Path) -> None:  # type: ignore[no-untyped-def]
        self._receive, self._send, self._closed_file = receive, send, closed_file
        self._body = bytearray()
        self._done = False

    async def send(self, message) -> None:  # type: ignore[no-untyped-def]
        if message["type"] == "http.response.body" and not message.get("more_body"):
            self._done = True
        await self._send(message)

    async def receive(self):  # type: ignore[no-untyped-def]
        message = await self._receive()
        if message["type"] == "http.request":
            self._body.extend(message.get("body", b""))
        elif message["type"] == "http.disconnect" and not self._done:
            with self._closed_file.open("a") as f:
                f.write(self._body.decode(errors="replace").replace("\n", " ") + "\n")
        return message


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
        watched = _Watched(receive, send, seen_file.with_suffix(".closed"))
        await inner(scope, watched.receive, watched.send)

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
