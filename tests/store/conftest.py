from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from smcp.config import Settings
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

