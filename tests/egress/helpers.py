"""Loopback-only fixtures for egress tests: upstream HTTP(S) servers, a proxy on a unix socket, raw clients."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from smcp.egress import AddressPolicy, EgressLimits, EgressManager
from smcp.egress.addresses import IPAddress
from smcp.egress.forwarder import _serve as forwarder_serve
from smcp.egress.proxy import Resolver, system_resolver

FAST = EgressLimits(
    header_timeout_s=2, idle_timeout_s=2, connect_timeout_s=2, resolve_timeout_s=2, max_header_bytes=8192,
    max_bytes=1024 * 1024, max_connections=16,
)  # fmt: skip


class _Handler(BaseHTTPRequestHandler):
    server: Upstream  # type: ignore[assignment]
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.server.seen.append((self.command, self.path, dict(self.headers.items())))
        url = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/hello":
            self._send(200, f"hello from {self.server.name}".encode(), {"Content-Type": "text/plain"})
        elif url.path == "/headers":
            self._send(200, json.dumps(dict(self.headers.items())).encode())
        elif url.path == "/redirect":
            self._send(302, b"", {"Location": q["to"]})
        elif url.path == "/big":
            self._send(200, b"x" * int(q["n"]))
        elif url.path == "/slow":
            time.sleep(float(q.get("s", "5")))
            self._send(200, b"late")
        else:
            self._send(404, b"no such path")

    def do_POST(self) -> None:
        self.server.seen.append((self.command, self.path, dict(self.headers.items())))
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b""):
                        pass
                    break
                body += self.rfile.read(size)
                self.rfile.readline()
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self._send(200, b"echo:" + body)


class Upstream(ThreadingHTTPServer):
    """A test upstream on a loopback address, in a thread."""

    daemon_threads = True

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, name: str = "upstream",
                 tls: ssl.SSLContext | None = None) -> None:  # fmt: skip
        super().__init__((host, port), _Handler)
        self.name = name
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self.server_address[1]

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class SilentServer:
    """Accepts TCP connections and never says anything (for idle timeouts)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket()
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def stop(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


def counting_resolver(answers: dict[str, Sequence[Sequence[str]]]) -> tuple[Resolver, dict[str, int]]:
    """A resolver hook: the n-th lookup of a name gets answers[name][n] (the last one repeats)."""
    calls: dict[str, int] = {}

    async def resolve(host: str, port: int) -> list[IPAddress]:
        import ipaddress

        n = calls.get(host, 0)
        calls[host] = n + 1
        if host not in answers:
            return await system_resolver(host, port)
        seq = answers[host]
        return [ipaddress.ip_address(a) for a in seq[min(n, len(seq) - 1)]]

    return resolve, calls


@dataclass
class ProxyUnderTest:
    manager: EgressManager
    socket: Path
    tenant: str = "t1"
    instance: str = "i-test"
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    def decisions(self) -> list[dict[str, Any]]:
        path = self.manager.log_path(self.tenant)
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    async def wait_decisions(self, n: int, timeout: float = 5) -> list[dict[str, Any]]:
        """The log once it holds at least n lines (a close is logged just after the client is served)."""
        deadline = time.monotonic() + timeout
        while len(found := self.decisions()) < n and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return found

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        path = str(self.socket)
        if len(os.fsencode(path)) < 100:
            return await asyncio.open_unix_connection(path)
        dfd = os.open(self.socket.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            return await asyncio.open_unix_connection(f"/proc/self/fd/{dfd}/{self.socket.name}")
        finally:
            os.close(dfd)

    async def raw(self, data: bytes, *, timeout: float = 5) -> bytes:
        """Send bytes on a fresh connection; read everything until the proxy hangs up."""
        reader, writer = await self.open()
        try:
            writer.write(data)
            await writer.drain()
            return await asyncio.wait_for(reader.read(), timeout)
        except (ConnectionResetError, BrokenPipeError):
            return b""  # hung up on without a word
        finally:
            writer.close()

    async def connect(self, target: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
        """CONNECT; returns the stream and the proxy's response head."""
        reader, writer = await self.open()
        writer.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        return reader, writer, head

    async def forwarder(self) -> int:
        """Run the in-sandbox forwarder in this loop on 127.0.0.1:<port>; returns the port."""
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        listener.setblocking(False)
        self.tasks.append(asyncio.create_task(forwarder_serve(listener, str(self.socket))))
        await asyncio.sleep(0)
        return listener.getsockname()[1]

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.manager.aclose()


async def start_proxy(
    tmp_path: Path,
    allow: Iterable[str],
    *,
    unsafe_allow: Iterable[str] = ("127.0.0.0/8",),
    hosts: dict[str, list[str]] | None = None,
    resolver: Resolver | None = None,
    limits: EgressLimits = FAST,
    uid: int | None = None,
) -> ProxyUnderTest:
    manager = EgressManager(
        tmp_path / "egress",
        limits=limits,
        policy=AddressPolicy(unsafe_allow),
        hosts_override=hosts or {},
        resolver=resolver or system_resolver,
    )
    path = await manager.open("t1", "srv", "i-test", os.getuid() if uid is None else uid, allow)
    return ProxyUnderTest(manager, path)


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def self_signed(hostname: str, directory: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context trusting it) for `hostname`, via `cryptography`."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_path, key_path)
    client = ssl.create_default_context(cafile=str(cert_path))
    return server, client
