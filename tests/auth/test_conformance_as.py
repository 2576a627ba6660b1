"""`@modelcontextprotocol/conformance` (0.2.0-alpha.12) in `authorization` mode against SMCP's
authorization server: the metadata scenario, and the authorization-code grant with this test
playing the person at the browser (it reads the URL the suite prints, signs in and allows;
the redirect then lands on the suite's own callback listener).

The authorization server runs in-process under uvicorn on a free loopback port; no runtime
is needed. Skipped when the suite is not installed (package.json's `conformance-next`)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from oauth_helpers import PASSWORD, hidden, make_spec
from starlette.applications import Starlette

from smcp.app import _authorization_server
from smcp.auth import passwords
from smcp.config import Settings
from smcp.store import Store

ROOT = Path(__file__).resolve().parents[2]
NODE = ROOT / "node_modules" / ".bin" / "node"
CANDIDATES = [ROOT / "node_modules" / "conformance-next", Path(os.environ.get("SMCP_CONFORMANCE_NEXT", "/nonexistent"))]
SUITE = next((p / "dist" / "index.js" for p in CANDIDATES if (p / "dist" / "index.js").exists()), None)

pytestmark = pytest.mark.skipif(SUITE is None or not NODE.exists(), reason="conformance-next (0.2.0-alpha.12) not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_conformance_authorization_mode(tmp_path: Path) -> None:
    port, callback_port = free_port(), free_port()
    settings = Settings(data_dir=tmp_path / "data", admin_token="x", port=port)
    redirect = f"http://127.0.0.1:{callback_port}/callback"
    holder: dict = {}

    async def build() -> Starlette:
        store = await Store.open(settings)
        oauth = await _authorization_server(settings, store)
        await store.tenants.create("acme")
        await store.servers.create_revision("acme", "echo", make_spec("echo"), bundle_digest="a" * 64, build_key=None)
        await store.users.create("alice", passwords.hash_password(PASSWORD))
        await store.users.set_member("acme", "alice", "developer")
        from smcp.auth.registration import client_from_metadata

        client, _ = client_from_metadata(
            {"redirect_uris": [redirect], "token_endpoint_auth_method": "none", "client_name": "Conformance"},
            kind="registered", tenant="acme",
        )
        holder["client_id"] = client.client_id
        await store.oauth.create_client(client)
        return Starlette(routes=oauth.routes())

    def serve() -> None:
        loop = asyncio.new_event_loop()
        app = loop.run_until_complete(build())
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", loop="asyncio"))
        holder["server"] = server
        loop.run_until_complete(server.serve())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/.well-known/oauth-authorization-server", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    out_dir = tmp_path / "results"
    proc = subprocess.Popen(
        [str(NODE), str(SUITE), "authorization", "--url", base, "--client-id", holder["client_id"],
         "--resource", f"{base}/t/acme/echo/mcp", "--port", str(callback_port), "-o", str(out_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            m = re.search(r"(http://\S+/oauth/authorize\?\S+)", line)
            if m:
                with httpx.Client(timeout=30) as browser:
                    page = browser.get(m.group(1))
                    page = browser.post(base + "/oauth/login", data={"request": hidden(page.text, "request"),
                                        "csrf": hidden(page.text, "csrf"), "username": "alice", "password": PASSWORD})
                    done = browser.post(base + "/oauth/consent", data={"request": hidden(page.text, "request"),
                                        "csrf": hidden(page.text, "csrf"), "decision": "approve"})
                    assert done.status_code == 303, done.text
                    browser.get(done.headers["location"])  # the suite's callback listener
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        if "server" in holder:
            holder["server"].should_exit = True
        thread.join(timeout=10)
    output = "".join(lines)
    checks = [c for f in out_dir.rglob("checks.json") for c in json.loads(f.read_text())]
    statuses = {c["id"]: c["status"] for c in checks}
    assert statuses, output
    assert all(s == "SUCCESS" for s in statuses.values()), json.dumps(checks, indent=1)[:4000] + output
    assert {"authorization-server-metadata", "authorization-server-metadata-cimd", "authorization-code-grant"} <= set(statuses), statuses
