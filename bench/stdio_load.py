"""A load generator for a stdio MCP server: what "calling it directly" means for one.

The gateway reaches a hosted stdio server over its stdin/stdout; this drives the same
server, started the same way but with no gateway and no sandbox, over the same pipes,
keeping `concurrency` requests in flight. It is a plain selector loop with no asyncio
so its own cost per call stays in the tens of microseconds (wrk's order).
"""

from __future__ import annotations

import os
import selectors
import subprocess
import time
from dataclasses import dataclass

import orjson


@dataclass
class StdioResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int


class StdioServer:
    def __init__(self, argv: list[str], cwd: str, cpus: set[int] | None = None) -> None:
        # `cpus` pins the server (and every thread it starts) before it execs.
        pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
        self._proc = subprocess.Popen(
            argv, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, preexec_fn=pin
        )
        assert self._proc.stdin and self._proc.stdout
        self._in = self._proc.stdin.fileno()
        self._out = self._proc.stdout.fileno()
        self._buffer = b""

    def close(self) -> None:
        self._proc.kill()
        self._proc.wait()

    def _send(self, message: dict) -> None:
        os.write(self._in, orjson.dumps(message) + b"\n")

    def _lines(self) -> list[bytes]:
        chunk = os.read(self._out, 1 << 16)
        if not chunk:
            raise RuntimeError("the server closed its stdout")
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        return [line for line in lines if line.strip()]

    def request(self, message: dict) -> dict:
        self._send(message)
        while True:
            for line in self._lines():
                answer = orjson.loads(line)
                if answer.get("id") == message["id"]:
                    return answer

    def notify(self, message: dict) -> None:
        self._send(message)

    def load(self, body: dict, concurrency: int, seconds: float) -> StdioResult:
        """Keep `concurrency` copies of `body` (fresh ids) in flight for `seconds`."""
        selector = selectors.DefaultSelector()
        selector.register(self._out, selectors.EVENT_READ)
        sent: dict[int, float] = {}
        latencies: list[float] = []
        errors = 0
        next_id = 1_000_000
        prefix = orjson.dumps({**body, "id": 0})[:-1].replace(b'"id":0', b'"id":__ID__')
        before, after = prefix.split(b"__ID__")

        def send_one() -> None:
            nonlocal next_id
            next_id += 1
            sent[next_id] = time.perf_counter()
            os.write(self._in, before + str(next_id).encode() + after + b"}\n")

        stop = time.monotonic() + seconds
        started = time.perf_counter()
        for _ in range(concurrency):
            send_one()
        while sent:
            selector.select()
            now = time.perf_counter()
            for line in self._lines():
                answer = orjson.loads(line)
                begun = sent.pop(answer.get("id"), None)
                if begun is None:
                    continue
                latencies.append(now - begun)
                errors += "result" not in answer
                if time.monotonic() < stop:
                    send_one()
        elapsed = time.perf_counter() - started
        selector.close()
        latencies.sort()
        return StdioResult(
            rps=len(latencies) / elapsed,
            p50_ms=latencies[len(latencies) // 2] * 1000,
            p99_ms=latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
            requests=len(latencies),
            errors=errors,
        )
