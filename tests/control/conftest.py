from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from control_helpers import ADMIN_TOKEN, AUTH
from fake_runtime import FakeRuntime

from smcp.config import Settings
from smcp.control import create_control_app
from smcp.runtime.bundles import pack
from smcp.store import Store


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        admin_token=ADMIN_TOKEN,
        public_url="https://smcp.example",
        max_bundle_bytes=64 * 1024,
    )


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[Store]:
    s = await Store.open(settings)
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def runtime() -> FakeRuntime:
    return FakeRuntime()


@pytest.fixture
async def client(settings: Settings, store: Store, runtime: FakeRuntime) -> AsyncIterator[httpx.AsyncClient]:
    app = create_control_app(settings, store, runtime)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://control", headers=AUTH) as c:
        yield c


@pytest.fixture
def make_bundle(tmp_path: Path) -> Callable[..., bytes]:
    counter = iter(range(1_000_000))

    def _make(spec: str | None = None, *, name: str = "echo", files: dict[str, str] | None = None) -> bytes:
        root = tmp_path / f"bundle{next(counter)}"
        root.mkdir()
        text = spec if spec is not None else f'name = "{name}"\nruntime = "python"\nentrypoint = "server.py"\n'
        (root / "smcp.toml").write_text(text)
        for rel, content in (files or {"server.py": "print('hi')\n"}).items():
            (root / rel).write_text(content)
        return pack(root)

    return _make
