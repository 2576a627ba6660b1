"""End to end: a hosted probe, in a real bubblewrap sandbox, reaches the world only through its proxy.

A dedicated node runs with the test hook open for 127.0.0.1 (the only upstream a
test can have) and `upstream.test`/`other.test` pinned to it. From inside the
sandbox: the allowlisted upstream answers through HTTP_PROXY (the in-sandbox
forwarder → unix socket → host proxy), while direct connections, other hosts,
metadata addresses and a sibling server's allowlist all fail, and every
decision lands in the tenant's JSON log on the host.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Hosted
from tests.e2e.probe_client import ProbeSession
from tests.egress.helpers import Upstream
from tests.harness import EXAMPLES, Node, start_node

TENANT = "netco"


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    u = Upstream("127.0.0.1", name="upstream")
    yield u
    u.stop()


@pytest.fixture(scope="module")
def egress_node(upstream: Upstream) -> Iterator[Node]:
    if shutil.which("bwrap") is None:
        pytest.fail("bubblewrap is required (make test installs it)")
    base = Path(tempfile.mkdtemp(prefix="smcp-egress-"))
    base.chmod(0o711)
    node = start_node(
        base / "data",
        request_timeout_s="15",
        egress_unsafe_allow_networks='["127.0.0.1/32"]',
        egress_hosts_override='{"upstream.test": "127.0.0.1", "other.test": "127.0.0.1"}',
    )
    node.create_tenant(TENANT)
    yield node
    node.stop()
    shutil.rmtree(base, ignore_errors=True)


def _deploy_probe(node: Node, name: str, allow: list[str] | None, work: Path) -> Hosted:
    bundle = work / name
    bundle.mkdir(parents=True)
    shutil.copy(EXAMPLES / "probe" / "probe.py", bundle / "probe.py")
    toml = f'name = "{name}"\nruntime = "command"\ncommand = ["python3", "probe.py"]\n[resources]\nmemory_mb = 128\npids = 64\n'
    if allow is not None:
        toml += f"[network]\nallow = {json.dumps(allow)}\n"
    (bundle / "smcp.toml").write_text(toml)
    key = node.create_key(TENANT, name)["token"]
    r = node.deploy(TENANT, bundle)
    assert r.status_code == 201, r.text
    return Hosted(TENANT, name, key, node.mcp_url(TENANT, name))


@pytest.fixture(scope="module")
def hosted(egress_node: Node, upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Hosted]:
    work = tmp_path_factory.mktemp("bundles")
    return {
        "net": _deploy_probe(egress_node, "net-probe", [f"upstream.test:{upstream.port}"], work),
        "sibling": _deploy_probe(egress_node, "sibling-probe", [f"other.test:{upstream.port + 1}"], work),
        "offline": _deploy_probe(egress_node, "offline-probe", None, work),
    }


@pytest.fixture()
def net(hosted: dict[str, Hosted]) -> Iterator[ProbeSession]:
    s = ProbeSession(hosted["net"])
    yield s
    s.close()


def decisions(node: Node) -> list[dict[str, object]]:
    path = node.data_dir / "egress" / f"{TENANT}.log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_for_decision(node: Node, **match: object) -> dict[str, object]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for d in reversed(decisions(node)):
            if all(d.get(k) == v for k, v in match.items()):
                return d
        time.sleep(0.05)
    raise AssertionError(f"no decision {match} in {decisions(node)}")


def test_allowlisted_upstream_is_reachable_through_the_proxy(
    egress_node: Node, net: ProbeSession, upstream: Upstream
) -> None:
    env = net.ok("env")["environ"]
    assert env["HTTP_PROXY"] == env["https_proxy"] == "http://127.0.0.1:3128"
    assert "egress.sock" in net.ok("list_dir", path="/run/smcp")["entries"]
    got = net.ok("http_get", url=f"http://upstream.test:{upstream.port}/hello")
    assert got["status"] == 200 and got["body"] == "hello from upstream"
    allow = wait_for_decision(egress_node, decision="allow", target=f"upstream.test:{upstream.port}")
    assert allow["server"] == "net-probe" and allow["tenant"] == TENANT and allow["ip"] == "127.0.0.1"
    assert str(allow["instance"]).startswith("i-")
    close = wait_for_decision(egress_node, decision="close", instance=allow["instance"])
    assert isinstance(close["bytes"], int) and close["bytes"] > 0


def test_everything_else_fails_from_inside(egress_node: Node, net: ProbeSession, upstream: Upstream) -> None:
    # Direct connections: the sandbox's network namespace has only its own loopback.
    net.fails("connect", host="127.0.0.1", port=upstream.port, timeout=1)
    net.fails("connect", host="1.1.1.1", port=443, timeout=1)
    net.fails("http_get", url=f"http://127.0.0.1:{upstream.port}/hello", timeout=3)  # NO_PROXY → direct → nothing
    # Through the proxy: not allowlisted, wrong port, metadata in two spellings, https tunnel to a stranger.
    for url, target in [
        ("http://evil.test/", "evil.test:80"),
        (f"http://upstream.test:{upstream.port + 1}/hello", f"upstream.test:{upstream.port + 1}"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254:80"),
        ("http://0xa9fea9fe/latest/meta-data/", "169.254.169.254:80"),
    ]:
        err = net.fails("http_get", url=url, timeout=5)
        assert err.get("status") == 403, err
        assert wait_for_decision(egress_node, decision="deny", target=target)["server"] == "net-probe"
    err = net.fails("http_get", url="https://evil.test/", timeout=5)
    assert "403" in json.dumps(err)
    wait_for_decision(egress_node, decision="deny", method="CONNECT", target="evil.test:443")
    # The decision log lives on the host only.
    net.fails("read_file", path=str(egress_node.data_dir / "egress" / f"{TENANT}.log.jsonl"))


def test_a_sibling_server_cannot_borrow_the_allowlist(
    egress_node: Node, hosted: dict[str, Hosted], upstream: Upstream
) -> None:
    sibling = ProbeSession(hosted["sibling"])
    try:
        # Same tenant, same uid — but its socket carries only its own allowlist.
        err = sibling.fails("http_get", url=f"http://upstream.test:{upstream.port}/hello", timeout=5)
        assert err.get("status") == 403
        deny = wait_for_decision(egress_node, decision="deny", server="sibling-probe")
        assert "not in the allowlist" in str(deny["reason"])
        # It sees one socket, its own, and no other instance's.
        assert sibling.ok("list_dir", path="/run/smcp")["entries"] == ["egress.sock", "forwarder.py"]
        sibling.fails("list_dir", path=str(egress_node.data_dir / "egress"))
    finally:
        sibling.close()


def test_a_server_without_allowlist_has_no_network_at_all(hosted: dict[str, Hosted], upstream: Upstream) -> None:
    offline = ProbeSession(hosted["offline"])
    try:
        env = offline.ok("env")["environ"]
        assert not any(k.lower().endswith("_proxy") for k in env)
        offline.fails("list_dir", path="/run/smcp")
        offline.fails("connect", host="127.0.0.1", port=3128, timeout=1)
        offline.fails("http_get", url=f"http://upstream.test:{upstream.port}/hello", timeout=3)
    finally:
        offline.close()


def test_one_socket_per_live_instance_gone_with_the_server(egress_node: Node, hosted: dict[str, Hosted]) -> None:
    def live(server: str) -> set[str]:
        with egress_node.api() as api:
            r = api.get(f"/tenants/{TENANT}/servers/{server}/instances")
            assert r.status_code == 200, r.text
            return {i["id"] for i in r.json()}

    def sockets() -> set[str]:
        return {p.stem for p in (egress_node.data_dir / "egress" / TENANT).glob("*.sock")}

    session = ProbeSession(hosted["sibling"])
    try:
        ours = live("sibling-probe")
        assert ours and ours <= sockets()
        # Instances without an allowlist get no socket.
        assert not (live("offline-probe") & sockets())
    finally:
        session.close()
    with egress_node.api() as api:
        assert api.delete(f"/tenants/{TENANT}/servers/sibling-probe").status_code == 204
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and ours & sockets():
        time.sleep(0.1)
    assert not ours & sockets(), "a stopped instance's egress socket is still there"
