"""The MCP conformance suite against our fixture: directly, then hosted in SMCP.

The fixture (examples/servers/conformance) is served two ways:

* direct — the SDK's own Streamable HTTP app on loopback (tests/conformance/direct_server.py):
  the baseline, what the SDK alone achieves;
* gateway — deployed to a real SMCP node, run sandboxed over stdio, reached through
  `/t/{tenant}/{server}/mcp` via a loopback proxy that adds the API key (auth_proxy.py).

Each run of `@modelcontextprotocol/conformance` (stable 0.1.16 `--suite all`; next
0.2.0-alpha.12 `--suite all` at 2025-11-25 and at 2026-07-28, and its `[extension]`
scenarios: tasks, SEP-2663, and skills, SEP-2640) is made against both, and
the per-scenario results are compared: hosting must lose nothing. expected-failures.yml
may list only scenarios that also fail directly, each with its reason.
"""

from __future__ import annotations

import json
import os
import re
import socket
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.harness import EXAMPLES, NODE_BIN, ROOT, Node, free_port, start_node

HERE = Path(__file__).resolve().parent
EXPECTED_FAILURES = HERE / "expected-failures.yml"
SUITES = {
    "stable": ROOT / "node_modules" / "conformance-stable" / "dist" / "index.js",
    "next": ROOT / "node_modules" / "conformance-next" / "dist" / "index.js",
}
SCENARIO_TIMEOUT_MS = "20000"
RUN_TIMEOUT_S = 240

@dataclass(frozen=True)
class Run:
    id: str
    suite: str
    args: tuple[str, ...]
    # The server command has no suite for a tag (such as `extension`): such a run lists
    # the scenarios carrying the tag and runs each with --scenario.
    tag: str | None = None


RUNS = (
    Run("stable", "stable", ("--suite", "all")),
    Run("next-2025-11-25", "next", ("--suite", "all", "--spec-version", "2025-11-25")),
    Run("next-2026-07-28", "next", ("--suite", "all", "--spec-version", "2026-07-28")),
    # The tasks (SEP-2663) and skills (SEP-2640) extensions: not part of either dated
    # version, so --spec-version leaves them out of the runs above.
    Run("next-extensions", "next", (), tag="extension"),
)
PARALLEL_SCENARIOS = 4
# Scenarios of a tagged run that skip every check whatever the server does, with why.
# Any other scenario of such a run must pass at least one check of its own directly:
# a fixture that does not declare an extension would otherwise "pass" by skipping.
SUITE_STUBS = {
    "tasks-status-notifications": "0.2.0-alpha.12 skips it unconditionally, pending its rewrite onto "
    "subscriptions/listen (the fixture sends notifications/tasks there all the same)",
}
SCHEMA_CHECK = "wire-schema-valid"


@dataclass
class Outcome:
    """One scenario's result: passed unless some check reported FAILURE."""

    passed: bool
    ok: int = 0
    failed: int = 0
    warned: int = 0
    failures: list[str] = field(default_factory=list)
    statuses: dict[str, str] = field(
        default_factory=dict
    )  # check id -> worst status seen

    @property
    def counts(self) -> str:
        return (
            f"{self.ok} ok"
            + (f", {self.failed} failed" if self.failed else "")
            + (f", {self.warned} warn" if self.warned else "")
        )


# ----------------------------------------------------------------- running the suite


_RESULT_DIR = re.compile(
    r"^server-(?P<scenario>.+)-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z$"
)
_SUMMARY_LINE = re.compile(
    r"^[✓✗]\s+(?P<scenario>\S+):\s+(?P<counts>\d+ passed, \d+ failed)"
)
_SEVERITY = {"SUCCESS": 1, "SKIPPED": 2, "INFO": 2, "WARNING": 3, "FAILURE": 4}


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{NODE_BIN}:{os.environ.get('PATH', '')}", "NO_COLOR": "1"}


def tagged_scenarios(suite: str, tag: str) -> list[str]:
    """The server scenarios `conformance list --server` shows with `tag`."""
    listing = subprocess.run(
        [str(NODE_BIN / "node"), str(SUITES[suite]), "list", "--server"],
        check=True, capture_output=True, text=True, env=_env(), timeout=60,
    ).stdout
    names = [m[1] for m in re.finditer(r"^\s*- (\S+) \[([^\]]*)\]", listing, re.M) if tag in m[2].split(",")]
    assert names, f"no server scenario tagged {tag!r} in:\n{listing}"
    return names


