"""Baselines the gateway is measured against, each run as its own process."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import uvicorn

ROOT = Path(__file__).resolve().parents[1]


async def raw_echo(scope, receive, send):  # type: ignore[no-untyped-def]
    """The fastest honest HTTP JSON echo uvicorn can serve: the throughput ceiling."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def demo_http_app(stateless: bool):  # type: ignore[no-untyped-def]
    """The demo server over the SDK's own Streamable HTTP transport: 'calling it directly'."""
    spec = importlib.util.spec_from_file_location("demo_server", ROOT / "examples" / "servers" / "demo" / "server.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.mcp.streamable_http_app(json_response=True, stateless_http=stateless)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("target", choices=["raw-echo", "demo-legacy", "demo-modern"])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = raw_echo if args.target == "raw-echo" else demo_http_app(args.target == "demo-modern")
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    sys.exit(main())
