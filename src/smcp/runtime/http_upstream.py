"""Runtime kind `http`: a remote Streamable HTTP MCP server as the upstream of a server.

The gateway dials out with the tenant's configured credentials, never the client's
token. Each channel is one upstream conversation: for the legacy era it holds the
upstream's own Mcp-Session-Id, opens the upstream's GET stream for server-initiated
messages, and re-initializes transparently when the upstream forgets the session
(HTTP 404), replaying the recorded handshake before resending. Addresses are checked
like egress from a sandbox: the upstream must resolve to public addresses only.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import socket
from urllib.parse import urlsplit
from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson
from aiohttp.abc import AbstractResolver, ResolveResult

from smcp.domain import InvalidSpec, Revision
from smcp.egress.addresses import AddressPolicy, parse_ip_literal
from smcp.protocol.modern import mirrored_params
from smcp.runtime.interface import ChannelClosed, ClosedHandler, LostHandler, MessageHandler
from smcp.runtime.upstream_reading import MessageTooLarge, SseCursor, read_capped, sse_data

log = logging.getLogger("smcp.runtime.http")

_SECRET_REF = re.compile(r"\{secret:([A-Za-z_][A-Za-z0-9_]{0,127})\}")
_MODERN_META_VERSION = "io.modelcontextprotocol/protocolVersion"
_NAMED = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}


class UpstreamRefused(Exception):
    pass


class CheckedResolver(AbstractResolver):
    """Resolve once, keep only addresses the policy allows: aiohttp dials what was checked."""

    def __init__(self, policy: AddressPolicy) -> None:
        self._policy = policy

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_UNSPEC) -> list[ResolveResult]:
        literal = parse_ip_literal(host)
        if literal is not None:
            addresses = [literal]
        else:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM)
            addresses = []
            for info in infos:
                ip = parse_ip_literal(str(info[4][0]))
                if ip is not None and ip not in addresses:
                    addresses.append(ip)
        allowed, refused = [], []
        for ip in addresses:
            why = self._policy.refusal(ip)
            (refused if why else allowed).append(why or ip)
        if not allowed:
            raise UpstreamRefused(f"upstream {host} resolves to no public address ({'; '.join(map(str, refused)) or 'none'})")
        return [
            ResolveResult(
                hostname=host,
                host=str(ip),
                port=port,
                family=socket.AF_INET6 if ip.version == 6 else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for ip in allowed
        ]

    async def close(self) -> None:
        return None


def upstream_headers(configured: Mapping[str, str], secrets: Mapping[str, bytes]) -> dict[str, str]:
    """Header values with `{secret:NAME}` filled from the tenant's secrets."""

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in secrets:
            raise InvalidSpec(f"upstream header refers to secret {name!r}, which is not available")
        return secrets[name].decode()

    return {k: _SECRET_REF.sub(fill, v) for k, v in configured.items()}


def secret_refs(configured: Mapping[str, str]) -> set[str]:
    return {m.group(1) for v in configured.values() for m in _SECRET_REF.finditer(v)}


