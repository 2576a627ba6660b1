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
from typing import Any, Protocol

import orjson

from smcp import __version__
from smcp.domain import Revision
from smcp.gateway import parking
from smcp.gateway import tasks
from smcp.gateway.parking import ParkingLot
from smcp.gateway.toolheaders import ToolHeaders
from smcp.protocol import jsonrpc, loglevels
from smcp.protocol.modern import to_modern_result
from smcp.runtime.interface import Channel, ChannelBusy, ChannelClosed, Runtime


class InitializeRefused(ChannelClosed):
    """The server answered initialize with an error (it may speak only the modern era)."""


# Marks errors the gateway made up because the instance died, not ones the server sent.
_LOST = {"smcp": "instance-lost"}


class SessionPeer(Protocol):
    """What an upstream needs of a session sharing it (gateway/shared.py implements it)."""

    client_capabilities: dict[str, Any]
    subscriptions: set[str]
    # The least severe log level the session is given, as a rank (0: every level).
    log_rank: int
    # What its logging/setLevel asked, as a rank; None if it never called it.
    asked_log_rank: int | None
    # Who the session belongs to (the subject tasks are bound to).
    principal: str

    def server_request(self, message: dict[str, Any]) -> None: ...

    def notify(self, raw: bytes) -> None: ...

# Receives (raw message for the caller, final?).
Sink = Callable[[bytes, bool], None]

BACKEND_VERSION = "2025-11-25"
MODERN_VERSION = "2026-07-28"
SUBSCRIPTION_META = "io.modelcontextprotocol/subscriptionId"
# Everything a legacy client may offer; whether a given caller did is checked per request.
_BACKEND_CAPABILITIES = {"sampling": {}, "elicitation": {}, "roots": {"listChanged": True}}
_CLIENT_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
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
def _gateway_envelope() -> dict[str, Any]:
    """The per-request _meta of the gateway's own requests to a modern instance."""
    return {
        "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "smcp-gateway", "version": __version__},
    }


class UpstreamRequest:
    __slots__ = ("caller", "capabilities", "client_id", "method", "modern", "owner", "sink", "token", "writing")

    def __init__(
        self,
        client_id: Any,
        token: Any,
        method: str | None,
        sink: Sink,
        *,
        modern: bool,
        owner: SessionPeer | None,
        caller: str | None = None,
        capabilities: dict[str, Any] | None = None,
    ) -> None:
        self.client_id = client_id
        self.token = token
        self.method = method
        self.sink = sink
        self.modern = modern
        self.owner = owner
        # A modern caller (no session): who it is and what it declared in its _meta.
        self.caller = caller
        self.capabilities = capabilities
        # Still being written: the instance resends it if its process was lost meanwhile.
        self.writing = False

    @property
    def principal(self) -> str | None:
        return _who(self.caller, self.owner)


def _who(caller: str | None, owner: SessionPeer | None) -> str | None:
    """Who asked: a modern caller, or the principal of the session that did."""
    return caller if caller is not None else owner.principal if owner is not None else None


