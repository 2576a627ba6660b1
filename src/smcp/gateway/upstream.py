"""A shared legacy-era instance serving many modern (stateless) requests.

The gateway initializes the instance once, then multiplexes: every forwarded request
gets a gateway-unique JSON-RPC id (and progress token), restored on the way back, so
requests from different clients can never collide or see each other's answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any

import orjson

from smcp import __version__
from smcp.domain import Revision
from smcp.protocol import jsonrpc
from smcp.protocol.modern import mirrored_params
from smcp.runtime.interface import Channel, ChannelClosed, Runtime

# (raw message for the client, final?)
Item = tuple[bytes, bool]

_BACKEND_VERSION = "2025-11-25"
_MODERN_META = frozenset(
    {
        "io.modelcontextprotocol/protocolVersion",
        "io.modelcontextprotocol/clientCapabilities",
        "io.modelcontextprotocol/clientInfo",
        "io.modelcontextprotocol/logLevel",
    }
)
_LIST_CHANGED = frozenset(
    {
        "notifications/tools/list_changed",
        "notifications/prompts/list_changed",
        "notifications/resources/list_changed",
        "notifications/resources/updated",
    }
)


CACHEABLE = frozenset(
    {"server/discover", "tools/list", "prompts/list", "resources/list", "resources/templates/list", "resources/read"}
)


def to_modern_result(method: str | None, result: dict[str, Any]) -> None:
    """Give a handshake-era result the fields this era requires of it.

    A legacy server gives no caching hints, so the bridge promises nothing: stale at
    once, and private (the answer may depend on who asked).
    """
    result.setdefault("resultType", "complete")
    if method in CACHEABLE:
        result.setdefault("ttlMs", 0)
        result.setdefault("cacheScope", "private")


class UpstreamRequest:
    __slots__ = ("client_id", "method", "queue", "token")

    def __init__(self, client_id: Any, token: Any, method: str | None = None) -> None:
        self.client_id = client_id
        self.token = token
        self.method = method
        self.queue: asyncio.Queue[Item] = asyncio.Queue()


class SharedUpstream:
    def __init__(self, runtime: Runtime, revision: Revision, *, init_timeout_s: float) -> None:
        self._runtime = runtime
        self.revision = revision
        self._init_timeout_s = init_timeout_s
        self._channel: Channel | None = None
        self._lock = asyncio.Lock()
        self._ids = itertools.count(1)
        self._pending: dict[str, UpstreamRequest] = {}
        self._tokens: dict[str, UpstreamRequest] = {}
        self.init_result: dict[str, Any] | None = None
        self.listeners: set[asyncio.Queue[dict[str, Any]]] = set()
        # tool name → {header: property path}, learnt from tools/list results.
        self.mirrored: dict[str, dict[str, tuple[str, ...]]] = {}

    @property
    def alive(self) -> bool:
        return self._channel is not None

    async def ensure(self) -> None:
        if self._channel is not None:
            return
        async with self._lock:
            if self._channel is not None:
                return
            channel = await self._runtime.connect(self.revision, session=f"shared:{self.revision.id}")
            channel.attach(self._on_message, self._on_closed, self._on_lost)
            init_id = f"smcp-init-{next(self._ids)}"
            waiter = UpstreamRequest(None, None)
            self._pending[init_id] = waiter
            await channel.send(
                orjson.dumps(
                    {
                        "jsonrpc": "2.0",
                        "id": init_id,
                        "method": "initialize",
                        "params": {
                            "protocolVersion": _BACKEND_VERSION,
                            # No sampling/elicitation/roots: requests the gateway cannot
                            # attribute to one modern caller are not invited.
                            "capabilities": {},
                            "clientInfo": {"name": "smcp-gateway", "version": __version__},
                        },
                    }
                )
            )
            try:
                raw, _ = await asyncio.wait_for(waiter.queue.get(), timeout=self._init_timeout_s)
            except TimeoutError:
                self._pending.pop(init_id, None)
                await channel.close()
                raise ChannelClosed("the MCP server did not answer initialize") from None
            answer = orjson.loads(raw)
            if "result" not in answer:
                await channel.close()
                raise ChannelClosed(f"the MCP server refused initialize: {answer.get('error')}")
            self.init_result = answer["result"]
            await channel.send(b'{"jsonrpc":"2.0","method":"notifications/initialized"}')
            self._channel = channel

    async def send(self, body: dict[str, Any]) -> tuple[str, UpstreamRequest]:
        """Forward one client request with a gateway id; returns that id and its queue."""
        await self.ensure()
        assert self._channel is not None
        gid = f"g{next(self._ids)}"
        params = body.get("params")
        token = None
        if isinstance(params, dict) and isinstance(params.get("_meta"), dict):
            # The instance speaks the handshake era: the per-request envelope belongs to
            # the gateway's side of the bridge, and a dual-era SDK server refuses it.
            meta = {k: v for k, v in params["_meta"].items() if k not in _MODERN_META}
            if "progressToken" in meta:
                token = meta["progressToken"]
                meta["progressToken"] = gid
            params = {**params, "_meta": meta} if meta else {k: v for k, v in params.items() if k != "_meta"}
            body = {**body, "params": params}
        pending = UpstreamRequest(body.get("id"), token, body.get("method"))
        if token is not None:
            self._tokens[gid] = pending
        self._pending[gid] = pending
        try:
            await self._channel.send(orjson.dumps({**body, "id": gid}))
        except ChannelClosed:
            self._forget(gid)
            raise
        return gid, pending

    def _forget(self, gid: str) -> None:
        self._pending.pop(gid, None)
        self._tokens.pop(gid, None)

    async def cancel(self, gid: str, reason: str) -> None:
        if gid not in self._pending:
            return
        self._forget(gid)
        if self._channel is not None:
            with contextlib.suppress(ChannelClosed):
                await self._channel.send(
                    orjson.dumps(
                        {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": gid, "reason": reason}}
                    )
                )

    def done(self, gid: str) -> None:
        self._forget(gid)

    async def close(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()

    # -- instance → gateway -----------------------------------------------------------
    def _on_message(self, raw: bytes) -> None:
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return
        if not isinstance(message, dict):
            return
        method = message.get("method")
        if method is None:
            gid = message.get("id")
            pending = self._pending.pop(gid, None) if isinstance(gid, str) else None
            if pending is None:
                return
            self._tokens.pop(gid, None)
            if pending.client_id is None and gid.startswith("smcp-init-"):
                pending.queue.put_nowait((raw, True))
                return
            self._learn(message)
            message["id"] = pending.client_id
            result = message.get("result")
            if isinstance(result, dict):
                to_modern_result(pending.method, result)
            pending.queue.put_nowait((orjson.dumps(message), True))
            return
        if "id" in message:
            # A server→client request: the modern era carries these as MRTR input
            # requests, which this bridge does not offer yet; refuse it so the server
            # does not wait forever.
            reply = jsonrpc.error(message["id"], jsonrpc.METHOD_NOT_FOUND, f"{method} is not available through this gateway")
            if self._channel is not None:
                asyncio.get_running_loop().create_task(self._quiet_send(reply))
            return
        if method == "notifications/progress":
            params = message.get("params") or {}
            owner = self._tokens.get(params.get("progressToken")) if isinstance(params, dict) else None
            if owner is not None:
                params["progressToken"] = owner.token
                owner.queue.put_nowait((orjson.dumps(message), False))
            return
        if method in _LIST_CHANGED:
            for listener in list(self.listeners):
                listener.put_nowait(message)

    async def _quiet_send(self, raw: bytes) -> None:
        if self._channel is not None:
            with contextlib.suppress(ChannelClosed):
                await self._channel.send(raw)

    def _learn(self, message: dict[str, Any]) -> None:
        result = message.get("result")
        tools = result.get("tools") if isinstance(result, dict) else None
        if isinstance(tools, list):
            for tool in tools:
                if isinstance(tool, dict) and isinstance(tool.get("name"), str):
                    self.mirrored[tool["name"]] = mirrored_params(tool)

    def _fail_all(self, why: str) -> None:
        for gid, pending in list(self._pending.items()):
            pending.queue.put_nowait((jsonrpc.error(pending.client_id, jsonrpc.INTERNAL_ERROR, why), True))
        self._pending.clear()
        self._tokens.clear()

    def _on_lost(self, why: str) -> None:
        self._fail_all(f"{why}; the request was not completed")

    def _on_closed(self, why: str) -> None:
        self._channel = None
        self.init_result = None
        self._fail_all(f"MCP server instance closed: {why}")
