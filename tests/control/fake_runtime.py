"""A Runtime double: builds are recorded (and can be made to fail), instances and logs are canned."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

from smcp.domain import Instance, InstanceState, LogLine, Revision, ServerSpec
from smcp.runtime.interface import Channel


class FakeRuntime:
    def __init__(self) -> None:
        self.prepared: list[tuple[str, ServerSpec, str]] = []
        self.fail_with: Exception | None = None
        self.stopped: list[tuple[str, str]] = []
        self._instances: dict[tuple[str, str], list[Instance]] = {}
        self._logs: dict[tuple[str, str], list[LogLine]] = {}

    async def prepare(self, tenant: str, spec: ServerSpec, bundle: Path, bundle_digest: str) -> str | None:
        # The real runtime builds from this file, so it must already hold exactly the bundle.
        assert hashlib.sha256(bundle.read_bytes()).hexdigest() == bundle_digest
        self.prepared.append((tenant, spec, bundle_digest))
        if self.fail_with is not None:
            raise self.fail_with
        return f"build-{bundle_digest[:12]}"

    async def connect(self, revision: Revision, *, session: str) -> Channel:
        raise NotImplementedError("the control plane never connects")

    def add_instance(
        self, tenant: str, server: str, revision: str = "r", state: InstanceState = InstanceState.running
    ) -> Instance:
        inst = Instance(
            id=f"i{len(self._instances.get((tenant, server), []))}",
            tenant=tenant,
            server=server,
            revision=revision,
            state=state,
            started_at=datetime.now(UTC),
            pid=4242,
        )
        self._instances.setdefault((tenant, server), []).append(inst)
        return inst

    def add_log(self, tenant: str, server: str, text: str) -> None:
        line = LogLine(at=datetime.now(UTC), instance="i0", stream="stderr", text=text)
        self._logs.setdefault((tenant, server), []).append(line)

    def instances(self, tenant: str, server: str | None = None) -> list[Instance]:
        return [i for (t, s), items in self._instances.items() if t == tenant and server in (None, s) for i in items]

    def logs(self, tenant: str, server: str, *, limit: int = 200) -> list[LogLine]:
        return self._logs.get((tenant, server), [])[-limit:]

    async def stop_server(self, tenant: str, server: str) -> None:
        self.stopped.append((tenant, server))
        self._instances.pop((tenant, server), None)

    async def aclose(self) -> None:
        pass