class SharedUpstream:
    """One instance, initialized by the gateway in the era it speaks best.

    With `prefer_modern`, the instance is probed with `server/discover` first (the
    stdio backward-compatibility rule): a modern answer makes it a modern upstream
    whose requests pass through untouched but for ids; anything else falls back to
    `initialize`, and the gateway bridges eras itself.
    """

    def __init__(
        self,
        runtime: Runtime,
        revision: Revision,
        *,
        key: str,
        init_timeout_s: float,
        prefer_modern: bool = False,
        input_timeout_s: float = 300.0,
    ) -> None:
        self._runtime = runtime
        self.revision = revision
        self._key = key
        self._init_timeout_s = init_timeout_s
        self._prefer_modern = prefer_modern
        self.era: str | None = None  # "modern" | "legacy", known once started
        self.discover_result: dict[str, Any] | None = None
        self._channel: Channel | None = None
        self._lock = asyncio.Lock()
        self._ids = itertools.count(1)
        self._pending: dict[str, UpstreamRequest] = {}
        self._tokens: dict[str, UpstreamRequest] = {}
        self.init_result: dict[str, Any] | None = None
        self.listeners: set[asyncio.Queue[dict[str, Any]]] = set()
        self.channels: set[SessionPeer] = set()
        # Each tool's mirrored headers (x-mcp-header), learnt from tools/list.
        self.tools = ToolHeaders()
        # Which principal each task the instance created belongs to (gateway/tasks.py).
        self.tasks_owned = tasks.TaskOwners()
        self._subscriptions: dict[str, int] = {}
        # The level the instance was last set to: the most verbose any session wants.
        self._log_rank: int | None = None
        self._lot = ParkingLot(input_timeout_s, self._input_expired)
        self._tasks: set[asyncio.Task[None]] = set()

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
            try:
                if self._prefer_modern and await self._probe_modern(channel):
                    self.era = "modern"
                else:
                    try:
                        await self._initialize(channel)
                        self.era = "legacy"
                    except InitializeRefused:
                        # A modern-only server refuses initialize; legacy sessions are
                        # then bridged onto it (SharedChannel adds the per-request _meta
                        # and turns multi-round-trip results into server requests).
                        if self._prefer_modern or not await self._probe_modern(channel):
                            raise
                        self.era = "modern"
            except BaseException:
                await channel.close()
                raise
            self._channel = channel

    async def _exchange(self, channel: Channel, method: str, params: dict[str, Any], timeout: float) -> dict[str, Any] | None:
        """One gateway-originated request; the decoded answer, or None on timeout."""
        rid = self.next_id(f"smcp-{method.replace('/', '-')}-")
        answers: asyncio.Queue[bytes] = asyncio.Queue()
        self._pending[rid] = UpstreamRequest(
            rid, None, method, lambda raw, _final: answers.put_nowait(raw), modern=False, owner=None
        )
        try:
            await channel.send(orjson.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params}))
        except BaseException:
            self._pending.pop(rid, None)
            raise
        try:
            return orjson.loads(await asyncio.wait_for(answers.get(), timeout=timeout))
        except TimeoutError:
            self._pending.pop(rid, None)
            return None

    async def _probe_modern(self, channel: Channel) -> bool:
        answer = await self._exchange(channel, "server/discover", {"_meta": _gateway_envelope()}, min(self._init_timeout_s, 10.0))
        result = answer.get("result") if answer else None
        if isinstance(result, dict) and MODERN_VERSION in (result.get("supportedVersions") or []):
            self.discover_result = result
            self.init_result = {
                "capabilities": result.get("capabilities", {}),
                "serverInfo": (result.get("_meta") or {}).get("io.modelcontextprotocol/serverInfo"),
                "instructions": result.get("instructions"),
            }
            return True
        return False

    async def _initialize(self, channel: Channel) -> None:
        params = {
            "protocolVersion": BACKEND_VERSION,
            "capabilities": _BACKEND_CAPABILITIES,
            "clientInfo": {"name": "smcp-gateway", "version": __version__},
        }
        answer = await self._exchange(channel, "initialize", params, self._init_timeout_s)
        if answer is None:
            raise ChannelClosed("the MCP server did not answer initialize")
        if "result" not in answer:
            error = answer.get("error") if isinstance(answer.get("error"), dict) else {}
            if error.get("data") == _LOST:
                raise ChannelClosed(f"the MCP server exited during initialize: {error.get('message')}")
            raise InitializeRefused(f"the MCP server refused initialize: {error}")
        self.init_result = answer["result"]
        await channel.send(b'{"jsonrpc":"2.0","method":"notifications/initialized"}')

    async def send(
        self,
        body: dict[str, Any],
        sink: Sink,
        *,
        modern: bool,
        owner: SessionPeer | None = None,
        caller: str | None = None,
    ) -> str:
        """Forward one caller request under a gateway id; answers go to `sink`."""
        if self._channel is None:
            await self.ensure()
        gid = self.next_id("g")
        if body.get("method") in tasks.GATED:
            body = self.tasks_owned.gate(body, _who(caller, owner))
        params = body.get("params")
        token = None
        capabilities = None
        if isinstance(params, dict) and isinstance(params.get("_meta"), dict):
            declared = params["_meta"].get(_CLIENT_CAPABILITIES)
            capabilities = declared if isinstance(declared, dict) else None
            # To a handshake-era instance the per-request envelope belongs to the
            # gateway's side of the bridge (a dual-era SDK server refuses it there).
            meta = {
                k: v for k, v in params["_meta"].items() if self.era == "modern" or k not in _MODERN_META
            }
            if "progressToken" in meta:
                token = meta["progressToken"]
                meta["progressToken"] = gid
            params = {**params, "_meta": meta} if meta else {k: v for k, v in params.items() if k != "_meta"}
            body = {**body, "params": params}
        pending = UpstreamRequest(
            body.get("id"), token, body.get("method"), sink, modern=modern, owner=owner, caller=caller, capabilities=capabilities
        )
        self._pending[gid] = pending
        if token is not None:
            self._tokens[gid] = pending
        pending.writing = True
        try:
            await self.write({**body, "id": gid})
        except (ChannelClosed, ChannelBusy):
            self.done(gid)
            raise
        finally:
            pending.writing = False
        return gid

    async def write(self, message: dict[str, Any]) -> None:
        if self._channel is None:
            raise ChannelClosed("the MCP server instance is not running")
        await self._channel.send(orjson.dumps(message))

    async def cancel(self, gid: str, reason: str) -> None:
        if self._pending.pop(gid, None) is None:
            return
        self._tokens.pop(gid, None)
        with contextlib.suppress(ChannelClosed, ChannelBusy):
            await self.write({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": gid, "reason": reason}})

    def done(self, gid: str) -> None:
        if self._lot.holds(gid):
            return  # parked: its caller's retry takes it back (or it expires)
        self._pending.pop(gid, None)
        self._tokens.pop(gid, None)

    async def resume(self, state: str, caller: str, body: dict[str, Any], sink: Sink) -> str | None:
        """Take back a request parked for the caller's input (parking.py): the caller's
        answer goes to the instance, and the rest of the request to `sink`. None when
        the state is not one this node holds for this caller."""
        parked = self._lot.take(state, caller)
        pending = self._pending.get(parked.gid) if parked is not None else None
        if parked is None or pending is None:
            return None
        pending.sink = sink
        pending.client_id = body.get("id")
        params = body.get("params") if isinstance(body.get("params"), dict) else {}
        responses = params.get("inputResponses") if isinstance(params.get("inputResponses"), dict) else {}
        answer = responses.get(parking.KEY)
        if isinstance(answer, dict):
            reply: dict[str, Any] = {"jsonrpc": "2.0", "id": parked.server_id, "result": answer}
        else:
            reply = {"jsonrpc": "2.0", "id": parked.server_id,
                     "error": {"code": jsonrpc.INVALID_PARAMS, "message": "the client sent no response to this request"}}
        try:
            await self.write(reply)
        except (ChannelClosed, ChannelBusy):
            self.done(parked.gid)
            raise
        return parked.gid

    def _input_expired(self, parked: parking.Parked) -> None:
        async def give_up() -> None:
            reply = jsonrpc.error(parked.server_id, jsonrpc.INTERNAL_ERROR, "the client did not answer in time")
            with contextlib.suppress(ChannelClosed, ChannelBusy):
                if self._channel is not None:
                    await self._channel.send(reply)
            await self.cancel(parked.gid, "the client did not answer the server's request in time")

        task = asyncio.get_running_loop().create_task(give_up())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def log_levels_changed(self) -> None:
        """Make the shared instance log exactly as verbosely as its most verbose session
        asked (sessions filter for themselves), down again when that session leaves or
        asks for less. Once no session asks any more, the last level set stays: MCP has
        no way back to a server's own default."""
        capabilities = (self.init_result or {}).get("capabilities")
        if self.era != "legacy" or not isinstance(capabilities, dict) or "logging" not in capabilities:
            return
        asked = [c.asked_log_rank for c in self.channels if c.asked_log_rank is not None]
        if not asked or min(asked) == self._log_rank:
            return
        self._log_rank = rank = min(asked)
        request = {"jsonrpc": "2.0", "id": None, "method": "logging/setLevel", "params": {"level": loglevels.LEVELS[rank]}}
        with contextlib.suppress(ChannelClosed, ChannelBusy):
            await self.send(request, lambda raw, final: None, modern=False)

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
        parsed = jsonrpc.from_server(raw)
        if not isinstance(parsed, jsonrpc.Message):
            gid = parsed.id if parsed is not None else None
            if isinstance(gid, str) and gid in self._pending:
                # A broken answer to a request in flight: its caller hears so now,
                # rather than waiting out the timeout for an answer that came.
                self._answer({"jsonrpc": "2.0", "id": gid, "error": jsonrpc.invalid_answer(parsed)})
            return
        message = parsed.body
        method = message.get("method")
        if method is None:
            self._answer(message)
        elif "id" in message:
            self._server_request(message)
        elif self._to_subscription(message):
            pass
        elif method == "notifications/progress":
            params = message.get("params")
            token = params.get("progressToken") if isinstance(params, dict) else None
            owner = self._tokens.get(token) if isinstance(token, (str, int)) else None
            if owner is not None:
                params["progressToken"] = owner.token
                owner.sink(orjson.dumps(message), False)
        elif method in BROADCAST:
            if method == "notifications/tools/list_changed":
                self.tools.forget()
            self._broadcast(message, lambda ch: True)
        elif method in tasks.STATUS:
            self._task_status(message)
        elif method == "notifications/resources/updated":
            params = message.get("params") if isinstance(message.get("params"), dict) else {}
            uri = params.get("uri")
            self._broadcast(message, lambda ch: isinstance(uri, str) and uri in ch.subscriptions)
        elif method == "notifications/message":
            # Logs carry no request id; give them only to the caller whose request is
            # the newest in flight, never to every session on the instance, and only
            # if that session's own level lets it through.
            params = message.get("params")
            level = loglevels.rank(params.get("level")) if isinstance(params, dict) else None
            newest = self._newest_pending(
                lambda p: not p.modern and p.owner is not None and (level is None or level >= p.owner.log_rank)
            )
            if newest is not None:
                newest.sink(raw, False)

    def _to_subscription(self, message: dict[str, Any]) -> bool:
        """A modern instance tags listen-stream notifications with the listen request's id."""
        params = message.get("params")
        meta = params.get("_meta") if isinstance(params, dict) else None
        sub = meta.get(SUBSCRIPTION_META) if isinstance(meta, dict) else None
        pending = self._pending.get(sub) if isinstance(sub, str) else None
        if pending is None:
            return False
        meta[SUBSCRIPTION_META] = pending.client_id
        pending.sink(orjson.dumps(message), False)
        return True

    def _answer(self, message: dict[str, Any]) -> None:
        gid = message.get("id")
        pending = self._pending.pop(gid, None) if isinstance(gid, str) else None
        if pending is None:
            return
        self._tokens.pop(gid, None)
        self._learn(message)
        self.tasks_owned.on_answer(pending.method, message.get("result"), pending.principal, pending.owner)
        message["id"] = pending.client_id
        result_meta = (message.get("result") or {}).get("_meta") if isinstance(message.get("result"), dict) else None
        if isinstance(result_meta, dict) and result_meta.get(SUBSCRIPTION_META) == gid:
            result_meta[SUBSCRIPTION_META] = pending.client_id
        result = message.get("result")
        if pending.modern and self.era == "legacy" and isinstance(result, dict):
            to_modern_result(pending.method, result)
        pending.sink(orjson.dumps(message), True)

    def _server_request(self, message: dict[str, Any], *, waited: bool = False) -> None:
        method = message.get("method")
        needed = {"sampling/createMessage": "sampling", "elicitation/create": "elicitation", "roots/list": "roots"}.get(
            method or ""
        )
        # A request made for a task goes to the task's owner, never to whoever happens
        # to have a request in flight.
        related = tasks.related_task(message)
        task_owner = self.tasks_owned.owner(related) if related is not None else None
        if related is not None and task_owner is None and not waited:
            if self.tasks_owned.hold(related, lambda: self._server_request(message, waited=True)):
                return  # asked before the answer that creates the task came: it waits for it
        origin = self.tasks_owned.origin(related) if related is not None else None
        if origin is not None and origin in self.channels and (needed is None or needed in origin.client_capabilities):
            origin.server_request(message)  # the session that created the task, on its own stream
            return

        def declared(p: UpstreamRequest) -> bool:
            if related is not None and (task_owner is None or p.principal != task_owner):
                return False
            if p.owner is not None:
                return needed is None or needed in p.owner.client_capabilities
            # A modern caller is asked through an input_required result.
            return self.era == "legacy" and p.caller is not None and p.capabilities is not None and (
                needed is None or needed in p.capabilities
            )

        found = self._newest_pending_item(declared)
        if found is not None:
            gid, newest = found
            if newest.owner is not None:
                newest.owner.server_request(message)
            elif newest.caller is not None:
                token = self._lot.park(gid, message["id"], newest.caller)
                newest.sink(orjson.dumps(parking.input_required(newest.client_id, message, token)), True)
            return
        if task_owner is not None:
            # The owner may have no request in flight (it polls its task): any of its
            # sessions that can answer gets it, on its own stream.
            for channel in list(self.channels):
                if channel.principal == task_owner and (needed is None or needed in channel.client_capabilities):
                    channel.server_request(message)
                    return
        reply = jsonrpc.error(message["id"], jsonrpc.METHOD_NOT_FOUND, f"{method} is not available to this request")
        asyncio.get_running_loop().create_task(self._quiet_send(reply))

    def _newest_pending(self, accept: Callable[[UpstreamRequest], bool]) -> UpstreamRequest | None:
        found = self._newest_pending_item(accept)
        return found[1] if found is not None else None

    def _newest_pending_item(self, accept: Callable[[UpstreamRequest], bool]) -> tuple[str, UpstreamRequest] | None:
        for gid, pending in reversed(self._pending.items()):
            if pending.method != "initialize" and not self._lot.holds(gid) and accept(pending):
                return gid, pending
        return None

    def _broadcast(self, message: dict[str, Any], want: Callable[[SessionPeer], bool]) -> None:
        raw = orjson.dumps(message)
        for channel in list(self.channels):
            if want(channel):
                channel.notify(raw)
        for listener in list(self.listeners):
            listener.put_nowait(message)

    async def _quiet_send(self, raw: bytes) -> None:
        if self._channel is not None:
            with contextlib.suppress(ChannelClosed, ChannelBusy):
                await self._channel.send(raw)

    def _task_status(self, message: dict[str, Any]) -> None:
        owner = self.tasks_owned.owner(tasks.task_id_of(message.get("params")) or "")
        if owner is None:
            return
        raw = orjson.dumps(message)
        for channel in list(self.channels):
            if channel.principal == owner:
                channel.notify(raw)

    def _learn(self, message: dict[str, Any]) -> None:
        result = message.get("result")
        tools = result.get("tools") if isinstance(result, dict) else None
        if isinstance(tools, list):
            self.tools.learn(tools)

    async def tool_headers(self, name: str, timeout_s: float) -> dict[str, tuple[str, ...]]:
        """The headers a modern call of tool `name` must mirror (x-mcp-header)."""
        known = self.tools.known(name)
        if known is not None:
            return known

        async def page(cursor: str | None) -> dict[str, Any] | None:
            channel = self._channel
            if channel is None:
                raise ChannelClosed("the MCP server instance is not running")
            params: dict[str, Any] = {"cursor": cursor} if cursor else {}
            if self.era == "modern":
                params["_meta"] = _gateway_envelope()
            return await self._exchange(channel, "tools/list", params, timeout_s)

        return await self.tools.of(name, page)

    def _fail_all(self, why: str, *, spare_writing: bool = False) -> None:
        """Answer every request in flight with an error; `spare_writing` keeps those
        still being written (the instance resends them to its restarted process)."""
        self._lot.clear()
        pending, self._pending = self._pending, {}
        tokens, self._tokens = self._tokens, {}
        for gid, request in pending.items():
            if spare_writing and request.writing:
                self._pending[gid] = request
                if request.token is not None and gid in tokens:
                    self._tokens[gid] = request
                continue
            request.sink(jsonrpc.error(request.client_id, jsonrpc.INSTANCE_LOST, why, _LOST), True)

    def _on_lost(self, why: str) -> None:
        self._fail_all(f"{why}; the request was not completed", spare_writing=True)
        # The restarted process starts at its own default level: ask again (the message
        # waits for the restart and its handshake replay).
        self._log_rank = None
        task = asyncio.get_running_loop().create_task(self.log_levels_changed())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_closed(self, why: str) -> None:
        self._channel = None
        self.init_result = None
        self._log_rank = None
        self.tools.forget()
        # Sessions outlive the instance: the next request starts a new one.
        self._fail_all(f"MCP server instance closed: {why}")
