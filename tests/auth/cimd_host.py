"""A throwaway CA and a real HTTPS server on loopback that serves a client ID metadata
document, for tests that fetch one over TLS (test_cimd.py, test_oauth_e2e.py).

The server listens on every loopback address the host name resolves to (the fetcher dials
the first answer), on one port, and records each request's path and Host header and each
TLS handshake's SNI name.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import orjson
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class TestPki:
    ca_file: Path  # the CA certificate (PEM): the trust anchor a fetcher is given
    cert_file: Path  # the server's certificate chain (leaf, then CA)
    key_file: Path  # the server's private key

    __test__ = False  # not a pytest test class


def make_pki(directory: Path, host: str = "localhost") -> TestPki:
    """A fresh CA (valid for a day) and a leaf certificate for `host` signed by it."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "SMCP throwaway test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                          key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                          key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    pki = TestPki(directory / "ca.pem", directory / "server-chain.pem", directory / "server-key.pem")
    pki.ca_file.write_bytes(ca.public_bytes(pem))
    pki.cert_file.write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    pki.key_file.write_bytes(
        leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    pki.key_file.chmod(0o600)
    return pki


@dataclass(frozen=True)
class Hit:
    path: str
    host_header: str | None


class MetadataHost:
    """`with MetadataHost(pki, document) as host:` serves `document(host.url)` as JSON at
    https://localhost:<port>/client.json; other paths answer 404."""

    PATH = "/client.json"

    def __init__(self, pki: TestPki, document: Callable[[str], dict[str, Any]], *, host: str = "localhost") -> None:
        self.pki = pki
        self.host = host
        self._document = document
        self.hits: list[Hit] = []
        self.sni: list[str | None] = []  # one per TLS handshake
        self.port = 0
        self.addresses: list[str] = []  # where it listens: every answer for `host`
        self._servers: list[ThreadingHTTPServer] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}{self.PATH}"

    def documents_served(self) -> int:
        with self._lock:
            return sum(1 for h in self.hits if h.path == self.PATH)

    def __enter__(self) -> Self:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.pki.cert_file, self.pki.key_file)

        def on_sni(_sock: Any, name: str | None, _ctx: Any) -> None:
            with self._lock:
                self.sni.append(name)

        ctx.sni_callback = on_sni
        infos = socket.getaddrinfo(self.host, 0, type=socket.SOCK_STREAM)
        self.addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        assert self.addresses, f"{self.host} does not resolve"
        for address in self.addresses:
            server = _server_class(address)((address, self.port), _handler(self))
            server.socket = ctx.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
            self.port = server.server_address[1]
            self._servers.append(server)
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)


def _server_class(address: str) -> type[ThreadingHTTPServer]:
    class Server(ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ":" in address else socket.AF_INET
        daemon_threads = True

        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # a client refusing our certificate ends its handshake abruptly: expected

    return Server


def _handler(host: MetadataHost) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with host._lock:
                host.hits.append(Hit(self.path, self.headers.get("host")))
            if self.path != host.PATH:
                self.send_error(404)
                return
            body = orjson.dumps(host._document(host.url))
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
