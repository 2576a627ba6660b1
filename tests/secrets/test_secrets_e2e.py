"""Secrets end to end on a real node: CLI → sealed store → /run/secrets in a bubblewrap sandbox,
and nowhere else: not in /proc/1 inside, host argv, the launcher's environment, or the logs."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from typer.testing import CliRunner

from smcp.cli.main import app as cli
from tests.conftest import Hosted
from tests.e2e.probe_client import ProbeSession
from tests.harness import EXAMPLES, Node

FILE_SECRET = "file-only-Zq8w3Kp1-secret/+="
ENV_SECRET = "env-too-Yb7n2Lm0-secret?&"
runner = CliRunner()


def smcp(node: Node, *args: str, input: str | None = None):
    env = {"SMCP_URL": node.base_url, "SMCP_ADMIN_TOKEN": node.admin_token, "SMCP_DATA_DIR": "/nonexistent"}
    return runner.invoke(cli, list(args), env=env, input=input)


@pytest.fixture(scope="module")
def hosted(node: Node, tmp_path_factory: pytest.TempPathFactory) -> Hosted:
    tenant = "keeper"
    node.create_tenant(tenant)
    key = node.create_key(tenant)["token"]
    src = tmp_path_factory.mktemp("probe-secrets")
    shutil.copy(EXAMPLES / "probe" / "probe.py", src / "probe.py")
    spec = (EXAMPLES / "probe" / "smcp.toml").read_text().replace('name = "probe"', 'name = "vaulted"')
    spec = spec.replace(
        'command = ["python3", "probe.py"]',
        'command = ["python3", "probe.py"]\nsecrets = ["FILE_TOKEN", { name = "ENV_TOKEN", env = true }]',
    )
    (src / "smcp.toml").write_text(spec)

    # Deploying before the secrets exist fails clearly and builds nothing.
    r = node.deploy(tenant, src)
    assert r.status_code == 422 and "FILE_TOKEN" in r.text and "ENV_TOKEN" in r.text, r.text

    # Set them through the CLI: stdin (the trailing newline is dropped) and --value-file.
    r = smcp(node, "secret", "set", "FILE_TOKEN", "--tenant", tenant, input=FILE_SECRET + "\n")
    assert r.exit_code == 0, r.output
    value_file = src.parent / "env-token.txt"
    value_file.write_text(ENV_SECRET)
    r = smcp(node, "secret", "set", "ENV_TOKEN", "--tenant", tenant, "--value-file", str(value_file))
    assert r.exit_code == 0, r.output
    value_file.unlink()

    r = node.deploy(tenant, src)
    assert r.status_code == 201, r.text
    return Hosted(tenant, "vaulted", key, node.mcp_url(tenant, "vaulted"))


@pytest.fixture()
def session(hosted: Hosted) -> Iterator[ProbeSession]:
    s = ProbeSession(hosted)
    yield s
    s.close()


def test_cli_never_shows_values(node: Node, hosted: Hosted) -> None:
    r = smcp(node, "secret", "list", "--tenant", hosted.tenant, "--json")
    assert r.exit_code == 0, r.output
    listed = json.loads(r.stdout)
    assert sorted(s["name"] for s in listed) == ["ENV_TOKEN", "FILE_TOKEN"]
    assert all(set(s) == {"name", "version", "created_at"} for s in listed)
    table = smcp(node, "secret", "list", "--tenant", hosted.tenant)
    for out in (r.output, table.output):
        assert FILE_SECRET not in out and ENV_SECRET not in out
    # --value works but warns that argv is visible.
    r = smcp(node, "secret", "set", "SCRATCH", "--tenant", hosted.tenant, "--value", "throwaway-value")
    assert r.exit_code == 0 and "warning" in r.stderr and "ps" in r.stderr
    assert smcp(node, "secret", "delete", "SCRATCH", "--tenant", hosted.tenant).exit_code == 0
    assert smcp(node, "secret", "delete", "SCRATCH", "--tenant", hosted.tenant).exit_code == 1


def test_secret_files_are_readable_inside_read_only(session: ProbeSession) -> None:
    assert session.ok("read_file", path="/run/secrets/FILE_TOKEN")["text"] == FILE_SECRET
    assert session.ok("read_file", path="/run/secrets/ENV_TOKEN")["text"] == ENV_SECRET
    assert sorted(session.ok("list_dir", path="/run/secrets")["entries"]) == ["ENV_TOKEN", "FILE_TOKEN"]
    err = session.fails("write_file", path="/run/secrets/FILE_TOKEN", text="overwrite")
    assert "Read-only" in err["error"] or "Permission denied" in err["error"]


def test_env_only_where_asked_and_not_in_pid1(session: ProbeSession) -> None:
    environ = session.ok("env")["environ"]
    assert environ.get("ENV_TOKEN") == ENV_SECRET
    assert "FILE_TOKEN" not in environ and FILE_SECRET not in json.dumps(environ)
    pid1 = session.ok("proc1_environ")
    dumped = json.dumps(pid1)
    assert FILE_SECRET not in dumped and ENV_SECRET not in dumped
    assert pid1["environ"] == []  # bwrap's PID 1 keeps its original, empty environment


def test_not_in_host_ps_nor_launcher_environment(node: Node, session: ProbeSession) -> None:
    me = session.ok("whoami")
    uid = me["uid"]
    argv = subprocess.run(["ps", "-eo", "pid,args", "ww"], capture_output=True, text=True, check=True).stdout
    assert FILE_SECRET not in argv and ENV_SECRET not in argv
    assert any("bwrap --args" in line for line in argv.splitlines())
    # Host ps with environments (as root it sees every process's env): the file-only secret
    # is in no process environment at all; the env secret only in the server process itself.
    with_env = subprocess.run(["ps", "-eo", "pid,args", "eww"], capture_output=True, text=True, check=True).stdout
    assert FILE_SECRET not in with_env
    holders = [line for line in with_env.splitlines() if ENV_SECRET in line]
    assert holders and all("probe.py" in line and "bwrap" not in line for line in holders), holders
    # The launcher (the SMCP node) and every bwrap process have clean environments.
    assert FILE_SECRET.encode() not in Path(f"/proc/{node.proc.pid}/environ").read_bytes()
    assert ENV_SECRET.encode() not in Path(f"/proc/{node.proc.pid}/environ").read_bytes()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if proc.stat().st_uid != uid:
                continue
            cmdline = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        assert FILE_SECRET.encode() not in cmdline + environ
        assert ENV_SECRET.encode() not in cmdline
        if cmdline.startswith(b"bwrap"):
            assert environ == b""


def test_values_never_reach_the_host_disk(node: Node, session: ProbeSession) -> None:
    assert session.ok("read_file", path="/run/secrets/FILE_TOKEN")["text"] == FILE_SECRET
    for path in node.data_dir.rglob("*"):
        if not path.is_file() or path.is_symlink() or {"builds", "cache"} & set(path.parts):
            continue
        if path.stat().st_size > 50 * 1024 * 1024:
            continue
        data = path.read_bytes()
        assert FILE_SECRET.encode() not in data, path
        assert ENV_SECRET.encode() not in data, path


def _encodings(value: str) -> list[str]:
    raw = value.encode()
    b64 = base64.b64encode(raw).decode()
    url = base64.urlsafe_b64encode(raw).decode()
    return [value, b64, b64.rstrip("="), url, url.rstrip("="), raw.hex(), raw.hex().upper(), quote(value, safe=""), quote_plus(value)]


def test_stderr_is_redacted_in_every_encoding(node: Node, hosted: Hosted, session: ProbeSession) -> None:
    forms = _encodings(FILE_SECRET) + _encodings(ENV_SECRET)
    for i, form in enumerate(forms):
        session.ok("stderr", text=f"leak-{i}: <{form}> end")
    with node.api() as api:
        lines = api.get(f"/tenants/{hosted.tenant}/servers/{hosted.server}/logs", params={"limit": 1000}).json()
    texts = [line["text"] for line in lines if line["stream"] == "stderr"]
    for i, form in enumerate(forms):
        mine = [t for t in texts if t.startswith(f"leak-{i}: ")]
        assert mine == [f"leak-{i}: <[REDACTED]> end"], (form, mine)
    everything = json.dumps(lines)
    for form in forms:
        assert form not in everything
    # The node's own log file never saw them either.
    assert FILE_SECRET not in node.log_text() and ENV_SECRET not in node.log_text()


def test_new_value_reaches_new_instances_and_deletion_stops_starts(node: Node, hosted: Hosted) -> None:
    r = smcp(node, "secret", "set", "FILE_TOKEN", "--tenant", hosted.tenant, input="rotated-value-123")
    assert r.exit_code == 0 and "version 2" in r.stdout, r.output
    s = ProbeSession(hosted)
    try:
        assert s.ok("read_file", path="/run/secrets/FILE_TOKEN")["text"] == "rotated-value-123"
    finally:
        s.close()
    assert smcp(node, "secret", "delete", "ENV_TOKEN", "--tenant", hosted.tenant).exit_code == 0
    import httpx

    r = httpx.post(
        hosted.url,
        json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}},
        headers={"authorization": f"Bearer {hosted.key}", "accept": "application/json, text/event-stream"},
        timeout=30,
    )
    assert r.status_code == 503 and "ENV_TOKEN" in r.text and "no longer exists" in r.text, r.text
    # Put things back for any test that runs after this one.
    assert smcp(node, "secret", "set", "ENV_TOKEN", "--tenant", hosted.tenant, input=ENV_SECRET).exit_code == 0
    assert smcp(node, "secret", "set", "FILE_TOKEN", "--tenant", hosted.tenant, input=FILE_SECRET).exit_code == 0


def test_keys_rotate_while_serving(node: Node, hosted: Hosted) -> None:
    before = smcp(node, "keys", "status", "--json")
    assert before.exit_code == 0, before.output
    r = smcp(node, "keys", "rotate", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["active"] == json.loads(before.stdout)["active"] + 1 and report["rewrapped"] >= 2
    s = ProbeSession(hosted)
    try:
        assert s.ok("read_file", path="/run/secrets/FILE_TOKEN")["text"] == FILE_SECRET
    finally:
        s.close()
