"""The egress proxy reads requests a hosted server writes, so every byte is hostile.

Seeded random request heads (methods, targets in every spelling, versions, odd and
repeated headers, bare line ends, NULs, bodies) against a proxy whose allowlist names
one host. Each gets an HTTP answer or a hang-up in time, never a handler exception,
and only a request for the allowlisted host ever reaches the upstream: the loopback
address it actually listens on, its other spellings and every smuggling trick stay
refused. `SMCP_FUZZ_SEED` picks other cases.
"""

from __future__ import annotations

import asyncio
import logging
import random

import pytest

from tests.egress.helpers import ProxyUnderTest, Upstream, status_of
from tests.fuzzing import fuzz_cases, fuzz_seed

SEED = fuzz_seed()
CASES = fuzz_cases(300)
ANSWERS = {100, 200, 400, 403, 404, 405, 408, 411, 413, 414, 431, 501, 502, 504, 505}


def _targets(port: int) -> tuple[list[str], list[str]]:
    """(spellings of the allowlisted host:port, spellings of anything else)."""
    # Case and a trailing dot spell the same DNS name.
    allowed = [f"upstream.test:{port}", f"UPSTREAM.test:{port}", f"upstream.test.:{port}"]
    others = [
        f"127.0.0.1:{port}", f"[::1]:{port}", f"localhost:{port}", f"upstream.test:{port + 1}", "upstream.test",
        f"upstream.test..:{port}", f"upstream.test:{port}@127.0.0.1:{port}", f"127.0.0.1:{port}#upstream.test:{port}",
        f"upstream.test%00.evil:{port}", f"0x7f.1:{port}", f"2130706433:{port}", f"upstream.test:{port}:{port}",
        f"upstream.test:+{port}", f"upstream.test:0{port}", "upstream.test:99999", "upstream.test:-1", "*", "",
        f"evil.example:{port}", "[upstream.test]:80", f"upstream\ttest:{port}", "a" * 3000 + f":{port}",
    ]
    return allowed, others


def _request(rng: random.Random, port: int) -> tuple[bytes, bool]:
    """One request, and whether it names the allowlisted host (only those may pass)."""
    allowed, others = _targets(port)
    to_allowed = rng.random() < 0.3
    authority = rng.choice(allowed if to_allowed else others)
    method = rng.choice(["CONNECT", "GET", "POST", "HEAD", "connect", "GET ", "G\x00T", "PROPFIND", ""])
    if method.strip().upper() == "CONNECT" or rng.random() < 0.2:
        target = authority
    else:
        target = rng.choice([f"http://{authority}/hello", f"https://{authority}/", f"http://{authority}", "/hello",
                             f"http://user:pw@{authority}/hello", f"ftp://{authority}/"])
    version = rng.choice(["HTTP/1.1"] * 5 + ["HTTP/1.0", "HTTP/2", "HTTP/1.1 extra", "http/1.1", ""])
    eol = b"\n" if rng.random() < 0.1 else b"\r\n"
    lines = [f"{method} {target} {version}".encode("utf-8", "surrogatepass")]
    headers = [
        f"Host: {rng.choice([authority, *others])}", "Content-Length: 5", "Content-Length: -1", "Content-Length: 99999999999",
        "Content-Length: x", "Transfer-Encoding: chunked", "Transfer-Encoding: gzip, chunked", "Transfer-Encoding: x",
        "Proxy-Authorization: Basic eDp5", "Connection: keep-alive, Upgrade", "X: " + "y" * 9000, "NoColonHere",
        " folded: continuation", "X-Nul: a\x00b", "Expect: 100-continue", "Host:",
    ]
    lines += [h.encode() for h in rng.sample(headers, rng.randrange(0, 5))]
    body = rng.choice([b"", b"hello", b"0\r\n\r\n", b"5\r\nhello\r\n0\r\n\r\n", b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"])
    return eol.join(lines) + eol + eol + body, to_allowed


async def test_random_requests_get_answers_and_only_the_allowlist_passes(
    proxy: ProxyUnderTest, upstream: Upstream, caplog: pytest.LogCaptureFixture
) -> None:
    rng = random.Random(SEED)
    caplog.set_level(logging.ERROR)
    for case in range(CASES):
        data, to_allowed = _request(rng, upstream.port)
        before = len(upstream.seen)
        answer = await proxy.raw(data, timeout=10)
        head = answer.split(b"\r\n", 1)[0]
        if answer:
            assert head.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")) and status_of(answer) in ANSWERS, (case, data[:200], head)
        if to_allowed:
            await asyncio.sleep(0.05)  # the upstream's handler thread records what it got
        if len(upstream.seen) > before:
            assert to_allowed, f"case {case}: a request not naming the allowlisted host reached it: {data[:300]!r}"
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert not errors, (case, data[:200], [r.getMessage() for r in errors])
    # And it still serves a plain, allowed request.
    answer = await proxy.raw(f"GET http://upstream.test:{upstream.port}/hello HTTP/1.1\r\nHost: upstream.test\r\n\r\n".encode())
    assert status_of(answer) == 200 and answer.endswith(b"hello from upstream")
