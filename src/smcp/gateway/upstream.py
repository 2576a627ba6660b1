"""Shared instances: one initialized legacy-era instance serving many callers.

The gateway initializes the instance once, then multiplexes. Every forwarded request
gets a gateway-unique JSON-RPC id and progress token, restored on the way back, so
callers can never collide or see each other's answers. Callers are modern requests
(stateless) and legacy sessions (through a SharedChannel, which looks to the session
exactly like a dedicated instance).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from smcp import __version__
from smcp.domain import Revision
from smcp.protocol import jsonrpc
from smcp.protocol.modern import mirrored_params
from smcp.runtime.interface import Channel, ChannelClosed, Runtime

if TYPE_CHECKING:
    from smcp.gateway.shared import SharedChannel

# Receives (raw message for the caller, final?).
Sink = Callable[[bytes, bool], None]

BACKEND_VERSION = "2025-11-25"
# Everything a legacy client may offer; whether a given caller did is checked per request.
_BACKEND_CAPABILITIES = {"sampling": {}, "elicitation": {}, "roots": {"listChanged": True}}
_MODERN_META = frozenset(
    {
        "io.modelcontextprotocol/protocolVersion",
        "io.modelcontextprotocol/clientCapabilities",
        "io.modelcontextprotocol/clientInfo",
        "io.modelcontextprotocol/logLevel",
    }
)
BROADCAST = frozenset(
    {
        "notifications/tools/list_changed",
        "notifications/prompts/list_changed",
        "notifications/resources/list_changed",
    }
)
CACHEABLE = frozenset(
    {"server/discover", "tools/list", "prompts/list", "resources/list", "resources/templates/list", "resources/read"}
)


def to_modern_result(method: str | None, result: dict[str, Any]) -> None:
    """Give a handshake-era result the fields the 2026-07-28 era requires of it.

    A legacy server gives no caching hints, so the bridge promises nothing: stale at
    once, and private (the answer may depend on who asked).
    """
    result.setdefault("resultType", "complete")
    if method in CACHEABLE:
        result.setdefault("ttlMs", 0)
        result.setdefault("cacheScope", "private")


class UpstreamRequest:
    __slots__ = ("client_id", "method", "modern", "owner", "sink", "token")

    def __init__(
        self, client_id: Any, token: Any, method: str | None, sink: Sink, *, modern: bool, owner: SharedChannel | None
    ) -> None:
        self.client_id = client_id
        self.token = token
        self.method = method
        self.sink = sink
        self.modern = modern
        self.owner = owner


class SharedUpstream:
    def __init__(self, runtime: Runtime, revision: Revision, *, key: str, init_timeout_s: float) -> None:
        self._runtime = runtime
        self.revision = revision
        self._key = key
        self._init_timeout_s = init_timeout_s
        self._channel: Channel | None = None
        self._lock = asyncio.Lock()
        self._ids = itertools.count(1)
        self._pending: dict[str, UpstreamRequest] = {}
        self._tokens: dict[str, UpstreamRequest] = {}
        self.init_result: dict[str, Any] | None = None
        self.listeners: set[asyncio.Queue[dict[str, Any]]] = set()
        self.channels: set[SharedChannel] = set()
        # tool name → {header: property path}, learnt from tools/list results.
        self.mirrored: dict[str, dict[str, tuple[str, ...]]] = {}
        self._subscriptions: dict[str, int] = {}

    @property
    def alive(self) -> bool:
        return self._channel is not None

    def next_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids)}"

    async def ensure(self) -> None:
        if self._channel is not None:
            return
        async with self._lock:
            if self._channel is not None:
                return
            channel = await self._runtime.connect(self.revision, session=f"shared:{self._key}")
            channel.attach(self._on_message, self._on_closed, self._on_lost)
            init_id = self.next_id("smcp-init-")
            answers: asyncio.Queue[bytes] = asyncio.Queue()
            self._pending[init_id] = UpstreamRequest(
                init_id, None, "initialize", lambda raw, _final: answers.put_nowait(raw), modern=False, owner=None
            )
            init = {
                "jsonrpc": "2.0",
                "id": init_id,
                "method": "initialize",
                "params": {
                    "protocolVersion": BACKEND_VERSION,
                    "capabilities": _BACKEND_CAPABILITIES,
                    "clientInfo": {"name": "smcp-gateway", "version": __version__},
                },
            }
            await channel.send(orjson.dumps(init))
            try:
                raw = await asyncio.wait_for(answers.get(), timeout=self._init_timeout_s)
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

    async def send(
        self, body: dict[str, Any], sink: Sink, *, modern: bool, owner: SharedChannel | None = None
    ) -> str:
        """Forward one caller request under a gateway id; answers go to `sink`."""
        await self.ensure()
        gid = self.next_id("g")
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
        pending = UpstreamRequest(body.get("id"), token, body.get("method"), sink, modern=modern, owner=owner)
        self._pending[gid] = pending
        if token is not None:
            self._tokens[gid] = pending
        try:
            await self.write({**body, "id": gid})
        except ChannelClosed:
            self.done(gid)
            raise
        return gid

    async def write(self, message: dict[str, Any]) -> None:
        if self._channel is None:
            raise ChannelClosed("the MCP server instance is not running")
        await self._channel.send(orjson.dumps(message))

    async def cancel(self, gid: str, reason: str) -> None:
        if self._pending.pop(gid, None) is None:
            return
        self._tokens.pop(gid, None)
        with contextlib.suppress(ChannelClosed):
            await self.write({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": gid, "reason": reason}})

    def done(self, gid: str) -> None:
        self._pending.pop(gid, None)
        self._tokens.pop(gid, None)

    async def subscribe(self, uri: str) -> bool:
        """Reference-count resource subscriptions; True when the server must be told."""
        count = self._subscriptions.get(uri, 0)
        self._subscriptions[uri] = count + 1
        return count == 0

    async def unsubscribe(self, uri: str) -> bool:
        count = self._subscriptions.get(uri, 0)
        if count <= 1:
            self._subscriptions.pop(uri, None)
            return count == 1
        self._subscriptions[uri] = count - 1
        return False

    async def close(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()

    # -- instance → callers -----------------------------------------------------------
    def _on_message(self, raw: bytes) -> None:
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return
        if not isinstance(message, dict):
            return
        method = message.get("method")
        if method is None:
            self._answer(message)
        elif "id" in message:
            self._server_request(message)
        elif method == "notifications/progress":
            params = message.get("params")
            owner = self._tokens.get(params.get("progressToken")) if isinstance(params, dict) else None
            if owner is not None:
                params["progressToken"] = owner.token
                owner.sink(orjson.dumps(message), False)
        elif method in BROADCAST:
            self._broadcast(message, lambda ch: True)
        elif method == "notifications/resources/updated":
            params = message.get("params") if isinstance(message.get("params"), dict) else {}
            uri = params.get("uri")
            self._broadcast(message, lambda ch: uri in ch.subscriptions)
        elif method == "notifications/message":
            # Logs carry no request id; give them only to the caller whose request is
            # the newest in flight, never to every session on the instance.
            newest = self._newest_pending(lambda p: not p.modern)
            if newest is not None:
                newest.sink(raw, False)

    def _answer(self, message: dict[str, Any]) -> None:
        gid = message.get("id")
        pending = self._pending.pop(gid, None) if isinstance(gid, str) else None
        if pending is None:
            return
        self._tokens.pop(gid, None)
        self._learn(message)
        message["id"] = pending.client_id
        result = message.get("result")
        if pending.modern and isinstance(result, dict):
            to_modern_result(pending.method, result)
        pending.sink(orjson.dumps(message), True)

    def _server_request(self, message: dict[str, Any]) -> None:
        method = message.get("method")
        needed = {"sampling/createMessage": "sampling", "elicitation/create": "elicitation", "roots/list": "roots"}.get(
            method or ""
        )
        newest = self._newest_pending(
            lambda p: p.owner is not None and (needed is None or needed in p.owner.client_capabilities)
        )
        if newest is not None and newest.owner is not None:
            newest.owner.server_request(message)
            return
        reply = jsonrpc.error(message["id"], jsonrpc.METHOD_NOT_FOUND, f"{method} is not available to this request")
        asyncio.get_running_loop().create_task(self._quiet_send(reply))

    def _newest_pending(self, accept: Callable[[UpstreamRequest], bool]) -> UpstreamRequest | None:
        for pending in reversed(self._pending.values()):
            if pending.method != "initialize" and accept(pending):
                return pending
        return None

    def _broadcast(self, message: dict[str, Any], want: Callable[[SharedChannel], bool]) -> None:
        raw = orjson.dumps(message)
        for channel in list(self.channels):
            if want(channel):
                channel.notify(raw)
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
        pending, self._pending = self._pending, {}
        self._tokens.clear()
        for request in pending.values():
            request.sink(jsonrpc.error(request.client_id, jsonrpc.INTERNAL_ERROR, why), True)

    def _on_lost(self, why: str) -> None:
        self._fail_all(f"{why}; the request was not completed")

    def _on_closed(self, why: str) -> None:
        self._channel = None
        self.init_result = None
        # Sessions outlive the instance: the next request starts a new one.
        self._fail_all(f"MCP server instance closed: {why}")


class UpstreamPool:
    """Shared upstreams by key: per revision (`shared`) or per revision and principal."""

    def __init__(self, runtime: Runtime, *, init_timeout_s: float) -> None:
        self._runtime = runtime
        self._init_timeout_s = init_timeout_s
        self._upstreams: dict[str, SharedUpstream] = {}

    def get(self, revision: Revision, principal_subject: str) -> SharedUpstream:
        key = revision.id
        if revision.spec.sharing.value == "per-principal":
            key = f"{revision.id}:{principal_subject}"
        upstream = self._upstreams.get(key)
        if upstream is None:
            upstream = self._upstreams[key] = SharedUpstream(
                self._runtime, revision, key=key, init_timeout_s=self._init_timeout_s
            )
        return upstream

    async def aclose(self) -> None:
        upstreams, self._upstreams = self._upstreams, {}
        for upstream in upstreams.values():
            with contextlib.suppress(Exception):
                await upstream.close()