class HttpChannel:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        headers: dict[str, str],
        *,
        instance_id: str,
        timeout_s: float,
        max_message_bytes: int,
    ) -> None:
        self._http = session
        # What one message may weigh once decompressed, as for a hosted process's
        # line: a tenant picks the URL, so what comes back is hostile input.
        self._max = max_message_bytes
        self._url = url
        self._headers = headers
        self._id = instance_id
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=timeout_s)
        self._on_message: MessageHandler | None = None
        self._on_closed: ClosedHandler | None = None
        self._session_id: str | None = None
        self._version: str | None = None
        self._initialize: dict[str, Any] | None = None
        self._initialized = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._get_task: asyncio.Task[None] | None = None
        self._reinit = asyncio.Lock()
        self._closed = False
        # tool → {header: property path}: what a modern upstream expects mirrored into
        # Mcp-Param-* headers, learnt from the tools/list answers passing through.
        self._mirrored: dict[str, dict[str, tuple[str, ...]]] = {}
        # Modern-era requests in flight, by JSON id: cancelling one closes its stream.
        self._modern_calls: dict[bytes, asyncio.Task[None]] = {}

    @property
    def instance_id(self) -> str:
        return self._id

    def attach(self, on_message: MessageHandler, on_closed: ClosedHandler, on_lost: LostHandler | None = None) -> None:
        self._on_message = on_message
        self._on_closed = on_closed

    async def send(self, raw: bytes) -> None:
        if self._closed:
            raise ChannelClosed("upstream channel closed")
        message = orjson.loads(raw)
        method = message.get("method")
        if method == "initialize" and "id" in message:
            self._initialize = message
        if method == "notifications/cancelled" and "id" not in message:
            params = message.get("params") if isinstance(message.get("params"), dict) else {}
            call = self._modern_calls.pop(orjson.dumps(params.get("requestId")), None)
            if call is not None:
                # A modern request is cancelled by closing its response stream, as its
                # client closed ours; this era has no such notification over HTTP.
                call.cancel()
                return
        task = asyncio.create_task(self._post(message, raw, retry=True))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if "id" in message and isinstance(method, str) and _modern_version(message) is not None:
            key = orjson.dumps(message["id"])
            self._modern_calls[key] = task
            task.add_done_callback(functools.partial(self._call_done, key))

    def _call_done(self, key: bytes, task: asyncio.Task[None]) -> None:
        if self._modern_calls.get(key) is task:
            del self._modern_calls[key]

    def _request_headers(self, message: dict[str, Any]) -> dict[str, str]:
        headers = {
            **self._headers,
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
        }
        params = message.get("params") if isinstance(message.get("params"), dict) else {}
        modern_version = _modern_version(message)
        if modern_version is not None:
            headers["MCP-Protocol-Version"] = modern_version
            method = message.get("method")
            if isinstance(method, str):
                headers["Mcp-Method"] = method
                field = _NAMED.get(method)
                if field and isinstance(params.get(field), str):
                    headers["Mcp-Name"] = _header_value(params[field])
                if method == "tools/call":
                    headers.update(self._param_headers(params))
        else:
            if self._version:
                headers["MCP-Protocol-Version"] = self._version
            if self._session_id:
                headers["Mcp-Session-Id"] = self._session_id
        return headers

    async def _post(self, message: dict[str, Any], raw: bytes, *, retry: bool) -> None:
        is_request = "id" in message and "method" in message
        try:
            async with self._http.post(self._url, data=raw, headers=self._request_headers(message), timeout=self._timeout, allow_redirects=False) as r:
                if r.status == 404 and self._session_id and message.get("method") != "initialize" and retry:
                    await self._recover()
                    await self._post(message, raw, retry=False)
                    return
                if message.get("method") == "initialize" and r.status == 200:
                    self._session_id = r.headers.get("Mcp-Session-Id")
                if r.status == 202:
                    if message.get("method") == "notifications/initialized":
                        self._initialized = True
                        self._open_get_stream()
                    return
                ctype = r.headers.get("Content-Type", "")
                if ctype.startswith("text/event-stream"):
                    cursor = SseCursor()
                    answered = False
                    async for data in sse_data(r.content, self._max, cursor):
                        answered = answered or (is_request and self._answers(data, message))
                        self._deliver(data, message)
                    if is_request and not answered:
                        await self._resume(message, cursor)
                    return
                body = await read_capped(r.content, self._max)
                if body and ctype.startswith("application/json"):
                    if is_request and not self._answers(body, message):
                        self._fail(message, "upstream answered with invalid JSON-RPC")
                        return
                    self._deliver(body, message)
                    return
                if is_request:
                    self._fail(message, f"upstream answered HTTP {r.status} ({ctype or 'no content type'})")
        except (aiohttp.ClientError, UpstreamRefused, TimeoutError, OSError) as exc:
            if is_request:
                self._fail(message, f"upstream unreachable: {exc}")
        except MessageTooLarge as exc:
            if is_request:
                self._fail(message, str(exc))

    def _param_headers(self, params: dict[str, Any]) -> dict[str, str]:
        out: dict[str, str] = {}
        arguments = params.get("arguments")
        for name, path in self._mirrored.get(str(params.get("name")), {}).items():
            value: Any = arguments
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            if isinstance(value, bool):
                out[f"Mcp-Param-{name}"] = "true" if value else "false"
            elif isinstance(value, int):
                out[f"Mcp-Param-{name}"] = str(value)
            elif isinstance(value, str):
                out[f"Mcp-Param-{name}"] = _header_value(value)
        return out

    def _learn(self, data: bytes) -> None:
        if b'"tools"' not in data:
            return
        with contextlib.suppress(orjson.JSONDecodeError, AttributeError):
            tools = orjson.loads(data).get("result", {}).get("tools")
            if isinstance(tools, list):
                for tool in tools:
                    if isinstance(tool, dict) and isinstance(tool.get("name"), str):
                        self._mirrored[tool["name"]] = mirrored_params(tool)

    @staticmethod
    def _answers(data: bytes, request: dict[str, Any]) -> bool:
        if b'"method"' in data[:200] and b'"result"' not in data and b'"error"' not in data:
            return False
        with contextlib.suppress(orjson.JSONDecodeError, AttributeError):
            message = orjson.loads(data)
            return "method" not in message and message.get("id") == request.get("id")
        return False

    async def _resume(self, request: dict[str, Any], cursor: SseCursor, attempts: int = 8) -> None:
        """The upstream closed a request's stream before answering (legacy polling):
        reconnect with GET and Last-Event-ID, as its `retry` hint says, until it does."""
        for _ in range(attempts):
            if cursor.last_id is None or self._closed:
                break
            await asyncio.sleep((cursor.retry_ms if cursor.retry_ms is not None else 1000) / 1000)
            headers = {**self._headers, "Accept": "text/event-stream", "Last-Event-ID": cursor.last_id}
            if self._session_id:
                headers["Mcp-Session-Id"] = self._session_id
            if self._version:
                headers["MCP-Protocol-Version"] = self._version
            try:
                async with self._http.get(self._url, headers=headers, timeout=self._timeout, allow_redirects=False) as r:
                    if r.status != 200:
                        break
                    async for data in sse_data(r.content, self._max, cursor):
                        done = self._answers(data, request)
                        self._deliver(data, request)
                        if done:
                            return
            except (aiohttp.ClientError, UpstreamRefused, TimeoutError, OSError):
                continue
            except MessageTooLarge as exc:
                self._fail(request, str(exc))
                return
        self._fail(request, "upstream closed the response stream without answering")

    def _deliver(self, data: bytes, request: dict[str, Any]) -> None:
        if request.get("method") == "tools/list":
            self._learn(data)
        if request.get("method") == "initialize":
            with contextlib.suppress(orjson.JSONDecodeError, AttributeError):
                result = orjson.loads(data).get("result")
                if isinstance(result, dict) and isinstance(result.get("protocolVersion"), str):
                    self._version = result["protocolVersion"]
        if self._on_message is not None and not self._closed:
            self._on_message(data)

    def _fail(self, message: dict[str, Any], why: str) -> None:
        if self._on_message is not None:
            self._on_message(orjson.dumps({"jsonrpc": "2.0", "id": message["id"], "error": {"code": -32603, "message": why}}))

    async def _recover(self) -> None:
        """The upstream forgot our session: start a new one with the recorded handshake."""
        async with self._reinit:
            if self._initialize is None:
                return
            stale = self._session_id
            self._session_id = None
            init = {**self._initialize, "id": "smcp-reinit"}
            async with self._http.post(
                self._url, data=orjson.dumps(init), headers=self._request_headers(init), timeout=self._timeout,
                allow_redirects=False,
            ) as r:
                if r.status != 200:
                    self._session_id = stale
                    return
                self._session_id = r.headers.get("Mcp-Session-Id")
                await r.read()
            note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
            async with self._http.post(
                self._url, data=orjson.dumps(note), headers=self._request_headers(note), timeout=self._timeout,
                allow_redirects=False,
            ):
                pass
            log.info("upstream %s re-initialized (session expired)", self._url)
            self._open_get_stream(restart=True)

    def _open_get_stream(self, *, restart: bool = False) -> None:
        if self._session_id is None:
            return
        if self._get_task is not None and not self._get_task.done():
            if not restart:
                return
            self._get_task.cancel()
        self._get_task = asyncio.create_task(self._listen())

    async def _listen(self) -> None:
        """The upstream's GET stream: server-initiated messages, reconnected with backoff."""
        delay = 0.5
        while not self._closed and self._session_id is not None:
            headers = {**self._headers, "Accept": "text/event-stream", "Mcp-Session-Id": self._session_id}
            if self._version:
                headers["MCP-Protocol-Version"] = self._version
            try:
                async with self._http.get(
                    self._url, headers=headers, timeout=aiohttp.ClientTimeout(total=None, sock_connect=10), allow_redirects=False
                ) as r:
                    if r.status in (405, 404, 400):
                        return
                    delay = 0.5
                    async for data in sse_data(r.content, self._max):
                        if self._on_message is not None and not self._closed:
                            self._on_message(data)
            except (aiohttp.ClientError, UpstreamRefused, OSError, MessageTooLarge):
                pass  # reconnected after the backoff; an oversized message is dropped with its stream
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in list(self._tasks) + ([self._get_task] if self._get_task else []):
            task.cancel()
        if self._session_id:
            with contextlib.suppress(Exception):
                async with self._http.delete(
                    self._url, headers={**self._headers, "Mcp-Session-Id": self._session_id}, timeout=aiohttp.ClientTimeout(total=5)
                ):
                    pass
        if self._on_closed is not None:
            self._on_closed("closed")


