"""The tools the suite's `tasks-*` scenarios call, named and shaped as their
descriptions require. `TasksExtension(FIXTURE_TOOLS)` registers them; their task
support is registration-time only (SEP-2663 puts no per-tool flag on the wire)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from mcp.server.mcpserver import Context
from mcp.shared.exceptions import MCPError
from mcp_types import (
    INTERNAL_ERROR,
    CallToolResult,
    ElicitRequest,
    ElicitRequestFormParams,
    InputRequiredResult,
    TextContent,
)

from tasks import TaskTool, detach, gather_input

CONFIRM_SCHEMA = {
    "type": "object",
    "properties": {"confirm": {"type": "boolean"}},
    "required": ["confirm"],
}
NAME_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}},
    "required": ["name"],
}


def _text(text: str, is_error: bool = False) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=is_error)


def _elicit(message: str, schema: dict[str, Any]) -> ElicitRequest:
    return ElicitRequest(params=ElicitRequestFormParams(message=message, requested_schema=schema))


def _content(answer: Mapping[str, Any] | None) -> dict[str, Any]:
    content = (answer or {}).get("content")
    return content if isinstance(content, dict) else {}


def greet(name: str) -> CallToolResult:
    return _text(f"Hello, {name}!")


async def slow_compute(seconds: float = 1, label: str = "") -> CallToolResult:
    detach(f"Computing {label}".strip())
    await asyncio.sleep(max(seconds, 0))
    return _text(f"Computed {label or 'result'} in {seconds}s")


async def failing_job() -> CallToolResult:
    detach("Running a job that will fail")
    await asyncio.sleep(1)
    return _text("The job failed: simulated tool execution error", is_error=True)


async def protocol_error_job() -> CallToolResult:
    detach("Running a job that will hit a protocol error")
    await asyncio.sleep(0.2)
    raise MCPError(code=INTERNAL_ERROR, message="Simulated internal failure in protocol_error_job")


async def confirm_delete(filename: str, ctx: Context) -> CallToolResult | InputRequiredResult:
    detach(f"Preparing to delete {filename}")
    answers = await gather_input(
        ctx, {"confirm": _elicit(f"Delete {filename}?", CONFIRM_SCHEMA)}
    )
    if isinstance(answers, InputRequiredResult):
        return answers
    answer = answers["confirm"]
    if answer.get("action") == "accept" and _content(answer).get("confirm") is True:
        return _text(f"Deleted {filename}")
    return _text(f"Kept {filename}")


async def multi_input(ctx: Context) -> CallToolResult | InputRequiredResult:
    detach("Collecting two inputs")
    answers = await gather_input(
        ctx,
        {
            "first": _elicit("First input: your name?", NAME_SCHEMA),
            "second": _elicit("Second input: confirm?", CONFIRM_SCHEMA),
        },
    )
    if isinstance(answers, InputRequiredResult):
        return answers
    return _text(f"Received: {', '.join(sorted(answers))}")


async def test_tool_with_task(ctx: Context) -> CallToolResult | InputRequiredResult:
    # MRTR first (synchronously, no task yet), then the rest as a task.
    answers = await gather_input(ctx, {"user_name": _elicit("What is your name?", NAME_SCHEMA)})
    if isinstance(answers, InputRequiredResult):
        return answers
    name = _content(answers["user_name"]).get("name")
    detach("Greeting the user asynchronously")
    await asyncio.sleep(0.2)
    return _text(f"Hello, {name}! (from a task)")


FIXTURE_TOOLS: list[TaskTool] = [
    (greet, "Sync-only: returns Hello, {name}!", None),
    (slow_compute, "Task-supporting: sleeps `seconds`, then returns a result", "optional"),
    (failing_job, "Task-required: returns a tool execution error after ~1s", "required"),
    (protocol_error_job, "Task-supporting: fails with a JSON-RPC (protocol) error", "optional"),
    (confirm_delete, "Task-supporting: asks for confirmation, then completes", "optional"),
    (multi_input, "Task-supporting: asks two questions at once", "optional"),
    (test_tool_with_task, "Task-required: MRTR for user_name, then escalates to a task", "required"),
]
