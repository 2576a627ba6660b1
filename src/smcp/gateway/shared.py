"""A legacy session's view of a shared instance: a Channel that rewrites ids.

To the session it looks like a dedicated instance. Underneath, its requests travel
under gateway ids, `initialize` is answered from the instance's one real handshake,
and per-session state the server would have kept (log level, resource subscriptions,
client capabilities) is kept here instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from typing import Any

import orjson

from smcp.gateway.upstream import BACKEND_VERSION, SharedUpstream
from smcp.protocol import jsonrpc, loglevels
from smcp.protocol.headers import LEGACY_VERSIONS
from smcp.runtime.interface import ChannelBusy, ChannelClosed, ClosedHandler, LostHandler, MessageHandler

_EMPTY_RESULT: dict[str, Any] = {}
MODERN_VERSION = "2026-07-28"
MODERN_META_VERSION = "io.modelcontextprotocol/protocolVersion"
MODERN_META_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
MODERN_META_CLIENT_INFO = "io.modelcontextprotocol/clientInfo"
_MAX_ROUNDS = 8
_ASK_TIMEOUT_S = 300.0


class SharedChannel:
    def __init__(self, upstream: SharedUpstream, session: str, principal: str) -> None:
        self._upstream = upstream
        self._session = session
        self.principal = principal
        self._on_message: MessageHandler | None = None
        self._on_closed: ClosedHandler | None = None
        self._inflight: dict[bytes, str] = {}  # client id (JSON) → gateway id
        self._server_ids: dict[str, Any] = {}  # id shown to the client → the server's id
        self._local_ids = itertools.count(1)
        self.client_capabilities: dict[str, Any] = {}
        self.client_info: dict[str, Any] = {"name": "unknown", "version": "0"}
        # Questions the gateway put to the client on a modern instance's behalf.
        self._asked: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.subscriptions: set[str] = set()
        self.log_rank = 0  # every level, until the session asks for less
        self.asked_log_rank: int | None = None  # what logging/setLevel asked, if it was called
        self._closed = False
        # Where a request's answer goes, by the client id's JSON spelling, already
        # known here: the session need not parse the answer again to route it.
        self.on_answer: Callable[[bytes, bytes], None] | None = None

    @property
    def instance_id(self) -> str:
        return f"shared:{self._upstream.revision.id}"

    def attach(self, on_message: MessageHandler, on_closed: ClosedHandler, on_lost: LostHandler | None = None) -> None:
        self._on_message = on_message
        self._on_closed = on_closed
        self._upstream.channels.add(self)

    # -- session → instance -----------------------------------------------------------
    async def send(self, raw: bytes) -> None:
        await self.send_body(orjson.loads(raw))

    async def send_body(self, message: dict[str, Any]) -> None:
        """send() for a message the gateway has already parsed (and will not change)."""
        if self._closed:
            raise ChannelClosed("session closed")
        method = message.get("method")
        if method is None:
            await self._client_answer(message)
        elif "id" not in message:
            await self._client_notification(method, message)
        elif method == "initialize":
            await self._initialize(message)
        elif method == "logging/setLevel":
            await self._set_level(message)
        elif method == "ping" and self._upstream.era == "modern":
            self._reply(message["id"], _EMPTY_RESULT)  # the modern era has no ping
        elif method in ("resources/subscribe", "resources/unsubscribe"):
            await self._subscription(method, message)
        elif self._upstream.era == "modern":
            await self._bridged(message)
        else:
            key = orjson.dumps(message["id"])
            gid = await self._upstream.send(message, self._from_upstream(key), modern=False, owner=self)
            self._inflight[key] = gid

    async def _set_level(self, message: dict[str, Any]) -> None:
        # The instance's level is shared: it is set to the most verbose level any
        # session wants, and each session's own choice filters what it is given.
        params = message.get("params")
        rank = loglevels.rank(params.get("level")) if isinstance(params, dict) else None
        if rank is None:
            self._error(message["id"], jsonrpc.INVALID_PARAMS, f"level must be one of {', '.join(loglevels.LEVELS)}")
            return
        self.log_rank = self.asked_log_rank = rank
        await self._upstream.log_levels_changed()
        self._reply(message["id"], _EMPTY_RESULT)

    async def _initialize(self, message: dict[str, Any]) -> None:
        await self._upstream.ensure()
        params = message.get("params") if isinstance(message.get("params"), dict) else {}
        caps = params.get("capabilities")
        self.client_capabilities = caps if isinstance(caps, dict) else {}
        if isinstance(params.get("clientInfo"), dict):
            self.client_info = params["clientInfo"]
        result = dict(self._upstream.init_result or {})
        asked = params.get("protocolVersion")
        # The instance speaks BACKEND_VERSION; older legacy versions are close enough
        # for the gateway to present them, newer ones are answered with ours.
        result["protocolVersion"] = asked if asked in LEGACY_VERSIONS else BACKEND_VERSION
        self._reply(message["id"], result)

    # -- a legacy session on a modern-only instance ----------------------------------
    async def _bridged(self, message: dict[str, Any]) -> None:
        """Send a legacy request the modern way: the per-request envelope the session
        negotiated once, and multi-round-trip results answered by asking the client."""
        key = orjson.dumps(message["id"])
        params = dict(message.get("params") or {}) if isinstance(message.get("params"), dict) else {}
        meta = dict(params.get("_meta") or {}) if isinstance(params.get("_meta"), dict) else {}
        meta.update(
            {
                MODERN_META_VERSION: MODERN_VERSION,
                MODERN_META_CAPABILITIES: self.client_capabilities,
                MODERN_META_CLIENT_INFO: self.client_info,
            }
        )
        params["_meta"] = meta
        request = {**message, "params": params}
        task = asyncio.create_task(self._round_trips(key, request))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _round_trips(self, key: bytes, request: dict[str, Any]) -> None:
        for _ in range(_MAX_ROUNDS):
            answers: asyncio.Queue[bytes] = asyncio.Queue()
            try:
                gid = await self._upstream.send(
                    request,
                    # Progress goes straight to the session; the answer comes back here.
                    lambda raw, final: answers.put_nowait(raw) if final else self._deliver(raw),
                    modern=True,
                    owner=self,
                )
            except ChannelClosed as exc:
                self._error(request["id"], jsonrpc.INTERNAL_ERROR, f"MCP server unavailable: {exc}")
                return
            except ChannelBusy as exc:
                self._error(request["id"], jsonrpc.INSTANCE_BUSY, str(exc))
                return
            self._inflight[key] = gid
            raw = await answers.get()
            self._inflight.pop(key, None)
            answer = orjson.loads(raw)
            result = answer.get("result")
            if not (isinstance(result, dict) and result.get("resultType") == "input_required"):
                self._deliver(raw)
                return
            responses = {}
            for name, asked in (result.get("inputRequests") or {}).items():
                if not isinstance(asked, dict) or not isinstance(asked.get("method"), str):
                    continue
                reply = await self._ask_client(asked["method"], asked.get("params") or {})
                if "error" in reply:
                    self._deliver(orjson.dumps({"jsonrpc": "2.0", "id": request["id"], "error": reply["error"]}))
                    return
                responses[name] = reply.get("result", {})
            params = {**request["params"], "inputResponses": responses}
            if "requestState" in result:
                params["requestState"] = result["requestState"]
            request = {**request, "params": params}
        self._error(request["id"], jsonrpc.INTERNAL_ERROR, f"the server asked for input more than {_MAX_ROUNDS} times")

    async def _ask_client(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        local = f"s{next(self._local_ids)}"
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._asked[local] = waiter
        self._deliver(orjson.dumps({"jsonrpc": "2.0", "id": local, "method": method, "params": params}))
        try:
            return await asyncio.wait_for(waiter, timeout=_ASK_TIMEOUT_S)
        except TimeoutError:
            return {"error": {"code": jsonrpc.INTERNAL_ERROR, "message": f"the client did not answer {method}"}}
        finally:
            self._asked.pop(local, None)

    async def _subscription(self, method: str, message: dict[str, Any]) -> None:
        params = message.get("params") if isinstance(message.get("params"), dict) else {}
        uri = params.get("uri")
        if not isinstance(uri, str):
            self._error(message["id"], jsonrpc.INVALID_PARAMS, "params.uri must be a string")
            return
        if method == "resources/subscribe":
            tell = uri not in self.subscriptions and await self._upstream.subscribe(uri)
            self.subscriptions.add(uri)
        else:
            tell = uri in self.subscriptions and await self._upstream.unsubscribe(uri)
            self.subscriptions.discard(uri)
        if not tell:
            self._reply(message["id"], _EMPTY_RESULT)
            return
        key = orjson.dumps(message["id"])
        gid = await self._upstream.send(message, self._from_upstream(key), modern=False, owner=self)
        self._inflight[key] = gid

    async def _client_notification(self, method: str, message: dict[str, Any]) -> None:
        if method == "notifications/initialized":
            return  # the instance was initialized once, by the gateway
        if self._upstream.era == "modern" and method != "notifications/cancelled":
            return  # the modern era takes no other client notifications
        if method == "notifications/cancelled":
            params = message.get("params") if isinstance(message.get("params"), dict) else {}
            gid = self._inflight.pop(orjson.dumps(params.get("requestId")), None)
            if gid is not None:
                await self._upstream.cancel(gid, str(params.get("reason") or "cancelled by the client"))
            return
        await self._upstream.write(message)

    async def _client_answer(self, message: dict[str, Any]) -> None:
        waiter = self._asked.get(str(message.get("id")))
        if waiter is not None and not waiter.done():
            waiter.set_result(message)
            return
        server_id = self._server_ids.pop(str(message.get("id")), None)
        if server_id is None:
            return  # an answer to nothing we asked: drop it rather than confuse the server
        await self._upstream.write({**message, "id": server_id})

    # -- instance → session -----------------------------------------------------------
    def _from_upstream(self, key: bytes):  # type: ignore[no-untyped-def]
        def sink(raw: bytes, final: bool) -> None:
            if final:
                self._inflight.pop(key, None)
                if self.on_answer is not None and not self._closed:
                    self.on_answer(key, raw)
                    return
            self._deliver(raw)

        return sink

    def server_request(self, message: dict[str, Any]) -> None:
        local = f"s{next(self._local_ids)}"
        self._server_ids[local] = message["id"]
        self._deliver(orjson.dumps({**message, "id": local}))

    def notify(self, raw: bytes) -> None:
        self._deliver(raw)

    def _deliver(self, raw: bytes) -> None:
        if self._on_message is not None and not self._closed:
            self._on_message(raw)

    def _reply(self, id: Any, result: dict[str, Any]) -> None:
        self._deliver(orjson.dumps({"jsonrpc": "2.0", "id": id, "result": result}))

    def _error(self, id: Any, code: int, message: str) -> None:
        self._deliver(jsonrpc.error(id, code, message))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._upstream.channels.discard(self)
        for task in list(self._tasks):
            task.cancel()
        for gid in list(self._inflight.values()):
            await self._upstream.cancel(gid, "session closed")
        for uri in list(self.subscriptions):
            if await self._upstream.unsubscribe(uri):
                with contextlib.suppress(ChannelClosed, ChannelBusy):
                    await self._upstream.write(
                        {"jsonrpc": "2.0", "id": self._upstream.next_id("smcp-unsub-"), "method": "resources/unsubscribe", "params": {"uri": uri}}
                    )
        self._inflight.clear()
        if self.asked_log_rank is not None:
            await self._upstream.log_levels_changed()
