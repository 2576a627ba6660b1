"""Fixtures of the security suite: hostile tenants on the shared test node."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import Hosted
from tests.e2e.probe_client import ProbeSession
from tests.harness import EXAMPLES, Node


@pytest.fixture()
def attacker(probe: Hosted) -> Iterator[ProbeSession]:
    """A session on tenant mallory's probe (its own fresh sandbox)."""
    s = ProbeSession(probe)
    yield s
    s.close()


@pytest.fixture()
def victim(other_probe: Hosted) -> Iterator[ProbeSession]:
    """A session on tenant victim's probe."""
    s = ProbeSession(other_probe)
    yield s
    s.close()


def server_logs(node: Node, hosted: Hosted, limit: int = 1000) -> list[dict[str, Any]]:
    with node.api() as api:
        r = api.get(f"/tenants/{hosted.tenant}/servers/{hosted.server}/logs", params={"limit": limit})
        assert r.status_code == 200, r.text
        return r.json()


def wait_for_log(node: Node, hosted: Hosted, match: Callable[[dict[str, Any]], bool], timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        for line in server_logs(node, hosted):
            if match(line):
                return line
        assert time.monotonic() < deadline, [line["text"] for line in server_logs(node, hosted)[-30:]]
        time.sleep(0.2)


BURNER_CPU = 0.25


@pytest.fixture(scope="session")
def burner(node: Node, tmp_path_factory: pytest.TempPathFactory) -> Hosted:
    """The probe again, as tenant eve's server `burner`, with a small CPU quota."""
    src = EXAMPLES / "probe"
    dst = tmp_path_factory.mktemp("burner")
    for name in ("probe.py", "smcp.toml"):
        shutil.copy(src / name, dst / name)
    toml = (dst / "smcp.toml").read_text()
    toml = toml.replace('name = "probe"', 'name = "burner"').replace("[resources]\n", f"[resources]\ncpu = {BURNER_CPU}\n")
    (dst / "smcp.toml").write_text(toml)
    node.create_tenant("eve")
    key = node.create_key("eve")["token"]
    r = node.deploy("eve", dst)
    assert r.status_code == 201, r.text
    return Hosted("eve", "burner", key, node.mcp_url("eve", "burner"))
