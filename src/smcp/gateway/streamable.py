"""MCP Streamable HTTP endpoint (2025-11-25 era) at /t/{tenant}/{server}/mcp."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

import orjson

from smcp.config import Settings
from smcp.domain import Principal, Revision, SharingMode
from smcp.gateway.asgi import (
    BodyTooLarge,
    Receive,
    Scope,
    Send,
    header_map,
    read_body,
    respond,
    respond_json,
)
from smcp.gateway.authn import Authenticator
from smcp.gateway.guard import Guard
from smcp.gateway.modern import ModernEndpoint
from smcp.gateway.sealing import SessionSealer
from smcp.gateway.shared import SharedChannel
from smcp.gateway.pool import UpstreamPool
from smcp.gateway.relay import next_item
from smcp.gateway.replay import StreamLog, follow, parse_event_id
from smcp.gateway.sessions import Item, NoRoom, PendingRequest, Session, SessionTable
from smcp.protocol import jsonrpc, modern
from smcp.protocol.headers import SESSION_HEADER, VERSION_HEADER, accepts, version_supported
from smcp.runtime.interface import Channel, ChannelBusy, ChannelClosed, Runtime

log = logging.getLogger("smcp.gateway")

Resolve = Callable[[str, str], Awaitable[Revision | None]]
ResolveId = Callable[[str], Awaitable[Revision | None]]


class EndedSessions(Protocol):
    """Where every node records, and looks up, the session ids clients deleted."""

    async def add(self, session_id: str, expires_at: datetime) -> None: ...

    async def ended(self, session_id: str) -> bool: ...

_NOT_FOUND = orjson.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "no such MCP server"}})


class Gateway:
    def __init__(
        self,
        settings: Settings,
        authn: Authenticator,
        resolve: Resolve,
        runtime: Runtime,
        *,
        revision_by_id: ResolveId,
        sealer: SessionSealer,
        ended: EndedSessions,
    ) -> None:
        self._revision_by_id = revision_by_id
        self._sealer = sealer
        self._ended = ended
        self._pumps: set[asyncio.Task[None]] = set()
        self._s = settings
        self._base_url = settings.base_url
        self._authn = authn
        self._resolve = resolve
        self._runtime = runtime
        self._guard = Guard(settings)
        self.sessions = SessionTable(
            settings.max_sessions,
            per_tenant=settings.max_sessions_per_tenant,
            per_principal=settings.max_sessions_per_principal,
        )
        self._upstreams = UpstreamPool(
            runtime, init_timeout_s=settings.initialize_timeout_s, input_timeout_s=settings.input_request_timeout_s
        )
        self._modern = ModernEndpoint(settings, self._upstreams)
        self._reaper: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        self._reaper = asyncio.create_task(self._reap_idle())

    async def aclose(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        for session in self.sessions.all():
            await self._end_session(session, "gateway shutting down")
        await self._upstreams.aclose()

    async def _reap_idle(self) -> None:
        interval = min(30.0, self._s.session_idle_timeout_s / 2)
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for session in self.sessions.all():
                if session.idle and now - session.last_active > self._s.session_idle_timeout_s:
                    await self._end_session(session, "idle timeout")

    async def _end_session(self, session: Session, reason: str) -> None:
        self.sessions.remove(session.id)
        session.close(reason)
        with contextlib.suppress(Exception):
            await session.channel.close()

    # -- ASGI -----------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        parts = scope["path"].split("/")
        # ['', 't', tenant, server, 'mcp']
        if len(parts) != 5 or parts[1] != "t" or parts[4] != "mcp" or not parts[2] or not parts[3]:
            await respond(send, 404, _NOT_FOUND)
            return
        tenant, server = parts[2], parts[3]
        headers = header_map(scope)

        refused = self._guard.check(headers.get("host"), headers.get("origin"))
        if refused is not None:
            await respond_json(send, 403, {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": refused}})
            return

        resource_url = f"{self._base_url}/t/{tenant}/{server}/mcp"  # Settings.server_url, without its cost
        principal = await self._authn.authenticate(headers, resource_url=resource_url)
        if not isinstance(principal, Principal):
            await respond_json(send, principal.status, principal.body, headers=principal.headers)
            return
        # Resolve first and compare tenants after, so a foreign tenant's server and a
        # missing one take the same path and give the same answer.
        revision = await self._resolve(tenant, server)
        if revision is None or principal.tenant != tenant:
            await respond(send, 404, _NOT_FOUND)
            return

        method = scope["method"]
        if method == "POST":
            await self._post(scope, receive, send, headers, principal, revision)
        elif method == "GET":
            await self._get(receive, send, headers, principal, revision)
        elif method == "DELETE":
            await self._delete(send, headers, principal, revision)
        else:
            await respond(send, 405, b"", headers=[("allow", "GET, POST, DELETE")])

    async def _session_for(
        self, headers: dict[str, str], principal: Principal, revision: Revision
    ) -> tuple[Session | None, int, str]:
        session_id = headers.get(SESSION_HEADER)
        if not session_id:
            return None, 400, "Mcp-Session-Id header is required"
        session = self.sessions.get(session_id)
        if session is None:
            session = await self._reopen(session_id, principal, revision)
        # A session is bound to the principal that created it and to its server:
        # anyone else sees it as unknown.
        if (
            session is None
            or session.closed is not None
            or session.principal.subject != principal.subject
            or session.revision.tenant != revision.tenant
            or session.revision.server != revision.server
        ):
            return None, 404, "session not found (it may have ended); initialize a new one"
        return session, 200, ""

    async def _reopen(self, session_id: str, principal: Principal, revision: Revision) -> Session | None:
        """Rebuild a shared-instance session from its sealed id (another node's, or ours
        before a restart). Per-session sessions own a process and cannot move."""
        state = self._sealer.open(session_id)
        if (
            state is None
            or state.get("p") != principal.subject
            or state.get("t") != revision.tenant
            or state.get("s") != revision.server
            or state.get("m") == SharingMode.per_session.value
        ):
            return None
        # Checked after the cheap tests, so only the id's own caller costs a lookup.
        if await self._ended.ended(session_id):
            return None
        original = await self._revision_by_id(str(state.get("r")))
        if original is None or original.tenant != revision.tenant or original.server != revision.server:
            return None
        try:
            victim = self.sessions.claim(revision.tenant, principal.subject)
        except NoRoom:
            return None
        try:
            await self._give_way(victim)
            upstream = self._upstreams.get(original, principal.subject)
            try:
                await upstream.ensure()
            except Exception:  # noqa: BLE001 — the instance cannot start: the session is unusable
                log.exception("could not reopen session for %s/%s", revision.tenant, revision.server)
                return None
            channel = SharedChannel(upstream, session_id, principal.subject)
            channel.client_capabilities = state.get("c") if isinstance(state.get("c"), dict) else {}
            session = self._new_session(session_id, principal, original, channel)
            self.sessions.add(session)
            return session
        finally:
            self.sessions.release(revision.tenant, principal.subject)

    # -- POST -----------------------------------------------------------------------
    async def _post(
        self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str], principal: Principal, revision: Revision
    ) -> None:
        accept = headers.get("accept", "")
        if not (accepts(accept, "application/json") and accepts(accept, "text/event-stream")):
            await _rpc_error(send, 406, None, jsonrpc.INVALID_REQUEST, "Accept must include application/json and text/event-stream")
            return
        ctype = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if ctype != "application/json":
            await _rpc_error(send, 415, None, jsonrpc.INVALID_REQUEST, "Content-Type must be application/json")
            return
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._s.max_body_bytes:
            await _rpc_error(send, 413, None, jsonrpc.INVALID_REQUEST, f"body exceeds {self._s.max_body_bytes} bytes")
            return
        try:
            body = await read_body(receive, self._s.max_body_bytes)
        except BodyTooLarge:
            await _rpc_error(send, 413, None, jsonrpc.INVALID_REQUEST, f"body exceeds {self._s.max_body_bytes} bytes")
            return
        except ConnectionError:
            return
        try:
            message = jsonrpc.parse(body, max_depth=self._s.max_json_depth)
        except jsonrpc.ProtocolError as exc:
            await _rpc_error(send, 400, exc.id, exc.code, exc.message)
            return

        version = headers.get(VERSION_HEADER)
        if modern.is_modern(version, message.body):
            await self._modern.handle(receive, send, headers, message, revision, principal)
            return
        if message.method == "initialize":
            await self._initialize(send, message, principal, revision)
            return

        if not version_supported(version):
            await _rpc_error(send, 400, message.id, jsonrpc.INVALID_REQUEST, f"unsupported MCP-Protocol-Version {version!r}")
            return
        session, status, why = await self._session_for(headers, principal, revision)
        if session is None:
            await _rpc_error(send, status, message.id, jsonrpc.INVALID_REQUEST, why)
            return
        session.last_active = time.monotonic()

        if message.kind is not jsonrpc.Kind.request:
            if message.method == "notifications/cancelled":
                self._cancelled_by_client(session, message)
            try:
                await session.forward(message)
            except ChannelClosed as exc:
                await self._gone(send, session, message, str(exc))
                return
            except ChannelBusy as exc:
                await _rpc_error(send, 503, None, jsonrpc.INSTANCE_BUSY, str(exc))
                return
            await respond(send, 202)
            return
        await self._request(receive, send, session, message)

    def _cancelled_by_client(self, session: Session, message: jsonrpc.Message) -> None:
        params = message.body.get("params")
        if not isinstance(params, dict) or "requestId" not in params:
            return
        key = orjson.dumps(params["requestId"])
        pending = session.pending.get(key)
        if pending is not None:
            session.end(key)
            pending.queue.put_nowait((jsonrpc.error(pending.id, -32800, "request cancelled by the client"), True))

    async def _request(self, receive: Receive, send: Send, session: Session, message: jsonrpc.Message) -> None:
        if message.id_key in session.pending:
            await _rpc_error(send, 400, message.id, jsonrpc.INVALID_REQUEST, "a request with this id is already in flight")
            return
        if len(session.pending) >= self._s.max_pending_per_session:
            await _rpc_error(send, 429, message.id, jsonrpc.TOO_MANY_PENDING, "too many requests in flight on this session")
            return
        pending = session.begin(message)
        pending.writing = True
        try:
            await session.forward(message)
        except ChannelClosed as exc:
            session.end(message.id_key)
            await self._gone(send, session, message, str(exc))
            return
        except ChannelBusy as exc:
            session.end(message.id_key)
            await _rpc_error(send, 503, message.id, jsonrpc.INSTANCE_BUSY, str(exc))
            return
        finally:
            pending.writing = False

        async def timed_out() -> Item:
            return await self._timed_out(session, message)

        deadline = time.monotonic() + self._s.request_timeout_s
        raw, final = await next_item(pending.queue, deadline, timed_out)
        if final:
            # Nothing came before the answer: a plain JSON response is cheaper than SSE.
            await respond(send, 200, raw) if raw is not None else await respond(send, 202)
            return
        log = session.streams.open("p")
        if raw is not None:
            log.append(raw)
        # The log fills whether or not the client stays connected: in this era a
        # dropped connection is not a cancellation, and the client may resume.
        pump = asyncio.create_task(self._pump(pending, log, deadline, timed_out))
        self._pumps.add(pump)
        pump.add_done_callback(self._pumps.discard)
        await follow(receive, send, log, after=0, keepalive_s=self._s.sse_keepalive_s, retry_ms=self._s.sse_retry_ms)

    async def _pump(
        self, pending: PendingRequest, log: StreamLog, deadline: float, timed_out: Callable[[], Awaitable[Item]]
    ) -> None:
        try:
            while True:
                raw, final = await next_item(pending.queue, deadline, timed_out)
                if raw is not None:
                    log.append(raw)
                if final:
                    return
        finally:
            log.close()

    async def _timed_out(self, session: Session, message: jsonrpc.Message) -> Item:
        session.end(message.id_key)
        cancel = orjson.dumps(
            {
                "jsonrpc": "2.0",
                "method": "notifications/cancelled",
                "params": {"requestId": message.id, "reason": "request timed out at the gateway"},
            }
        )
        with contextlib.suppress(ChannelClosed, ChannelBusy):
            await session.channel.send(cancel)
        text = f"request timed out after {self._s.request_timeout_s:g}s"
        return (jsonrpc.error(message.id, jsonrpc.REQUEST_TIMEOUT, text), True)

    async def _gone(self, send: Send, session: Session, message: jsonrpc.Message, why: str) -> None:
        await self._end_session(session, why)
        await _rpc_error(send, 404, message.id, jsonrpc.INVALID_REQUEST, f"session ended: {why}; initialize a new one")

    # -- initialize -----------------------------------------------------------------
    async def _initialize(self, send: Send, message: jsonrpc.Message, principal: Principal, revision: Revision) -> None:
        if message.kind is not jsonrpc.Kind.request:
            await _rpc_error(send, 400, None, jsonrpc.INVALID_REQUEST, "initialize must be a request (with an id)")
            return
        try:
            victim = self.sessions.claim(revision.tenant, principal.subject)
        except NoRoom as full:
            if full.share == "node":
                await _rpc_error(send, 503, message.id, jsonrpc.INTERNAL_ERROR, "too many sessions on this node; retry later")
            else:
                limit = self._s.max_sessions_per_principal if full.share == "principal" else self._s.max_sessions_per_tenant
                await _rpc_error(
                    send, 429, message.id, jsonrpc.TOO_MANY_SESSIONS,
                    f"all {limit} sessions this {full.share} may hold on this node are in use; end one (DELETE) first",
                )
            return
        try:
            await self._give_way(victim)
            await self._start_session(send, message, principal, revision)
        finally:
            self.sessions.release(revision.tenant, principal.subject)

    async def _start_session(self, send: Send, message: jsonrpc.Message, principal: Principal, revision: Revision) -> None:
        params = message.body.get("params") if isinstance(message.body.get("params"), dict) else {}
        caps = params.get("capabilities")
        session_id = self._sealer.seal(
            {
                "t": revision.tenant,
                "s": revision.server,
                "r": revision.id,
                "p": principal.subject,
                "m": revision.spec.sharing.value,
                "c": caps if isinstance(caps, dict) else {},
            }
        )
        try:
            channel = await self._channel_for(revision, principal, session_id)
        except Exception as exc:
            log.exception("could not start an instance for %s/%s", revision.tenant, revision.server)
            await _rpc_error(send, 503, message.id, jsonrpc.INTERNAL_ERROR, f"could not start the MCP server: {exc}")
            return
        session = self._new_session(session_id, principal, revision, channel)
        self.sessions.add(session)
        pending = session.begin(message)
        try:
            await session.forward(message)
        except (ChannelClosed, ChannelBusy) as exc:
            await self._end_session(session, str(exc))
            await _rpc_error(send, 503, message.id, jsonrpc.INTERNAL_ERROR, f"MCP server did not start: {exc}")
            return
        async def no_answer() -> Item:
            return (None, True)

        first = await next_item(pending.queue, time.monotonic() + self._s.initialize_timeout_s, no_answer)
        raw, _ = first
        if raw is None or "result" not in orjson.loads(raw):
            await self._end_session(session, "initialize failed")
            if raw is None:
                raw = jsonrpc.error(message.id, jsonrpc.INTERNAL_ERROR, "MCP server did not answer initialize")
            await respond(send, 200, raw)
            return
        await respond(send, 200, raw, headers=[("mcp-session-id", session_id)])

    async def _channel_for(self, revision: Revision, principal: Principal, session_id: str) -> Channel:
        if revision.spec.sharing is SharingMode.per_session:
            return await self._runtime.connect(revision, session=session_id)
        upstream = self._upstreams.get(revision, principal.subject)
        await upstream.ensure()
        return SharedChannel(upstream, session_id, principal.subject)

    def _new_session(self, session_id: str, principal: Principal, revision: Revision, channel: Channel) -> Session:
        shared = channel if isinstance(channel, SharedChannel) else None
        session = Session(
            session_id,
            principal,
            revision,
            channel,
            max_streams=self._s.replay_streams,
            max_events=self._s.replay_buffer_events,
            send_body=shared.send_body if shared else None,
        )
        channel.attach(session.on_message, lambda why: self._closed(session, why), lambda why: self._lost(session, why))
        if shared is not None:
            shared.on_answer = session.on_answer
        return session

    async def _give_way(self, victim: Session | None) -> None:
        """End the idle session a share's cap took room from, if any.

        Its id is remembered as ended, so its client hears 404 and starts afresh
        (re-subscribing, setting its log level) rather than finding half its state gone.
        """
        if victim is not None:
            await self._end_session(victim, "ended to make room for a newer session (session shares)")
            await self._terminate(victim.id)

    def _lost(self, session: Session, why: str) -> None:
        session.fail_pending(jsonrpc.INSTANCE_LOST, f"{why}; the request was not completed", spare_writing=True)

    def _closed(self, session: Session, why: str) -> None:
        self.sessions.remove(session.id)
        session.close(why)

    # -- GET / DELETE ---------------------------------------------------------------
    async def _get(self, receive: Receive, send: Send, headers: dict[str, str], principal: Principal, revision: Revision) -> None:
        if not accepts(headers.get("accept", ""), "text/event-stream"):
            await _rpc_error(send, 406, None, jsonrpc.INVALID_REQUEST, "Accept must include text/event-stream")
            return
        session, status, why = await self._session_for(headers, principal, revision)
        if session is None:
            await _rpc_error(send, status, None, jsonrpc.INVALID_REQUEST, why)
            return
        session.last_active = time.monotonic()
        resume = parse_event_id(headers.get("last-event-id"))
        log = session.streams.get(resume[0]) if resume else None
        after = resume[1] if resume and log is not None else 0
        if log is None:
            # A new GET stream takes over from any earlier one.
            if session.get_log is not None:
                session.get_log.close()
            log = session.get_log = session.streams.open("g")
            for raw in session.drain_backlog():
                log.append(raw)
        session.listeners += 1
        try:
            await follow(receive, send, log, after=after, keepalive_s=self._s.sse_keepalive_s, retry_ms=self._s.sse_retry_ms)
        finally:
            session.listeners -= 1
            session.last_active = time.monotonic()

    async def _delete(self, send: Send, headers: dict[str, str], principal: Principal, revision: Revision) -> None:
        session, status, why = await self._session_for(headers, principal, revision)
        if session is None:
            await _rpc_error(send, status, None, jsonrpc.INVALID_REQUEST, why)
            return
        await self._end_session(session, "closed by the client")
        await self._terminate(session.id)
        await respond(send, 204)

    async def _terminate(self, session_id: str) -> None:
        # A sealed id stays decodable until it expires: remember the ones a client
        # ended in the store every node reads, so they stay ended anywhere.
        await self._ended.add(session_id, datetime.now(UTC) + timedelta(seconds=self._s.session_max_age_s))


async def _rpc_error(send: Send, status: int, id: object, code: int, message: str) -> None:
    await respond(send, status, jsonrpc.error(id, code, message))
