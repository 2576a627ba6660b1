"""Tasks on a shared instance belong to whoever created them.

MCP tasks (the 2025-11-25 utility, and the 2026-07-28 extension) are reached by task
id: `tasks/get`, `tasks/result`, `tasks/update`, `tasks/cancel`, and `tasks/list`
lists them. The specification has the receiver bind tasks to the requestor's
authorization context. A shared instance sees one requestor, the gateway, so the
gateway does the binding: each task id an answer creates is recorded against the
principal who asked, another principal's request for it reaches the server naming a
task that does not exist (so the answer is the server's own for an unknown task:
its error code, whether the extension was declared, whether the method exists at
all), `tasks/list` shows a principal its own tasks only, and status notifications
go to its owner's sessions only. Binding to the principal rather than
the session lets a client that reconnects keep polling its tasks, as durable tasks
are meant to be.
"""

from __future__ import annotations

import asyncio
import secrets
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any


# Requests naming one task by params.taskId.
BY_ID = frozenset({"tasks/get", "tasks/result", "tasks/update", "tasks/cancel"})
LIST = "tasks/list"
# A 2026-07-28 subscription may ask for task status notifications by task id.
LISTEN = "subscriptions/listen"
# Status notifications (2025-11-25; the 2026-07-28 extension), naming params.taskId.
STATUS = frozenset({"notifications/tasks/status", "notifications/tasks"})

GATED = BY_ID | {LISTEN}

# What a request naming someone else's task asks the server about instead.
NO_SUCH_TASK = "smcp-no-such-task-"


def _nobody() -> str:
    return NO_SUCH_TASK + secrets.token_hex(12)


def created_task_id(result: Any) -> str | None:
    """The id of the task an answer creates, in either era's shape, else None."""
    if not isinstance(result, dict):
        return None
    task = result.get("task")
    if isinstance(task, dict) and isinstance(task.get("taskId"), str):
        return task["taskId"]  # 2025-11-25: CreateTaskResult {task: Task}
    if result.get("resultType") == "task" and isinstance(result.get("taskId"), str):
        return result["taskId"]  # 2026-07-28 extension: a flat CreateTaskResult
    return None


RELATED = "io.modelcontextprotocol/related-task"


def related_task(message: dict[str, Any]) -> str | None:
    """The task a server→client request is made for (its `related-task` _meta)."""
    params = message.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    related = meta.get(RELATED) if isinstance(meta, dict) else None
    return task_id_of(related)


def task_id_of(params: Any) -> str | None:
    task_id = params.get("taskId") if isinstance(params, dict) else None
    return task_id if isinstance(task_id, str) else None


class TaskOwners:
    """Task id → owning principal, the oldest forgotten past `max_tasks` (its owner
    then loses access too: the binding fails closed)."""

    def __init__(self, max_tasks: int = 100_000, *, hold_s: float = 5.0, max_held: int = 1000) -> None:
        # task id → (owning principal, the session that created it, weakly, if any)
        self._owners: OrderedDict[str, tuple[str, weakref.ref[Any] | None]] = OrderedDict()
        self._max = max_tasks
        # Work waiting for a task id to be bound (hold()), by task id.
        self._held: dict[str, list[Callable[[], None]]] = {}
        self._hold_s = hold_s
        self._max_held = max_held

    def record(self, task_id: str, principal: str, origin: object | None = None) -> None:
        self._owners[task_id] = (principal, weakref.ref(origin) if origin is not None else None)
        self._owners.move_to_end(task_id)
        while len(self._owners) > self._max:
            self._owners.popitem(last=False)
        if task_id in self._held:
            asyncio.get_running_loop().call_soon(self._release, task_id)

    def hold(self, task_id: str, then: Callable[[], None]) -> bool:
        """Run `then` once `task_id` is bound, or after a few seconds if it never is:
        a server may make a request for a task before the answer creating it is read.
        False (nothing held) when too much already waits."""
        if len(self._held) >= self._max_held:
            return False
        self._held.setdefault(task_id, []).append(then)
        asyncio.get_running_loop().call_later(self._hold_s, self._release, task_id)
        return True

    def _release(self, task_id: str) -> None:
        for then in self._held.pop(task_id, []):
            then()

    def owner(self, task_id: str) -> str | None:
        found = self._owners.get(task_id)
        return found[0] if found is not None else None

    def origin(self, task_id: str) -> Any:
        """The session that created the task, while it lives (None for a modern caller)."""
        found = self._owners.get(task_id)
        return found[1]() if found is not None and found[1] is not None else None

    def owns(self, task_id: str, principal: str | None) -> bool:
        return principal is not None and self.owner(task_id) == principal

    def gate(self, body: dict[str, Any], principal: str | None) -> dict[str, Any]:
        """A request of a GATED method as it may go on. Another principal's task id never
        reaches the server: the request names a fresh id no task has instead, and the
        server's answer is whatever it says of an unknown task (the caller learns
        nothing the server would not tell it of a made-up id)."""
        params = body.get("params")
        if body.get("method") == LISTEN:
            narrowed = self.narrow_listen(params, principal)
            return body if narrowed is params else {**body, "params": narrowed}
        task_id = task_id_of(params)
        if task_id is None or self.owns(task_id, principal):
            return body  # no task named (the server refuses the params), or one's own
        return {**body, "params": {**params, "taskId": _nobody()}}

    def on_answer(self, method: str | None, result: Any, principal: str | None, origin: object | None = None) -> None:
        """Bind the task an answer creates to who asked; narrow a tasks/list answer."""
        task_id = created_task_id(result)
        if task_id is not None and principal is not None:
            self.record(task_id, principal, origin)
        elif method == LIST:
            self.only_own(result, principal)

    def narrow_listen(self, params: Any, principal: str | None) -> Any:
        """A subscriptions/listen request's params asking for the principal's own task
        ids only; others are dropped, as ids the server would not agree to."""
        wanted = params.get("notifications") if isinstance(params, dict) else None
        ids = wanted.get("taskIds") if isinstance(wanted, dict) else None
        if not isinstance(ids, list):
            return params
        own = [i for i in ids if isinstance(i, str) and self.owns(i, principal)]
        return {**params, "notifications": {**wanted, "taskIds": own}}

    def only_own(self, result: Any, principal: str | None) -> None:
        """Narrow a tasks/list result, in place, to the principal's own tasks."""
        tasks = result.get("tasks") if isinstance(result, dict) else None
        if isinstance(tasks, list):
            result["tasks"] = [
                t for t in tasks if isinstance(t, dict) and self.owns(str(t.get("taskId")), principal)
            ]
