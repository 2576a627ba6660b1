"""The egress proxy for one sandboxed instance: HTTP CONNECT and plain absolute-form HTTP.

One `EgressProxy` serves one unix socket, and that socket is bind-mounted into
exactly one sandbox, so every connection it accepts belongs to one (tenant,
server, instance) and is judged against that server's own allowlist. For each
request it:

1. checks the peer's host uid (SO_PEERCRED) is the tenant's sandbox uid;
2. reads the request head within `header_timeout_s` and `max_header_bytes`;
3. reads the target strictly (an IP in any spelling is an IP, never a name) and
   matches it against the allowlist, port included;
4. resolves a name once (or takes the literal), refuses if *any* answer is not a
   public address (`AddressPolicy`), and dials the checked address itself — there
   is no second lookup for a rebinding DNS server to answer differently;
5. relays bytes with an idle timeout and a per-connection byte cap.

Plain HTTP gets one request per connection (`Connection: close` both ways), so
every request — a redirect the client follows included — arrives on a new
connection and is checked again. Each decision is logged (see `log.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from smcp.egress import http1
from smcp.egress.addresses import AddressPolicy, IPAddress
from smcp.egress.allowlist import Allowlist, Target, parse_authority
from smcp.egress.log import DecisionLog

Resolver = Callable[[str, int], Awaitable[Sequence[IPAddress]]]
Connector = Callable[[IPAddress, int, int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]

_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class EgressLimits:
    header_timeout_s: float = 10.0
    idle_timeout_s: float = 60.0
    connect_timeout_s: float = 10.0
    resolve_timeout_s: float = 5.0
    max_header_bytes: int = 32 * 1024
    max_bytes: int = 256 * 1024 * 1024
    max_connections: int = 64


@dataclass(frozen=True, slots=True)
class Owner:
    tenant: str
    server: str
    instance: str
    uid: int


async def system_resolver(host: str, port: int) -> list[IPAddress]:
    """getaddrinfo, once; every address it returns, in its order, without duplicates."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    out: list[IPAddress] = []
    for family, _type, _proto, _name, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        text = sockaddr[0]
        if family == socket.AF_INET6 and sockaddr[3]:
            text = f"{text}%{sockaddr[3]}"
        ip = ipaddress.ip_address(text)
        if ip not in out:
            out.append(ip)
    return out


