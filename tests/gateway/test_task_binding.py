"""Tasks on a shared upstream, against a real server process that binds nothing itself
(its tasks/get serves any id; subscriptions/listen echoes what it was asked)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from smcp.domain import Revision, ServerSpec
from smcp.gateway.upstream import SharedUpstream
from smcp.runtime.instance import SupervisedInstance, new_instance_record
from smcp.runtime.logs import LogRing
from smcp.runtime.process import StdioProcess
from smcp.runtime.sandbox import Launch

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="hosted processes drop to an unprivileged uid: needs root")

UID = 200_996

# The 2026-07-28 extension's shapes: a flat CreateTaskResult, tasks/get by id.
SERVER = r"""
import itertools, json, sys
ids = itertools.count(1)
for line in sys.stdin:
    msg = json.loads(line)
    if "id" not in msg:
        continue
    method, params = msg.get("method"), msg.get("params") or {}
    if method == "initialize":
        result = {"protocolVersion": "2025-11-25", "capabilities": {}, "serverInfo": {"name": "tasks", "version": "0"}}
    elif method == "tools/call":
        result = {"resultType": "task", "taskId": f"t{next(ids)}", "status": "working"}
    elif method == "tasks/get":
        result = {"resultType": "complete", "taskId": params.get("taskId"), "status": "working"}
    else:
        result = {"asked": params}
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}) + "\n")
    sys.stdout.flush()
"""


class _Runtime:
    async def connect(self, revision: Revision, *, session: str) -> SupervisedInstance:
        async def spawn(on_stdout: Callable[[bytes], None], on_stderr: Callable[[str], None]) -> StdioProcess:
            proc = StdioProcess(Launch(["/usr/bin/python3", "-I", "-c", SERVER], ()), uid=UID, gid=UID,
                                max_message_bytes=1 << 20, on_stdout=on_stdout, on_stderr=on_stderr)
            await proc.start()
            return proc

        instance = SupervisedInstance(new_instance_record("t", "s", "r"), spawn, LogRing(10, 1000), restart_max=0,
                                      backoff_s=0, backoff_max_s=0, stop_grace_s=1, on_gone=lambda _i: None)
        await instance.start()
        return instance


async def test_a_principal_reaches_and_listens_to_its_own_tasks_only() -> None:
    spec = ServerSpec(name="s", runtime="command", command=("python3",))
    revision = Revision("r", "t", "s", 1, spec, "digest", None, datetime.now(UTC))
    upstream = SharedUpstream(_Runtime(), revision, key="k", init_timeout_s=10)  # type: ignore[arg-type]

    async def ask(caller: str, method: str, params: dict[str, Any]) -> dict[str, Any]:
        answered: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        await upstream.send({"jsonrpc": "2.0", "id": 1, "method": method, "params": params},
                            lambda raw, final: answered.done() or answered.set_result(raw), modern=True, caller=caller)
        return orjson.loads(await asyncio.wait_for(answered, 10))

    try:
        mine = (await ask("user:a", "tools/call", {"name": "work", "arguments": {}}))["result"]["taskId"]
        theirs = (await ask("user:b", "tools/call", {"name": "work", "arguments": {}}))["result"]["taskId"]

        assert (await ask("user:a", "tasks/get", {"taskId": mine}))["result"]["taskId"] == mine
        # This server serves any id it is asked about: user:b's request must name another.
        asked = (await ask("user:b", "tasks/get", {"taskId": mine}))["result"]["taskId"]
        assert asked != mine and asked.startswith("smcp-no-such-task-")
        for method in ("tasks/cancel", "tasks/update", "tasks/result"):
            sent = (await ask("user:b", method, {"taskId": mine, "inputResponses": {}}))["result"]["asked"]
            assert sent["taskId"] != mine and sent["inputResponses"] == {}, method
        assert (await ask("user:a", "tasks/cancel", {"taskId": mine}))["result"]["asked"] == {"taskId": mine}
        heard = await ask("user:b", "subscriptions/listen",
                          {"notifications": {"taskIds": [mine, theirs, "t99"], "toolsListChanged": True}})
        assert heard["result"]["asked"]["notifications"] == {"taskIds": [theirs], "toolsListChanged": True}
    finally:
        await upstream.close()
