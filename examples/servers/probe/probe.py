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

import contextlib
import errno
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
_current = threading.local()  # the task a tool thread runs for, if any
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
    task_id = getattr(_current, "task_id", None)
    if task_id is not None:  # made for a task: say so, as MCP asks
        params = {**params, "_meta": {"io.modelcontextprotocol/related-task": {"taskId": task_id}}}
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


def http_get(url: str, timeout: float = 10, max_bytes: int = 100_000) -> dict[str, Any]:
    """GET with stdlib urllib, which honours HTTP(S)_PROXY/NO_PROXY: the egress path."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read(max_bytes)
            return {"url": url, "final_url": response.geturl(), "status": response.status, "body": _text_of(body)}
    except urllib.error.HTTPError as exc:
        raise ProbeFailed({"url": url, "status": exc.code, "body": _text_of(exc.read(max_bytes))}) from None


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
        "sched_policy": os.sched_getscheduler(0),
        "cpus": sorted(os.sched_getaffinity(0)),
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
    SLEPT.append(getattr(_current, "request_id", None))
    time.sleep(seconds)
    return {"slept": seconds}


LOGGING: dict[str, Any] = {"level": None}  # what logging/setLevel last asked of this process


def notify(n: int, level: str = "info") -> dict[str, Any]:
    for i in range(n):
        send({
            "jsonrpc": "2.0",
            "method": "notifications/message",
            "params": {"level": level, "logger": "probe", "data": f"message {i + 1} of {n}"},
        })
    return {"sent": n, "server_level": LOGGING["level"]}


def set_level(params: dict[str, Any]) -> dict[str, Any]:
    LOGGING["level"] = params.get("level")
    return {}


RECEIVED: dict[str, int] = {}  # requests and notifications this process was sent, by method


def received() -> dict[str, int]:
    return dict(RECEIVED)


SLEPT: list[Any] = []  # the request ids `sleep` was called under
CANCELLED: list[Any] = []  # the request ids notifications/cancelled named


def cancellations() -> dict[str, list[Any]]:
    return {"slept": list(SLEPT), "cancelled": list(CANCELLED)}


PAUSE: dict[str, float] = {"seconds": 0.0}


def stop_reading(seconds: float) -> dict[str, Any]:
    PAUSE["seconds"] = float(seconds)  # the reading loop sleeps once this is answered
    return {"paused": seconds}


def tools_changed() -> dict[str, Any]:
    send({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
    return {"sent": True}


def emit(lines: list[str]) -> dict[str, Any]:
    """Write raw lines to stdout as they are: whatever a hostile server might say.

    `{ID}` in a line becomes the JSON id of the request being served, so a line can
    answer that request itself before the probe's own answer follows.
    """
    request_id = json.dumps(getattr(_current, "request_id", None))
    data = b"".join(str(line).replace("{ID}", request_id).encode("utf-8", "surrogatepass") + b"\n" for line in lines)
    with _out_lock:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    return {"emitted": len(lines)}


def big(nbytes: int) -> str:
    return "x" * nbytes  # the text itself, not JSON, so its size is exact


def ask_roots(timeout: float = 30) -> dict[str, Any]:
    response = request_client("roots/list", {}, timeout)
    if "error" in response:
        raise ProbeFailed({"response": response})
    return {"response": response}


# --- hostile tools: each tries to exhaust a resource or escape, and reports how far it got.


def fork_bomb(n: int, hold: float = 1.0) -> dict[str, Any]:
    """Fork up to n children that each live `hold` seconds; stop at the first refusal."""
    children: list[int] = []
    refused = None
    for _ in range(n):
        try:
            pid = os.fork()
        except OSError as exc:
            refused = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            break
        if pid == 0:
            time.sleep(hold)
            os._exit(0)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)
    return {"started": len(children), "refused": refused}


def alloc(mb: int) -> dict[str, Any]:
    """Allocate mb MiB and touch every page, so it is really charged."""
    blocks = []
    for _ in range(mb):
        block = bytearray(1 << 20)
        block[::4096] = b"\x01" * (len(block) // 4096)
        blocks.append(block)
    return {"allocated_mb": len(blocks)}


def cpu_burn(seconds: float, workers: int = 4) -> dict[str, Any]:
    """Spin `workers` processes for `seconds`; report the CPU time they got."""
    deadline = time.monotonic() + seconds
    pids = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            while time.monotonic() < deadline:
                pass
            os._exit(0)
        pids.append(pid)
    cpu = 0.0
    for pid in pids:
        _, _, usage = os.wait4(pid, 0)
        cpu += usage.ru_utime + usage.ru_stime
    return {"workers": workers, "seconds": seconds, "cpu_s": round(cpu, 3)}


def fill_disk(path: str, mb: int, keep: bool = False) -> dict[str, Any]:
    """Write up to mb MiB to path; report how much fit before the filesystem refused."""
    written, error = 0, None
    chunk = b"\xa5" * (1 << 20)
    try:
        with open(path, "wb") as f:
            for _ in range(mb):
                f.write(chunk)
                f.flush()
                written += 1
    except OSError as exc:
        error = errno.errorcode.get(exc.errno or 0, str(exc))
    finally:
        if not keep:
            with contextlib.suppress(OSError):
                os.unlink(path)
    return {"path": path, "written_mb": written, "error": error}


# x86_64 numbers and arguments chosen so that, when the kernel does run the call, it
# fails harmlessly (EFAULT, EINVAL, ...) or does something reversible: a refusal by
# policy shows as EPERM or ENOSYS instead.
_CLONE_NEWUSER, _SIGCHLD = 0x10000000, 17
_SYSCALLS_X86_64: dict[str, tuple[int, tuple[Any, ...]]] = {
    "unshare_userns": (272, (_CLONE_NEWUSER,)),
    "clone_userns": (56, (_CLONE_NEWUSER | _SIGCHLD, 0, 0, 0, 0)),
    "setns": (308, (-1, 0)),
    "mount": (165, (b"none", b"/tmp", b"tmpfs", 0, None)),
    "umount": (166, (b"/proc", 2)),  # MNT_DETACH
    "pivot_root": (155, (b"/tmp", b"/tmp")),
    "ptrace_traceme": (101, (0, 0, 0, 0)),  # PTRACE_TRACEME
    "ptrace_attach": (101, (16, 1, 0, 0)),  # PTRACE_ATTACH to the sandbox's pid 1
    "process_vm_readv": (310, (1, None, 1, None, 1, 0)),
    "process_vm_writev": (311, (1, None, 1, None, 1, 0)),
    "bpf": (321, (0, None, 0)),  # BPF_MAP_CREATE with a NULL attr
    "keyctl": (250, (0, -3, 0)),  # KEYCTL_GET_KEYRING_ID of the session keyring
    "add_key": (248, (b"user", b"smcp-probe", b"x", 1, -3)),
    "request_key": (249, (b"user", b"smcp-probe", None, 0)),
    "userfaultfd": (323, (1,)),  # UFFD_USER_MODE_ONLY: allowed unprivileged when not filtered
    "perf_event_open": (298, (None, 0, -1, -1, 0)),
    "io_uring_setup": (425, (1, None)),
    "init_module": (175, (None, 0, b"")),
    "finit_module": (313, (-1, b"", 0)),
    "kexec_load": (246, (0, 0, None, 0)),
    "open_by_handle_at": (304, (-1, None, 0)),
}


def syscall(name: str) -> dict[str, Any]:
    """Try one escape-prone system call through libc; report its result and errno."""
    import ctypes

    if os.uname().machine != "x86_64":
        raise ProbeFailed({"error": f"syscall table only for x86_64, not {os.uname().machine}"})
    if name not in _SYSCALLS_X86_64:
        raise ProbeFailed({"error": f"unknown syscall {name!r}", "known": sorted(_SYSCALLS_X86_64)})
    number, args = _SYSCALLS_X86_64[name]
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    c_args = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    ctypes.set_errno(0)
    result = libc.syscall(ctypes.c_long(number), *c_args)
    err = ctypes.get_errno() if result == -1 else 0
    if name == "clone_userns" and result == 0:
        os._exit(0)  # we are the child of a clone that should never have happened
    if name == "clone_userns" and result > 0:
        os.waitpid(result, 0)
    return {"name": name, "result": result, "errno": err, "error": errno.errorcode.get(err) if err else None}


_FAMILIES = {"AF_UNIX": (1, 1), "AF_INET": (2, 1), "AF_INET6": (10, 1), "AF_NETLINK": (16, 2), "AF_PACKET": (17, 3)}


def socket_family(family: str) -> dict[str, Any]:
    """Try to open a socket of an address family (AF_INET, AF_INET6, AF_NETLINK, AF_PACKET, AF_UNIX)."""
    if family not in _FAMILIES:
        raise ProbeFailed({"error": f"unknown family {family!r}", "known": sorted(_FAMILIES)})
    number, kind = _FAMILIES[family]  # SOCK_STREAM, SOCK_DGRAM for netlink, SOCK_RAW for packet
    try:
        socket.socket(number, kind).close()
    except OSError as exc:
        return {"family": family, "opened": False, "errno": exc.errno, "error": errno.errorcode.get(exc.errno or 0)}
    return {"family": family, "opened": True, "errno": 0, "error": None}


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
    "http_get": (http_get, "GET a URL with urllib (honours HTTP(S)_PROXY).", _schema(url="string", timeout="number?", max_bytes="integer?")),
    "env": (env, "This process's environment.", _schema()),
    "proc1_environ": (proc1_environ, "PID 1's environment and command line.", _schema()),
    "whoami": (whoami, "uid, gid, pid, hostname and cwd of this process.", _schema()),
    "kill": (kill, "Send a signal to a process.", _schema(pid="integer", sig="integer?")),
    "stderr": (stderr, "Write text to stderr, lines times.", _schema(text="string", lines="integer?")),
    "crash": (crash, "Exit immediately with the given code, without replying.", _schema(code="integer?")),
    "sleep": (sleep, "Sleep, then reply.", _schema(seconds="number")),
    "notify": (notify, "Send n log notifications (at a level, info by default), then reply.", _schema(n="integer", level="string?")),
    "received": (received, "How many requests and notifications of each method this process was sent.", _schema()),
    "cancellations": (cancellations, "The request ids sleep ran under, and those notifications/cancelled named.", _schema()),
    "stop_reading": (stop_reading, "Stop reading stdin for seconds, once this is answered (a stuck server).", _schema(seconds="number")),
    "tools_changed": (tools_changed, "Send notifications/tools/list_changed, then reply.", _schema()),
    "big": (big, "Reply with a text of exactly nbytes bytes.", _schema(nbytes="integer")),
    "emit": (emit, "Write raw lines to stdout ({ID}: this request's id), then reply.", _schema(lines="array")),
    "ask_roots": (ask_roots, "Ask the client for its roots and return its response.", _schema(timeout="number?")),
    "fork_bomb": (fork_bomb, "Fork up to n short-lived children; report how many started.", _schema(n="integer", hold="number?")),
    "alloc": (alloc, "Allocate and touch mb MiB of memory.", _schema(mb="integer")),
    "cpu_burn": (cpu_burn, "Spin worker processes for seconds; report CPU time used.", _schema(seconds="number", workers="integer?")),
    "fill_disk": (fill_disk, "Write up to mb MiB to a file; report how much fit.", _schema(path="string", mb="integer", keep="boolean?")),
    "syscall": (syscall, "Try an escape-prone system call; report errno.", _schema(name="string")),
    "socket": (socket_family, "Try to open a socket of an address family.", _schema(family="string")),
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


# --- tasks (the 2025-11-25 utility): tools/call with params.task runs as a task.
# Like a single-user server, the probe lists and serves every task to whoever asks:
# binding tasks to callers is the gateway's job on a shared instance.

TASKS: dict[str, dict[str, Any]] = {}
_task_done: dict[str, threading.Event] = {}
_task_ids = itertools.count(1)


def _task_view(task_id: str) -> dict[str, Any]:
    task = TASKS[task_id]
    return {"taskId": task_id, "status": task["status"], "createdAt": task["createdAt"], "ttl": None}


def create_task(params: dict[str, Any]) -> dict[str, Any]:
    task_id = f"task-{os.getpid()}-{next(_task_ids)}"
    TASKS[task_id] = {"status": "working", "createdAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "result": None}
    _task_done[task_id] = threading.Event()

    def run() -> None:
        _current.task_id = task_id
        result = call_tool(params)
        if TASKS[task_id]["status"] == "working":
            TASKS[task_id].update(status="completed", result=result)
        _task_done[task_id].set()
        send({"jsonrpc": "2.0", "method": "notifications/tasks/status", "params": _task_view(task_id)})

    threading.Thread(target=run, daemon=True).start()
    return {"task": _task_view(task_id)}


def _known_task(params: dict[str, Any]) -> str:
    task_id = params.get("taskId")
    if task_id not in TASKS:
        raise ProbeUnknownTask(task_id)
    return str(task_id)


class ProbeUnknownTask(Exception):
    pass


def tasks_get(params: dict[str, Any]) -> dict[str, Any]:
    return _task_view(_known_task(params))


def tasks_result(params: dict[str, Any]) -> dict[str, Any]:
    task_id = _known_task(params)
    _task_done[task_id].wait(60)
    result = TASKS[task_id]["result"] or {"content": [], "isError": True}
    return {**result, "_meta": {"io.modelcontextprotocol/related-task": {"taskId": task_id}}}


def tasks_list(_params: dict[str, Any]) -> dict[str, Any]:
    return {"tasks": [_task_view(task_id) for task_id in TASKS]}


def tasks_cancel(params: dict[str, Any]) -> dict[str, Any]:
    task_id = _known_task(params)
    if TASKS[task_id]["status"] == "working":
        TASKS[task_id]["status"] = "cancelled"
        _task_done[task_id].set()
    return _task_view(task_id)


def initialize(params: dict[str, Any]) -> dict[str, Any]:
    asked = params.get("protocolVersion")
    return {
        "protocolVersion": asked if asked in SUPPORTED_VERSIONS else SUPPORTED_VERSIONS[0],
        "capabilities": {
            "tools": {"listChanged": True},
            "logging": {},
            "tasks": {"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}},
        },
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
    "logging/setLevel": set_level,
    "tasks/get": tasks_get,
    "tasks/result": tasks_result,
    "tasks/list": tasks_list,
    "tasks/cancel": tasks_cancel,
}


def handle_request(message: dict[str, Any]) -> None:
    request_id = message["id"]
    _current.request_id = request_id
    method = message["method"]
    params = message.get("params") or {}
    handler = METHODS.get(method)
    if handler is None:
        send({"jsonrpc": "2.0", "id": request_id, "error": {"code": -32601, "message": f"Method not found: {method}"}})
        return
    name = params.get("name") if isinstance(params, dict) else None
    if method == "tools/call" and not (isinstance(name, str) and name in TOOLS):
        send({"jsonrpc": "2.0", "id": request_id, "error": {"code": -32602, "message": f"Unknown tool: {name}"}})
        return
    if not isinstance(params, dict):
        send({"jsonrpc": "2.0", "id": request_id, "error": {"code": -32602, "message": "params must be an object"}})
        return
    if method == "tools/call" and isinstance(params.get("task"), dict):
        handler = create_task
    try:
        result = handler(params)
    except ProbeUnknownTask as exc:
        send({"jsonrpc": "2.0", "id": request_id, "error": {"code": -32602, "message": f"Unknown task: {exc}"}})
        return
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
        method = str(message["method"])
        RECEIVED[method] = RECEIVED.get(method, 0) + 1
        if "id" not in message:
            params = message.get("params")
            if method == "notifications/cancelled" and isinstance(params, dict):
                CANCELLED.append(params.get("requestId"))
            continue  # notifications (initialized, cancelled, ...) need no answer
        params = message.get("params")
        if method == "tools/call" and isinstance(params, dict) and params.get("name") == "stop_reading":
            handle_request(message)  # answered here, in order, before the reading stops
            time.sleep(PAUSE["seconds"])
            continue
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
