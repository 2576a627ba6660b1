from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from smcp.config import Settings
from smcp.domain import ServerSpec, parse_spec
from smcp.store import Store


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", admin_token="admin-secret")


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[Store]:
    s = await Store.open(settings)
    try:
        yield s
    finally:
        await s.close()


def make_spec(name: str = "echo", **extra: str) -> ServerSpec:
    lines = [f'name = "{name}"', 'runtime = "python"', 'entrypoint = "server.py"']
    lines += [f'{k} = "{v}"' for k, v in extra.items()]
    return parse_spec("\n".join(lines))
