"""A loopback reverse proxy that adds headers: lets header-less clients reach SMCP.

The MCP conformance suite cannot send `Authorization`, and SMCP's MCP endpoints need
an API key. This proxy listens on 127.0.0.1:PORT, forwards every request to UPSTREAM
with the extra headers added, and streams responses back chunk by chunk (SSE is never
buffered; a client that hangs up closes the upstream request too).

It behaves as a port forward, so the gateway's own checks still see what the client
sent: a loopback `Host` or `Origin` naming the proxy's port is rewritten to the
upstream's port; any other value (e.g. the suite's `evil.example.com`) is forwarded
unchanged for the gateway to judge. Like any HTTP intermediary it drops optional
whitespace around header values (so the suite's "Mcp-Name with surrounding spaces"
check reaches the gateway already trimmed).

    SMCP_PROXY_HEADERS='{"Authorization": "Bearer smcp_…"}' \\
        python -m tests.conformance.auth_proxy PORT http://127.0.0.1:8787

Headers come from the environment, never argv, so keys stay out of `ps`.
"""

from __future__ import annotations

import json
import os
import sys
from urllib.parse import urlsplit

import anyio
import httpx
import uvicorn
from starlette.types import Message, Receive, Scope, Send

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
LOOPBACK = frozenset({"127.0.0.1", "localhost", "[::1]"})


def _swap_port(netloc: str, own_port: int, upstream_port: int) -> str:
    host, _, port = netloc.rpartition(":")
    if host.lower() in LOOPBACK and port == str(own_port):
        return f"{host}:{upstream_port}"
    return netloc


class AuthProxy:
    def __init__(
        self, own_port: int, upstream: str, extra_headers: dict[str, str]
    ) -> None:
        parts = urlsplit(upstream)
        self.own_port = own_port
        self.upstream = upstream.rstrip("/")
        self.upstream_port = parts.port or (443 if parts.scheme == "https" else 80)
        self.extra = {k.lower(): v for k, v in extra_headers.items()}
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(30.0, read=None), follow_redirects=False
        )

    def _headers(self, scope: Scope) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for raw_name, raw_value in scope["headers"]:
            # Leading/trailing whitespace is not part of a field value (RFC 9110 §5.5);
            # intermediaries drop it, and httpx refuses to send it.
            name, value = (
                raw_name.decode("latin-1").lower(),
                raw_value.decode("latin-1").strip(" \t"),
            )
            if name in HOP_BY_HOP or name in self.extra or name == "content-length":
                continue
            if name == "host":
                value = _swap_port(value, self.own_port, self.upstream_port)
            elif name == "origin" and "://" in value:
                scheme, _, netloc = value.partition("://")
                value = f"{scheme}://{_swap_port(netloc, self.own_port, self.upstream_port)}"
            out.append((name, value))
        out.extend(self.extra.items())
        return out

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await self.client.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        url = self.upstream + scope["raw_path"].decode("latin-1")
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode("latin-1")
        request = self.client.build_request(
            scope["method"], url, headers=self._headers(scope), content=body
        )
        try:
            response = await self.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            await send(
                {
                    "type": "http.response.start",
                    "status": 502,
                    "headers": [(b"content-type", b"text/plain")],
                }
            )
            await send(
                {"type": "http.response.body", "body": f"proxy: {exc!r}".encode()}
            )
            return
        try:
            headers = [
                (k.encode("latin-1"), v.encode("latin-1"))
                for k, v in response.headers.multi_items()
                if k.lower() not in HOP_BY_HOP
            ]
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": headers,
                }
            )
            async with anyio.create_task_group() as tg:

                async def pump() -> None:
                    async for chunk in response.aiter_raw():
                        await send(
                            {
                                "type": "http.response.body",
                                "body": chunk,
                                "more_body": True,
                            }
                        )
                    await send({"type": "http.response.body", "body": b""})
                    tg.cancel_scope.cancel()

                async def watch() -> None:
                    message: Message = await receive()
                    while message["type"] != "http.disconnect":
                        message = await receive()
                    tg.cancel_scope.cancel()

                tg.start_soon(pump)
                tg.start_soon(watch)
        finally:
            await response.aclose()


def main() -> None:
    port, upstream = int(sys.argv[1]), sys.argv[2]
    headers = json.loads(os.environ.get("SMCP_PROXY_HEADERS", "{}"))
    uvicorn.run(
        AuthProxy(port, upstream, headers),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        server_header=False,  # the upstream's own Server and Date headers pass through
        date_header=False,
    )


if __name__ == "__main__":
    main()
