"""The probe server speaks enough MCP over plain pipes, and misbehaves exactly on request."""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from smcp.domain import RuntimeKind, parse_spec

PROBE_DIR = Path(__file__).resolve().parents[2] / "examples" / "servers" / "probe"
# The interpreter the sandbox runs it with: Debian's, with no third-party packages.
SYSTEM_PYTHON = "/usr/bin/python3"

EXPECTED_TOOLS = {
    "read_file", "list_dir", "write_file", "list_pids", "connect", "unix_connect", "env", "proc1_environ",
    "whoami", "kill", "stderr", "crash", "sleep", "notify", "big", "ask_roots",
    "fork_bomb", "alloc", "cpu_burn", "fill_disk", "syscall", "socket",
    "http_get", "received", "cancellations", "tools_changed", "stop_reading", "emit",
}  # fmt: skip


class Probe:
    """probe.py on pipes, with a reader thread so every receive can time out."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [SYSTEM_PYTHON, "probe.py"],
            cwd=PROBE_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={"PATH": "/usr/bin:/bin", **(env or {})},
        )
        self.lines: queue.Queue[bytes] = queue.Queue()
        self.errors: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, self.errors), daemon=True).start()
        self._ids = iter(range(1, 1_000_000))

    @staticmethod
    def _pump(stream: Any, sink: queue.Queue[bytes]) -> None:
        for line in stream:
            sink.put(line)
        sink.put(b"")  # EOF marker

    def send(self, message: dict[str, Any] | bytes) -> None:
        assert self.proc.stdin is not None
        raw = message if isinstance(message, bytes) else json.dumps(message).encode()
        self.proc.stdin.write(raw + b"\n")
        self.proc.stdin.flush()

    def recv(self, timeout: float = 10) -> dict[str, Any]:
        line = self.lines.get(timeout=timeout)
        assert line, "probe closed stdout"
        assert line.endswith(b"\n") and line.count(b"\n") == 1  # newline-delimited framing
        return json.loads(line)

    def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        request_id = next(self._ids)
        self.send({"jsonrpc": "2.0", "id": request_id, "method": method, **({"params": params} if params else {})})
        reply = self.recv()
        assert reply["id"] == request_id
        return reply

    def initialize(self, version: str = "2025-11-25") -> dict[str, Any]:
        reply = self.request(
            "initialize",
            {"protocolVersion": version, "capabilities": {"roots": {}}, "clientInfo": {"name": "t", "version": "0"}},
        )
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return reply

    def call(self, tool: str, **arguments: Any) -> tuple[bool, Any]:
        """Call a tool; returns (isError, decoded JSON of its text content)."""
        reply = self.request("tools/call", {"name": tool, "arguments": arguments})
        result = reply["result"]
        [content] = result["content"]
        assert content["type"] == "text"
        return result["isError"], json.loads(content["text"])

    def close(self) -> int:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                return self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()


@pytest.fixture
def probe() -> Iterator[Probe]:
    p = Probe()
    p.initialize()
    yield p
    p.close()


def test_probe_spec_is_valid() -> None:
    spec = parse_spec((PROBE_DIR / "smcp.toml").read_bytes())
    assert spec.name == "probe"
    assert spec.runtime is RuntimeKind.command
    assert spec.command == ("python3", "probe.py")


def test_probe_imports_only_the_standard_library() -> None:
    # It must run on a bare system Python in the sandbox: no mcp, no pydantic.
    out = subprocess.run(
        [SYSTEM_PYTHON, "-I", "-B", "-c", "import sys; sys.path.insert(0, '.'); import probe; "
         "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mcp', 'pydantic', 'anyio', 'smcp')))"],
        cwd=PROBE_DIR, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("asked", "agreed"),
    [("2025-11-25", "2025-11-25"), ("2025-06-18", "2025-06-18"), ("2025-03-26", "2025-03-26"), ("1999-01-01", "2025-11-25")],
)
def test_initialize_negotiates_version(asked: str, agreed: str) -> None:
    p = Probe()
    try:
        result = p.initialize(asked)["result"]
        assert result["protocolVersion"] == agreed
        assert result["capabilities"]["tools"] == {"listChanged": True} and "logging" in result["capabilities"]
        assert result["capabilities"]["tasks"]["requests"] == {"tools": {"call": {}}}
        assert result["serverInfo"]["name"] == "probe"
        assert p.request("ping")["result"] == {}
    finally:
        assert p.close() == 0  # closing stdin is a clean shutdown


def test_tools_list(probe: Probe) -> None:
    tools = probe.request("tools/list")["result"]["tools"]
    assert {t["name"] for t in tools} == EXPECTED_TOOLS
    by_name = {t["name"]: t for t in tools}
    assert by_name["connect"]["inputSchema"]["required"] == ["host", "port"]
    assert all(t["inputSchema"]["type"] == "object" and t["description"] for t in tools)


def test_protocol_errors(probe: Probe) -> None:
    assert probe.request("resources/list")["error"]["code"] == -32601
    assert probe.request("tools/call", {"name": "no-such-tool"})["error"]["code"] == -32602
    probe.send(b"{not json")
    assert probe.recv()["error"]["code"] == -32700
    # Nothing above hurt the server.
    assert probe.request("ping")["result"] == {}


def test_files(probe: Probe, tmp_path: Path) -> None:
    target = tmp_path / "note.txt"
    assert probe.call("write_file", path=str(target), text="héllo") == (False, {"path": str(target), "written": 5})
    assert target.read_text(encoding="utf-8") == "héllo"
    is_error, out = probe.call("read_file", path=str(target))
    assert not is_error and out["text"] == "héllo" and out["bytes"] == len("héllo".encode())
    assert probe.call("list_dir", path=str(tmp_path)) == (False, {"path": str(tmp_path), "entries": ["note.txt"]})

    is_error, out = probe.call("read_file", path=str(tmp_path / "missing"))
    assert is_error and "FileNotFoundError" in out["error"]
    is_error, out = probe.call("write_file", path=str(tmp_path / "no" / "dir" / "f"), text="x")
    assert is_error and "FileNotFoundError" in out["error"]


def test_identity_environment_and_processes() -> None:
    p = Probe(env={"PROBE_MARK": "m-123"})
    try:
        p.initialize()
        is_error, who = p.call("whoami")
        assert not is_error
        assert who["pid"] == p.proc.pid and who["ppid"] == os.getpid()
        assert (who["uid"], who["gid"], who["cwd"]) == (os.getuid(), os.getgid(), str(PROBE_DIR))
        assert who["hostname"] == socket.gethostname()

        environ = p.call("env")[1]["environ"]
        # Python itself adds LC_CTYPE when started under the C locale (PEP 538 coercion).
        environ.pop("LC_CTYPE", None)
        assert environ == {"PATH": "/usr/bin:/bin", "PROBE_MARK": "m-123"}

        is_error, listing = p.call("list_pids")
        mine = [e for e in listing["pids"] if e["pid"] == p.proc.pid]
        assert mine == [{"pid": p.proc.pid, "cmdline": [SYSTEM_PYTHON, "probe.py"]}]
    finally:
        p.close()


def test_proc1_environ_reports_what_it_can_read(probe: Probe) -> None:
    is_error, out = probe.call("proc1_environ")
    try:
        expected_cmdline = [a.decode() for a in Path("/proc/1/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        assert is_error and "cmdline" in out["errors"]
        return
    assert out["cmdline"] == expected_cmdline
    assert is_error == bool(out["errors"])


def test_tcp_and_unix_connect(probe: Probe, tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        assert probe.call("connect", host="127.0.0.1", port=port) == (False, {"connected": True, "peer": ["127.0.0.1", port]})
    # The listener is closed now: refused, reported, not fatal.
    is_error, out = probe.call("connect", host="127.0.0.1", port=port, timeout=1)
    assert is_error and "ConnectionRefusedError" in out["error"]

    path = str(tmp_path / "s.sock")
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(path)
        listener.listen()
        assert probe.call("unix_connect", path=path) == (False, {"connected": True, "path": path})
    is_error, out = probe.call("unix_connect", path=str(tmp_path / "absent.sock"))
    assert is_error and "FileNotFoundError" in out["error"]


def test_kill(probe: Probe) -> None:
    victim = subprocess.Popen(["sleep", "30"])
    try:
        assert probe.call("kill", pid=victim.pid, sig=9) == (False, {"pid": victim.pid, "signal": 9, "sent": True})
        assert victim.wait(timeout=5) == -9
    finally:
        victim.kill()
    is_error, out = probe.call("kill", pid=victim.pid)  # reaped: no such process
    assert is_error and "ProcessLookupError" in out["error"]


def test_stderr_lines(probe: Probe) -> None:
    assert probe.call("stderr", text="log line", lines=3) == (False, {"lines": 3})
    got = [probe.errors.get(timeout=5) for _ in range(3)]
    assert got == [b"log line\n"] * 3


def test_bad_arguments_are_tool_errors(probe: Probe) -> None:
    is_error, out = probe.call("sleep")
    assert is_error and "TypeError" in out["error"]
    is_error, out = probe.call("whoami", surprise=1)
    assert is_error and "TypeError" in out["error"]


def test_notify_sends_log_notifications_before_the_reply(probe: Probe) -> None:
    probe.send({"jsonrpc": "2.0", "id": "n", "method": "tools/call", "params": {"name": "notify", "arguments": {"n": 3}}})
    messages = [probe.recv() for _ in range(4)]
    assert [m.get("method") for m in messages[:3]] == ["notifications/message"] * 3
    assert [m["params"]["data"] for m in messages[:3]] == ["message 1 of 3", "message 2 of 3", "message 3 of 3"]
    assert all("id" not in m for m in messages[:3])
    assert messages[3]["id"] == "n" and json.loads(messages[3]["result"]["content"][0]["text"]) == {"sent": 3, "server_level": None}


def test_notify_logs_at_the_level_asked_and_reports_the_level_set(probe: Probe) -> None:
    assert probe.request("logging/setLevel", {"level": "warning"})["result"] == {}
    probe.send({"jsonrpc": "2.0", "id": "w", "method": "tools/call", "params": {"name": "notify", "arguments": {"n": 1, "level": "error"}}})
    log, answer = probe.recv(), probe.recv()
    assert log["params"]["level"] == "error"
    assert json.loads(answer["result"]["content"][0]["text"]) == {"sent": 1, "server_level": "warning"}


def test_big_reply_is_one_line_of_exact_size(probe: Probe) -> None:
    nbytes = 3 * 1024 * 1024
    reply = probe.request("tools/call", {"name": "big", "arguments": {"nbytes": nbytes}})
    assert len(reply["result"]["content"][0]["text"]) == nbytes


def test_emit_writes_raw_lines_then_replies(probe: Probe) -> None:
    probe.send({"jsonrpc": "2.0", "id": "e1", "method": "tools/call",
                "params": {"name": "emit", "arguments": {"lines": ['{"jsonrpc":"2.0","id":{ID},"result":[]}', "not json"]}}})
    assert probe.recv() == {"jsonrpc": "2.0", "id": "e1", "result": []}
    assert probe.lines.get(timeout=10) == b"not json\n"
    reply = probe.recv()
    assert reply["id"] == "e1" and json.loads(reply["result"]["content"][0]["text"]) == {"emitted": 2}


def test_sleep_does_not_block_other_requests(probe: Probe) -> None:
    started = time.monotonic()
    probe.send({"jsonrpc": "2.0", "id": "slow", "method": "tools/call", "params": {"name": "sleep", "arguments": {"seconds": 1}}})
    probe.send({"jsonrpc": "2.0", "id": "fast", "method": "ping"})
    assert probe.recv()["id"] == "fast"
    slow = probe.recv()
    assert slow["id"] == "slow" and time.monotonic() - started >= 1
    assert json.loads(slow["result"]["content"][0]["text"]) == {"slept": 1}


def test_crash_exits_without_replying(probe: Probe) -> None:
    probe.send({"jsonrpc": "2.0", "id": 99, "method": "tools/call", "params": {"name": "crash", "arguments": {"code": 7}}})
    assert probe.proc.wait(timeout=5) == 7
    assert probe.lines.get(timeout=5) == b""  # stdout closed with no reply written


def test_ask_roots_round_trip_with_interleaving(probe: Probe) -> None:
    probe.send({"jsonrpc": "2.0", "id": "call", "method": "tools/call", "params": {"name": "ask_roots", "arguments": {}}})
    ask = probe.recv()
    assert ask["method"] == "roots/list" and "id" in ask
    # While the tool waits on us, the probe still answers other traffic.
    probe.send({"jsonrpc": "2.0", "method": "notifications/roots/list_changed"})
    probe.send({"jsonrpc": "2.0", "id": "p", "method": "ping"})
    assert probe.recv() == {"jsonrpc": "2.0", "id": "p", "result": {}}
    roots = {"roots": [{"uri": "file:///work", "name": "work"}]}
    probe.send({"jsonrpc": "2.0", "id": ask["id"], "result": roots})
    reply = probe.recv()
    assert reply["id"] == "call" and reply["result"]["isError"] is False
    assert json.loads(reply["result"]["content"][0]["text"]) == {
        "response": {"jsonrpc": "2.0", "id": ask["id"], "result": roots}
    }


def test_ask_roots_error_and_timeout(probe: Probe) -> None:
    probe.send({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "ask_roots", "arguments": {}}})
    ask = probe.recv()
    probe.send({"jsonrpc": "2.0", "id": ask["id"], "error": {"code": -32601, "message": "no roots"}})
    reply = probe.recv()
    assert reply["result"]["isError"] is True
    assert json.loads(reply["result"]["content"][0]["text"])["response"]["error"]["message"] == "no roots"

    probe.send({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "ask_roots", "arguments": {"timeout": 0.2}}})
    assert probe.recv()["method"] == "roots/list"  # never answered
    reply = probe.recv()
    assert reply["id"] == 2 and reply["result"]["isError"] is True
    assert "TimeoutError" in json.loads(reply["result"]["content"][0]["text"])["error"]
