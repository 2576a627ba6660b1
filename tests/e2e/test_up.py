"""`smcp up`: the first command a new user runs. Demo provisioned, snippets work, Ctrl-C cleans up."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests.harness import ROOT, free_port


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    out: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_up_serves_the_demo_and_stops_cleanly() -> None:
    work = Path(tempfile.mkdtemp(prefix="smcp-up-"))
    work.chmod(0o711)
    port = free_port()
    env = {**os.environ, "SMCP_DATA_DIR": str(work / ".smcp"), "SMCP_PORT": str(port)}
    env.pop("SMCP_ADMIN_TOKEN", None)
    log = open(work / "up.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "smcp.cli.main", "up"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True
    )
    try:
        demo_file = work / ".smcp" / "demo.json"
        deadline = time.monotonic() + 240
        while not demo_file.exists() or "Ctrl-C" not in (work / "up.log").read_text():
            assert proc.poll() is None, (work / "up.log").read_text()
            assert time.monotonic() < deadline, (work / "up.log").read_text()
            time.sleep(0.2)
        assert stat.S_IMODE(demo_file.stat().st_mode) == 0o600
        demo = json.loads(demo_file.read_text())
        assert set(demo) == {"url", "api_key", "tenant", "server"}
        assert demo["url"] == f"http://127.0.0.1:{port}/t/demo/demo/mcp"

        output = (work / "up.log").read_text()
        assert demo["api_key"] in output
        assert "mcp-remote" in output
        # Run the printed Inspector command exactly as a user would paste it.
        line = next(ln.strip() for ln in output.splitlines() if "mcp-inspector --cli" in ln and "tools/list" in ln)
        run = subprocess.run(
            ["bash", "-c", line + " --format json"], cwd=ROOT, capture_output=True, text=True, timeout=120,
            env={**os.environ, "DO_NOT_TRACK": "1"},
        )
        assert run.returncode == 0, run.stderr + run.stdout
        assert "echo" in {t["name"] for t in json.loads(run.stdout)["result"]["tools"]}
        call = re.sub(r"--method tools/list.*", "--method tools/call --tool-name add --tool-arg a=2 --tool-arg b=3", line)
        run = subprocess.run(["bash", "-c", call + " --format json"], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr + run.stdout
        assert "5" in json.loads(run.stdout)["result"]["content"][0]["text"]

        # Open a session so a sandboxed instance is running when we stop.
        headers = {
            "authorization": f"Bearer {demo['api_key']}",
            "accept": "application/json, text/event-stream",
            "content-type": "application/json",
        }
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}
        assert httpx.post(demo["url"], json=init, headers=headers, timeout=30).status_code == 200
        family = _descendants(proc.pid)
        assert any("bwrap" in (Path("/proc") / str(p) / "cmdline").read_text(errors="replace") for p in family if _alive(p))
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
        log.close()
    assert code == 0, (work / "up.log").read_text()
    time.sleep(0.5)
    leftovers = [p for p in family if _alive(p)]
    assert leftovers == [], f"processes left behind: {leftovers}"
    shutil.rmtree(work, ignore_errors=True)
