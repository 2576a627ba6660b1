"""Server→client requests of a legacy instance, put to a modern caller as input requests.

A handshake-era server asks its client mid-request (elicitation, sampling, roots) and
waits for the answer; a 2026-07-28 client is asked by a result instead: `input_required`
with `inputRequests` and an opaque `requestState`, and answers by sending the request
again with `inputResponses`. The bridge answers the caller's HTTP request with such a
result and *parks* the instance's request meanwhile: still in flight on the instance,
bound to the caller, for `timeout_s`. The retry carrying the `requestState` takes it
back, the answer goes to the server, and the retry's response stream carries on.

The state lives on this node only: a retry that reaches another node is refused with
a clear error (the client sends the request afresh).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

PREFIX = "smcp-input:"
KEY = "smcp"  # the one input request a parked request carries


@dataclass(slots=True)
class Parked:
    gid: str  # the caller's request, still in flight on the instance
    server_id: Any  # the id of the instance's own request, to be answered
    caller: str
    timer: asyncio.TimerHandle | None = None


class ParkingLot:
    def __init__(self, timeout_s: float, on_expired: Callable[[Parked], None]) -> None:
        self._timeout_s = timeout_s
        self._on_expired = on_expired
        self._parked: dict[str, Parked] = {}
        self._gids: set[str] = set()

    def park(self, gid: str, server_id: Any, caller: str) -> str:
        token = PREFIX + secrets.token_urlsafe(24)
        parked = Parked(gid, server_id, caller)
        parked.timer = asyncio.get_running_loop().call_later(self._timeout_s, self._expire, token)
        self._parked[token] = parked
        self._gids.add(gid)
        return token

    def take(self, token: str, caller: str) -> Parked | None:
        """The parked request for this state, if this caller parked it and it has not expired."""
        parked = self._parked.get(token)
        if parked is None or parked.caller != caller:
            return None
        self._release(token, parked)
        return parked

    def holds(self, gid: str) -> bool:
        return gid in self._gids

    def clear(self) -> None:
        for token, parked in list(self._parked.items()):
            self._release(token, parked)

    def _expire(self, token: str) -> None:
        parked = self._parked.get(token)
        if parked is not None:
            self._release(token, parked)
            self._on_expired(parked)

    def _release(self, token: str, parked: Parked) -> None:
        del self._parked[token]
        self._gids.discard(parked.gid)
        if parked.timer is not None:
            parked.timer.cancel()


def input_required(client_id: Any, request: dict[str, Any], token: str) -> dict[str, Any]:
    """The modern result that asks the caller what the instance asked."""
    asked: dict[str, Any] = {"method": request.get("method")}
    if "params" in request:
        asked["params"] = request["params"]
    return {
        "jsonrpc": "2.0",
        "id": client_id,
        "result": {"resultType": "input_required", "inputRequests": {KEY: asked}, "requestState": token},
    }
