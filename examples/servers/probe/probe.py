"""A diagnostic MCP server for sandbox and failure tests. Standard library only.

It speaks MCP over stdio by hand (newline-delimited JSON-RPC) so it runs on a bare
system Python inside a sandbox, with no packages and no network. Its tools poke at
the environment (files, processes, sockets, /proc/1) and misbehave on demand
(crash, stall, flood, huge replies, server->client requests), so tests can check
both what a sandbox hides and how the platform copes with a bad server.

Each request runs in its own thread, so a slow tool never blocks `ping`, and a
tool waiting on the client (ask_roots) sees its response while other messages
keep flowing.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

SUPPORTED_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26")
SERVER_INFO = {"name": "probe", "version": "1.0.0"}

_out_lock = threading.Lock()
_pending: dict[str, tuple[threading.Event, list[dict[str, Any]]]] = {}
_pending_lock = threading.Lock()
_request_ids = itertools.count(1)


def send(message: dict[str, Any]) -> None:
    line = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"
    try:
        with _out_lock:
            sys.stdout.buffer.write(line)
            sys.stdout.buffer.flush()
    except (BrokenPipeError, ValueError):
        # The client is gone; there is nobody left to serve.
        os._exit(0)


def request_client(method: str, params: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Send a server->client request and wait for the matching response."""
    request_id = f"probe-{next(_request_ids)}"
    event: threading.Event = threading.Event()
    slot: list[dict[str, Any]] = []
    with _pending_lock:
        _pending[request_id] = (event, slot)
    try:
        send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        if not event.wait(timeout):
            raise TimeoutError(f"no response to {method} within {timeout}s")
        return slot[0]
    finally:
        with _pending_lock:
            _pending.pop(request_id, None)


# ----------------------------------------------------------------------------- tools


def _text_of(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def read_file(path: str, max_bytes: int = 1_000_000) -> dict[str, Any]:
    with open(path, "rb") as f:
        data = f.read(max_bytes)
    return {"path": path, "bytes": len(data), "text": _text_of(data)}


def list_dir(path: str) -> dict[str, Any]:
    return {"path": path, "entries": sorted(os.listdir(path))}


def write_file(path: str, text: str) -> dict[str, Any]:
    with open(path, "w", encoding="utf-8") as f:
        written = f.write(text)
    return {"path": path, "written": written}


def list_pids() -> dict[str, Any]:
    pids = []
    for name in sorted((n for n in os.listdir("/proc") if n.isdigit()), key=int):
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline: list[str] | None = [_text_of(p) for p in f.read().split(b"\0") if p]
        except OSError:
            cmdline = None  # the process exited meanwhile, or we may not look
        pids.append({"pid": int(name), "cmdline": cmdline})
    return {"pids": pids}


def connect(host: str, port: int, timeout: float = 2) -> dict[str, Any]:
    with socket.create_connection((host, port), timeout=timeout) as sock:
        return {"connected": True, "peer": list(sock.getpeername())[:2]}


def unix_connect(path: str) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        sock.connect(path)
    return {"connected": True, "path": path}


def env() -> dict[str, Any]:
    return {"environ": dict(os.environ)}


def proc1_environ() -> dict[str, Any]:
    # The sandbox's PID 1 is the launcher: it must not leak the host's environment.
    result: dict[str, Any] = {"environ": None, "cmdline": None, "errors": {}}
    for key in ("environ", "cmdline"):
        try:
            with open(f"/proc/1/{key}", "rb") as f:
                result[key] = [_text_of(p) for p in f.read().split(b"\0") if p]
        except OSError as exc:
            result["errors"][key] = f"{type(exc).__name__}: {exc}"
    if result["errors"]:
        raise ProbeFailed(result)
    return result


def whoami() -> dict[str, Any]:
    return {
        "uid": os.getuid(),
        "gid": os.getgid(),
        "euid": os.geteuid(),
        "groups": os.getgroups(),
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "hostname": socket.gethostname(),
        "cwd": os.getcwd(),
    }


def kill(pid: int, sig: int = int(signal.SIGTERM)) -> dict[str, Any]:
    os.kill(pid, sig)
    return {"pid": pid, "signal": sig, "sent": True}


def stderr(text: str, lines: int = 1) -> dict[str, Any]:
    for _ in range(lines):
        sys.stderr.write(text + "\n")
    sys.stderr.flush()
    return {"lines": lines}


def crash(code: int = 1) -> dict[str, Any]:
    os._exit(code)  # no reply, no cleanup: the point is a server dying mid-call


def sleep(seconds: float) -> dict[str, Any]:
    time.sleep(seconds)
    return {"slept": seconds}


def notify(n: int) -> dict[str, Any]:
    for i in range(n):
        send({
            "jsonrpc": "2.0",
            "method": "notifications/message",
            "params": {"level": "info", "logger": "probe", "data": f"message {i + 1} of {n}"},
        })
    return {"sent": n}


def big(nbytes: int) -> str:
    return "x" * nbytes  # the text itself, not JSON, so its size is exact


def ask_roots(timeout: float = 30) -> dict[str, Any]:
    response = request_client("roots/list", {}, timeout)
    if "error" in response:
        raise ProbeFailed({"response": response})
    return {"response": response}


class ProbeFailed(Exception):
    """A tool failure whose report is structured data rather than one message."""

    def __init__(self, report: dict[str, Any]) -> None:
        super().__init__(json.dumps(report))
        self.report = report


def _schema(**props: str) -> dict[str, Any]:
    # A trailing '?' marks an optional argument.
    return {
        "type": "object",
        "properties": {k: {"type": v.rstrip("?")} for k, v in props.items()},
        "required": [k for k, v in props.items() if not v.endswith("?")],
    }


TOOLS: dict[str, tuple[Callable[..., Any], str, dict[str, Any]]] = {
    "read_file": (read_file, "Read a file (up to max_bytes).", _schema(path="string", max_bytes="integer?")),
    "list_dir": (list_dir, "List a directory.", _schema(path="string")),
    "write_file": (write_file, "Write text to a file.", _schema(path="string", text="string")),
    "list_pids": (list_pids, "Processes visible in /proc, with their command lines.", _schema()),
    "connect": (connect, "Try a TCP connection.", _schema(host="string", port="integer", timeout="number?")),
    "unix_connect": (unix_connect, "Try connecting to a unix socket.", _schema(path="string")),
    "env": (env, "This process's environment.", _schema()),
    "proc1_environ": (proc1_environ, "PID 1's environment and command line.", _schema()),
    "whoami": (whoami, "uid, gid, pid, hostname and cwd of this process.", _schema()),
    "kill": (kill, "Send a signal to a process.", _schema(pid="integer", sig="integer?")),
    "stderr": (stderr, "Write text to stderr, lines times.", _schema(text="string", lines="integer?")),
    "crash": (crash, "Exit immediately with the given code, without replying.", _schema(code="integer?")),
    "sleep": (sleep, "Sleep, then reply.", _schema(seconds="number")),
    "notify": (notify, "Send n log notifications, then reply.", _schema(n="integer")),
    "big": (big, "Reply with a text of exactly nbytes bytes.", _schema(nbytes="integer")),
    "ask_roots": (ask_roots, "Ask the client for its roots and return its response.", _schema(timeout="number?")),
}


# ------------------------------------------------------------------------ protocol


def call_tool(params: dict[str, Any]) -> dict[str, Any]:
    fn = TOOLS[params["name"]][0]
    arguments = params.get("arguments") or {}
    try:
        if not isinstance(arguments, dict):
            raise TypeError("arguments must be an object")
        output = fn(**arguments)
        is_error = False
    except ProbeFailed as exc:
        output, is_error = exc.report, True
    except Exception as exc:  # a probe reports failure; it never dies of it
        output, is_error = {"error": f"{type(exc).__name__}: {exc}"}, True
    text = output if isinstance(output, str) else json.dumps(output, ensure_ascii=False)
    return {"content": [{"type": "text", "text": text}], "isError": is_error}


def initialize(params: dict[str, Any]) -> dict[str, Any]:
    asked = params.get("protocolVersion")
    return {
        "protocolVersion": asked if asked in SUPPORTED_VERSIONS else SUPPORTED_VERSIONS[0],
        "capabilities": {"tools": {}},
        "serverInfo": SERVER_INFO,
    }


def list_tools(_params: dict[str, Any]) -> dict[str, Any]:
    return {
        "tools": [
            {"name": name, "description": description, "inputSchema": schema}
            for name, (_fn, description, schema) in TOOLS.items()
        ]
    }


METHODS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "initialize": initialize,
    "ping": lambda _params: {},
    "tools/list": list_tools,
    "tools/call": call_tool,
}


