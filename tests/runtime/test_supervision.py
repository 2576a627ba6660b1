"""A message written to an instance whose process has just died reaches its replacement.

Between a process's death and the supervisor reaping it, the gateway may write to its
closed pipe: that write fails silently in both event loops (the transport just
closes), so the message would be lost with nobody told. These tests let a real child
die while the event loop is busy (so nothing has noticed yet), then send: the message
must go, once, to the restarted process, and the loss of the old process must not fail
a request that was still being written.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import uvloop

from smcp.domain import Principal, Revision, ServerSpec
from smcp.gateway.sessions import Session
from smcp.gateway.upstream import SharedUpstream
from smcp.protocol import jsonrpc
from smcp.runtime.instance import SupervisedInstance, new_instance_record
from smcp.runtime.logs import LogRing
from smcp.runtime.process import StdioProcess
from smcp.runtime.sandbox import Launch

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="hosted processes drop to an unprivileged uid: needs root")

UID = 200_997

# A line-oriented MCP-ish server: answers initialize, tells its pid, and dies on "crash".
CHILD = r"""
import json, os, sys
for line in sys.stdin:
    msg = json.loads(line)
    method = msg.get("method")
    if method == "crash":
        os._exit(3)
    if "id" not in msg:
        continue
    if method == "initialize":
        result = {"protocolVersion": "2025-11-25", "capabilities": {}, "serverInfo": {"name": "child", "version": "0"}}
    else:
        result = {"pid": os.getpid()}
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}) + "\n")
    sys.stdout.flush()
"""

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def _run(loop: str, scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        runner.run(asyncio.wait_for(scenario(), timeout=30))


def _instance() -> SupervisedInstance:
    async def spawn(on_stdout: Callable[[bytes], None], on_stderr: Callable[[str], None]) -> StdioProcess:
        proc = StdioProcess(
            Launch(["/usr/bin/python3", "-I", "-c", CHILD], ()),
            uid=UID,
            gid=UID,
            max_message_bytes=1 << 20,
            on_stdout=on_stdout,
            on_stderr=on_stderr,
        )
        await proc.start()
        return proc

    return SupervisedInstance(
        new_instance_record("t", "s", "r"),
        spawn,
        LogRing(100, 1000),
        restart_max=2,
        backoff_s=0.0,
        backoff_max_s=0.1,
        stop_grace_s=1.0,
        on_gone=lambda _instance: None,
    )


def _die_unnoticed() -> None:
    # The child exits now; the loop is blocked, so neither its exit nor its closed
    # pipe has been seen when the next message is written.
    time.sleep(0.6)


async def _until(found: Callable[[], Any], what: str) -> Any:
    for _ in range(200):
        if (value := found()) is not None:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _request(rid: Any, method: str, **params: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "method": method, "params": params}


@pytest.mark.parametrize("loop", LOOPS)
def test_a_message_written_after_an_unnoticed_death_goes_to_the_restarted_process(loop: str) -> None:
    async def scenario() -> None:
        instance = _instance()
        answers: dict[Any, dict[str, Any]] = {}
        lost: list[str] = []
        closed: list[str] = []

        def on_message(raw: bytes) -> None:
            message = orjson.loads(raw)
            answers[message["id"]] = message

        instance.attach(on_message, closed.append, lost.append)
        await instance.start()
        try:
            await instance.send(orjson.dumps(_request(0, "initialize", protocolVersion="2025-11-25", capabilities={})))
            await instance.send(b'{"jsonrpc":"2.0","method":"notifications/initialized"}')
            await instance.send(orjson.dumps(_request(1, "whoami")))
            first = (await _until(lambda: answers.get(1), "the first answer"))["result"]["pid"]

            await instance.send(b'{"jsonrpc":"2.0","method":"crash"}')
            _die_unnoticed()
            await instance.send(orjson.dumps(_request(2, "whoami")))  # must not raise, nor vanish

            second = (await _until(lambda: answers.get(2), "the resent message's answer"))["result"]["pid"]
            assert second != first
            assert instance.record.restarts == 1
            assert lost and "exited with code 3" in lost[0]
            assert not closed
        finally:
            await instance.stop("test over")

    _run(loop, scenario)


class _OneInstance:
    """The Runtime's one method SharedUpstream uses, backed by a real supervised process."""

    def __init__(self, instance: SupervisedInstance) -> None:
        self.instance = instance

    async def connect(self, revision: Revision, *, session: str) -> SupervisedInstance:
        await self.instance.start()
        return self.instance


