"""The `smcp` command against a live API."""

from __future__ import annotations

import json
from pathlib import Path

from live_api import ADMIN_TOKEN, LiveApi
from typer.testing import CliRunner

from smcp.cli.main import app

runner = CliRunner()


def smcp(env: dict[str, str], *args: str, input: str | None = None):
    return runner.invoke(app, list(args), env=env, input=input)


def test_tenant_create_and_list(env: dict[str, str]) -> None:
    r = smcp(env, "tenant", "create", "acme")
    assert r.exit_code == 0, r.output
    assert "Created tenant acme" in r.stdout

    r = smcp(env, "tenant", "create", "beta", "--json")
    assert r.exit_code == 0
    assert json.loads(r.stdout)["name"] == "beta"

    r = smcp(env, "tenant", "list")
    assert r.exit_code == 0
    assert "NAME" in r.stdout and "acme" in r.stdout and "beta" in r.stdout

    r = smcp(env, "tenant", "list", "--json")
    assert [t["name"] for t in json.loads(r.stdout)] == ["acme", "beta"]


def test_api_errors_exit_1_with_message_on_stderr(env: dict[str, str]) -> None:
    assert smcp(env, "tenant", "create", "acme").exit_code == 0
    r = smcp(env, "tenant", "create", "acme")
    assert r.exit_code == 1
    assert "already exists" in r.stderr and r.stdout == ""

    r = smcp(env, "tenant", "create", "Not_Valid")
    assert r.exit_code == 1
    assert "request is invalid" in r.stderr and "name" in r.stderr

    r = smcp(env, "key", "list", "--tenant", "ghost")
    assert r.exit_code == 1 and "not found" in r.stderr


def test_usage_errors_exit_2(env: dict[str, str]) -> None:
    r = smcp(env, "key", "create")  # --tenant missing
    assert r.exit_code == 2
    r = smcp(env, "tenant", "frobnicate")
    assert r.exit_code == 2


def test_wrong_token_is_refused(env: dict[str, str]) -> None:
    r = smcp({**env, "SMCP_ADMIN_TOKEN": "nope"}, "tenant", "list")
    assert r.exit_code == 1
    assert "invalid bearer token" in r.stderr and "--token" in r.stderr
    r = smcp({**env, "SMCP_ADMIN_TOKEN": "nope"}, "tenant", "list", "--token", ADMIN_TOKEN)
    assert r.exit_code == 0  # the flag wins over the environment


def test_token_read_from_data_dir(env: dict[str, str], tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "admin-token").write_text(ADMIN_TOKEN + "\n")
    no_token_env = {**env, "SMCP_ADMIN_TOKEN": None, "SMCP_DATA_DIR": str(home)}
    r = smcp(no_token_env, "tenant", "list")  # type: ignore[arg-type]
    assert r.exit_code == 0, r.stderr


def test_unreachable_url(env: dict[str, str], unused_port: int) -> None:
    url = f"http://127.0.0.1:{unused_port}"
    r = smcp(env, "tenant", "list", "--url", url)
    assert r.exit_code == 1
    assert f"cannot reach SMCP at {url}" in r.stderr and "smcp up" in r.stderr