def handle_request(message: dict[str, Any]) -> None:
    request_id = message["id"]
    method = message["method"]
    params = message.get("params") or {}
    handler = METHODS.get(method)
    if handler is None:
        send({"jsonrpc": "2.0", "id": request_id, "error": {"code": -32601, "message": f"Method not found: {method}"}})
        return
    if method == "tools/call" and (not isinstance(params, dict) or params.get("name") not in TOOLS):
        name = params.get("name") if isinstance(params, dict) else None
        send({"jsonrpc": "2.0", "id": request_id, "error": {"code": -32602, "message": f"Unknown tool: {name}"}})
        return
    try:
        result = handler(params)
    except Exception as exc:
        send({"jsonrpc": "2.0", "id": request_id, "error": {"code": -32603, "message": f"{type(exc).__name__}: {exc}"}})
        return
    send({"jsonrpc": "2.0", "id": request_id, "result": result})


def handle_response(message: dict[str, Any]) -> None:
    with _pending_lock:
        waiter = _pending.get(str(message.get("id")))
    if waiter is None:
        sys.stderr.write(f"probe: response to unknown request id {message.get('id')!r}\n")
        sys.stderr.flush()
        return
    event, slot = waiter
    slot.append(message)
    event.set()


def main() -> None:
    for line in sys.stdin.buffer:
        if not line.strip():
            continue
        try:
            message = json.loads(line)
        except ValueError as exc:
            send({"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": f"Parse error: {exc}"}})
            continue
        if not isinstance(message, dict):
            send({"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "Invalid Request"}})
            continue
        if "method" not in message:
            if "id" in message:
                handle_response(message)
            continue
        if "id" not in message:
            continue  # notifications (initialized, cancelled, ...) need no answer
        # A thread per request: slow tools must not hold up pings or the responses
        # that a tool waiting on the client (ask_roots) depends on.
        threading.Thread(target=handle_request, args=(message,), daemon=True).start()
    # stdin closed: the client is done. Let quick in-flight requests answer (handy
    # when driving the probe from a pipe), but do not linger for slow ones.
    deadline = time.monotonic() + 2
    for thread in threading.enumerate():
        if thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