@pytest.mark.parametrize("loop", LOOPS)
def test_a_shared_instance_request_being_written_is_not_failed_by_the_loss_it_outlives(loop: str) -> None:
    async def scenario() -> None:
        runtime = _OneInstance(_instance())
        spec = ServerSpec(name="s", runtime="command", command=("python3",))
        revision = Revision("r", "t", "s", 1, spec, "digest", None, datetime.now(UTC))
        upstream = SharedUpstream(runtime, revision, key="k", init_timeout_s=10)  # type: ignore[arg-type]
        got: dict[Any, list[dict[str, Any]]] = {}

        def sink(client_id: Any) -> Callable[[bytes, bool], None]:
            return lambda raw, final: got.setdefault(client_id, []).append(orjson.loads(raw))

        try:
            await upstream.send(_request("a", "whoami"), sink("a"), modern=False)
            first = (await _until(lambda: got.get("a"), "the first answer"))[0]["result"]["pid"]

            await upstream.send(_request("crash", "crash"), sink("crash"), modern=False)
            _die_unnoticed()
            await upstream.send(_request("b", "whoami"), sink("b"), modern=False)

            answer = (await _until(lambda: got.get("b"), "the resent request's answer"))
            assert len(answer) == 1 and answer[0]["id"] == "b"
            assert "result" in answer[0], answer  # not the loss of the process it outlived
            assert answer[0]["result"]["pid"] != first
            # The request the dead process had taken is answered with the loss.
            crashed = await _until(lambda: got.get("crash"), "the crashed request's error")
            assert crashed[0]["error"]["code"] == jsonrpc.INSTANCE_LOST
            assert "not completed" in crashed[0]["error"]["message"]
        finally:
            await upstream.close()

    _run(loop, scenario)


def _call(rid: int, token: str) -> jsonrpc.Message:
    raw = orjson.dumps({"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": {"_meta": {"progressToken": token}}})
    return jsonrpc.parse(raw, max_depth=64)


def test_a_lost_process_spares_only_the_session_requests_still_being_written() -> None:
    spec = ServerSpec(name="s", runtime="command", command=("python3",))
    revision = Revision("r", "t", "s", 1, spec, "digest", None, datetime.now(UTC))
    session = Session("sid", Principal(kind="api_key", subject="key:1", tenant="t"), revision, channel=None)  # type: ignore[arg-type]
    written, writing = session.begin(_call(1, "t1")), session.begin(_call(2, "t2"))
    writing.writing = True

    session.fail_pending(jsonrpc.INSTANCE_LOST, "instance exited", spare_writing=True)

    raw, final = written.queue.get_nowait()
    assert final and orjson.loads(raw)["error"]["code"] == jsonrpc.INSTANCE_LOST
    assert writing.queue.empty()
    # Still pending, and still the one its progress notifications are routed to.
    session.on_message(orjson.dumps({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": "t2", "progress": 1}}))
    assert orjson.loads(writing.queue.get_nowait()[0])["method"] == "notifications/progress"
    session.on_message(orjson.dumps({"jsonrpc": "2.0", "id": 2, "result": {}}))
    assert writing.queue.get_nowait() == (b'{"jsonrpc":"2.0","id":2,"result":{}}', True)
    assert not session.pending

    third = session.begin(_call(3, "t3"))
    third.writing = True
    session.fail_pending(jsonrpc.INSTANCE_LOST, "session ended")  # closing spares nothing
    assert not session.pending and not third.queue.empty()
