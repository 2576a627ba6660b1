"""Fixtures of the egress tests: a loopback upstream, and a proxy whose allowlist names it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.egress.helpers import ProxyUnderTest, Upstream, start_proxy


@pytest.fixture()
def upstream() -> Iterator[Upstream]:
    u = Upstream()
    yield u
    u.stop()


@pytest.fixture()
async def proxy(tmp_path: Path, upstream: Upstream) -> AsyncIterator[ProxyUnderTest]:
    p = await start_proxy(tmp_path, [f"upstream.test:{upstream.port}"], hosts={"upstream.test": ["127.0.0.1"]})
    yield p
    await p.close()
