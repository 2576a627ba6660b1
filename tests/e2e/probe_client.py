"""A minimal legacy-era client for the probe server: raw HTTP, so tests see exactly what the gateway sends."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from tests.conftest import Hosted

ACCEPT = "application/json, text/event-stream"


class ProbeSession:
    def __init__(self, hosted: Hosted, timeout: float = 30) -> None:
        self.hosted = hosted
        self.http = httpx.Client(timeout=timeout)
        self._id = 0
        r = self.http.post(
            hosted.url,
            json={
                "jsonrpc": "2.0",
                "id": self._next(),
                "method": "initialize",
                "params": {"protocolVersion": "2025-11-25", "capabilities": {"roots": {}}, "clientInfo": {"name": "probe-test", "version": "0"}},
            },
            headers=self._headers(),
        )
        assert r.status_code == 200, r.text
        self.sid = r.headers["mcp-session-id"]
        r = self.http.post(hosted.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=self._headers())
        assert r.status_code == 202, r.text

    def _next(self) -> int:
        self._id += 1
        return self._id

    def _headers(self) -> dict[str, str]:
        h = {"authorization": f"Bearer {self.hosted.key}", "accept": ACCEPT, "content-type": "application/json"}
        if getattr(self, "sid", None):
            h["mcp-session-id"] = self.sid
            h["mcp-protocol-version"] = "2025-11-25"
        return h

    def rpc(self, method: str, params: dict[str, Any] | None = None) -> tuple[httpx.Response, list[dict[str, Any]]]:
        """Send one request; return the HTTP response and every JSON-RPC message it carried."""
        r = self.http.post(
            self.hosted.url,
            json={"jsonrpc": "2.0", "id": self._next(), "method": method, "params": params or {}},
            headers=self._headers(),
        )
        if r.headers.get("content-type", "").startswith("text/event-stream"):
            messages = [json.loads(line[5:]) for line in r.text.splitlines() if line.startswith("data:") and line[5:].strip()]
        else:
            messages = [r.json()] if r.content else []
        return r, messages

    def call(self, tool: str, **arguments: Any) -> tuple[bool, Any]:
        """Call a probe tool; return (is_error, decoded payload)."""
        r, messages = self.rpc("tools/call", {"name": tool, "arguments": arguments})
        assert r.status_code == 200, r.text
        final = messages[-1]
        assert "result" in final, final
        text = final["result"]["content"][0]["text"]
        try:
            payload = json.loads(text)
        except ValueError:
            payload = text
        return bool(final["result"].get("isError")), payload

    def wait_until_answering(self, timeout: float = 10, every: float = 0.2) -> None:
        """Ping until the instance behind this session answers again (after a restart)."""
        deadline = time.monotonic() + timeout
        while True:
            r, messages = self.rpc("ping")
            if r.status_code == 200 and "result" in messages[-1]:
                return
            assert time.monotonic() < deadline, messages
            time.sleep(every)

    def ok(self, tool: str, **arguments: Any) -> Any:
        is_error, payload = self.call(tool, **arguments)
        assert not is_error, payload
        return payload

    def fails(self, tool: str, **arguments: Any) -> Any:
        is_error, payload = self.call(tool, **arguments)
        assert is_error, f"{tool}{arguments} should have been blocked, got {payload}"
        return payload

    def close(self) -> None:
        self.http.delete(self.hosted.url, headers=self._headers())
        self.http.close()


def open_legacy_session(http: httpx.Client, url: str, capabilities: dict[str, Any]) -> str:
    """Initialize a 2025-11-25 session (initialize, then notifications/initialized) with
    `http` (which carries the credentials); its id."""
    headers = {"accept": ACCEPT, "content-type": "application/json"}
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": capabilities, "clientInfo": {"name": "t", "version": "0"}}}
    r = http.post(url, json=init, headers=headers)
    assert r.status_code == 200, r.text
    sid = r.headers["mcp-session-id"]
    r = http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers={**headers, "mcp-session-id": sid})
    assert r.status_code == 202, r.text
    return sid
