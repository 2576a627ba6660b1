"""Spec validation for node and registry-package servers, and the lockfile rule, without a network."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smcp.domain import InvalidSpec, RuntimeKind, parse_spec
from smcp.runtime.builds import Builder, _pick
from smcp.domain import BuildFailed


def spec(body: str):
    return parse_spec('name = "s"\n' + body)


def invalid(body: str) -> str:
    with pytest.raises(InvalidSpec) as err:
        spec(body)
    return err.value.message


def test_node_runtime_shapes() -> None:
    s = spec('runtime = "node"\nentrypoint = "server.js"')
    assert s.runtime is RuntimeKind.node and s.entrypoint == "server.js"
    s = spec('runtime = "node"\nnpm = "@modelcontextprotocol/server-memory@2026.8.31"\nbin = "mcp-server-memory"')
    assert s.npm and s.bin == "mcp-server-memory" and s.entrypoint is None
    assert "needs entrypoint" in invalid('runtime = "node"')
    assert "not command" in invalid('runtime = "node"\ncommand = ["node", "x.js"]')
    assert "inside the bundle" in invalid('runtime = "node"\nentrypoint = "../x.js"')
    assert "not an option" in invalid('runtime = "node"\nentrypoint = "--inspect=0.0.0.0"')
    assert "drop entrypoint" in invalid('runtime = "node"\nnpm = "a@1.0.0"\nentrypoint = "x.js"')
    assert "runtime 'node'" in invalid('runtime = "python"\nentrypoint = "x.py"\nnpm = "a@1.0.0"')


@pytest.mark.parametrize(
    "package",
    ["pkg", "pkg@latest", "pkg@^1.2.3", "pkg@~1.2.3", "pkg@1.x", "pkg@1.2", "pkg@>=1.0.0", "pkg@1.2.3 || 2.0.0",
     "pkg@git+https://x/y.git", "pkg@https://x/y.tgz", "pkg@file:../x", "@scope/pkg", "PKG@1.0.0", "pkg@1.2.3;rm -rf /"],
)
def test_npm_requires_one_exact_version(package: str) -> None:
    assert "exact version" in invalid(f'runtime = "node"\nnpm = "{package}"')


@pytest.mark.parametrize("package", ["a@1.2.3", "@scope/a.b-c@0.0.1-rc.1+build.5", "@modelcontextprotocol/sdk@1.32.2"])
def test_npm_exact_versions_are_accepted(package: str) -> None:
    assert spec(f'runtime = "node"\nnpm = "{package}"').npm == package


@pytest.mark.parametrize(
    "package",
    ["mcp-server-time", "mcp-server-time>=1", "mcp-server-time~=1.0", "mcp-server-time==1.*", "mcp-server-time===1.0",
     "mcp-server-time==1.0,<2", "mcp-server-time @ https://x/y.whl", "mcp-server-time==1.0; sys_platform=='linux'",
     "-e .", "--index-url=https://evil/ x==1"],
)
def test_pypi_requires_an_exact_pin(package: str) -> None:
    message = invalid(f'runtime = "python"\npypi = "{package}"')
    assert "pinned to one exact version" in message


def test_pypi_shapes() -> None:
    s = spec('runtime = "python"\npypi = "mcp-server-time==2026.10.19"')
    assert s.pypi and s.entrypoint is None
    assert spec('runtime = "python"\npypi = "pkg[cli]==1.0"\nentrypoint = "-m pkg.server"').entrypoint == "-m pkg.server"
    assert spec('runtime = "python"\npypi = "pkg==1.0"\nbin = "pkg-server"').bin == "pkg-server"
    assert "only be '-m module'" in invalid('runtime = "python"\npypi = "pkg==1.0"\nentrypoint = "server.py"')
    assert "only be '-m module'" in invalid('runtime = "python"\npypi = "pkg==1.0"\nentrypoint = "-m a"\nbin = "b"')
    assert "not a dotted" in invalid('runtime = "python"\npypi = "pkg==1.0"\nentrypoint = "-m a;b"')
    assert "runtime 'python'" in invalid('runtime = "node"\nentrypoint = "x.js"\npypi = "a==1"')
    assert "set npm or pypi" in invalid('runtime = "python"\nentrypoint = "x.py"\nbin = "x"')
    assert "executable name" in invalid('runtime = "python"\npypi = "a==1"\nbin = "../../bin/sh"')


def test_secret_refs() -> None:
    s = spec('runtime = "python"\nentrypoint = "x.py"\nsecrets = ["A", { name = "B", env = true }, { name = "C", env = "C_VAR" }]')
    assert [(r.name, r.env_name) for r in s.secrets] == [("A", None), ("B", "B"), ("C", "C_VAR")]
    assert "listed twice" in invalid('runtime = "command"\ncommand = ["x"]\nsecrets = ["A", "A"]')
    assert "must be 1-128" in invalid('runtime = "command"\ncommand = ["x"]\nsecrets = ["not-valid"]')
    assert "set by the platform" in invalid('runtime = "command"\ncommand = ["x"]\nsecrets = [{ name = "PATH", env = true }]')
    assert "both by env" in invalid('runtime = "command"\ncommand = ["x"]\nsecrets = [{ name = "A", env = true }]\n[env]\nA = "1"')
    assert "two secrets" in invalid('runtime = "command"\ncommand = ["x"]\nsecrets = [{ name = "A", env = "X" }, { name = "B", env = "X" }]')
    assert "extra" in invalid('runtime = "command"\ncommand = ["x"]\nsecrets = [{ name = "A", file = false }]').lower()


# ----------------------------------------------------------------------- bundle checks


def _builder(tmp_path: Path) -> Builder:
    return Builder(tmp_path / "builds", tmp_path / "cache", python="/usr/bin/python3", bwrap="bwrap", timeout_s=60)


async def test_node_dependencies_without_a_lockfile_are_refused(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "package.json").write_text(json.dumps({"name": "x", "dependencies": {"left-pad": "1.3.0"}}))
    with pytest.raises(InvalidSpec, match="no package-lock.json"):
        await _builder(tmp_path).build("t", spec('runtime = "node"\nentrypoint = "server.js"'), app, 0, 0)
    assert not any((tmp_path / "builds").glob("*")) if (tmp_path / "builds").exists() else True


async def test_node_without_dependencies_needs_no_build(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    b = _builder(tmp_path)
    s = spec('runtime = "node"\nentrypoint = "server.js"')
    assert await b.build("t", s, app, 0, 0) is None  # no package.json at all
    (app / "package.json").write_text(json.dumps({"name": "x", "type": "module", "devDependencies": {"x": "1"}}))
    assert await b.build("t", s, app, 0, 0) is None  # dev dependencies are not installed anyway
    (app / "package.json").write_text("{not json")
    from smcp.domain import InvalidBundle

    with pytest.raises(InvalidBundle, match="not valid JSON"):
        await b.build("t", s, app, 0, 0)


def test_which_executable_runs() -> None:
    assert _pick(["only"], None, "pkg", "bin") == "only"
    assert _pick(["a", "pkg"], None, "@scope/pkg", "bin") == "pkg"
    assert _pick(["mcp-server-time", "other"], None, "mcp_server_time", "console script") == "mcp-server-time"
    assert _pick(["a", "b"], "b", "pkg", "bin") == "b"
    with pytest.raises(BuildFailed, match="several bins"):
        _pick(["a", "b"], None, "pkg", "bin")
    with pytest.raises(BuildFailed, match="has no bin 'c'"):
        _pick(["a", "b"], "c", "pkg", "bin")
    with pytest.raises(BuildFailed, match="declares no"):
        _pick([], None, "pkg", "bin")