def _modern_version(message: dict[str, Any]) -> str | None:
    """The 2026-07-28-era protocol version a message's `_meta` names (None: legacy)."""
    params = message.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    version = meta.get(_MODERN_META_VERSION) if isinstance(meta, dict) else None
    return version if isinstance(version, str) else None


def _header_value(value: str) -> str:
    if value.isascii() and value == value.strip() and value.isprintable() and not (value.startswith("=?base64?") and value.endswith("?=")):
        return value
    import base64

    return "=?base64?" + base64.b64encode(value.encode()).decode() + "?="


class HttpUpstreams:
    """Channels to remote upstreams, over one pooled aiohttp session per node."""

    def __init__(
        self, *, unsafe_allow: list[str], timeout_s: float, max_message_bytes: int, max_connections: int = 256
    ) -> None:
        self._policy = AddressPolicy(unsafe_allow)
        self._timeout_s = timeout_s
        self._max_message_bytes = max_message_bytes
        self._max = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._count = 0

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                resolver=CheckedResolver(self._policy), limit=self._max, ttl_dns_cache=None, use_dns_cache=False
            )
            # No cookies, no proxies from the environment, no redirects: the upstream
            # URL is the tenant's configuration, nothing else steers the request.
            self._session = aiohttp.ClientSession(
                connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False, auto_decompress=True
            )
        return self._session

    def connect(self, revision: Revision, headers: dict[str, str]) -> HttpChannel:
        spec = revision.spec
        assert spec.http is not None
        # aiohttp dials IP literals without asking the resolver, so literals are checked
        # here; names are checked by CheckedResolver at every connection.
        host = urlsplit(spec.http.url).hostname or ""
        literal = parse_ip_literal(host)
        if literal is not None and (why := self._policy.refusal(literal)):
            raise UpstreamRefused(f"upstream {host} is not a public address: {why}")
        self._count += 1
        return HttpChannel(
            self._client(),
            spec.http.url,
            headers,
            instance_id=f"http-{revision.id[:8]}-{self._count}",
            timeout_s=self._timeout_s,
            max_message_bytes=self._max_message_bytes,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
