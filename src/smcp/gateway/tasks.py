"""Tasks on a shared instance belong to whoever created them.

MCP tasks (the 2025-11-25 utility, and the 2026-07-28 extension) are reached by task
id: `tasks/get`, `tasks/result`, `tasks/update`, `tasks/cancel`, and `tasks/list`
lists them. The specification has the receiver bind tasks to the requestor's
authorization context. A shared instance sees one requestor, the gateway, so the
gateway does the binding: each task id an answer creates is recorded against the
principal who asked, another principal's request for it is refused as if the task
did not exist, `tasks/list` shows a principal its own tasks only, and status
notifications go to its owner's sessions only. Binding to the principal rather than
the session lets a client that reconnects keep polling its tasks, as durable tasks
are meant to be.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

# Requests naming one task by params.taskId.
BY_ID = frozenset({"tasks/get", "tasks/result", "tasks/update", "tasks/cancel"})
LIST = "tasks/list"
# A 2026-07-28 subscription may ask for task status notifications by task id.
LISTEN = "subscriptions/listen"
# Status notifications (2025-11-25; the 2026-07-28 extension), naming params.taskId.
STATUS = frozenset({"notifications/tasks/status", "notifications/tasks"})

UNKNOWN = "unknown task"


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

    def __init__(self, max_tasks: int = 100_000) -> None:
        self._owners: OrderedDict[str, str] = OrderedDict()
        self._max = max_tasks

    def record(self, task_id: str, principal: str) -> None:
        self._owners[task_id] = principal
        self._owners.move_to_end(task_id)
        while len(self._owners) > self._max:
            self._owners.popitem(last=False)

    def owner(self, task_id: str) -> str | None:
        return self._owners.get(task_id)

    def allows(self, params: Any, principal: str | None) -> bool:
        """Whether `principal` may make a by-id task request with these params."""
        task_id = task_id_of(params)
        return task_id is not None and principal is not None and self._owners.get(task_id) == principal

    def narrow_listen(self, params: Any, principal: str | None) -> Any:
        """A subscriptions/listen request's params asking for the principal's own task
        ids only; others are dropped, as ids the server would not agree to."""
        wanted = params.get("notifications") if isinstance(params, dict) else None
        ids = wanted.get("taskIds") if isinstance(wanted, dict) else None
        if not isinstance(ids, list):
            return params
        own = [i for i in ids if isinstance(i, str) and principal is not None and self._owners.get(i) == principal]
        return {**params, "notifications": {**wanted, "taskIds": own}}

    def only_own(self, result: Any, principal: str | None) -> None:
        """Narrow a tasks/list result, in place, to the principal's own tasks."""
        tasks = result.get("tasks") if isinstance(result, dict) else None
        if isinstance(tasks, list):
            result["tasks"] = [
                t for t in tasks if isinstance(t, dict) and principal is not None and self.owner(str(t.get("taskId"))) == principal
            ]