def _invoke(run: Run, url: str, out_dir: Path, args: list[str]) -> subprocess.CompletedProcess[str]:
    cmd = [str(NODE_BIN / "node"), str(SUITES[run.suite]), "server", "--url", url, *args]
    if run.suite == "next":  # 0.1.16 has no --timeout (its per-scenario default is 30 s)
        cmd += ["--timeout", SCENARIO_TIMEOUT_MS]
    cmd += ["-o", str(out_dir)]
    return subprocess.run(
        cmd, check=False, capture_output=True, text=True, env=_env(), timeout=RUN_TIMEOUT_S, cwd=out_dir
    )


def run_suite(run: Run, url: str, label: str) -> dict[str, Outcome]:
    """Run one suite invocation against url; per-scenario outcomes from its results files."""
    out_dir = Path(tempfile.mkdtemp(prefix=f"conformance-{run.id}-{label}-"))
    started = time.monotonic()
    outcomes: dict[str, Outcome] = {}
    if run.tag is None:
        procs = [_invoke(run, url, out_dir, list(run.args))]
        # The summary names every scenario run (even one that wrote no results); the
        # per-scenario checks.json files say which checks failed and why.
        for line in procs[0].stdout.splitlines():
            if m := _SUMMARY_LINE.match(line.strip()):
                outcomes[m["scenario"]] = Outcome(passed=m["counts"].endswith(" 0 failed"))
    else:
        names = tagged_scenarios(run.suite, run.tag)
        with ThreadPoolExecutor(PARALLEL_SCENARIOS) as pool:
            procs = list(pool.map(lambda n: _invoke(run, url, out_dir, [*run.args, "--scenario", n]), names))
        # A scenario that wrote no checks.json failed (the loop below reads the others).
        written = {m["scenario"] for d in out_dir.glob("server-*/") if (m := _RESULT_DIR.match(d.name))}
        for name, done in zip(names, procs, strict=True):
            if name not in written:
                outcomes[name] = Outcome(passed=False, failures=[f"no results (exit {done.returncode}): {done.stdout[-300:]}"])
    elapsed = time.monotonic() - started
    (out_dir / "stdout.txt").write_text("\n".join(p.stdout for p in procs))
    (out_dir / "stderr.txt").write_text("\n".join(p.stderr for p in procs))
    proc = procs[-1]
    for checks_file in sorted(out_dir.glob("server-*/checks.json")):
        m = _RESULT_DIR.match(checks_file.parent.name)
        assert m, f"unexpected results directory {checks_file.parent}"
        outcome = outcomes.setdefault(m["scenario"], Outcome(passed=True))
        for check in json.loads(checks_file.read_text()):
            status, check_id = check.get("status"), str(check.get("id"))
            outcome.statuses[check_id] = max(
                status,
                outcome.statuses.get(check_id, status),
                key=lambda st: _SEVERITY.get(st, 0),
            )
            if status == "SUCCESS":
                outcome.ok += 1
            elif status == "WARNING":
                outcome.warned += 1
            elif status == "FAILURE":
                outcome.passed = False
                outcome.failed += 1
                outcome.failures.append(
                    f"{check_id}: {check.get('errorMessage') or '(no message)'}"
                )
    assert outcomes, (
        f"conformance {run.id} against {label} produced no results (exit {proc.returncode})\n"
        f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    )
    print(
        f"\n[conformance {run.id} {label}: {len(outcomes)} scenarios in {elapsed:.1f}s; results in {out_dir}]"
    )
    return outcomes


def load_expected_failures() -> dict[str, dict[str, str]]:
    data = yaml.safe_load(EXPECTED_FAILURES.read_text()) or {}
    assert isinstance(data, dict), (
        f"{EXPECTED_FAILURES.name}: top level must map run ids to scenarios"
    )
    unknown = set(data) - {r.id for r in RUNS}
    assert not unknown, f"{EXPECTED_FAILURES.name}: unknown run ids {sorted(unknown)}"
    out: dict[str, dict[str, str]] = {}
    for run_id, entries in data.items():
        entries = entries or {}
        assert isinstance(entries, dict), (
            f"{EXPECTED_FAILURES.name}: {run_id} must map scenario -> reason"
        )
        for scenario, reason in entries.items():
            assert isinstance(reason, str) and reason.strip(), (
                f"{EXPECTED_FAILURES.name}: {run_id}/{scenario} needs a reason"
            )
        out[run_id] = entries
    return out


