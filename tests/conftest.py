from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness import EXAMPLES, Node, own_node


@pytest.fixture(scope="session")
def node() -> Iterator[Node]:
    """One SMCP node for the end-to-end suite."""
    if shutil.which("bwrap") is None:
        pytest.fail("bubblewrap is required (make test installs it)")
    with own_node("smcp-test-", request_timeout_s="8", max_message_bytes=str(1024 * 1024), max_pending_per_session="8") as n:
        yield n


@dataclass
class Hosted:
    tenant: str
    server: str
    key: str
    url: str


def _host(node: Node, tenant: str, example: str) -> Hosted:
    node.create_tenant(tenant)
    key = node.create_key(tenant)["token"]
    r = node.deploy(tenant, EXAMPLES / example)
    assert r.status_code == 201, r.text
    server = r.json()["server"]
    return Hosted(tenant, server, key, node.mcp_url(tenant, server))


@pytest.fixture(scope="session")
def demo(node: Node) -> Hosted:
    """The SDK-built demo server, hosted for tenant `acme`."""
    return _host(node, "acme", "demo")


@pytest.fixture(scope="session")
def probe(node: Node) -> Hosted:
    """The hostile probe server, hosted for tenant `mallory`."""
    return _host(node, "mallory", "probe")


@pytest.fixture(scope="session")
def other_probe(node: Node) -> Hosted:
    """The same probe for a second tenant, to check tenants cannot see each other."""
    return _host(node, "victim", "probe")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Keep the end-to-end tests together so the shared node starts once.
    items.sort(key=lambda item: "e2e" in str(item.fspath))


def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]
