"""OAuth Client ID Metadata Documents: an https `client_id` names a JSON document
describing the client, which the authorization server fetches.

Fetching a URL chosen by a stranger is a server-side request forgery risk, so:
https only; the host is resolved once and every address must be global (NAT64,
6to4, IPv4-mapped forms are decoded first; Teredo and local NAT64 refused); the
connection goes to the checked address (no second lookup to rebind) with the
certificate verified against the host name; no redirects; size and time caps;
results cached. Tests inject a resolver and a transport.

Deployments whose client registry lives on a private network (and tests) may let
loopback and private-network addresses through (`allow_private_addresses`,
SMCP_CIMD_ALLOW_PRIVATE_ADDRESSES); everything else above still holds, and
link-local (cloud metadata), multicast and unspecified addresses stay refused. A
private CA is trusted through `tls_context(ca_file)` (SMCP_CIMD_CA_FILE): the fetcher
ignores the environment (SSL_CERT_FILE, proxies), since a proxy would dial an address
the guard never checked.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import certifi
import httpx
import orjson

from smcp.store.identity import Client

Resolver = Callable[[str, int], Awaitable[list[str]]]

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_BLOCKED_V6 = (
    ipaddress.ip_network("64:ff9b:1::/48"),  # local-use NAT64
    ipaddress.ip_network("2001::/32"),  # Teredo
)
_SIXTOFOUR = ipaddress.ip_network("2002::/16")
# Private networks a registry may live on when private addresses are allowed: RFC 1918,
# shared address space (RFC 6598; carrier-grade NAT, overlay networks) and IPv6 ULA.
_PRIVATE_NETS = tuple(
    ipaddress.ip_network(net) for net in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)

_MAX_AGE = re.compile(r"max-age=(\d+)")


class ClientMetadataError(Exception):
    pass


def is_public_address(address: str) -> bool:
    """True only for globally routable unicast addresses, after decoding embedded IPv4."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return is_public_address(str(ip.ipv4_mapped))
        if ip in _NAT64:
            return is_public_address(str(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)))
        if any(ip in net for net in _BLOCKED_V6):
            return False
        if ip in _SIXTOFOUR:
            return ip.sixtofour is not None and is_public_address(str(ip.sixtofour))
    return ip.is_global and not ip.is_multicast and not ip.is_reserved and not ip.is_unspecified


