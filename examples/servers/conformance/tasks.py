"""The `io.modelcontextprotocol/tasks` extension (SEP-2663) for the conformance fixture.

A task-supporting tool runs in a background asyncio task. It starts like any tool
call (so it may first gather input over MRTR, SEP-2322) and calls `detach()` when it
is ready to go asynchronous; from then on the client sees a `CreateTaskResult` and
follows the task with `tasks/get`, answers its `inputRequests` with `tasks/update`,
stops it with `tasks/cancel`, and may watch it on a `subscriptions/listen` stream
(`notifications/tasks`, see task_listen.py). A tool that finishes before detaching
answers synchronously, which the spec allows (the server alone decides whether a
call becomes a task).

Tasks exist only on the 2026-07-28 wire, and only for requests whose per-request
client capabilities declare the extension: the result shapes have no legacy form.
State lives in this process, keyed by an unguessable task id, so one process can
serve many clients over stdio as well as HTTP; the id is the only handle (there is
no `tasks/list`), and a gateway in front may bind ids to the clients that made them.
"""

from __future__ import annotations

import asyncio
import contextvars
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.extension import Extension, MethodBinding, ToolBinding
from mcp.server.mcpserver import Context
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import decode_header_value
from mcp_types import (
    CLIENT_CAPABILITIES_META_KEY,
    HEADER_MISMATCH,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    MISSING_REQUIRED_CLIENT_CAPABILITY,
    CallToolRequestParams,
    CallToolResult,
    ElicitRequest,
    InputRequiredResult,
    RequestParams,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel

TASKS = "io.modelcontextprotocol/tasks"
TaskSupport = Literal["optional", "required"]
# A tool the extension contributes: (function, description, task support or None
# for a tool that always answers synchronously).
TaskTool = tuple[Callable[..., Any], str, TaskSupport | None]
TERMINAL = frozenset({"completed", "failed", "cancelled"})
TTL_MS = 60 * 60 * 1000
POLL_INTERVAL_MS = 500


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class TaskRecord:
    """One task's state; `wire()` is the DetailedTask that tasks/get returns."""

    task_id: str
    status: str = "working"
    created_at: datetime = field(default_factory=_now)
    last_updated_at: datetime = field(default_factory=_now)
    status_message: str | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    # Outstanding input requests (wire form), keyed by the ids the client answers.
    input_requests: dict[str, dict[str, Any]] = field(default_factory=dict)
    input_responses: dict[str, Any] = field(default_factory=dict)
    input_ready: asyncio.Event = field(default_factory=asyncio.Event)
    worker: asyncio.Task[Any] | None = None

    def base(self) -> dict[str, Any]:
        """The `Task` fields shared by CreateTaskResult, tasks/get and notifications."""
        task: dict[str, Any] = {
            "taskId": self.task_id,
            "status": self.status,
            "createdAt": _iso(self.created_at),
            "lastUpdatedAt": _iso(self.last_updated_at),
            "ttlMs": TTL_MS,
            "pollIntervalMs": POLL_INTERVAL_MS,
        }
        if self.status_message:
            task["statusMessage"] = self.status_message
        return task

    def wire(self) -> dict[str, Any]:
        task = self.base()
        if self.status == "input_required":
            task["inputRequests"] = dict(self.input_requests)
        elif self.status == "completed" and self.result is not None:
            task["result"] = self.result
        elif self.status == "failed" and self.error is not None:
            task["error"] = self.error
        return task

    def expired(self, now: datetime) -> bool:
        return now - self.created_at > timedelta(milliseconds=TTL_MS)


class TaskStore:
    """Every task of this process, plus the listeners that follow status changes."""

    def __init__(self) -> None:
        self._tasks: dict[str, TaskRecord] = {}
        self._listeners: set[Callable[[dict[str, Any]], None]] = set()

    def create(self) -> TaskRecord:
        self._purge()
        record = TaskRecord(task_id=str(uuid.uuid4()))
        self._tasks[record.task_id] = record
        return record

    def find(self, task_id: str) -> TaskRecord | None:
        self._purge()
        return self._tasks.get(task_id)

    def get(self, task_id: str) -> TaskRecord:
        record = self.find(task_id)
        if record is None:
            raise MCPError(code=INVALID_PARAMS, message=f"Unknown task: {task_id}")
        return record

    def set_status(self, record: TaskRecord, status: str, message: str | None = None) -> None:
        # Terminal states are final: a late worker outcome never overwrites a cancel.
        if record.status in TERMINAL:
            return
        record.status = status
        record.status_message = message
        record.last_updated_at = _now()
        if status != "input_required":
            record.input_requests.clear()
        self._publish(record)

    def subscribe(self, listener: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        self._listeners.add(listener)
        return lambda: self._listeners.discard(listener)

    def _publish(self, record: TaskRecord) -> None:
        snapshot = record.wire()
        for listener in list(self._listeners):
            listener(snapshot)

    def _purge(self) -> None:
        # Lazy expiry: nothing runs in the background just to forget old tasks.
        now = _now()
        for task_id in [t for t, r in self._tasks.items() if r.expired(now)]:
            record = self._tasks.pop(task_id)
            if record.worker is not None and not record.worker.done():
                record.worker.cancel()


# ----------------------------------------------------------- inside a tool call


@dataclass
class _Run:
    """Links one intercepted tools/call to the tool body running in its worker."""

    store: TaskStore
    # Set when the tool detaches or finishes, whichever comes first.
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    record: TaskRecord | None = None
    # The task as it was when created: the tool body keeps running after detach()
    # and may already be waiting for input by the time the interceptor answers.
    created: dict[str, Any] = field(default_factory=dict)


_current_run: contextvars.ContextVar[_Run | None] = contextvars.ContextVar(
    "conformance_task_run", default=None
)


def detach(message: str | None = None) -> bool:
    """Turn the running tool call into a task, if this call may become one.

    Returns whether it did. The record exists before the CreateTaskResult is sent,
    so an immediate tasks/get resolves (the spec's strong-consistency rule).
    """
    run = _current_run.get()
    if run is None:
        return False
    if run.record is None:
        run.record = run.store.create()
        run.record.status_message = message
        run.record.worker = asyncio.current_task()
        run.created = run.record.base()
        run.settled.set()
    return True


def _task_record() -> TaskRecord | None:
    run = _current_run.get()
    return run.record if run is not None else None


async def gather_input(
    ctx: Context, requests: Mapping[str, ElicitRequest]
) -> dict[str, dict[str, Any]] | InputRequiredResult:
    """Ask the client for input in whichever way this call can be answered.

    In a task: park it as `input_required` until tasks/update has answered every
    key. In a plain 2026-07-28 call: an InputRequiredResult round trip (MRTR).
    In a legacy session: elicitation requests on the call's stream.
    """
    run = _current_run.get()
    record = _task_record()
    if run is not None and record is not None:
        record.input_responses = {}
        record.input_ready = asyncio.Event()
        record.input_requests = {
            key: request.model_dump(by_alias=True, mode="json", exclude_none=True)
            for key, request in requests.items()
        }
        run.store.set_status(record, "input_required", "Waiting for client input")
        await record.input_ready.wait()
        return dict(record.input_responses)
    if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
        answers = _plain(ctx.input_responses or {})
        if set(requests) <= answers.keys():
            return {key: answers[key] for key in requests}
        return InputRequiredResult(input_requests=dict(requests))
    legacy: dict[str, dict[str, Any]] = {}
    for key, request in requests.items():
        params = request.params
        result = await ctx.session.elicit_form(
            params.message,
            getattr(params, "requested_schema", {}),
            related_request_id=ctx.request_context.request_id,
        )
        legacy[key] = result.model_dump(by_alias=True, mode="json", exclude_none=True)
    return legacy


def _plain(values: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        if isinstance(value, BaseModel):
            out[key] = value.model_dump(by_alias=True, mode="json", exclude_none=True)
        elif isinstance(value, dict):
            out[key] = value
    return out


# ----------------------------------------------------------------- the extension


class TaskIdParams(RequestParams):
    task_id: str


class UpdateTaskParams(TaskIdParams):
    input_responses: dict[str, Any] = {}


def declares_tasks(ctx: ServerRequestContext[Any, Any]) -> bool:
    """Whether *this request* declared the extension (2026-07-28 per-request caps)."""
    if ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
        return False
    caps: Any = (ctx.meta or {}).get(CLIENT_CAPABILITIES_META_KEY)
    if caps is None and ctx.session.client_capabilities is not None:
        caps = ctx.session.client_capabilities.model_dump(by_alias=True, exclude_none=True)
    extensions = caps.get("extensions") if isinstance(caps, Mapping) else None
    return isinstance(extensions, Mapping) and TASKS in extensions


def missing_capability() -> MCPError:
    return MCPError(
        code=MISSING_REQUIRED_CLIENT_CAPABILITY,
        message=f"Missing required client capability: extension {TASKS}",
        data={"requiredCapabilities": {"extensions": {TASKS: {}}}},
    )


def _check_routing_header(ctx: ServerRequestContext[Any, Any], task_id: str) -> None:
    """SEP-2663: Mcp-Name carries params.taskId on tasks/* over Streamable HTTP.

    Only an HTTP request has headers (`ctx.request` is the HTTP request; None on
    stdio), so this is a no-op elsewhere. An absent header is tolerated: clients
    and SDKs that predate the tasks routing header do not send it.
    """
    headers = getattr(ctx.request, "headers", None)
    if headers is None:
        return
    value = headers.get("mcp-name")
    if value is not None and decode_header_value(value.strip()) != task_id:
        raise MCPError(
            code=HEADER_MISMATCH,
            message="Mcp-Name header does not match the request's taskId",
        )


class TasksExtension(Extension):
    """Serves tasks/get, tasks/update, tasks/cancel and makes registered tools task-capable."""

    identifier = TASKS

    def __init__(self, tools: Sequence[TaskTool] = ()) -> None:
        self.store = TaskStore()
        self._tools = list(tools)
        # Registration-time task support per tool name (SEP-2663 puts none on the wire).
        self._support: dict[str, TaskSupport] = {
            fn.__name__: support for fn, _, support in self._tools if support is not None
        }

    def tools(self) -> list[ToolBinding]:
        return [ToolBinding(fn, kwargs={"description": desc}) for fn, desc, _ in self._tools]

    def methods(self) -> list[MethodBinding]:
        modern = frozenset(MODERN_PROTOCOL_VERSIONS)
        return [
            MethodBinding("tasks/get", TaskIdParams, self._get, modern),
            MethodBinding("tasks/update", UpdateTaskParams, self._update, modern),
            MethodBinding("tasks/cancel", TaskIdParams, self._cancel, modern),
        ]

    async def intercept_tool_call(
        self,
        params: CallToolRequestParams,
        ctx: ServerRequestContext[Any, Any],
        call_next: CallNext,
    ) -> HandlerResult:
        support = self._support.get(params.name)
        if support is None:
            return await call_next(ctx)
        if not declares_tasks(ctx):
            if support == "required":
                raise missing_capability()
            return await call_next(ctx)
        run = _Run(store=self.store)
        context = contextvars.copy_context()
        context.run(_current_run.set, run)
        # The tool body outlives this request once it detaches, so it runs in its
        # own asyncio task rather than in the request's.
        worker = asyncio.create_task(self._work(run, call_next, ctx), context=context)
        try:
            await run.settled.wait()
        except asyncio.CancelledError:
            if run.record is None:
                worker.cancel()
            raise
        if run.record is None:
            return await worker  # finished before detaching: a synchronous answer
        return {"resultType": "task", **run.created}

    async def _work(
        self, run: _Run, call_next: CallNext, ctx: ServerRequestContext[Any, Any]
    ) -> HandlerResult:
        try:
            result = await call_next(ctx)
        except MCPError as exc:
            if run.record is None:
                raise
            # A JSON-RPC error is what `failed` is for (a tool's isError is not).
            run.record.error = exc.error.model_dump(by_alias=True, mode="json", exclude_none=True)
            self.store.set_status(run.record, "failed", exc.error.message)
            return None
        except Exception as exc:
            if run.record is None:
                raise
            run.record.error = {"code": INTERNAL_ERROR, "message": str(exc)}
            self.store.set_status(run.record, "failed", str(exc))
            return None
        finally:
            run.settled.set()
        if run.record is not None:
            if isinstance(result, CallToolResult):
                run.record.result = result.model_dump(by_alias=True, mode="json", exclude_none=True)
                self.store.set_status(run.record, "completed")
            else:
                run.record.error = {"code": INTERNAL_ERROR, "message": "Task produced no tool result"}
                self.store.set_status(run.record, "failed")
        return result

    def _lookup(self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> TaskRecord:
        # Transport check first, then capability, then existence: the order the
        # spec's error table implies (-32020, -32021, -32602).
        _check_routing_header(ctx, params.task_id)
        if not declares_tasks(ctx):
            raise missing_capability()
        return self.store.get(params.task_id)

    async def _get(self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> dict[str, Any]:
        return self._lookup(ctx, params).wire()

    async def _update(
        self, ctx: ServerRequestContext[Any, Any], params: UpdateTaskParams
    ) -> dict[str, Any]:
        record = self._lookup(ctx, params)
        answered = [key for key in params.input_responses if key in record.input_requests]
        for key in answered:
            record.input_responses[key] = params.input_responses[key]
            del record.input_requests[key]
        if answered:
            if record.input_requests:
                # Partial fulfilment: still input_required, now with fewer keys.
                record.last_updated_at = _now()
                self.store._publish(record)
            else:
                self.store.set_status(record, "working")
                record.input_ready.set()
        # Keys the task is not waiting for are ignored; the ack is empty either way.
        return {}

    async def _cancel(self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> dict[str, Any]:
        record = self._lookup(ctx, params)
        if record.status not in TERMINAL:
            self.store.set_status(record, "cancelled", "Cancelled by the client")
            if record.worker is not None:
                record.worker.cancel()
        return {}
