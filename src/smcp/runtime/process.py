"""One sandboxed child speaking newline-delimited JSON-RPC on stdin/stdout."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable

from smcp.runtime.cgroups import Cgroup, spawn_kwargs
from smcp.runtime.interface import ChannelBusy
from smcp.runtime.sandbox import Launch

log = logging.getLogger(__name__)

StdoutHandler = Callable[[bytes], None]
StderrHandler = Callable[[str], None]
# Called once when the process has exited, with its exit code; may return why it died
# (e.g. "killed: out of memory (limit 256 MiB)"), which becomes `failure`.
ExitHandler = Callable[[int], "str | None"]


class _StdoutLines(asyncio.subprocess.SubprocessStreamProtocol):
    """The child's stdout, framed into lines where the pipe's data arrives.

    A message then costs no reader task and no extra pass of the event loop before it
    reaches the gateway (a StreamReader wakes a task, which runs on the next pass).
    stdin and stderr stay the usual streams.
    """

    def __init__(
        self, max_bytes: int, loop: asyncio.AbstractEventLoop, on_line: Callable[[bytes], None], on_overflow: Callable[[], None]
    ) -> None:
        super().__init__(limit=max_bytes + 1, loop=loop)
        self._max = max_bytes
        self._on_line = on_line
        self._on_overflow = on_overflow
        self._partial = b""
        self._overflowed = False
        self.stdout_done: asyncio.Future[None] = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self.stdout = None  # framed here, not through a StreamReader

    def pipe_data_received(self, fd: int, data: bytes | bytearray) -> None:
        if fd != 1:
            super().pipe_data_received(fd, data)
            return
        if self._overflowed:
            return  # the process is being killed; keep reading to EOF so its exit is seen
        buffer = self._partial + data if self._partial else bytes(data)
        start = 0
        while (end := buffer.find(b"\n", start)) >= 0:
            if end - start > self._max:
                self._overflow()
                return
            line = buffer[start:end].strip()
            start = end + 1
            if line:
                self._on_line(line)
        self._partial = buffer[start:]
        if len(self._partial) > self._max:
            self._overflow()

    def _overflow(self) -> None:
        self._overflowed = True
        self._partial = b""
        self._on_overflow()

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 1:
            rest, self._partial = self._partial.strip(), b""
            if rest and not self._overflowed:
                self._on_line(rest)
            if not self.stdout_done.done():
                self.stdout_done.set_result(None)
        super().pipe_connection_lost(fd, exc)
        if fd == 0 and exc is not None:
            # Python 3.11 keeps a broken stdin's error in a future nobody awaits and logs
            # it as an error when collected; the writer is told instead (write()).
            closed = getattr(self, "_stdin_closed", None)
            if isinstance(closed, asyncio.Future) and closed.done():
                closed.exception()


# How long an exited process's pipes may take to hand over what it wrote.
_PIPES_DRAIN_S = 2.0


class StdioProcess:
    """Owns the OS process: spawn, line framing, stderr capture, whole-tree kill.

    The child runs in a pid namespace whose init dies with bwrap, so killing bwrap's
    process group takes every descendant with it.
    """

    def __init__(
        self,
        launch: Launch,
        *,
        uid: int,
        gid: int,
        max_message_bytes: int,
        on_stdout: StdoutHandler,
        max_queued_bytes: int = 16 * 1024 * 1024,
        on_stderr: StderrHandler,
        cgroup: Cgroup | None = None,
        on_exit: ExitHandler | None = None,
        sched_batch: bool = True,
        cpus: frozenset[int] | None = None,
    ) -> None:
        self._launch = launch
        self._cgroup = cgroup
        self._on_exit = on_exit
        self._sched_batch = sched_batch
        self._cpus = cpus
        self._exit_noted = False
        self._uid = uid
        self._gid = gid
        self._max = max_message_bytes
        self._on_stdout = on_stdout
        self._on_stderr = on_stderr
        self._proc: asyncio.subprocess.Process | None = None
        self._stderr_pump: asyncio.Task[None] | None = None
        self._stdout_done: asyncio.Future[None] | None = None
        self._max_queued = max_queued_bytes
        self.failure: str | None = None
        # Told at once when the process is being killed for misbehaving, so callers
        # need not wait for the exit to be noticed.
        self.on_failure: Callable[[str], None] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    async def start(self) -> None:
        # Joins the cgroup and drops to uid:gid between fork and exec (see cgroups.py).
        spawn, release = spawn_kwargs(self._uid, self._gid, self._cgroup, batch=self._sched_batch, cpus=self._cpus)
        loop = asyncio.get_running_loop()
        try:
            transport, protocol = await loop.subprocess_exec(
                lambda: _StdoutLines(self._max, loop, self._line, self._overflow),
                *self._launch.argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=self._launch.pass_fds,
                env={},
                start_new_session=True,
                **spawn,
            )
        finally:
            self._launch.close()
            release()
        self._proc = asyncio.subprocess.Process(transport, protocol, loop)
        self._stdout_done = protocol.stdout_done
        assert self._proc.stderr
        self._stderr_pump = asyncio.create_task(self._pump_stderr(self._proc.stderr))

    def _line(self, line: bytes) -> None:
        try:
            self._on_stdout(line)
        except Exception:  # noqa: BLE001 — a handler's bug must not close the pipe under the instance
            log.exception("handling a message from the MCP server failed")

    def _overflow(self) -> None:
        self.failure = f"sent a message over the {self._max}-byte limit"
        self.kill()
        if self.on_failure is not None:
            self.on_failure(self.failure)

    async def _pump_stderr(self, stream: asyncio.StreamReader) -> None:
        while True:
            try:
                line = await stream.readuntil(b"\n")
            except asyncio.IncompleteReadError as exc:
                if exc.partial:
                    self._on_stderr(exc.partial.decode("utf-8", "replace").rstrip())
                return
            except asyncio.LimitOverrunError as exc:
                # An over-long stderr line is logged in pieces, never fatal.
                chunk = await stream.readexactly(exc.consumed)
                self._on_stderr(chunk.decode("utf-8", "replace"))
                continue
            self._on_stderr(line.decode("utf-8", "replace").rstrip("\r\n"))

    def write(self, raw: bytes) -> None:
        """Queue one message for the child's stdin. Never waits: the transport writes
        what the pipe takes and keeps the rest, up to `max_queued_bytes` (ChannelBusy
        past it). Waiting for a child that does not read would hold the caller, and
        every caller behind it, for as long as the child pleases."""
        proc = self._proc
        if proc is None or proc.stdin is None or proc.returncode is not None:
            raise BrokenPipeError("process is not running")
        stdin = proc.stdin
        transport = stdin.transport
        # The child may be gone before its exit is reaped. The write that meets its
        # closed pipe fails without a word: the transport just closes (asyncio and
        # uvloop alike); later writes are dropped (asyncio) or raise RuntimeError
        # (uvloop). Either way the message did not arrive, and the caller hears it as
        # a broken pipe: it must neither lose the message silently nor fail with a 500.
        if transport.is_closing():
            raise BrokenPipeError("the process's stdin is closed")
        queued = transport.get_write_buffer_size()
        if queued and queued + len(raw) + 1 > self._max_queued:
            raise ChannelBusy(f"the MCP server is not reading its input ({queued} bytes wait for it)")
        try:
            stdin.write(raw + b"\n")
        except RuntimeError as exc:
            raise BrokenPipeError(str(exc)) from exc
        if transport.is_closing():
            raise BrokenPipeError("the process's stdin closed under this message")

    async def wait(self) -> int:
        assert self._proc is not None
        code = await self._proc.wait()
        self._exited(code)
        # Let the pipes hand over what the child wrote before it exited, for a while: a
        # pipe a grandchild still holds open is not waited for. Not wait_for(gather(…)):
        # cancelled (at shutdown, or by its timeout) that leaves a gathering future
        # whose CancelledError nobody retrieves, and asyncio logs it as an error.
        pipes = [p for p in (self._stdout_done, self._stderr_pump) if p is not None]
        try:
            if pipes:
                await asyncio.wait(pipes, timeout=_PIPES_DRAIN_S)
        finally:
            for pipe in pipes:
                if not pipe.done():
                    pipe.cancel()
                elif not pipe.cancelled() and (failure := pipe.exception()) is not None:
                    log.warning("reading the MCP server's output failed: %r", failure)
        return code

    def kill(self) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    async def stop(self, grace_s: float) -> None:
        """Close stdin (the MCP stdio way to ask for exit), then kill after the grace period."""
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is not None:
            self._exited(proc.returncode)
            return
        if proc.stdin is not None:
            with contextlib.suppress(Exception):
                proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), timeout=grace_s)
        except TimeoutError:
            self.kill()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), timeout=5)
        self._exited(proc.returncode if proc.returncode is not None else -1)

    def _exited(self, code: int) -> None:
        if self._exit_noted:
            return
        self._exit_noted = True
        if self._on_exit is not None:
            note = self._on_exit(code)
            if note and not self.failure:
                self.failure = note