def test_key_create_list_revoke(env: dict[str, str], live_api: LiveApi) -> None:
    smcp(env, "tenant", "create", "acme")
    r = smcp(env, "key", "create", "--tenant", "acme", "--name", "ci")
    assert r.exit_code == 0, r.output
    token = r.stdout.strip().splitlines()[-1]
    assert token.startswith("smcp_")
    assert live_api.call(live_api.store.api_keys.authenticate(token)) is not None

    r = smcp(env, "key", "create", "--tenant", "acme", "--json")
    created = json.loads(r.stdout)
    assert created["name"] == "default" and created["token"].startswith(created["prefix"])

    r = smcp(env, "key", "list", "--tenant", "acme", "--json")
    items = json.loads(r.stdout)
    assert len(items) == 2 and all("token" not in k for k in items)
    key_id = next(k["id"] for k in items if k["name"] == "ci")

    r = smcp(env, "key", "list", "--tenant", "acme")
    assert key_id in r.stdout and "active" in r.stdout and token not in r.stdout

    r = smcp(env, "key", "revoke", key_id, "--tenant", "acme")
    assert r.exit_code == 0 and f"Revoked key {key_id}" in r.stdout
    assert live_api.call(live_api.store.api_keys.authenticate(token)) is None
    assert "revoked" in smcp(env, "key", "list", "--tenant", "acme").stdout

    r = smcp(env, "key", "revoke", "000000000000", "--tenant", "acme")
    assert r.exit_code == 1 and "not found" in r.stderr


def _server_dir(tmp_path: Path, name: str = "echo", spec: str | None = None) -> Path:
    d = tmp_path / f"src-{name}"
    d.mkdir()
    (d / "smcp.toml").write_text(spec or f'name = "{name}"\nruntime = "python"\nentrypoint = "server.py"\n')
    (d / "server.py").write_text("print('hi')\n")
    return d


def test_deploy_and_server_commands(env: dict[str, str], live_api: LiveApi, tmp_path: Path) -> None:
    smcp(env, "tenant", "create", "acme")
    src = _server_dir(tmp_path)
    r = smcp(env, "deploy", str(src), "--tenant", "acme")
    assert r.exit_code == 0, r.output
    assert "Deployed echo revision 1" in r.stdout
    assert f"{live_api.url}/t/acme/echo/mcp" in r.stdout

    (src / "server.py").write_text("print('v2')\n")
    r = smcp(env, "deploy", str(src), "--tenant", "acme", "--json")
    assert json.loads(r.stdout)["revision"]["number"] == 2

    r = smcp(env, "server", "list", "--tenant", "acme")
    assert r.exit_code == 0 and "echo" in r.stdout

    r = smcp(env, "server", "show", "echo", "--tenant", "acme")
    assert r.exit_code == 0 and "python: server.py" in r.stdout and "2 (" in r.stdout

    live_api.runtime.add_log("acme", "echo", "hello from stderr")  # type: ignore[attr-defined]
    r = smcp(env, "server", "logs", "echo", "--tenant", "acme", "--limit", "5")
    assert r.exit_code == 0 and "hello from stderr" in r.stdout

    r = smcp(env, "server", "delete", "echo", "--tenant", "acme", input="n\n")
    assert r.exit_code == 1  # declined: nothing deleted
    assert smcp(env, "server", "show", "echo", "--tenant", "acme").exit_code == 0

    r = smcp(env, "server", "delete", "echo", "--tenant", "acme", "--yes")
    assert r.exit_code == 0
    r = smcp(env, "server", "show", "echo", "--tenant", "acme")
    assert r.exit_code == 1 and "not found" in r.stderr


def test_deploy_bad_spec_reports_the_problem(env: dict[str, str], tmp_path: Path) -> None:
    smcp(env, "tenant", "create", "acme")
    src = _server_dir(tmp_path, spec='name = "echo"\nruntime = "python"\n')
    r = smcp(env, "deploy", str(src), "--tenant", "acme")
    assert r.exit_code == 1
    assert "entrypoint" in r.stderr

    empty = tmp_path / "empty"
    empty.mkdir()
    r = smcp(env, "deploy", str(empty), "--tenant", "acme")
    assert r.exit_code == 1 and "smcp.toml" in r.stderr


def test_status(env: dict[str, str]) -> None:
    smcp(env, "tenant", "create", "acme")
    r = smcp(env, "status", "--json")
    assert r.exit_code == 0
    data = json.loads(r.stdout)
    assert data["tenants"] == 1 and data["servers"] == 0
    r = smcp(env, "status")
    assert "tenants" in r.stdout and "0.1.0" in r.stdout
