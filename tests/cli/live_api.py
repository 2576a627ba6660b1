"""The live API the CLI tests talk to (a module of its own: conftest is not importable by name)."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

from smcp.config import Settings
from smcp.store import Store

ADMIN_TOKEN = "cli-admin-token"


def _load_fake_runtime() -> type:
    # The control tests' Runtime double, loaded by path: test dirs are not packages.
    path = Path(__file__).parents[1] / "control" / "fake_runtime.py"
    spec = importlib.util.spec_from_file_location("smcp_tests_fake_runtime", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.FakeRuntime


FakeRuntime = _load_fake_runtime()


@dataclass
class LiveApi:
    url: str
    settings: Settings
    runtime: object
    loop: asyncio.AbstractEventLoop
    store: Store

    def call(self, coro):  # run a coroutine on the server's loop (where the store lives)
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=10)
