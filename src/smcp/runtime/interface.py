"""What the other planes may ask of the runtime. Implementations live beside this file.

The gateway talks to an instance only through a Channel, so the runtime is free to
back a channel with its own process (per-session), a shared process with id
rewriting, or a process on another node: the gateway never assumes which.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from smcp.domain import Instance, LogLine, Revision, ServerSpec

# Called with each raw JSON-RPC message (one UTF-8 JSON object, no trailing newline)
# the instance sends towards the client.
MessageHandler = Callable[[bytes], None]
# Called once when the channel can carry no more messages; the argument says why.
ClosedHandler = Callable[[str], None]
# Called when requests in flight can no longer be answered (the process died) but the
# channel itself lives on (the runtime restarts the instance behind it).
LostHandler = Callable[[str], None]


class Channel(Protocol):
    """One client session's conversation with an instance."""

    @property
    def instance_id(self) -> str: ...

    def attach(self, on_message: MessageHandler, on_closed: ClosedHandler, on_lost: LostHandler | None = None) -> None: ...

    async def send(self, raw: bytes) -> None:
        """Deliver one JSON-RPC message to the instance; raises ChannelClosed if it is gone."""
        ...

    async def close(self) -> None: ...


class ChannelClosed(Exception):
    pass


class ChannelBusy(Exception):
    """The instance is not taking messages as fast as they come (it is not reading its
    input); this one was not sent. The channel itself lives on."""


class Runtime(Protocol):
    async def prepare(self, tenant: str, spec: ServerSpec, bundle: Path, bundle_digest: str) -> str | None:
        """Unpack and build a bundle into something instances can run.

        Returns the build key the revision records (None when the kind needs no build);
        raises InvalidBundle or BuildFailed with a readable message.
        """
        ...

    async def connect(self, revision: Revision, *, session: str) -> Channel: ...

    def instances(self, tenant: str, server: str | None = None) -> list[Instance]: ...

    def logs(self, tenant: str, server: str, *, limit: int = 200) -> list[LogLine]: ...

    async def stop_server(self, tenant: str, server: str) -> None:
        """Stop every instance of a server (used on delete and on redeploy)."""
        ...

    async def aclose(self) -> None: ...