def table(
    run: Run, direct: dict[str, Outcome], gateway: dict[str, Outcome] | None
) -> str:
    names = sorted(set(direct) | set(gateway or {}))
    width = max(len(n) for n in names)

    def cell(outcomes: dict[str, Outcome] | None, name: str) -> str:
        if outcomes is None:
            return "-"
        o = outcomes.get(name)
        if o is None:
            return "missing"
        return ("PASS" if o.passed else "FAIL") + f" ({o.counts})"

    lines = [
        f"conformance {run.id}",
        f"{'scenario':<{width}}  {'direct':<28}  gateway",
        "-" * (width + 50),
    ]
    for name in names:
        lines.append(
            f"{name:<{width}}  {cell(direct, name):<28}  {cell(gateway, name)}"
        )
    passed_direct = sum(o.passed for o in direct.values())
    summary = f"direct {passed_direct}/{len(direct)} pass"
    if gateway is not None:
        passed_gw = sum(o.passed for o in gateway.values())
        summary += f"; gateway {passed_gw}/{len(gateway)} pass"
    lines.append(summary)
    for label, outcomes in (("direct", direct), ("gateway", gateway or {})):
        for name in names:
            o = outcomes.get(name)
            if o is not None and not o.passed:
                for failure in o.failures or ["(no results written)"]:
                    lines.append(f"  {label} FAIL {name}: {failure[:400]}")
    # Not failures, but worth knowing: checks that succeed directly and only warn or
    # are skipped/informational through the gateway (e.g. JSON instead of SSE).
    for name in names:
        d, g = direct.get(name), (gateway or {}).get(name)
        if d is None or g is None:
            continue
        for check_id, status in d.statuses.items():
            through = g.statuses.get(check_id, "absent")
            if status == "SUCCESS" and through not in ("SUCCESS", "FAILURE"):
                lines.append(
                    f"  note {name}/{check_id}: SUCCESS direct, {through} through the gateway"
                )
    return "\n".join(lines)


# ----------------------------------------------------------------------- fixtures


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited early with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on {port}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def suites_installed() -> None:
    missing = [str(p) for p in SUITES.values() if not p.exists()]
    if missing or not (NODE_BIN / "node").exists():
        pytest.fail(
            f"conformance suites / Node 22 not installed (run `make node-deps`): {missing}"
        )


@pytest.fixture(scope="module")
def direct_url(suites_installed: None) -> Iterator[str]:
    """The fixture served by the SDK's own Streamable HTTP app on loopback."""
    port = free_port()
    with tempfile.NamedTemporaryFile(
        prefix="conformance-direct-", suffix=".log", delete=False
    ) as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.conformance.direct_server", str(port)],
            cwd=ROOT,
            stdout=log,
            stderr=log,
        )
        try:
            _wait_port(port, proc, f"direct conformance server (log: {log.name})")
            yield f"http://127.0.0.1:{port}/mcp"
        finally:
            _stop(proc)


