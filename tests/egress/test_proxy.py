"""The egress proxy's allow path and plumbing, against loopback upstreams.

The address check is opened for 127.0.0.0/8 here (the test hook); the security
suite (tests/security/test_egress_ssrf.py) checks what stays refused.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path

import httpx
import pytest

from tests.egress.helpers import ProxyUnderTest, Upstream, self_signed, start_proxy, status_of


async def test_plain_http_through_forwarder(proxy: ProxyUnderTest, upstream: Upstream) -> None:
    port = await proxy.forwarder()
    async with httpx.AsyncClient(proxy=f"http://127.0.0.1:{port}") as client:
        r = await client.get(f"http://upstream.test:{upstream.port}/hello?token=secret")
    assert r.status_code == 200 and r.text == "hello from upstream"
    assert r.headers["connection"] == "close"
    _method, path, headers = upstream.seen[-1]
    assert path == "/hello?token=secret"
    assert headers["Host"] == f"upstream.test:{upstream.port}"
    assert headers["Connection"] == "close"
    assert not any(h.lower().startswith("proxy-") for h in headers)
    allow, close = (await proxy.wait_decisions(2))[-2:]
    assert allow["decision"] == "allow" and allow["ip"] == "127.0.0.1" and allow["method"] == "GET"
    assert allow["target"] == f"upstream.test:{upstream.port}"
    assert (allow["tenant"], allow["server"], allow["instance"]) == ("t1", "srv", "i-test")
    assert (
        close["decision"] == "close"
        and close["bytes_down"] > 0
        and close["bytes"] == close["bytes_up"] + close["bytes_down"]
    )
    # Paths and query strings (tokens!) never reach the log.
    assert "secret" not in proxy.manager.log_path("t1").read_text()


async def test_https_through_connect_with_real_tls(tmp_path: Path) -> None:
    pytest.importorskip("cryptography")
    server_ctx, client_ctx = self_signed("secure.test", tmp_path)
    tls_upstream = Upstream(tls=server_ctx, name="tls")
    p = await start_proxy(tmp_path, [f"secure.test:{tls_upstream.port}"], hosts={"secure.test": ["127.0.0.1"]})
    try:
        port = await p.forwarder()
        async with httpx.AsyncClient(proxy=f"http://127.0.0.1:{port}", verify=client_ctx) as client:
            r = await client.get(f"https://secure.test:{tls_upstream.port}/hello")
        assert r.status_code == 200 and r.text == "hello from tls"
        assert [d["decision"] for d in await p.wait_decisions(2)] == ["allow", "close"]
        assert p.decisions()[0]["method"] == "CONNECT"
    finally:
        await p.close()
        tls_upstream.stop()


async def test_connect_tunnel_is_byte_transparent_and_half_closes(proxy: ProxyUnderTest, upstream: Upstream) -> None:
    reader, writer, head = await proxy.connect(f"upstream.test:{upstream.port}")
    assert head.startswith(b"HTTP/1.1 200")
    writer.write(b"GET /hello HTTP/1.0\r\nHost: x\r\n\r\n")
    writer.write_eof()  # half-close: the response must still come back
    body = await asyncio.wait_for(reader.read(), 5)
    assert body.startswith(b"HTTP/1.1 200") and body.endswith(b"hello from upstream")
    writer.close()


async def test_post_bodies_content_length_and_chunked(proxy: ProxyUnderTest, upstream: Upstream) -> None:
    url = f"http://upstream.test:{upstream.port}/echo"
    r = await proxy.raw(f"POST {url} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello".encode())
    assert status_of(r) == 200 and r.endswith(b"echo:hello")
    chunked = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n"
    r = await proxy.raw(f"POST {url} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode() + chunked)
    assert status_of(r) == 200 and r.endswith(b"echo:hello world")


async def test_one_request_per_connection(proxy: ProxyUnderTest, upstream: Upstream) -> None:
    # A second, pipelined request must not ride the first one's checked connection.
    first = f"GET http://upstream.test:{upstream.port}/hello HTTP/1.1\r\nHost: x\r\n\r\n"
    second = "GET http://169.254.169.254/latest/meta-data/ HTTP/1.1\r\nHost: x\r\n\r\n"
    r = await proxy.raw((first + second).encode())
    assert r.count(b"HTTP/1.") == 1 and status_of(r) == 200
    assert [p for _m, p, _h in upstream.seen] == ["/hello"]


async def test_socket_is_private_to_the_tenant(proxy: ProxyUnderTest, upstream: Upstream) -> None:
    mode = proxy.socket.stat().st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o660
    assert stat.S_IMODE(proxy.socket.parent.stat().st_mode) == 0o710
    await proxy.raw(f"GET http://upstream.test:{upstream.port}/hello HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    log = proxy.manager.log_path("t1")
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert proxy.socket.name == "i-test.sock"


async def test_closing_an_instance_removes_its_socket(tmp_path: Path, upstream: Upstream) -> None:
    p = await start_proxy(tmp_path, [f"upstream.test:{upstream.port}"], hosts={"upstream.test": ["127.0.0.1"]})
    reader, writer, head = await p.connect(f"upstream.test:{upstream.port}")
    assert head.startswith(b"HTTP/1.1 200")
    await p.manager.close("i-test")
    assert not p.socket.exists()
    assert await asyncio.wait_for(reader.read(), 5) == b""  # open tunnels are cut
    writer.close()
    assert (await p.wait_decisions(2))[-1]["reason"] == "instance stopped"
    await p.close()


async def test_deep_data_dir_still_binds(tmp_path: Path, upstream: Upstream) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    p = await start_proxy(deep, [f"upstream.test:{upstream.port}"], hosts={"upstream.test": ["127.0.0.1"]})
    try:
        assert len(os.fsencode(p.socket)) > 108
        r = await p.raw(f"GET http://upstream.test:{upstream.port}/hello HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert status_of(r) == 200
    finally:
        await p.close()


def test_proxy_env_for_sandboxes() -> None:
    from smcp.egress import proxy_env

    env = proxy_env()
    assert env["HTTP_PROXY"] == env["https_proxy"] == "http://127.0.0.1:3128"
    assert "localhost" in env["NO_PROXY"] and "127.0.0.1" in env["no_proxy"]
    assert json.dumps(env)


async def test_unresolvable_and_unreachable_targets(tmp_path: Path) -> None:
    from tests.harness import free_port

    closed = free_port()
    p = await start_proxy(
        tmp_path, ["nothing.invalid:443", f"closed.test:{closed}"], hosts={"closed.test": ["127.0.0.1"]}
    )
    try:
        r = await p.raw(b"CONNECT nothing.invalid:443 HTTP/1.1\r\n\r\n")
        assert status_of(r) == 502
        assert p.decisions()[-1]["decision"] == "deny" and "resolving nothing.invalid" in p.decisions()[-1]["reason"]
        r = await p.raw(f"CONNECT closed.test:{closed} HTTP/1.1\r\n\r\n".encode())
        assert status_of(r) == 502
        d = p.decisions()[-1]
        assert d["decision"] == "error" and d["ip"] == "127.0.0.1" and "connect failed" in d["reason"]
    finally:
        await p.close()
