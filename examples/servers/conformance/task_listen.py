"""`notifications/tasks` on `subscriptions/listen` streams (SEP-2663 over SEP-2575).

The tasks extension's optional push channel. A client lists the task ids it wants
to follow under `notifications.taskIds` of a `subscriptions/listen` request; each
status change of those tasks then arrives on that request's response stream as a
`notifications/tasks` carrying the full DetailedTask (what tasks/get would return).
"""

from __future__ import annotations

from typing import Any, Literal

import anyio
from mcp.server.context import HandlerResult, ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.subscriptions import SubscriptionBus
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import (
    SUBSCRIPTION_ID_META_KEY,
    ServerEvent,
    event_matches,
    event_to_notification,
)
from mcp_types import (
    INVALID_PARAMS,
    SubscriptionFilter,
    SubscriptionsAcknowledgedNotification,
    SubscriptionsAcknowledgedNotificationParams,
    SubscriptionsListenRequestParams,
)
from pydantic import BaseModel

from tasks import TaskStore, declares_tasks, missing_capability


def serve_task_notifications(server: Server[Any], store: TaskStore, bus: SubscriptionBus) -> None:
    """Take over `subscriptions/listen` on the lowlevel `server` so streams can follow
    tasks; `bus` must be the one the MCPServer was built with (its own listen handler,
    kept for every stream that follows no task, reads the same bus)."""
    entry = server.get_request_handler("subscriptions/listen")
    if entry is None:  # the MCPServer was built with subscriptions=False
        return
    server.add_request_handler(
        "subscriptions/listen",
        SubscriptionsListenRequestParams,
        TaskListenHandler(entry.handler, store, bus),
    )


class TaskStatusNotification(BaseModel):
    """`notifications/tasks`: a DetailedTask, as tasks/get would return it then."""

    method: Literal["notifications/tasks"] = "notifications/tasks"
    params: dict[str, Any]


class TaskListenHandler:
    """`subscriptions/listen` that also accepts `notifications.taskIds` (SEP-2663).

    A listen request without `taskIds` goes to the SDK's own handler unchanged. With
    them, this handler serves the whole stream: the ack (echoing the task ids it
    agreed to follow), the current state of each followed task, then every change
    of those tasks, plus the SDK's list-changed/resource events the filter asked for.
    Everything rides the listen request's own response stream, so it works on any
    transport that carries one (stdio included).
    """

    def __init__(self, inner: Any, store: TaskStore, bus: SubscriptionBus) -> None:
        self._inner = inner
        self._store = store
        self._bus = bus

    async def __call__(
        self, ctx: ServerRequestContext[Any, Any], params: SubscriptionsListenRequestParams
    ) -> HandlerResult:
        requested = (params.notifications.model_extra or {}).get("taskIds")
        if not requested:
            return await self._inner(ctx, params)
        if not declares_tasks(ctx):
            raise missing_capability()
        if ctx.request_id is None or not isinstance(requested, list):
            raise MCPError(code=INVALID_PARAMS, message="taskIds must be a list of task ids")
        # Only ids this process knows are agreed to; the ack tells the client which.
        followed = [t for t in requested if isinstance(t, str) and self._store.find(t)]
        meta: dict[str, Any] = {SUBSCRIPTION_ID_META_KEY: ctx.request_id}
        honored = SubscriptionFilter.model_validate(
            {
                **params.notifications.model_dump(by_alias=True, exclude_none=True),
                "taskIds": followed,
            }
        )
        uris = frozenset(honored.resource_subscriptions or ())
        # Buffered so a publisher never waits on this stream's transport writes.
        send, recv = anyio.create_memory_object_stream[Any](1024)

        def enqueue(notification: Any) -> None:
            try:
                send.send_nowait(notification)
            except (anyio.WouldBlock, anyio.ClosedResourceError):
                send.close()  # a client that stopped reading loses the stream, as in the SDK

        def on_task(snapshot: dict[str, Any]) -> None:
            if snapshot["taskId"] in followed:
                enqueue(TaskStatusNotification(params={**snapshot, "_meta": meta}))

        def on_event(event: ServerEvent) -> None:
            if event_matches(honored, uris, event):
                enqueue(event_to_notification(event, meta))

        # Subscribe before the ack so nothing that happens meanwhile is lost.
        unsubscribe = [self._store.subscribe(on_task), self._bus.subscribe(on_event)]
        try:
            await ctx.session.send_notification(
                SubscriptionsAcknowledgedNotification(
                    params=SubscriptionsAcknowledgedNotificationParams(
                        notifications=honored, _meta=meta
                    )
                ),
                related_request_id=ctx.request_id,
            )
            for task_id in followed:
                if (record := self._store.find(task_id)) is not None:
                    on_task(record.wire())
            async for notification in recv:
                await ctx.session.send_notification(notification, related_request_id=ctx.request_id)
        finally:
            for undo in unsubscribe:
                undo()
            send.close()
            recv.close()
        return {"_meta": meta}
