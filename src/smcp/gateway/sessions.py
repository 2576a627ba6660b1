"""Legacy-era sessions: which client conversation owns which channel and pending requests.

Messages from the instance are routed here: a response to the request that asked,
progress to the request that owns the token, anything else to the session's GET
stream (or, with none open, to the newest open request stream, or a small backlog).
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import orjson

from smcp.domain import Principal, Revision
from smcp.gateway import tasks
from smcp.gateway.relay import Mailbox
from smcp.gateway.replay import StreamLog, StreamLogs
from smcp.protocol import jsonrpc
from smcp.runtime.interface import Channel

# (raw message or None, final?) — None+final closes a stream without a message.
Item = tuple[bytes | None, bool]

_BACKLOG = 256
_K = TypeVar("_K")
_MAX_TASKS = 10_000
# The owner a session's own task map binds to: the session is the only one there.
_SELF = "session"


class PendingRequest:
    __slots__ = ("id", "method", "queue", "token_key", "streaming", "writing")

    def __init__(self, id: Any, token_key: bytes | None, method: str | None = None) -> None:
        self.id = id
        self.method = method
        self.queue = Mailbox()
        self.token_key = token_key
        self.streaming = True
        # Still being handed to the channel, which may resend it to a restarted
        # instance: the loss of the previous process is not its loss.
        self.writing = False


class Session:
    def __init__(
        self,
        id: str,
        principal: Principal,
        revision: Revision,
        channel: Channel,
        *,
        max_streams: int = 16,
        max_events: int = 128,
        send_body: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
    ) -> None:
        self.id = id
        self.principal = principal
        self.revision = revision
        self.channel = channel
        self.pending: dict[bytes, PendingRequest] = {}
        self._progress: dict[bytes, PendingRequest] = {}
        self.streams = StreamLogs(max_streams, max_events)
        # The stream server-initiated messages go to (the GET stream), while it lives.
        self.get_log: StreamLog | None = None
        self._backlog: deque[bytes] = deque(maxlen=_BACKLOG)
        self.last_active = time.monotonic()
        # Clients following one of its streams right now (a GET left open to listen).
        self.listeners = 0
        self.closed: str | None = None
        # A shared instance's channel takes messages already parsed (SharedChannel).
        self._send_body = send_body
        # Tasks this session created, when its channel is its own: a remote upstream
        # may bind tasks to the tenant's credential, which every principal's session
        # presents (gateway/tasks.py). A shared instance's upstream binds them itself.
        self._tasks = tasks.TaskOwners(_MAX_TASKS) if send_body is None else None

    @property
    def idle(self) -> bool:
        """Nothing in flight and nobody listening: ending it loses no work."""
        return not self.pending and not self.listeners

    async def forward(self, message: jsonrpc.Message) -> None:
        """Hand one client message to the channel; raises ChannelClosed."""
        if self._send_body is not None:
            await self._send_body(message.body)
            return
        if self._tasks is not None and message.method in tasks.GATED and message.kind is jsonrpc.Kind.request:
            body = self._tasks.gate(message.body, _SELF)
            if body is not message.body:
                await self.channel.send(orjson.dumps(body))
                return
        await self.channel.send(message.raw)

    # -- client → instance bookkeeping -------------------------------------------
    def begin(self, message: jsonrpc.Message) -> PendingRequest:
        token = message.progress_token
        token_key = orjson.dumps(token) if token is not None else None
        pending = PendingRequest(message.id, token_key, message.method)
        self.pending[message.id_key] = pending
        if token_key is not None:
            self._progress[token_key] = pending
        self.last_active = time.monotonic()
        return pending

    def end(self, id_key: bytes) -> None:
        pending = self.pending.pop(id_key, None)
        if pending is not None and pending.token_key is not None:
            self._progress.pop(pending.token_key, None)
        self.last_active = time.monotonic()

    # -- instance → client routing ------------------------------------------------
    def on_message(self, raw: bytes) -> None:
        parsed = jsonrpc.from_server(raw)
        if not isinstance(parsed, jsonrpc.Message):
            # Not JSON-RPC: dropped (stdout noise; the runtime logs the stderr). A broken
            # answer to a request in flight is its caller's error, at once.
            if parsed is not None and parsed.id is not None:
                key = orjson.dumps(parsed.id)
                if key in self.pending:
                    self.on_answer(key, orjson.dumps({"jsonrpc": "2.0", "id": parsed.id, "error": jsonrpc.invalid_answer(parsed)}))
            return
        message = parsed.body
        method = message.get("method")
        if method is None:
            key = orjson.dumps(message.get("id"))
            if self._tasks is not None and b'"task' in raw:
                pending = self.pending.get(key)
                self._tasks.on_answer(pending.method if pending else None, message.get("result"), _SELF)
                if pending is not None and pending.method == tasks.LIST:
                    raw = orjson.dumps(message)  # narrowed to this session's tasks
            self.on_answer(key, raw)
            return
        if method in tasks.STATUS and self._tasks is not None:
            if self._tasks.owner(tasks.task_id_of(message.get("params")) or "") is None:
                return
        if method == "notifications/progress":
            params = message.get("params")
            token = params.get("progressToken") if isinstance(params, dict) else None
            owner = self._progress.get(orjson.dumps(token)) if token is not None else None
            if owner is not None:
                owner.queue.put_nowait((raw, False))
                return
        self._deliver_unrelated(raw)

    def on_answer(self, id_key: bytes, raw: bytes) -> None:
        """The answer to the request whose id is spelt `id_key` in JSON."""
        pending = self.pending.pop(id_key, None)
        if pending is not None:
            if pending.token_key is not None:
                self._progress.pop(pending.token_key, None)
            pending.queue.put_nowait((raw, True))

    def _deliver_unrelated(self, raw: bytes) -> None:
        if self.get_log is not None and not self.get_log.closed:
            self.get_log.append(raw)
            return
        for pending in reversed(self.pending.values()):
            if pending.streaming:
                pending.queue.put_nowait((raw, False))
                return
        self._backlog.append(raw)

    def drain_backlog(self) -> list[bytes]:
        items = list(self._backlog)
        self._backlog.clear()
        return items

    def fail_pending(self, code: int, message: str, *, spare_writing: bool = False) -> None:
        """Answer every pending request with an error; `spare_writing` keeps those still
        being written (an instance that lost its process resends them to the next)."""
        failed = [key for key, p in self.pending.items() if not (spare_writing and p.writing)]
        for key in failed:
            pending = self.pending.pop(key)
            if pending.token_key is not None:
                self._progress.pop(pending.token_key, None)
            pending.queue.put_nowait((jsonrpc.error(pending.id, code, message), True))

    def close(self, reason: str) -> None:
        if self.closed is not None:
            return
        self.closed = reason
        self.fail_pending(jsonrpc.INSTANCE_LOST, f"session ended: {reason}")
        self.streams.close_all()
        self.get_log = None


class NoRoom(Exception):
    """No session can be added: every session of the full share is in use."""

    def __init__(self, share: str) -> None:
        super().__init__(share)
        self.share = share  # "principal", "tenant" or "node"


class SessionTable:
    """The node's sessions, with a cap for the node, each tenant and each principal.

    Sessions are cheap to start and clients abandon them, so a cap that only refused
    would lock out a client that restarted a few times; one that never refused would
    let one tenant hold the whole node. At a cap the owner's least recently used idle
    session (nothing in flight, nobody listening) makes room; only when all of them are
    in use is the new one refused. At the node's cap the room comes from the tenant
    holding the most sessions.

    Room is claimed before a session exists (its instance may take a while to start),
    so concurrent initializes cannot all see the same free place.
    """

    def __init__(self, max_sessions: int, *, per_tenant: int | None = None, per_principal: int | None = None) -> None:
        self._sessions: dict[str, Session] = {}
        self._max = max_sessions
        self._per_tenant = per_tenant or max_sessions
        self._per_principal = per_principal or max_sessions
        self._by_tenant: dict[str, dict[str, Session]] = {}
        self._by_principal: dict[tuple[str, str], dict[str, Session]] = {}
        # Room claimed for sessions still being set up.
        self._claims: Counter[tuple[str, str]] = Counter()
        self._tenant_claims: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._sessions)

    @property
    def full(self) -> bool:
        return len(self._sessions) + self._tenant_claims.total() >= self._max

    def claim(self, tenant: str, subject: str) -> Session | None:
        """Room for one more session of this principal, held until `release`.

        Returns the session that gave way (already out of the table; the caller ends
        it), or None. Raises NoRoom when the full share has no idle session to give up.
        """
        victim = self._giving_way(tenant, subject)
        if victim is not None:
            self.remove(victim.id)
        self._claims[(tenant, subject)] += 1
        self._tenant_claims[tenant] += 1
        return victim

    def release(self, tenant: str, subject: str) -> None:
        """The claimed room is now a session in the table, or no longer needed."""
        key = (tenant, subject)
        self._claims[key] -= 1
        if self._claims[key] <= 0:
            del self._claims[key]
        self._tenant_claims[tenant] -= 1
        if self._tenant_claims[tenant] <= 0:
            del self._tenant_claims[tenant]

    def _giving_way(self, tenant: str, subject: str) -> Session | None:
        mine = self._by_principal.get((tenant, subject), {})
        if len(mine) + self._claims[(tenant, subject)] >= self._per_principal:
            return _oldest_idle(mine.values(), "principal")
        ours = self._by_tenant.get(tenant, {})
        if len(ours) + self._tenant_claims[tenant] >= self._per_tenant:
            return _oldest_idle(ours.values(), "tenant")
        if self.full:
            if not self._by_tenant:
                raise NoRoom("node")  # every place is claimed by sessions still starting
            heaviest = max(self._by_tenant.values(), key=len)
            try:
                return _oldest_idle(heaviest.values(), "node")
            except NoRoom:
                return _oldest_idle(self._sessions.values(), "node")
        return None

    def add(self, session: Session) -> None:
        self._sessions[session.id] = session
        tenant = session.revision.tenant
        self._by_tenant.setdefault(tenant, {})[session.id] = session
        self._by_principal.setdefault((tenant, session.principal.subject), {})[session.id] = session

    def get(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    def remove(self, session_id: str) -> Session | None:
        session = self._sessions.pop(session_id, None)
        if session is not None:
            tenant = session.revision.tenant
            _discard(self._by_tenant, tenant, session_id)
            _discard(self._by_principal, (tenant, session.principal.subject), session_id)
        return session

    def all(self) -> list[Session]:
        return list(self._sessions.values())


def _discard(index: dict[_K, dict[str, Session]], key: _K, session_id: str) -> None:
    group = index.get(key)
    if group is not None:
        group.pop(session_id, None)
        if not group:
            del index[key]


def _oldest_idle(sessions: Iterable[Session], share: str) -> Session:
    idle = [s for s in sessions if s.idle]
    if not idle:
        raise NoRoom(share)
    return min(idle, key=lambda s: s.last_active)
