"""What the egress proxy refuses: SSRF in every spelling, rebinding, redirects, limits, foreign peers.

Upstreams are loopback test servers. Where a test needs the proxy to *reach*
one, the address check is opened for exactly that loopback address (the test
hook, `AddressPolicy(unsafe_allow)`); everything else runs with the production
default, which refuses loopback too (test_default_policy_refuses_loopback).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from smcp.egress import EgressLimits
from tests.egress.helpers import FAST, ProxyUnderTest, SilentServer, Upstream, counting_resolver, start_proxy, status_of

METADATA_LITERALS = [
    "169.254.169.254",
    "2852039166",  # decimal
    "0xa9fea9fe",  # hex
    "0xa9.0xfe.0xa9.0xfe",
    "0251.0376.0251.0376",  # octal
    "025177524776",
    "169.254.43518",  # short forms
    "169.16689662",
    "[::ffff:169.254.169.254]",  # IPv4-mapped
    "[::ffff:a9fe:a9fe]",
    "[64:ff9b::a9fe:a9fe]",  # NAT64
    "[2002:a9fe:a9fe::]",  # 6to4
    "[2001:0:4136:e378:8000:63bf:5601:5601]",  # Teredo
]
LOOPBACK_LITERALS = ["127.0.0.1", "127.1", "0x7f.1", "2130706433", "017700000001", "0", "[::1]", "[::ffff:127.0.0.1]"]
# A name can resolve to any of these; each must be refused after the lookup.
METADATA_ANSWERS = [
    "169.254.169.254",
    "::ffff:169.254.169.254",
    "64:ff9b::a9fe:a9fe",
    "64:ff9b::169.254.169.254",
    "2002:a9fe:a9fe::",
    "2001:0:4136:e378:8000:63bf:5601:5601",
    "64:ff9b:1::a9fe:a9fe",
    "::a9fe:a9fe",
    "fd00:ec2::254",
]


@pytest.fixture()
def upstream() -> Iterator[Upstream]:
    u = Upstream()
    yield u
    u.stop()


def get(url: str) -> bytes:
    return f"GET {url} HTTP/1.1\r\nHost: x\r\n\r\n".encode()


def connect(target: str) -> bytes:
    return f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode()


@pytest.fixture()
async def strict(tmp_path: Path) -> AsyncIterator[ProxyUnderTest]:
    """Production address policy (nothing exempt); allowlist of public-looking names."""
    _resolver, _ = counting_resolver({})
    p = await start_proxy(tmp_path, ["api.example.com:443", "api.example.com:80", "*.example.org:443"], unsafe_allow=())
    yield p
    await p.close()


# -- literal addresses: never in an allowlist, whatever the spelling -------------------------


@pytest.mark.parametrize("host", METADATA_LITERALS + LOOPBACK_LITERALS)
async def test_literal_addresses_in_every_spelling_are_refused(strict: ProxyUnderTest, host: str) -> None:
    for request in (connect(f"{host}:80"), get(f"http://{host}/latest/meta-data/")):
        r = await strict.raw(request)
        assert status_of(r) == 403, r
        assert b"X-Smcp-Egress: refused" in r
    last = strict.decisions()[-1]
    assert last["decision"] == "deny" and "not in the allowlist" in last["reason"]
    # The log shows the address the spelling really meant, not the disguise.
    if host in METADATA_LITERALS[:8]:
        assert last["target"] == "169.254.169.254:80"


# -- names that resolve to non-public addresses --------------------------------------------


@pytest.mark.parametrize("answer", METADATA_ANSWERS + ["10.0.0.5", "127.0.0.1", "192.168.1.1", "::1", "fe80::1"])
async def test_allowlisted_name_resolving_to_private_address_is_refused(tmp_path: Path, answer: str) -> None:
    resolver, calls = counting_resolver({"api.example.com": [[answer]]})
    p = await start_proxy(tmp_path, ["api.example.com:443"], unsafe_allow=(), resolver=resolver)
    try:
        r = await p.raw(connect("api.example.com:443"))
        assert status_of(r) == 403 and b"not public" in r
        d = p.decisions()[-1]
        assert d["decision"] == "deny" and d["ip"] is not None and calls["api.example.com"] == 1
        assert "api.example.com" in d["reason"]
    finally:
        await p.close()


async def test_one_private_answer_among_public_ones_refuses_the_name(tmp_path: Path) -> None:
    resolver, _ = counting_resolver({"api.example.com": [["93.184.216.34", "169.254.169.254"]]})
    p = await start_proxy(tmp_path, ["api.example.com:443"], unsafe_allow=(), resolver=resolver)
    try:
        assert status_of(await p.raw(connect("api.example.com:443"))) == 403
        assert p.decisions()[-1]["ip"] == "169.254.169.254"
    finally:
        await p.close()


async def test_default_policy_refuses_loopback(tmp_path: Path, upstream: Upstream) -> None:
    """The same allowlisted upstream: refused by default, reachable only with the test hook."""
    allow, hosts = [f"upstream.test:{upstream.port}"], {"upstream.test": ["127.0.0.1"]}
    prod = await start_proxy(tmp_path / "prod", allow, unsafe_allow=(), hosts=hosts)
    try:
        r = await prod.raw(get(f"http://upstream.test:{upstream.port}/hello"))
        assert status_of(r) == 403
        assert "loopback" in prod.decisions()[-1]["reason"]
        assert upstream.seen == []
    finally:
        await prod.close()
    hooked = await start_proxy(tmp_path / "test", allow, unsafe_allow=("127.0.0.1/32",), hosts=hosts)
    try:
        assert status_of(await hooked.raw(get(f"http://upstream.test:{upstream.port}/hello"))) == 200
    finally:
        await hooked.close()


async def test_dns_rebinding_dials_the_checked_address(tmp_path: Path) -> None:
    """The resolver answers a permitted address first and a forbidden one afterwards:
    the proxy must look up once and connect to exactly what it checked."""
    good = Upstream("127.0.0.2", name="checked")
    evil = Upstream("127.0.0.1", good.port, name="rebound")
    try:
        for first in (get(f"http://rebind.test:{good.port}/hello"), connect(f"rebind.test:{good.port}")):
            resolver, calls = counting_resolver({"rebind.test": [["127.0.0.2"], ["127.0.0.1"]]})
            p = await start_proxy(
                tmp_path / str(len(evil.seen) + id(first)), [f"rebind.test:{good.port}"],
                unsafe_allow=("127.0.0.2/32",), resolver=resolver,
            )  # fmt: skip
            try:
                tunnelled = b"GET /hello HTTP/1.0\r\n\r\n" if first.startswith(b"CONNECT") else b""
                r = await p.raw(first + tunnelled)
                assert r.endswith(b"hello from checked"), r
                assert calls["rebind.test"] == 1  # looked up once; the dial used that answer
                assert [d["ip"] for d in p.decisions() if d["decision"] == "allow"] == ["127.0.0.2"]
                # The next request is a new lookup, now answered with the forbidden address: refused.
                assert status_of(await p.raw(first)) == 403
                assert p.decisions()[-1]["ip"] == "127.0.0.1"
            finally:
                await p.close()
        assert evil.seen == []
    finally:
        good.stop()
        evil.stop()


async def test_redirects_are_checked_like_new_requests(tmp_path: Path, upstream: Upstream) -> None:
    """A client following a redirect sends a new request through the proxy, checked again."""
    resolver, _ = counting_resolver({"internal.example.com": [["10.0.0.7"]]})
    p = await start_proxy(
        tmp_path,
        [f"upstream.test:{upstream.port}", "internal.example.com:80"],
        hosts={"upstream.test": ["127.0.0.1"]},
        unsafe_allow=("127.0.0.1/32",),
        resolver=resolver,
    )
    try:
        port = await p.forwarder()
        base = f"http://upstream.test:{upstream.port}/redirect?to="
        async with httpx.AsyncClient(proxy=f"http://127.0.0.1:{port}", follow_redirects=True) as client:
            for target, why in [
                ("http://169.254.169.254/latest/meta-data/", "not in the allowlist"),  # metadata
                ("http://internal.example.com/admin", "10.0.0.7"),  # allowlisted name, private address
                ("http://0xa9fea9fe/", "not in the allowlist"),
            ]:
                r = await client.get(base + target)
                assert r.status_code == 403, (target, r.text)
                assert len(r.history) == 1 and r.history[0].status_code == 302
                deny = [d for d in await p.wait_decisions(1) if d["decision"] == "deny"][-1]
                assert why in deny["reason"], deny
            # Following an allowed redirect works.
            r = await client.get(base + f"http://upstream.test:{upstream.port}/hello")
            assert r.status_code == 200 and r.text == "hello from upstream"
    finally:
        await p.close()


# -- allowlist shape -------------------------------------------------------------------------


async def test_host_and_port_must_both_be_allowlisted(strict: ProxyUnderTest) -> None:
    cases = {
        connect("evil.com:443"): "host evil.com is not in the allowlist",
        connect("api.example.com:8443"): "port 8443 is not allowed for host api.example.com",
        connect("example.org:443"): "host example.org is not in the allowlist",  # wildcard excludes the apex
        connect("x.example.org:80"): "port 80 is not allowed",
        get("http://api.example.com:8080/"): "port 8080 is not allowed",
        get("http://evil.com/"): "host evil.com is not in the allowlist",
        connect("api.example.com.evil.com:443"): "not in the allowlist",
    }
    for request, why in cases.items():
        assert status_of(await strict.raw(request)) == 403
        assert why in strict.decisions()[-1]["reason"]


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /relative HTTP/1.1\r\nHost: api.example.com\r\n\r\n",  # not a proxy request
        b"GET https://api.example.com/ HTTP/1.1\r\nHost: x\r\n\r\n",  # https must use CONNECT
        b"GET ftp://api.example.com/ HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET http://user@api.example.com/ HTTP/1.1\r\nHost: x\r\n\r\n",  # userinfo confusion
        b"GET http://evil.com\\@api.example.com/ HTTP/1.1\r\nHost: x\r\n\r\n",
        b"CONNECT api.example.com HTTP/1.1\r\n\r\n",  # no port
        b"POST http://api.example.com/ HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST http://api.example.com/ HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
        b"POST http://api.example.com/ HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        b"GET http://api.example.com/ HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",
        b"GET http://api.example.com/ HTTP/1.1\r\nBad Header: x\r\n\r\n",
        b"GET http://api.example.com/ HTTP/2.0\r\n\r\n",
    ],
)
async def test_malformed_and_ambiguous_requests_are_refused(strict: ProxyUnderTest, request_bytes: bytes) -> None:
    r = await strict.raw(request_bytes)
    assert status_of(r) == 400, r
    assert strict.decisions()[-1]["decision"] == "deny"


# -- limits ---------------------------------------------------------------------------------


async def test_header_timeout(tmp_path: Path) -> None:
    limits = EgressLimits(**{**_fields(FAST), "header_timeout_s": 0.3})
    p = await start_proxy(tmp_path, ["api.example.com:443"], limits=limits)
    try:
        reader, writer = await p.open()
        writer.write(b"CONNECT api.example.com:443 HTTP/1.1\r\n")  # ...and never the blank line
        r = await asyncio.wait_for(reader.read(), 5)
        assert status_of(r) == 408
        assert "not received within 0.3s" in p.decisions()[-1]["reason"]
        writer.close()
    finally:
        await p.close()


async def test_header_size_cap(strict: ProxyUnderTest) -> None:
    r = await strict.raw(b"GET http://api.example.com/ HTTP/1.1\r\nX: " + b"a" * 10_000 + b"\r\n\r\n")
    assert status_of(r) == 431


async def test_idle_timeout_closes_silent_tunnels(tmp_path: Path) -> None:
    silent = SilentServer()
    limits = EgressLimits(**{**_fields(FAST), "idle_timeout_s": 0.3})
    p = await start_proxy(tmp_path, [f"quiet.test:{silent.port}"], hosts={"quiet.test": ["127.0.0.1"]}, limits=limits)
    try:
        reader, writer, head = await p.connect(f"quiet.test:{silent.port}")
        assert head.startswith(b"HTTP/1.1 200")
        assert await asyncio.wait_for(reader.read(), 5) == b""
        close = (await p.wait_decisions(2))[-1]
        assert close["decision"] == "close" and close["reason"] == "idle for 0.3s"
        writer.close()
    finally:
        await p.close()
        silent.stop()


async def test_idle_timeout_on_a_slow_upstream_response(tmp_path: Path, upstream: Upstream) -> None:
    limits = EgressLimits(**{**_fields(FAST), "idle_timeout_s": 0.3})
    p = await start_proxy(
        tmp_path, [f"upstream.test:{upstream.port}"], hosts={"upstream.test": ["127.0.0.1"]}, limits=limits
    )
    try:
        r = await p.raw(get(f"http://upstream.test:{upstream.port}/slow?s=2"))
        assert r == b""
        assert (await p.wait_decisions(2))[-1]["reason"] == "idle for 0.3s"
    finally:
        await p.close()


async def test_byte_cap(tmp_path: Path, upstream: Upstream) -> None:
    limits = EgressLimits(**{**_fields(FAST), "max_bytes": 50_000})
    p = await start_proxy(
        tmp_path, [f"upstream.test:{upstream.port}"], hosts={"upstream.test": ["127.0.0.1"]}, limits=limits
    )
    try:
        r = await p.raw(get(f"http://upstream.test:{upstream.port}/big?n=40000"))
        assert status_of(r) == 200 and r.endswith(b"x" * 40000)
        r = await p.raw(get(f"http://upstream.test:{upstream.port}/big?n=200000"))
        assert len(r) <= 50_000
        close = (await p.wait_decisions(4))[-1]
        assert close["reason"] == "byte cap of 50000 reached" and close["bytes"] <= 50_000
        # The cap holds through a CONNECT tunnel too, counting both directions.
        reader, writer, _ = await p.connect(f"upstream.test:{upstream.port}")
        writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\n" + b"y" * 60000)
        await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert (await p.wait_decisions(6))[-1]["reason"] == "byte cap of 50000 reached"
    finally:
        await p.close()


async def test_concurrent_connection_cap(tmp_path: Path) -> None:
    limits = EgressLimits(**{**_fields(FAST), "max_connections": 1})
    p = await start_proxy(tmp_path, ["api.example.com:443"], limits=limits)
    try:
        _reader, holder = await p.open()  # holds the only slot, saying nothing
        await asyncio.sleep(0.05)
        r = await p.raw(connect("api.example.com:443"))
        assert status_of(r) == 503
        holder.close()
    finally:
        await p.close()


# -- who may connect -------------------------------------------------------------------------


async def test_peer_with_another_uid_is_refused(tmp_path: Path, upstream: Upstream) -> None:
    """SO_PEERCRED: the socket answers only the tenant's sandbox uid (here: not ours)."""
    p = await start_proxy(
        tmp_path, [f"upstream.test:{upstream.port}"], hosts={"upstream.test": ["127.0.0.1"]}, uid=os.getuid() + 4242
    )
    try:
        r = await p.raw(get(f"http://upstream.test:{upstream.port}/hello"))
        assert r == b""  # no answer at all
        d = p.decisions()[-1]
        assert d["decision"] == "deny" and f"peer uid {os.getuid()}" in d["reason"]
        assert upstream.seen == []
    finally:
        await p.close()


async def test_allowlists_do_not_leak_between_servers(tmp_path: Path, upstream: Upstream) -> None:
    """Two servers of one tenant (same uid): each socket carries only its own server's allowlist."""
    from smcp.egress import AddressPolicy, EgressManager

    manager = EgressManager(
        tmp_path / "egress",
        limits=FAST,
        policy=AddressPolicy(["127.0.0.1/32"]),
        hosts_override={"a.test": ["127.0.0.1"]},
    )
    try:
        sock_a = await manager.open("t1", "server-a", "i-a", os.getuid(), [f"a.test:{upstream.port}"])
        sock_b = await manager.open("t1", "server-b", "i-b", os.getuid(), ["b.example.com:443"])
        assert sock_a != sock_b
        request = get(f"http://a.test:{upstream.port}/hello")
        for sock, expected in ((sock_a, 200), (sock_b, 403)):
            reader, writer = await asyncio.open_unix_connection(str(sock))
            writer.write(request)
            assert status_of(await asyncio.wait_for(reader.read(), 5)) == expected
            writer.close()
    finally:
        await manager.aclose()


def _fields(limits: EgressLimits) -> dict[str, float | int]:
    return {name: getattr(limits, name) for name in limits.__slots__}  # type: ignore[attr-defined]