def is_private_address(address: str) -> bool:
    """True for loopback and private-network unicast addresses (IPv4-mapped forms decoded);
    never link-local (cloud metadata lives there), multicast or unspecified."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or any(ip in net for net in _PRIVATE_NETS)


def tls_context(ca_file: str | Path | None = None) -> ssl.SSLContext:
    """The fetcher's TLS trust: the public roots (certifi, as httpx uses), plus the CA
    certificates in `ca_file` (PEM) when given. Verification and host name checks stay on."""
    ctx = ssl.create_default_context(cafile=certifi.where())
    if ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"cannot load CA certificates from SMCP_CIMD_CA_FILE {str(ca_file)!r}: {exc}") from exc
    return ctx


def is_metadata_url(client_id: str) -> bool:
    return client_id.startswith("https://")


def check_url(url: str) -> tuple[str, int]:
    """Validate a client_id URL per the CIMD draft; returns (host, port)."""
    if len(url) > 2048:
        raise ClientMetadataError("client_id URL is too long")
    parts = urlsplit(url)
    if parts.scheme != "https":
        raise ClientMetadataError("client_id URL must use https")
    if not parts.hostname or parts.username or parts.password:
        raise ClientMetadataError("client_id URL must have a host and no credentials")
    if parts.fragment or "#" in url:
        raise ClientMetadataError("client_id URL must not have a fragment")
    if parts.path in ("", "/"):
        raise ClientMetadataError("client_id URL must have a path")
    if any(seg in (".", "..") for seg in parts.path.split("/")):
        raise ClientMetadataError("client_id URL must not contain dot segments")
    try:
        port = parts.port or 443
    except ValueError as exc:
        raise ClientMetadataError("client_id URL has a bad port") from exc
    return parts.hostname, port


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class ClientMetadataFetcher:
    def __init__(
        self,
        *,
        max_bytes: int = 5 * 1024,
        timeout_s: float = 5.0,
        cache_ttl_s: float = 600.0,
        resolver: Resolver = system_resolver,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: Any = True,
        allow_private_addresses: bool = False,
    ) -> None:
        self._max = max_bytes
        self._timeout = timeout_s
        self._ttl = cache_ttl_s
        self._resolve = resolver
        self._transport = transport
        self._verify = verify
        self._allow_private = allow_private_addresses
        self._cache: dict[str, tuple[float, Client | ClientMetadataError]] = {}

    async def get(self, url: str) -> Client:
        now = time.monotonic()
        hit = self._cache.get(url)
        if hit is not None and hit[0] > now:
            if isinstance(hit[1], ClientMetadataError):
                raise hit[1]
            return hit[1]
        try:
            client, ttl = await self._fetch(url)
        except ClientMetadataError as exc:
            self._store(url, now + min(30.0, self._ttl), exc)  # brief: a retry soon is fine, a flood is not
            raise
        self._store(url, now + ttl, client)
        return client

    def _store(self, url: str, until: float, value: Client | ClientMetadataError) -> None:
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[url] = (until, value)

    async def _fetch(self, url: str) -> tuple[Client, float]:
        host, port = check_url(url)
        try:
            async with asyncio.timeout(self._timeout):
                try:
                    ipaddress.ip_address(host.strip("[]"))
                    addresses = [host.strip("[]")]
                except ValueError:
                    addresses = await self._resolve(host, port)
                if not addresses:
                    raise ClientMetadataError(f"{host} does not resolve")
                bad = [a for a in addresses if not self.address_allowed(a)]
                if bad:
                    if self._allow_private:
                        raise ClientMetadataError(f"{host} resolves to {bad[0]}, neither a public nor a private address; refused")
                    raise ClientMetadataError(f"{host} resolves to a non-public address ({bad[0]}); refused")
                body, headers = await self._get(url, host, port, addresses[0])
        except TimeoutError as exc:
            raise ClientMetadataError(f"fetching {url} took longer than {self._timeout:g}s") from exc
        except OSError as exc:
            raise ClientMetadataError(f"cannot resolve {host}: {exc}") from exc
        client = parse_document(url, body)
        return client, self._cache_ttl(headers.get("cache-control", ""))

    def address_allowed(self, address: str) -> bool:
        return is_public_address(address) or (self._allow_private and is_private_address(address))

    async def _get(self, url: str, host: str, port: int, address: str) -> tuple[bytes, httpx.Headers]:
        parts = urlsplit(url)
        target = f"[{address}]" if ":" in address else address
        pinned = f"https://{target}:{port}{parts.path}" + (f"?{parts.query}" if parts.query else "")
        host_header = host if port == 443 else f"{host}:{port}"
        async with httpx.AsyncClient(
            transport=self._transport, verify=self._verify, follow_redirects=False, trust_env=False, timeout=self._timeout
        ) as http:
            request = http.build_request(
                "GET",
                pinned,
                headers={"host": host_header, "accept": "application/json"},
                extensions={"sni_hostname": host},
            )
            try:
                response = await http.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise ClientMetadataError(f"cannot fetch {url}: {exc}") from exc
            try:
                if response.status_code != 200:
                    raise ClientMetadataError(f"{url} answered HTTP {response.status_code}")
                declared = response.headers.get("content-length")
                if declared is not None and declared.isdigit() and int(declared) > self._max:
                    raise ClientMetadataError(f"client metadata document exceeds {self._max} bytes")
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > self._max:
                        raise ClientMetadataError(f"client metadata document exceeds {self._max} bytes")
            finally:
                await response.aclose()
        return bytes(body), response.headers

    def _cache_ttl(self, cache_control: str) -> float:
        if "no-store" in cache_control:
            return 0.0
        m = _MAX_AGE.search(cache_control)
        return min(float(m.group(1)), self._ttl) if m else self._ttl


_GRANTS = {"authorization_code", "refresh_token"}


def parse_document(url: str, body: bytes) -> Client:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ClientMetadataError("client metadata document is not JSON") from exc
    if not isinstance(doc, dict):
        raise ClientMetadataError("client metadata document is not a JSON object")
    if doc.get("client_id") != url:
        raise ClientMetadataError("client metadata document's client_id does not match its URL")
    uris = doc.get("redirect_uris")
    if not isinstance(uris, list) or not uris or not all(isinstance(u, str) for u in uris):
        raise ClientMetadataError("client metadata document needs redirect_uris")
    method = doc.get("token_endpoint_auth_method", "none")
    if method != "none":
        # private_key_jwt is not supported yet; shared secrets are forbidden for such clients.
        raise ClientMetadataError(f"token_endpoint_auth_method {method!r} is not supported for metadata documents")
    if "client_secret" in doc or "client_secret_expires_at" in doc:
        raise ClientMetadataError("a client metadata document must not contain a client secret")
    grants = doc.get("grant_types", ["authorization_code"])
    if not isinstance(grants, list) or not set(grants) <= _GRANTS:
        raise ClientMetadataError("unsupported grant_types in client metadata document")
    name = doc.get("client_name")
    if not isinstance(name, str) or not name.strip():
        name = urlsplit(url).hostname or url
    return Client(
        client_id=url,
        kind="metadata",
        client_name=name[:200],
        redirect_uris=tuple(uris),
        grant_types=tuple(grants),
        token_endpoint_auth_method="none",
        metadata={k: doc[k] for k in ("client_uri", "logo_uri") if isinstance(doc.get(k), str)},
    )
