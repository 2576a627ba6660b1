"""Serve the conformance fixture directly over Streamable HTTP: the baseline.

    python -m tests.conformance.direct_server PORT

Imports `mcp` from examples/servers/conformance/server.py and serves the SDK's own
Streamable HTTP app (both eras on one endpoint) on 127.0.0.1:PORT/mcp, with an
in-memory event store so SEP-1699 stream resumption works, as the suite expects.
"""

from __future__ import annotations

import importlib.util
import itertools
import sys
from pathlib import Path

import uvicorn
from mcp.server.streamable_http import (
    EventCallback,
    EventId,
    EventMessage,
    EventStore,
    StreamId,
)
from mcp_types import JSONRPCMessage

FIXTURE = (
    Path(__file__).resolve().parents[2]
    / "examples"
    / "servers"
    / "conformance"
    / "server.py"
)


class MemoryEventStore(EventStore):
    """Every event in order; replay sends the ones after an id on the same stream."""

    def __init__(self) -> None:
        self._events: list[tuple[EventId, StreamId, JSONRPCMessage | None]] = []
        self._ids = itertools.count(1)

    async def store_event(
        self, stream_id: StreamId, message: JSONRPCMessage | None
    ) -> EventId:
        event_id = f"{stream_id}:{next(self._ids)}"
        self._events.append((event_id, stream_id, message))
        return event_id

    async def replay_events_after(
        self, last_event_id: EventId, send_callback: EventCallback
    ) -> StreamId | None:
        index = next(
            (i for i, (eid, _, _) in enumerate(self._events) if eid == last_event_id),
            None,
        )
        if index is None:
            return None
        stream_id = self._events[index][1]
        for event_id, sid, message in self._events[index + 1 :]:
            if sid == stream_id and message is not None:
                await send_callback(EventMessage(message, event_id))
        return stream_id


def load_fixture():
    # server.py imports its sibling modules (tasks, skills) as `python server.py`
    # would find them: from its own directory on sys.path.
    if str(FIXTURE.parent) not in sys.path:
        sys.path.insert(0, str(FIXTURE.parent))
    spec = importlib.util.spec_from_file_location("conformance_fixture", FIXTURE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # the SDK resolves annotations through sys.modules
    spec.loader.exec_module(module)
    return module.mcp


def main() -> None:
    port = int(sys.argv[1])
    app = load_fixture().streamable_http_app(
        event_store=MemoryEventStore(), retry_interval=500, host="127.0.0.1"
    )
    # h11, not "auto": with httptools installed uvicorn keeps trailing whitespace in
    # header values, and the SDK compares Mcp-Name untrimmed, so the baseline's
    # http-header-validation result would depend on which optional packages are present.
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", http="h11")


if __name__ == "__main__":
    main()