async def direct_connector(ip: IPAddress, port: int, limit: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    # AI_NUMERICHOST: the checked address is dialled as is; nothing is looked up again.
    return await asyncio.open_connection(str(ip), port, flags=socket.AI_NUMERICHOST, limit=limit)


class _Stop(Exception):
    """Ends a relay: `reason` goes into the log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class _Refusal:
    status: int
    public: str  # what the sandbox is told
    reason: str  # what the log records
    ip: IPAddress | None = None


class _Flow:
    """Byte counts and activity shared by both directions of one connection."""

    def __init__(self, limits: EgressLimits) -> None:
        self.limits = limits
        self.up = 0
        self.down = 0
        self.last = time.monotonic()

    def count(self, up: bool, n: int) -> None:
        if self.up + self.down + n > self.limits.max_bytes:
            raise _Stop(f"byte cap of {self.limits.max_bytes} reached")
        if up:
            self.up += n
        else:
            self.down += n
        self.last = time.monotonic()

    async def read(self, make: Callable[[], Awaitable[bytes]]) -> bytes:
        """Await a read, giving up once *neither* direction has moved for idle_timeout_s."""
        while True:
            remaining = self.last + self.limits.idle_timeout_s - time.monotonic()
            if remaining <= 0:
                raise _Stop(f"idle for {self.limits.idle_timeout_s:g}s")
            try:
                return await asyncio.wait_for(make(), remaining)
            except TimeoutError:
                continue
            except asyncio.LimitOverrunError as exc:
                raise _Stop("line too long") from exc
            except (ConnectionError, OSError) as exc:
                raise _Stop(f"connection lost: {type(exc).__name__}") from exc


_REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class EgressProxy:
    def __init__(
        self,
        owner: Owner,
        allowlist: Allowlist,
        *,
        policy: AddressPolicy,
        limits: EgressLimits,
        log: DecisionLog,
        resolver: Resolver = system_resolver,
        connector: Connector = direct_connector,
        hosts_override: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.owner = owner
        self.allowlist = allowlist
        self.policy = policy
        self.limits = limits
        self._log = log
        self._resolver = resolver
        self._connector = connector
        self._hosts = {k.lower().rstrip("."): list(v) for k, v in (hosts_override or {}).items()}
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- lifecycle ----------------------------------------------------------------------
    async def serve(self, sock: socket.socket) -> None:
        """Start accepting on a bound, listening unix socket."""
        self._server = await asyncio.start_unix_server(self._accept, sock=sock, limit=self.limits.max_header_bytes)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1)

    @property
    def active(self) -> int:
        return len(self._tasks)

    # -- one connection ---------------------------------------------------------------------
    def _record(self, decision: str, *, method: str = "", target: str = "", ip: IPAddress | None = None,
                reason: str = "", flow: _Flow | None = None, **extra: Any) -> None:  # fmt: skip
        up, down = (flow.up, flow.down) if flow else (0, 0)
        self._log.write(
            self.owner.tenant,
            server=self.owner.server,
            instance=self.owner.instance,
            method=method,
            target=target,
            ip=str(ip) if ip is not None else None,
            decision=decision,
            reason=reason,
            bytes=up + down,
            bytes_up=up,
            bytes_down=down,
            **extra,
        )

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._handle(reader, writer)
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # one bad connection must never take the listener down
            with contextlib.suppress(Exception):
                self._record("deny", reason=f"internal error: {type(exc).__name__}: {exc}")
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1)

    def _peer_uid(self, writer: asyncio.StreamWriter) -> int | None:
        sock = writer.get_extra_info("socket")
        try:
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        except OSError:
            return None
        return struct.unpack("3i", creds)[1]

    async def _respond(self, writer: asyncio.StreamWriter, status: int, message: str) -> None:
        body = f"smcp egress: {message}\n".encode()
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\nX-Smcp-Egress: refused\r\n\r\n"
        ).encode()
        with contextlib.suppress(ConnectionError, OSError):
            writer.write(head + body)
            await asyncio.wait_for(writer.drain(), 5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        uid = self._peer_uid(writer)
        if uid != self.owner.uid:
            # Not this sandbox's process: say nothing and hang up.
            self._record("deny", reason=f"peer uid {uid} is not the sandbox uid {self.owner.uid}")
            return
        if len(self._tasks) > self.limits.max_connections:
            self._record("deny", reason=f"more than {self.limits.max_connections} concurrent connections")
            await self._respond(writer, 503, "too many concurrent connections")
            return
        try:
            raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.limits.header_timeout_s)
        except TimeoutError:
            self._record("deny", reason=f"request head not received within {self.limits.header_timeout_s:g}s")
            await self._respond(writer, 408, "request head timed out")
            return
        except asyncio.LimitOverrunError:
            self._record("deny", reason=f"request head over {self.limits.max_header_bytes} bytes")
            await self._respond(writer, 431, "request head too large")
            return
        except (asyncio.IncompleteReadError, ConnectionError):
            return  # the client left before asking for anything
        try:
            head = http1.parse_request(raw)
        except http1.BadRequest as exc:
            self._record("deny", reason=f"malformed request: {exc}")
            await self._respond(writer, 400, str(exc))
            return
        method = head.start[0]
        if method == "CONNECT":
            await self._connect(head, reader, writer)
        else:
            await self._forward(head, reader, writer)

    async def _check(self, target: Target) -> list[IPAddress] | _Refusal:
        match = self.allowlist.match(target)
        if not match.allowed:
            return _Refusal(403, "target is not in this server's egress allowlist", match.reason)
        if target.ip is not None:
            addresses: Sequence[IPAddress] = [target.ip]
        elif target.host in self._hosts:
            addresses = [ipaddress.ip_address(a) for a in self._hosts[target.host]]
        else:
            try:
                addresses = await asyncio.wait_for(
                    self._resolver(target.host, target.port), self.limits.resolve_timeout_s
                )
            except TimeoutError:
                return _Refusal(504, "name resolution timed out", f"resolving {target.host} timed out")
            except (OSError, ValueError) as exc:
                return _Refusal(502, "name did not resolve", f"resolving {target.host} failed: {exc}")
        if not addresses:
            return _Refusal(502, "name did not resolve", f"{target.host} has no addresses")
        # Every answer must be public: a name that mixes public and private answers is refused whole.
        for ip in addresses:
            why = self.policy.refusal(ip)
            if why is not None:
                return _Refusal(403, "target address is not public", f"{target.host} → {ip}: {why}", ip)
        return list(addresses)

    async def _dial(
        self, addresses: list[IPAddress], port: int
    ) -> tuple[IPAddress, asyncio.StreamReader, asyncio.StreamWriter] | _Refusal:
        failures: list[str] = []
        timed_out = False
        for ip in addresses:
            try:
                r, w = await asyncio.wait_for(
                    self._connector(ip, port, self.limits.max_header_bytes), self.limits.connect_timeout_s
                )
                return ip, r, w
            except TimeoutError:
                timed_out = True
                failures.append(f"{ip}: timed out")
            except OSError as exc:
                failures.append(f"{ip}: {exc.strerror or exc}")
        status = 504 if timed_out else 502
        return _Refusal(status, "upstream unreachable", "connect failed: " + "; ".join(failures), addresses[0])

    async def _open(
        self, method: str, target: Target, writer: asyncio.StreamWriter
    ) -> tuple[IPAddress, asyncio.StreamReader, asyncio.StreamWriter] | None:
        """Check, resolve, dial; on refusal answer the client, log, and return None."""
        checked = await self._check(target)
        if isinstance(checked, _Refusal):
            self._record("deny", method=method, target=target.authority, ip=checked.ip, reason=checked.reason)
            await self._respond(writer, checked.status, checked.public)
            return None
        dialled = await self._dial(checked, target.port)
        if isinstance(dialled, _Refusal):
            self._record("error", method=method, target=target.authority, ip=dialled.ip, reason=dialled.reason)
            await self._respond(writer, dialled.status, dialled.public)
            return None
        ip = dialled[0]
        self._record("allow", method=method, target=target.authority, ip=ip, reason="allowlisted")
        return dialled

    # -- CONNECT ----------------------------------------------------------------------------
    async def _connect(self, head: http1.Head, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            target = parse_authority(head.start[1], default_port=None)
        except ValueError as exc:
            self._record("deny", method="CONNECT", target=head.start[1][:200], reason=f"malformed target: {exc}")
            await self._respond(writer, 400, f"malformed CONNECT target: {exc}")
            return
        opened = await self._open("CONNECT", target, writer)
        if opened is None:
            return
        ip, ur, uw = opened
        flow = _Flow(self.limits)
        reason = "closed"
        try:
            writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            await writer.drain()
            reason = await self._relay([self._pump(reader, uw, flow, up=True), self._pump(ur, writer, flow, up=False)])
        except asyncio.CancelledError:
            reason = "instance stopped"
            raise
        except (ConnectionError, OSError) as exc:
            reason = f"connection lost: {type(exc).__name__}"
        finally:
            uw.close()
            self._record("close", method="CONNECT", target=target.authority, ip=ip, reason=reason, flow=flow)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, flow: _Flow, *, up: bool) -> None:
        while True:
            data = await flow.read(lambda: src.read(_CHUNK))
            if not data:
                # Half-close: pass the EOF on and keep the other direction open.
                with contextlib.suppress(OSError, RuntimeError):
                    if dst.can_write_eof():
                        dst.write_eof()
                return
            flow.count(up, len(data))
            try:
                dst.write(data)
                await dst.drain()
            except (ConnectionError, OSError) as exc:
                raise _Stop(f"connection lost: {type(exc).__name__}") from exc

    async def _relay(self, coros: list[Awaitable[None]], *, until_first_done: bool = False) -> str:
        """Run the directions of one connection and return why it ended.

        A _Stop in any direction ends them all. Otherwise a tunnel runs until both
        directions have seen EOF; a plain request (`until_first_done`, with the
        response relay listed first) ends when the response has been relayed.
        """
        tasks = [asyncio.ensure_future(c) for c in coros]
        try:
            pending = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    exc = task.exception()
                    if isinstance(exc, _Stop):
                        return exc.reason
                    if exc is not None:
                        raise exc
                if until_first_done and tasks[0].done():
                    break
            return "closed"
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- plain HTTP -------------------------------------------------------------------------
    async def _forward(self, head: http1.Head, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        method, url, version = head.start
        try:
            target, path = _split_absolute_url(url)
            framing = http1.body_framing(head)
        except (ValueError, http1.BadRequest) as exc:
            self._record("deny", method=method, target=_authority_hint(url), reason=f"malformed request: {exc}")
            await self._respond(writer, 400, str(exc))
            return
        opened = await self._open(method, target, writer)
        if opened is None:
            return
        ip, ur, uw = opened
        dropped = http1.HOP_BY_HOP | http1.connection_tokens(head) | {"host"}
        headers = [("Host", _host_header(target))]
        headers += [(n, v) for n, v in head.headers if n.lower() not in dropped]
        if framing == "chunked":
            headers.append(("Transfer-Encoding", "chunked"))
        headers.append(("Connection", "close"))
        flow = _Flow(self.limits)
        reason = "closed"
        try:
            request_head = http1.serialize((method, path, version), headers)
            flow.count(True, len(request_head))
            uw.write(request_head)
            await uw.drain()
            reason = await self._relay(
                [self._relay_response(ur, writer, flow), self._send_body(reader, uw, framing, flow)],
                until_first_done=True,
            )
        except asyncio.CancelledError:
            reason = "instance stopped"
            raise
        except _Stop as exc:
            reason = exc.reason
        except (ConnectionError, OSError) as exc:
            reason = f"connection lost: {type(exc).__name__}"
        finally:
            uw.close()
            self._record("close", method=method, target=target.authority, ip=ip, reason=reason, flow=flow)

    async def _send_body(
        self, reader: asyncio.StreamReader, uw: asyncio.StreamWriter, framing: int | str | None, flow: _Flow
    ) -> None:
        """Forward exactly the request's body, then stop reading the client: anything after
        it would be a second request, which must arrive on a new, separately checked connection."""

        async def put(data: bytes) -> None:
            flow.count(True, len(data))
            uw.write(data)
            await uw.drain()

        async def exactly(n: int) -> bytes:
            try:
                return await flow.read(lambda: reader.readexactly(n))
            except asyncio.IncompleteReadError as exc:
                raise _Stop("client closed mid-body") from exc

        if framing is None:
            return
        if isinstance(framing, int):
            remaining = framing
            while remaining:
                data = await flow.read(lambda n=min(_CHUNK, remaining): reader.read(n))
                if not data:
                    raise _Stop("client closed mid-body")
                remaining -= len(data)
                await put(data)
            return
        while True:  # chunked
            try:
                line = await flow.read(lambda: reader.readuntil(b"\r\n"))
            except asyncio.IncompleteReadError as exc:
                raise _Stop("client closed mid-body") from exc
            try:
                size = http1.parse_chunk_size(line)
            except http1.BadRequest as exc:
                raise _Stop(str(exc)) from exc
            await put(line)
            if size == 0:
                while True:  # trailers, up to the empty line
                    try:
                        trailer = await flow.read(lambda: reader.readuntil(b"\r\n"))
                    except asyncio.IncompleteReadError as exc:
                        raise _Stop("client closed mid-body") from exc
                    await put(trailer)
                    if trailer == b"\r\n":
                        return
            while size:
                data = await exactly(min(_CHUNK, size))
                size -= len(data)
                await put(data)
            if await exactly(2) != b"\r\n":
                raise _Stop("malformed chunk")
            await put(b"\r\n")

    async def _relay_response(self, ur: asyncio.StreamReader, writer: asyncio.StreamWriter, flow: _Flow) -> None:
        while True:
            try:
                raw = await flow.read(lambda: ur.readuntil(b"\r\n\r\n"))
            except asyncio.IncompleteReadError as exc:
                raise _Stop("upstream closed before responding") from exc
            try:
                response = http1.parse_response(raw)
            except http1.BadRequest as exc:
                raise _Stop(str(exc)) from exc
            status = int(response.start[1])
            if 100 <= status < 200 and status != 101:
                flow.count(False, len(raw))
                writer.write(raw)  # interim (100 Continue): pass on, the real head follows
                await writer.drain()
                continue
            break
        dropped = {"connection", "keep-alive", "proxy-connection"} | http1.connection_tokens(response)
        headers = [(n, v) for n, v in response.headers if n.lower() not in dropped] + [("Connection", "close")]
        out = http1.serialize(response.start, headers)
        flow.count(False, len(out))
        writer.write(out)
        await writer.drain()
        # Connection: close was asked of the upstream, so its EOF ends the body.
        while True:
            data = await flow.read(lambda: ur.read(_CHUNK))
            if not data:
                return
            flow.count(False, len(data))
            writer.write(data)
            await writer.drain()


def _split_absolute_url(url: str) -> tuple[Target, str]:
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("a proxy request needs an absolute http:// URL")
    if scheme.lower() == "https":
        raise ValueError("https goes through CONNECT, not as a plain proxy request")
    if scheme.lower() != "http":
        raise ValueError(f"scheme {scheme!r} is not proxied")
    cut = len(rest)
    for ch in "/?#":
        i = rest.find(ch)
        if i >= 0:
            cut = min(cut, i)
    authority, path = rest[:cut], rest[cut:]
    if "#" in path:
        raise ValueError("fragments are not sent to servers")
    if "\\" in path:
        raise ValueError("backslash in the path")
    if not path.startswith("/"):
        path = "/" + path
    return parse_authority(authority, default_port=80), path


def _authority_hint(url: str) -> str:
    return url.partition("://")[2].split("/", 1)[0][:200]


def _host_header(target: Target) -> str:
    host = f"[{target.host}]" if isinstance(target.ip, ipaddress.IPv6Address) else target.host
    return host if target.port == 80 else f"{host}:{target.port}"
