"""The 2026-07-28 era at the same endpoint, bridged onto a shared legacy-era instance.

Every modern request is validated (headers against body, version, `_meta`), then
forwarded to one initialized instance per revision with a gateway-unique id. Closing
the response stream cancels the request upstream, as this era specifies.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson

from smcp.config import Settings
from smcp.domain import Principal, Revision
from smcp.gateway import parking
from smcp.gateway.asgi import Receive, Send, respond, start_stream, stream_chunk
from smcp.gateway.relay import Item, Mailbox, relay, watch_disconnect
from smcp.gateway.pool import UpstreamPool
from smcp.gateway.upstream import SharedUpstream
from smcp.protocol import jsonrpc, modern, sse
from smcp.runtime.interface import ChannelBusy, ChannelClosed

_LISTEN_FILTER = {
    "toolsListChanged": "notifications/tools/list_changed",
    "promptsListChanged": "notifications/prompts/list_changed",
    "resourcesListChanged": "notifications/resources/list_changed",
}


class ModernEndpoint:
    def __init__(self, settings: Settings, upstreams: UpstreamPool) -> None:
        self._s = settings
        self._upstreams = upstreams

    async def handle(
        self,
        receive: Receive,
        send: Send,
        headers: dict[str, str],
        message: jsonrpc.Message,
        revision: Revision,
        principal: Principal,
    ) -> None:
        refusal = modern.check(message, headers)
        if refusal is not None:
            await respond(send, refusal.status, refusal.body)
            return
        if message.kind is jsonrpc.Kind.notification:
            # This era defines no client notifications over HTTP; accept and drop.
            await respond(send, 202)
            return
        if message.kind is jsonrpc.Kind.response:
            await respond(send, 400, jsonrpc.error(None, jsonrpc.INVALID_REQUEST, "clients do not send responses in this era"))
            return
        upstream = self._upstreams.get(revision, principal.subject, modern=True)
        try:
            await upstream.ensure()
        except (ChannelClosed, Exception) as exc:  # noqa: BLE001 — any start failure is one answer
            await respond(send, 503, jsonrpc.error(message.id, jsonrpc.INTERNAL_ERROR, f"could not start the MCP server: {exc}"))
            return
        method = message.method
        if method == "tools/call":
            refusal = await self._check_params(message, headers, upstream)
            if refusal is not None:
                await respond(send, refusal.status, refusal.body)
                return
        if method == "server/discover":
            await respond(send, 200, self._discover(message, upstream))
            return
        if upstream.era == "modern":
            # A modern instance: everything passes through but ids (MRTR results,
            # subscriptions and caching hints included), its own answers untouched.
            await self._forward(
                receive, send, message, upstream, caller=principal.subject, keep_open=method == "subscriptions/listen"
            )
            return
        if method == "subscriptions/listen":
            await self._listen(receive, send, message, upstream)
            return
        await self._forward(receive, send, message, upstream, caller=principal.subject, bridged=True)

    async def _check_params(
        self, message: jsonrpc.Message, headers: dict[str, str], upstream: SharedUpstream
    ) -> modern.Refusal | None:
        params = message.body.get("params")
        name = params.get("name") if isinstance(params, dict) else None
        if not isinstance(name, str):
            return None
        mirrored: dict[str, tuple[str, ...]] = {}
        with contextlib.suppress(ChannelClosed, ChannelBusy):
            mirrored = await upstream.tool_headers(name, self._s.request_timeout_s)
        return modern.check_param_headers(message, headers, mirrored)

    def _discover(self, message: jsonrpc.Message, upstream: SharedUpstream) -> bytes:
        """This endpoint's discovery: the instance's own answer (or its initialize result),
        with the versions the endpoint serves — the legacy ones are bridged by the gateway."""
        if upstream.discover_result is not None:
            result = dict(upstream.discover_result)
            own = [v for v in result.get("supportedVersions") or [] if isinstance(v, str)]
            result["supportedVersions"] = own + [v for v in modern.SUPPORTED_VERSIONS if v not in own]
            return orjson.dumps({"jsonrpc": "2.0", "id": message.id, "result": result})
        init = upstream.init_result or {}
        result: dict[str, Any] = {
            "resultType": "complete",
            "supportedVersions": list(modern.SUPPORTED_VERSIONS),
            "capabilities": init.get("capabilities", {}),
        }
        if "instructions" in init:
            result["instructions"] = init["instructions"]
        if isinstance(init.get("serverInfo"), dict):
            result["_meta"] = {modern.META_SERVER_INFO: init["serverInfo"]}
        modern.to_modern_result("server/discover", result)
        return orjson.dumps({"jsonrpc": "2.0", "id": message.id, "result": result})

    async def _forward(
        self,
        receive: Receive,
        send: Send,
        message: jsonrpc.Message,
        upstream: SharedUpstream,
        *,
        keep_open: bool = False,
        caller: str,
        bridged: bool = False,
    ) -> None:
        """Relay one request for `caller` (the principal, who owns the tasks it creates).
        On a `bridged` (legacy) instance, the instance's requests to the client come back
        to the caller as input_required results, and its retry resumes them."""
        queue = Mailbox()
        sink = lambda raw, final: queue.put_nowait((raw, final))  # noqa: E731
        params = message.body.get("params")
        state = params.get("requestState") if isinstance(params, dict) else None
        try:
            if bridged and isinstance(state, str) and state.startswith(parking.PREFIX):
                resumed = await upstream.resume(state, caller, message.body, sink)
                if resumed is None:
                    text = "requestState is unknown or has expired; send the request again without it"
                    await respond(send, 400, jsonrpc.error(message.id, jsonrpc.INVALID_PARAMS, text))
                    return
                gid = resumed
            else:
                gid = await upstream.send(message.body, sink, modern=True, caller=caller)
        except ChannelClosed as exc:
            await respond(send, 503, jsonrpc.error(message.id, jsonrpc.INTERNAL_ERROR, f"MCP server unavailable: {exc}"))
            return
        except ChannelBusy as exc:
            await respond(send, 503, jsonrpc.error(message.id, jsonrpc.INSTANCE_BUSY, str(exc)))
            return

        async def timed_out() -> Item:
            await upstream.cancel(gid, "request timed out at the gateway")
            text = f"request timed out after {self._s.request_timeout_s:g}s"
            return (jsonrpc.error(message.id, jsonrpc.INTERNAL_ERROR, text), True)

        async def cancelled() -> None:
            # Closing the response stream is this era's cancellation.
            await upstream.cancel(gid, "the client closed the response stream")

        try:
            await relay(
                receive,
                send,
                queue,
                # A subscription is a request whose answer is the stream itself.
                timeout_s=self._s.subscription_timeout_s if keep_open else self._s.request_timeout_s,
                keepalive_s=self._s.sse_keepalive_s,
                on_timeout=timed_out,
                on_disconnect=cancelled,
                status_of=modern.status_for_answer,
            )
        finally:
            upstream.done(gid)

    async def _listen(self, receive: Receive, send: Send, message: jsonrpc.Message, upstream: SharedUpstream) -> None:
        params = message.body.get("params")
        # Refused as a modern server refuses it (the SDK's: -32602 in a 200), rather
        # than agreeing to nothing and leaving the client to wonder why all is quiet.
        problem = modern.listen_filter_problem(params)
        if problem is not None:
            await respond(send, 200, jsonrpc.error(message.id, jsonrpc.INVALID_PARAMS, f"Invalid params: {problem}"))
            return
        wanted = params["notifications"]
        methods = {m for key, m in _LISTEN_FILTER.items() if wanted.get(key) is True}
        uris = {u for u in wanted.get("resourceSubscriptions", []) if isinstance(u, str)} if isinstance(
            wanted.get("resourceSubscriptions"), list
        ) else set()
        agreed: dict[str, Any] = {key: True for key, m in _LISTEN_FILTER.items() if m in methods}
        if uris:
            agreed["resourceSubscriptions"] = sorted(uris)
        sub_meta = {modern.META_SUBSCRIPTION: message.id}
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        upstream.listeners.add(queue)
        await start_stream(send)
        disconnected = asyncio.Event()
        watcher = asyncio.create_task(watch_disconnect(receive, disconnected))
        try:
            ack = {
                "jsonrpc": "2.0",
                "method": "notifications/subscriptions/acknowledged",
                "params": {"_meta": sub_meta, "notifications": agreed},
            }
            await stream_chunk(send, sse.event(orjson.dumps(ack)))
            while not disconnected.is_set():
                getter = asyncio.ensure_future(queue.get())
                stop = asyncio.ensure_future(disconnected.wait())
                done, _ = await asyncio.wait(
                    {getter, stop}, timeout=self._s.sse_keepalive_s, return_when=asyncio.FIRST_COMPLETED
                )
                if not stop.done():
                    stop.cancel()
                if getter not in done:
                    getter.cancel()
                    if not disconnected.is_set():
                        await stream_chunk(send, sse.comment("keepalive"))
                    continue
                note = getter.result()
                method = note.get("method")
                note_params = note.get("params") if isinstance(note.get("params"), dict) else {}
                if method == "notifications/resources/updated":
                    if note_params.get("uri") not in uris:
                        continue
                elif method not in methods:
                    continue
                out = {**note, "params": {**note_params, "_meta": {**note_params.get("_meta", {}), **sub_meta}}}
                await stream_chunk(send, sse.event(orjson.dumps(out)))
        finally:
            watcher.cancel()
            upstream.listeners.discard(queue)