@pytest.fixture(scope="module", params=["shared", "per-session", "http"])
def gateway_url(
    request: pytest.FixtureRequest, node: Node, suites_installed: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The fixture hosted in SMCP one way, behind a proxy that adds the API key.

    shared / per-session: deployed as code, run sandboxed over stdio in that sharing
    mode. http: the direct SDK server registered as a remote upstream (runtime "http"),
    on a node of its own, since only that node may dial loopback upstreams.
    """
    mode = request.param
    host = node
    own_node: Node | None = None
    source = tmp_path_factory.mktemp(f"conformance-{mode}") / "conformance"
    if mode == "http":
        base = Path(tempfile.mkdtemp(prefix="smcp-conf-http-"))
        base.chmod(0o711)
        own_node = host = start_node(base / "data", http_upstream_unsafe_allow='["127.0.0.0/8"]')
        source.mkdir()
        upstream = request.getfixturevalue("direct_url")
        (source / "smcp.toml").write_text(f'name = "conformance-http"\nruntime = "http"\n[http]\nurl = "{upstream}"\n')
    else:
        shutil.copytree(EXAMPLES / "conformance", source)
        spec = (source / "smcp.toml").read_text()
        spec = spec.replace('name = "conformance"', f'name = "conformance-{mode}"\nsharing = "{mode}"', 1)
        assert f'sharing = "{mode}"' in spec
        (source / "smcp.toml").write_text(spec)
    host.create_tenant("conformance")
    key = host.create_key("conformance")["token"]
    r = host.deploy("conformance", source)
    assert r.status_code == 201, r.text
    server = r.json()["server"]
    port = free_port()
    env = {
        **os.environ,
        "SMCP_PROXY_HEADERS": json.dumps({"Authorization": f"Bearer {key}"}),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.conformance.auth_proxy", str(port), host.base_url],
        cwd=ROOT,
        env=env,
    )
    try:
        _wait_port(port, proc, "auth proxy")
        yield f"http://127.0.0.1:{port}/t/conformance/{server}/mcp"
    finally:
        _stop(proc)
        if own_node is not None:
            own_node.stop()


_direct_results: dict[str, dict[str, Outcome]] = {}


def direct_results(run: Run, url: str) -> dict[str, Outcome]:
    if run.id not in _direct_results:
        _direct_results[run.id] = run_suite(run, url, "direct")
    return _direct_results[run.id]


# -------------------------------------------------------------------------- tests


@pytest.mark.parametrize("run", RUNS, ids=[r.id for r in RUNS])
def test_direct_baseline(run: Run, direct_url: str) -> None:
    """The SDK alone: everything passes except what expected-failures.yml explains."""
    direct = direct_results(run, direct_url)
    print("\n" + table(run, direct, None))
    expected = load_expected_failures().get(run.id, {})
    stale = sorted(s for s in expected if s in direct and direct[s].passed)
    unknown = sorted(s for s in expected if s not in direct)
    unexplained = sorted(
        s for s, o in direct.items() if not o.passed and s not in expected
    )
    problems = []
    if stale:
        problems.append(
            f"listed in expected-failures.yml but passing directly (remove them): {stale}"
        )
    if unknown:
        problems.append(f"listed in expected-failures.yml but not run: {unknown}")
    if unexplained:
        problems.append(
            f"failing directly and not in expected-failures.yml (fix the fixture or list them): {unexplained}"
        )
    if run.tag is not None:
        idle = sorted(
            name for name, o in direct.items()
            if name not in expected and not any(st == "SUCCESS" for c, st in o.statuses.items() if c != SCHEMA_CHECK)
        )
        if set(idle) != set(SUITE_STUBS):
            problems.append(
                f"{run.tag} scenarios that exercise nothing directly (the fixture must implement them): "
                f"{sorted(set(idle) - set(SUITE_STUBS))}; listed as suite stubs but now exercised: "
                f"{sorted(set(SUITE_STUBS) - set(idle))}"
            )
    assert not problems, "\n".join(problems) + "\n\n" + table(run, direct, None)


@pytest.mark.parametrize(
    "run",
    RUNS,
    ids=[r.id for r in RUNS],
)
def test_gateway_loses_nothing(run: Run, direct_url: str, gateway_url: str) -> None:
    """Every scenario that passes directly passes through the SMCP gateway too."""
    direct = direct_results(run, direct_url)
    gateway = run_suite(run, gateway_url, "gateway")
    report = table(run, direct, gateway)
    print("\n" + report)
    lost = sorted(
        s
        for s, o in direct.items()
        if o.passed and not (s in gateway and gateway[s].passed)
    )
    if run.tag is not None:
        # An extension check skipped through the gateway but passed directly means the
        # gateway lost what the check looks for (a capability, a method): a loss.
        lost += sorted(
            s for s, o in direct.items() if s in gateway and s not in lost and any(
                st == "SUCCESS" and gateway[s].statuses.get(c) != "SUCCESS" for c, st in o.statuses.items()
            )
        )
    assert not lost, f"pass directly but not through the gateway: {lost}\n\n{report}"
