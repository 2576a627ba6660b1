"""Runs a real SMCP node in a subprocess for end-to-end tests, and talks to it."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "servers"
NODE_BIN = ROOT / "node_modules" / ".bin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, what: str, timeout: float = 30) -> None:
    """Until something accepts connections on 127.0.0.1:`port`; fails naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start listening on port {port}") from None
            time.sleep(0.1)


@dataclass
class Node:
    """A running `smcp serve` with an admin client."""

    data_dir: Path
    port: int
    admin_token: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=f"{self.base_url}/api/v1",
            headers={"authorization": f"Bearer {self.admin_token}"},
            timeout=600,
        )

    def mcp_url(self, tenant: str, server: str) -> str:
        return f"{self.base_url}/t/{tenant}/{server}/mcp"

    def create_tenant(self, name: str) -> None:
        with self.api() as api:
            r = api.post("/tenants", json={"name": name})
            assert r.status_code in (201, 409), r.text

    def create_key(self, tenant: str, name: str = "test") -> dict[str, Any]:
        with self.api() as api:
            r = api.post(f"/tenants/{tenant}/keys", json={"name": name})
            assert r.status_code == 201, r.text
            return r.json()

    def deploy(self, tenant: str, directory: Path) -> httpx.Response:
        from smcp.runtime import bundles

        with self.api() as api:
            return api.post(
                f"/tenants/{tenant}/deployments",
                content=bundles.pack(directory),
                headers={"content-type": "application/gzip"},
            )

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                return self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait()
        return self.proc.returncode


def start_node(data_dir: Path, **settings: str) -> Node:
    port = free_port()
    token = "smcpadm_test_" + os.urandom(8).hex()
    env = {
        **os.environ,
        "SMCP_DATA_DIR": str(data_dir),
        "SMCP_PORT": str(port),
        "SMCP_ADMIN_TOKEN": token,
        "SMCP_AUTH_CACHE_TTL_S": "0",
        **{f"SMCP_{k.upper()}": v for k, v in settings.items()},
    }
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir.parent / f"{data_dir.name}-node.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "smcp.cli.main", "serve"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    node = Node(data_dir=data_dir, port=port, admin_token=token, proc=proc, log_path=log_path, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"smcp serve exited early:\n{node.log_text()}")
        try:
            if httpx.get(f"{node.base_url}/api/v1/health", timeout=1).status_code == 200:
                return node
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    node.stop()
    raise RuntimeError(f"smcp serve did not become healthy:\n{node.log_text()}")


@contextmanager
def own_node(prefix: str, **settings: str) -> Iterator[Node]:
    """A node of its own, with its data in a fresh directory removed after it stops.

    Sandbox uids bind their bundles from under that directory, so it must be
    traversable by them (pytest's own temp root is 0700).
    """
    base = Path(tempfile.mkdtemp(prefix=prefix))
    base.chmod(0o711)
    try:
        node = start_node(base / "data", **settings)
        try:
            yield node
        finally:
            node.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def sandbox_pids(uid: int) -> list[int]:
    """Processes on the host running as a sandbox uid."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    out.append(int(entry.name))
            except FileNotFoundError:
                pass
    return out
