"""`make bench`: tools/call through the gateway against the same server called directly.

Everything runs in this one command on this machine, so only ratios are reported as
results: added latency at concurrency 1 (p50/p99), throughput ratio at 1 and 32, and
gateway CPU-microseconds per proxied call. The gateway is loaded with wrk (one thread).
Each point is measured in several rounds, each a baseline run and a gateway run back
to back, and the per-round figures' median is reported with their range. The cost of
one wake from idle on this machine (bench/calibrate.py) is measured before and after:
CPU per call relaying for a saturated server moves with it.

"The same server called directly" is the hosted demo's own code, on the interpreter
and packages of its hosted build, with no gateway and no sandbox, over the transport
the gateway itself uses to reach it: stdio (bench/stdio_load.py). The targets are
judged against that baseline. The same server over the SDK's own Streamable HTTP
transport is measured too, for information: the difference between the two
baselines is what the SDK's stdio transport costs, gateway or not.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import calibrate, cotenant  # noqa: E402
from bench.stdio_load import StdioServer  # noqa: E402
from tests.harness import EXAMPLES, free_port, start_node  # noqa: E402

MODERN = "2026-07-28"


@dataclass
class Run:
    name: str
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    cpu_us_per_req: float | None = None
    round: int = 0


def _lua_script(body_text: str, headers: dict[str, str]) -> str:
    before, after = body_text.split('"__ID__"')
    esc = lambda s: s.replace("\\", "\\\\").replace('"', '\\"')  # noqa: E731
    lines = ['wrk.method = "POST"', "counter = 0"]
    lines += [f'wrk.headers["{k}"] = "{esc(v)}"' for k, v in headers.items()]
    lines += [
        "request = function()",
        "  counter = counter + 1",
        f'  return wrk.format(nil, nil, nil, "{esc(before)}" .. counter .. "{esc(after)}")',
        "end",
    ]
    return "\n".join(lines)


def _wrk(url: str, body: dict, headers: dict[str, str], concurrency: int, seconds: float) -> tuple[float, float, float, int, int]:
    body_text = json.dumps({**body, "id": "__ID__"})
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(_lua_script(body_text, headers))
        script = f.name
    try:
        done = subprocess.run(
            ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--latency", "--timeout", "10s", "-s", script, url],
            capture_output=True, text=True, timeout=seconds + 30,
        )
    finally:
        os.unlink(script)
    out = done.stdout
    if "Requests/sec" not in out:
        raise RuntimeError(f"wrk failed against {url}:\n{out}\n{done.stderr}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = int(non2xx.group(1)) if non2xx else 0

    def pct(label: str) -> float:
        m = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", out)
        assert m, out
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    return rps, pct("50"), pct("99"), requests, errors


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _legacy_session(url: str, headers: dict[str, str]) -> dict[str, str]:
    h = {**headers, "accept": "application/json, text/event-stream", "content-type": "application/json"}
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}}}
    r = httpx.post(url, json=init, headers=h, timeout=60)
    r.raise_for_status()
    h["mcp-session-id"] = r.headers["mcp-session-id"]
    h["mcp-protocol-version"] = "2025-11-25"
    httpx.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=h, timeout=30)
    return h


def _call(tool: str = "echo", modern: bool = False) -> dict:
    params: dict = {"name": tool, "arguments": {"text": "hello"}}
    if modern:
        params["_meta"] = {
            "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": {},
        }
    return {"jsonrpc": "2.0", "method": "tools/call", "params": params}


def _modern_headers(headers: dict[str, str]) -> dict[str, str]:
    return {**headers, "accept": "application/json, text/event-stream", "content-type": "application/json",
            "mcp-protocol-version": MODERN, "mcp-method": "tools/call", "mcp-name": "echo"}


def _serve(target: str, python: str = sys.executable) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [python, "-m", "bench.targets", target, "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/mcp" if target != "raw-echo" else f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{target} did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=4.0, help="duration of each wrk run")
    parser.add_argument(
        "--placement", choices=["shared", "split"], default="shared",
        help="shared: every process may run on every CPU (the default settings); split: the node on "
        "the first CPU and hosted servers on the others (SMCP_NODE_CPUS / SMCP_INSTANCE_CPUS), the "
        "direct baseline's server on the same CPUs as the hosted one",
    )
    parser.add_argument(
        "--rounds", type=int, default=3,
        help="direct/gateway pairs per point, run back to back; results are the median over rounds",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk (make bench installs it)")
    secs = args.seconds
    rounds = max(1, args.rounds)
    others = calibrate.strangers()
    if others:
        print(f"WARNING: {len(others)} other SMCP process(es) run on this machine; every figure below is measured "
              "beside them (stop them first):", flush=True)
        for pid, line in others[:10]:
            print(f"  {pid}  {line}", flush=True)
    machine = [calibrate.describe()]
    print(machine[0], flush=True)
    runs: list[Run] = []
    current = 0  # the round the next runs belong to
    base = Path(tempfile.mkdtemp(prefix="smcp-bench-"))
    base.chmod(0o711)
    all_cpus = os.sched_getaffinity(0)
    server_cpus: set[int] | None = None
    placement: dict[str, str] = {}
    if args.placement == "split":
        if len(all_cpus) < 2:
            sys.exit("--placement split needs at least 2 CPUs")
        server_cpus = all_cpus - {min(all_cpus)}
        placement = {"node_cpus": str(min(all_cpus)), "instance_cpus": ",".join(map(str, sorted(server_cpus)))}
        print(f"placement: SMCP_NODE_CPUS={placement['node_cpus']} SMCP_INSTANCE_CPUS={placement['instance_cpus']}"
              " (the direct baseline's server gets the instances' CPUs)")
    node = start_node(base / "data", auth_cache_ttl_s="5", request_timeout_s="30", **placement)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        node.create_tenant("bench")
        key = node.create_key("bench")["token"]
        # The demo's smcp.toml caps it at half a core; the direct baseline runs
        # uncapped, so the hosted copy gets the same room (2 cores, as the machine).
        demo = base / "demo"
        shutil.copytree(EXAMPLES / "demo", demo)
        spec = (demo / "smcp.toml").read_text()
        spec = re.sub(r"(?m)^cpu = .*$", "cpu = 2.0", spec)
        spec = re.sub(r"(?m)^memory_mb = .*$", "memory_mb = 1024", spec)
        spec = re.sub(r"(?m)^pids = .*$", "pids = 256", spec)
        (demo / "smcp.toml").write_text(spec)
        for directory in (demo, ROOT / "bench" / "echo"):
            r = node.deploy("bench", directory)
            assert r.status_code == 201, r.text
        auth = {"authorization": f"Bearer {key}"}

        def measure(name: str, url: str, body: dict, headers: dict[str, str], c: int, pid: int | None) -> Run:
            # Warm up before measuring: one blocking call waits out a cold start (an
            # instance spawned and probed on first use), then wrk warms pools and caches.
            httpx.post(url, json={**body, "id": "warm"}, headers=headers, timeout=120)
            _wrk(url, body, headers, c, 1)
            cpu0 = _cpu_seconds(pid) if pid else 0.0
            rps, p50, p99, n, errors = _wrk(url, body, headers, c, secs)
            run = Run(name, c, rps, p50, p99, n, errors, round=current)
            if pid:
                run.cpu_us_per_req = (_cpu_seconds(pid) - cpu0) * 1e6 / max(n, 1)
            runs.append(run)
            print(f"  {name:<28} c={c:<3} {rps:9.0f} req/s  p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  errors {errors}"
                  + (f"  gateway CPU {run.cpu_us_per_req:6.0f} µs/req" if run.cpu_us_per_req else ""), flush=True)
            return run

        demo_url = node.mcp_url("bench", "demo")
        echo_url = node.mcp_url("bench", "echo")
        # The hosted build's interpreter and packages (the venv works outside the
        # sandbox too: its python links to the system interpreter).
        hosted_python = str(next((base / "data").rglob("venv/bin/python")))
        print(f"Python mcp demo server (hosted process is the bottleneck); direct runs use {hosted_python}:")

        def direct_stdio(name: str, modern: bool, c: int) -> None:
            server = StdioServer([hosted_python, "server.py"], cwd=str(demo), cpus=server_cpus)
            try:
                if modern:
                    server.request({"jsonrpc": "2.0", "id": 0, "method": "server/discover", "params": {"_meta": _call(modern=True)["params"]["_meta"]}})
                else:
                    server.request({"jsonrpc": "2.0", "id": 0, "method": "initialize",
                                    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}}})
                    server.notify({"jsonrpc": "2.0", "method": "notifications/initialized"})
                body = _call(modern=modern)
                server.load(body, c, 1)
                result = server.load(body, c, secs)
            finally:
                server.close()
            run = Run(name, c, result.rps, result.p50_ms, result.p99_ms, result.requests, result.errors, round=current)
            runs.append(run)
            print(f"  {name:<28} c={c:<3} {run.rps:9.0f} req/s  p50 {run.p50_ms:7.2f} ms  p99 {run.p99_ms:7.2f} ms  errors {run.errors}", flush=True)

        direct_legacy, url = _serve("demo-legacy", hosted_python)
        procs.append(direct_legacy)
        direct_modern, murl = _serve("demo-modern", hosted_python)
        procs.append(direct_modern)
        # Each point is measured in `rounds` back-to-back pairs (baseline, then gateway):
        # on a shared or virtual machine the speed drifts by ±15% over minutes, and a
        # pair run seconds apart sees the same machine. Results are per-pair figures'
        # medians.
        for modern in (False, True):
            era = "modern" if modern else "legacy"
            headers = _modern_headers(auth) if modern else _legacy_session(demo_url, auth)
            for c in (1, 32):
                for current in range(rounds):
                    direct_stdio(f"direct {era}", modern, c)
                    g = measure(f"gateway {era}", demo_url, _call(modern=modern), headers, c, node.proc.pid)
                    if c > 1 and g.cpu_us_per_req:
                        # The same baseline beside a neighbour as hungry as the gateway just was.
                        with cotenant.neighbour(g.cpu_us_per_req, 1e6 / g.rps, secs + 30):
                            direct_stdio(f"direct {era} beside co-tenant", modern, c)
                over_http = _modern_headers({}) if modern else _legacy_session(url, {})
                measure(f"direct {era} over HTTP", murl if modern else url, _call(modern=modern), over_http, c, None)
        print("Trivial echo (the gateway is the bottleneck):")
        raw, rurl = _serve("raw-echo")
        procs.append(raw)
        echo_headers = _legacy_session(echo_url, auth)
        for c in (1, 32):
            for current in range(rounds):
                measure("raw uvicorn JSON echo", rurl, _call(), {"content-type": "application/json"}, c, None)
                measure("gateway → stdio echo", echo_url, _call(), echo_headers, c, node.proc.pid)
    finally:
        for p in procs:
            p.terminate()
        node.stop()
        shutil.rmtree(base, ignore_errors=True)
    machine.append(calibrate.describe())
    _report(runs)
    print("\nThe machine, before and after (gateway CPU per call with a saturated server is mostly such wake-ups):")
    for line in machine:
        print(f"  {line}")


def _find(runs: list[Run], name: str, c: int) -> Run:
    return next(r for r in runs if r.name == name and r.concurrency == c)


def _pairs(runs: list[Run], base: str, gateway: str, c: int) -> list[tuple[Run, Run]]:
    """(baseline, gateway) runs of the same round."""
    out = []
    for g in (r for r in runs if r.name == gateway and r.concurrency == c):
        b = next(r for r in runs if r.name == base and r.concurrency == c and r.round == g.round)
        out.append((b, g))
    return out


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _figure(values: list[float], fmt: str) -> str:
    """The median, and the range over rounds when there were several."""
    text = fmt.format(_median(values))
    if len(values) > 1:
        text += f"  ({fmt.format(min(values))} … {fmt.format(max(values))})"
    return text


def _report(runs: list[Run]) -> None:
    rounds = max(r.round for r in runs) + 1
    print(f"\nResults (medians over {rounds} back-to-back rounds, range in brackets; targets from issue P2):")
    rows: list[tuple[str, str, str]] = []
    info: list[tuple[str, str]] = []
    for era in ("legacy", "modern"):
        at1 = _pairs(runs, f"direct {era}", f"gateway {era}", 1)
        at32 = _pairs(runs, f"direct {era}", f"gateway {era}", 32)
        rows += [
            (f"{era}: added latency p50, c=1", _figure([g.p50_ms - d.p50_ms for d, g in at1], "{:+.2f} ms"), "≤ 0.5 ms"),
            (f"{era}: added latency p99, c=1", _figure([g.p99_ms - d.p99_ms for d, g in at1], "{:+.2f} ms"), "≤ 1.5 ms"),
            (f"{era}: throughput gateway/direct, c=1", _figure([g.rps / d.rps for d, g in at1], "{:.2f}×"), "—"),
            (f"{era}: throughput gateway/direct, c=32", _figure([g.rps / d.rps for d, g in at32], "{:.2f}×"), "≥ 0.9×"),
            (f"{era}: gateway CPU per call, c=32", _figure([g.cpu_us_per_req or 0 for _, g in at32], "{:.0f} µs"), "≤ 300 µs"),
        ]
        beside = _pairs(runs, f"direct {era}", f"direct {era} beside co-tenant", 32)
        g1 = _median([g.p50_ms for _, g in at1])
        g32 = _median([g.rps for _, g in at32])
        d32 = _median([d.rps for d, _ in at32])
        h1, h32 = _find(runs, f"direct {era} over HTTP", 1), _find(runs, f"direct {era} over HTTP", 32)
        info += [
            (f"{era}: added latency p50 vs the SDK's HTTP transport, c=1", f"{g1 - h1.p50_ms:+.2f} ms"),
            (f"{era}: throughput gateway/SDK HTTP transport, c=32", f"{g32 / h32.rps:.2f}×"),
            (f"{era}: throughput stdio/HTTP transport, direct, c=32", f"{d32 / h32.rps:.2f}×"),
            (f"{era}: throughput direct beside a co-tenant of the gateway's CPU/direct, c=32",
             _figure([b.rps / d.rps for d, b in beside], "{:.2f}×")),
        ]
    echo32 = _pairs(runs, "raw uvicorn JSON echo", "gateway → stdio echo", 32)
    rows += [
        ("echo: gateway/raw uvicorn echo, c=32", _figure([g.rps / r.rps for r, g in echo32], "{:.2f}×"), "≥ 0.3×"),
        ("echo: gateway CPU per call, c=32", _figure([g.cpu_us_per_req or 0 for _, g in echo32], "{:.0f} µs"), "≤ 300 µs"),
    ]
    width = max(len(r[0]) for r in rows)
    value_width = max(len(r[1]) for r in rows)
    for label, value, target in rows:
        print(f"  {label:<{width}}  {value:>{value_width}}   target {target}")
    print("\nFor information (a different transport, not the targets' baseline, one run each; and the direct "
          "baseline beside bench/cotenant.py, a process using the CPU the gateway used per call at its rate):")
    width = max(len(r[0]) for r in info)
    for label, value in info:
        print(f"  {label:<{width}}  {value:>10}")
    bad = [r for r in runs if r.errors]
    if bad:
        print("\nWARNING: non-2xx responses in: " + ", ".join(f"{r.name} c={r.concurrency}" for r in bad))


if __name__ == "__main__":
    main()
