"""Deploying: smcp.toml → bundle → build → live revision; failures leave the old revision live."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Hosted
from tests.e2e.probe_client import ProbeSession
from tests.harness import EXAMPLES, Node


@pytest.fixture(scope="module")
def deployed(node: Node, tmp_path_factory: pytest.TempPathFactory) -> tuple[Hosted, Path]:
    node.create_tenant("deployer")
    key = node.create_key("deployer")["token"]
    src = tmp_path_factory.mktemp("srv") / "probe"
    shutil.copytree(EXAMPLES / "probe", src)
    r = node.deploy("deployer", src)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["revision"]["number"] == 1
    return Hosted("deployer", body["server"], key, body["url"]), src


def _live(node: Node, hosted: Hosted) -> dict:
    with node.api() as api:
        r = api.get(f"/tenants/{hosted.tenant}/servers/{hosted.server}")
        assert r.status_code == 200, r.text
        return r.json()


def _live_number(node: Node, hosted: Hosted) -> int:
    return _live(node, hosted)["live_revision"]["number"]


def test_broken_spec_is_refused_and_old_revision_stays(node: Node, deployed: tuple[Hosted, Path], tmp_path: Path) -> None:
    hosted, src = deployed
    before = _live_number(node, hosted)
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    (bad / "smcp.toml").write_text('name = "probe"\nruntime = "command"\n')  # no command
    r = node.deploy("deployer", bad)
    assert r.status_code == 422
    assert "command" in r.json()["error"]["message"]
    assert _live_number(node, hosted) == before
    s = ProbeSession(hosted)
    try:
        assert s.ok("whoami")["uid"] != 0
    finally:
        s.close()


def test_broken_build_is_refused_with_its_log(node: Node, tmp_path: Path) -> None:
    node.create_tenant("builder")
    good = tmp_path / "good"
    shutil.copytree(EXAMPLES / "demo", good)
    first = node.deploy("builder", good)
    assert first.status_code == 201, first.text
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    (bad / "requirements.txt").write_text("smcp-no-such-package-exists-here==9.9.9\n")
    r = node.deploy("builder", bad)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "build_failed"
    assert "smcp-no-such-package-exists-here" in json.dumps(err)
    with node.api() as api:
        live = api.get("/tenants/builder/servers/demo").json()
    assert live["live_revision"]["number"] == 1


def test_redeploy_makes_a_new_live_revision(node: Node, deployed: tuple[Hosted, Path], tmp_path: Path) -> None:
    hosted, src = deployed
    before = _live_number(node, hosted)
    old_session = ProbeSession(hosted)
    changed = tmp_path / "changed"
    shutil.copytree(src, changed)
    with open(changed / "smcp.toml", "a") as f:
        f.write('\n[env]\nREVISION_MARK = "two"\n')
    r = node.deploy("deployer", changed)
    assert r.status_code == 201, r.text
    assert r.json()["revision"]["number"] == before + 1
    new_session = ProbeSession(hosted)
    try:
        assert new_session.ok("env")["environ"].get("REVISION_MARK") == "two"
        # A session opened before the deploy finishes on the revision it started with.
        assert "REVISION_MARK" not in old_session.ok("env")["environ"]
    finally:
        new_session.close()
        old_session.close()


def test_cli_deploy_and_show(node: Node, tmp_path: Path) -> None:
    env = {**os.environ, "SMCP_URL": node.base_url, "SMCP_ADMIN_TOKEN": node.admin_token}

    def smcp(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "smcp.cli.main", *args], env=env, capture_output=True, text=True, timeout=300)

    assert smcp("tenant", "create", "clitenant").returncode == 0
    out = smcp("deploy", str(EXAMPLES / "probe"), "--tenant", "clitenant", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["server"] == "probe"
    shown = smcp("server", "show", "probe", "--tenant", "clitenant", "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["live_revision"]["number"] == 1
    listed = smcp("server", "list", "--tenant", "clitenant")
    assert "probe" in listed.stdout
    bad = smcp("deploy", str(tmp_path), "--tenant", "clitenant")
    assert bad.returncode != 0
    assert "smcp.toml" in bad.stderr
    deleted = smcp("server", "delete", "probe", "--tenant", "clitenant", "--yes")
    assert deleted.returncode == 0, deleted.stderr
    assert smcp("server", "show", "probe", "--tenant", "clitenant").returncode != 0
