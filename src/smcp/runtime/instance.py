"""A supervised instance: one sandboxed process, restarted with backoff when it dies.

A restarted process has lost its MCP session state, so the instance replays the
client's recorded `initialize` handshake before carrying traffic again; requests that
were in flight when it died cannot be answered and the channel reports them lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import orjson

from smcp.domain import Instance, InstanceState
from smcp.runtime.interface import ChannelClosed, ClosedHandler, LostHandler, MessageHandler
from smcp.runtime.logs import LogRing
from smcp.runtime.process import StdioProcess

ProcessFactory = Callable[[Callable[[bytes], None], Callable[[str], None]], Awaitable[StdioProcess]]

_REPLAY_ID = "smcp-replay-initialize"


class SupervisedInstance:
    def __init__(
        self,
        record: Instance,
        spawn: ProcessFactory,
        log: LogRing,
        *,
        restart_max: int,
        backoff_s: float,
        backoff_max_s: float,
        stop_grace_s: float,
        on_gone: Callable[[SupervisedInstance], None],
        budget_reset_s: float = 60.0,
    ) -> None:
        self.record = record
        self._spawn = spawn
        self._log = log
        self._restart_max = restart_max
        self._backoff_s = backoff_s
        self._backoff_max_s = backoff_max_s
        self._budget_reset_s = budget_reset_s
        self._stop_grace_s = stop_grace_s
        self._on_gone = on_gone
        self._proc: StdioProcess | None = None
        self._ready = asyncio.Event()
        self._closing = False
        self._supervisor: asyncio.Task[None] | None = None
        self._on_message: MessageHandler | None = None
        self._on_closed: ClosedHandler | None = None
        self._on_lost: LostHandler | None = None
        self._initialize: bytes | None = None
        self._initialized: bytes | None = None
        self._replaying = False
        self._replayed = asyncio.Event()

    # -- Channel --------------------------------------------------------------------
    @property
    def instance_id(self) -> str:
        return self.record.id

    def attach(self, on_message: MessageHandler, on_closed: ClosedHandler, on_lost: LostHandler | None = None) -> None:
        self._on_message = on_message
        self._on_closed = on_closed
        self._on_lost = on_lost

    async def send(self, raw: bytes) -> None:
        if self._closing:
            raise ChannelClosed("instance is stopped")
        if self._initialize is None or self._initialized is None:
            self._remember_handshake(raw)
        if not self._ready.is_set():
            await self._ready.wait()
        proc = self._proc
        if self._closing or proc is None:
            raise ChannelClosed("instance is stopped")
        try:
            proc.write(raw)
            return
        except (BrokenPipeError, ConnectionResetError):
            pass
        # The process stopped reading before this message reached it (it died and is
        # not reaped yet, or closed its stdin), so nothing was delivered: the message
        # goes, once, to the process started in its place, after the handshake replay.
        if not await self._replaced(proc):
            raise ChannelClosed("instance exited")
        assert self._proc is not None
        try:
            self._proc.write(raw)
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise ChannelClosed("instance exited") from exc

    async def _replaced(self, proc: StdioProcess) -> bool:
        """Wait until `proc` has been replaced by a restart; False if it never will be."""
        if self._proc is proc and not self._closing:
            self._ready.clear()  # later messages wait for the restart too
            # Alive with its stdin closed, it could never take another message; its
            # exit (or its kill) is what the supervisor restarts on.
            proc.kill()
        await self._ready.wait()
        return not self._closing and self._proc is not None and self._proc is not proc

    async def close(self) -> None:
        await self.stop("session closed")

    # -- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        self._proc = await self._spawn(self._from_process, self._from_stderr)
        self._proc.on_failure = self._failed
        self.record.pid = self._proc.pid
        self.record.state = InstanceState.running
        self._event(f"started (pid {self._proc.pid})")
        self._ready.set()
        self._supervisor = asyncio.create_task(self._supervise())

    async def stop(self, reason: str) -> None:
        if self._closing:
            return
        self._closing = True
        self._ready.set()  # wake senders so they fail fast
        proc = self._proc
        if proc is not None:
            await proc.stop(self._stop_grace_s)
        if self._supervisor is not None and self._supervisor is not asyncio.current_task():
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._supervisor
        self._finish(InstanceState.stopped, reason)

    def _finish(self, state: InstanceState, reason: str) -> None:
        if self.record.state in (InstanceState.stopped, InstanceState.failed):
            return
        self.record.state = state
        self._event(f"{state.value}: {reason}")
        self._on_gone(self)
        if self._on_closed is not None:
            self._on_closed(reason)

    async def _supervise(self) -> None:
        restarts_left = self._restart_max
        delay = self._backoff_s
        started = time.monotonic()
        while True:
            assert self._proc is not None
            code = await self._proc.wait()
            if self._closing:
                return
            if time.monotonic() - started >= self._budget_reset_s:
                restarts_left, delay = self._restart_max, self._backoff_s
            why = self._proc.failure or f"exited with code {code}"
            self.record.exit_code = code
            self._ready.clear()
            self._event(f"process {why}")
            if self._on_lost is not None:
                self._on_lost(f"MCP server instance {why}")
            if restarts_left <= 0:
                self._closing = True
                self._ready.set()  # wake senders so they fail fast
                self._finish(InstanceState.failed, f"gave up after {self._restart_max} restarts")
                return
            restarts_left -= 1
            self.record.state = InstanceState.restarting
            self._event(f"restarting in {delay:.1f}s")
            await asyncio.sleep(delay)
            delay = min(delay * 2 or self._backoff_s, self._backoff_max_s)
            if self._closing:
                return
            try:
                self._proc = await self._spawn(self._from_process, self._from_stderr)
                self._proc.on_failure = self._failed
                started = time.monotonic()
            except Exception as exc:  # a spawn failure is a crash like any other
                self._event(f"restart failed: {exc}")
                continue
            self.record.pid = self._proc.pid
            self.record.restarts += 1
            await self._replay_handshake()
            self.record.state = InstanceState.running
            self._ready.set()

    async def _replay_handshake(self) -> None:
        if self._initialize is None or self._proc is None:
            return
        request = orjson.loads(self._initialize)
        request["id"] = _REPLAY_ID
        self._replaying = True
        self._replayed.clear()
        try:
            self._proc.write(orjson.dumps(request))
            await asyncio.wait_for(self._replayed.wait(), timeout=30)
            if self._initialized is not None:
                self._proc.write(self._initialized)
        except (TimeoutError, BrokenPipeError, ConnectionResetError):
            self._event("handshake replay failed")
        finally:
            self._replaying = False

    def _remember_handshake(self, raw: bytes) -> None:
        # Only the envelope matters here; a parse failure just means "not the handshake".
        if b'"initialize"' not in raw and b'"notifications/initialized"' not in raw:
            return
        with contextlib.suppress(orjson.JSONDecodeError):
            message = orjson.loads(raw)
            if isinstance(message, dict):
                if message.get("method") == "initialize" and self._initialize is None:
                    self._initialize = raw
                elif message.get("method") == "notifications/initialized":
                    self._initialized = raw

    def _from_process(self, raw: bytes) -> None:
        if self._replaying and _REPLAY_ID.encode() in raw:
            self._replayed.set()
            return
        if self._on_message is not None:
            self._on_message(raw)

    def _failed(self, why: str) -> None:
        # The process is being killed for misbehaving: its in-flight requests cannot be
        # answered, and their callers should hear so now, not once the exit is reaped.
        # New messages wait for the restart: written now, they would meet a closed pipe
        # and end the sessions of a shared instance that is about to come back.
        self._ready.clear()
        if self._on_lost is not None:
            self._on_lost(f"MCP server instance {why}")

    def _from_stderr(self, text: str) -> None:
        self._log.add(self.record.id, "stderr", text)

    def _event(self, text: str) -> None:
        self._log.add(self.record.id, "event", text)


def new_instance_record(tenant: str, server: str, revision: str) -> Instance:
    return Instance(
        id="i-" + secrets.token_hex(6),
        tenant=tenant,
        server=server,
        revision=revision,
        state=InstanceState.starting,
        started_at=datetime.now(UTC),
    )
