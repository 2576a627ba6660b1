"""A real API on a real port: uvicorn in a background thread with its own event loop."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from live_api import ADMIN_TOKEN, FakeRuntime, LiveApi
from starlette.applications import Starlette
from starlette.routing import Mount

from smcp.config import Settings
from smcp.control import create_control_app
from smcp.store import Store


@pytest.fixture
def live_api(tmp_path: Path) -> Iterator[LiveApi]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    settings = Settings(data_dir=tmp_path / "data", admin_token=ADMIN_TOKEN, host="127.0.0.1", port=port)
    runtime = FakeRuntime()
    ready = threading.Event()
    holder: dict[str, object] = {}

    async def main() -> None:
        store = await Store.open(settings)
        app = Starlette(routes=[Mount("/api/v1", app=create_control_app(settings, store, runtime))])
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        holder.update(server=server, store=store, loop=asyncio.get_running_loop())
        try:
            serving = asyncio.create_task(server.serve(sockets=[sock]))
            while not server.started:
                if serving.done():
                    serving.result()
                await asyncio.sleep(0.01)
            ready.set()
            await serving
        finally:
            await store.close()

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # surface start-up failures to the test
            holder["error"] = exc
            ready.set()

    thread = threading.Thread(target=run, name="smcp-test-api", daemon=True)
    thread.start()
    assert ready.wait(15), "API did not start"
    if "error" in holder:
        raise holder["error"]  # type: ignore[misc]
    try:
        yield LiveApi(
            url=f"http://127.0.0.1:{port}",
            settings=settings,
            runtime=runtime,
            loop=holder["loop"],  # type: ignore[arg-type]
            store=holder["store"],  # type: ignore[arg-type]
        )
    finally:
        holder["server"].should_exit = True  # type: ignore[attr-defined]
        thread.join(10)
        sock.close()


@pytest.fixture
def env(live_api: LiveApi, tmp_path: Path) -> dict[str, str]:
    # SMCP_DATA_DIR points at an empty dir so a developer's real .smcp/admin-token never leaks in.
    return {"SMCP_URL": live_api.url, "SMCP_ADMIN_TOKEN": ADMIN_TOKEN, "SMCP_DATA_DIR": str(tmp_path / "cli-home")}


@pytest.fixture
def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
