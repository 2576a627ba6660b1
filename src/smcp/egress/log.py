"""One JSON line per egress decision, one file per tenant: data_dir/egress/<tenant>.log.jsonl.

Fields: time (UTC, ISO 8601), tenant, server, instance, method, target (host:port),
ip (the address dialled or refused, if any), decision, reason, bytes (total),
bytes_up (sandbox → upstream), bytes_down. Decisions:

  allow   the request passed the allowlist and address checks and was dialled
  deny    refused before any upstream connection (allowlist, address, peer, malformed, limits)
  error   allowed, but the upstream could not be reached
  close   an allowed connection ended; `reason` says why and `bytes` how much moved

Paths and query strings are never logged (they often carry tokens). The files are
host-side, 0600, and not visible inside any sandbox.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson


class DecisionLog:
    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self._files: dict[str, IO[bytes]] = {}

    def path(self, tenant: str) -> Path:
        return self._dir / f"{tenant}.log.jsonl"

    def _file(self, tenant: str) -> IO[bytes]:
        f = self._files.get(tenant)
        if f is None or f.closed:
            fd = os.open(self.path(tenant), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            f = self._files[tenant] = os.fdopen(fd, "ab", buffering=0)
        return f

    def write(self, tenant: str, **fields: Any) -> None:
        record = {"time": datetime.now(UTC).isoformat(timespec="milliseconds"), "tenant": tenant, **fields}
        # One write() per line on an O_APPEND file: lines from concurrent
        # connections never interleave.
        self._file(tenant).write(orjson.dumps(record) + b"\n")

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()
