"""Plain records passed between planes. Persistence lives in smcp.store."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

from smcp.domain.spec import ServerSpec


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    name: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key's public half; the secret is shown once and stored only as a hash."""

    id: str
    tenant: str
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None
    role: str = "viewer"
    servers: tuple[str, ...] | None = None  # None: every server of the tenant


@dataclass(frozen=True, slots=True)
class Principal:
    """Who calls. `subject` is stable across requests and is what sessions bind to."""

    kind: str  # "api_key" | "admin" | "oauth"
    subject: str
    tenant: str | None
    # The tenant role (smcp.auth.roles); None for the platform admin.
    role: str | None = None
    # Servers an API key is limited to (None: every server of its tenant).
    servers: tuple[str, ...] | None = None
    # OAuth access tokens: the granted scopes and the client acting for the user.
    scopes: frozenset[str] = frozenset()
    client_id: str | None = None


@dataclass(frozen=True, slots=True)
class Revision:
    id: str
    tenant: str
    server: str
    number: int
    spec: ServerSpec
    bundle_digest: str
    build_key: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Server:
    tenant: str
    name: str
    created_at: datetime
    live_revision: Revision | None = None


class InstanceState(str, enum.Enum):
    starting = "starting"
    running = "running"
    restarting = "restarting"
    stopped = "stopped"
    failed = "failed"


@dataclass(slots=True)
class Instance:
    """A running replica of a revision, as the runtime reports it."""

    id: str
    tenant: str
    server: str
    revision: str
    state: InstanceState
    started_at: datetime
    pid: int | None = None
    restarts: int = 0
    sessions: int = 0
    exit_code: int | None = None


@dataclass(frozen=True, slots=True)
class LogLine:
    at: datetime
    instance: str
    stream: str  # "stderr" | "event"
    text: str = field(default="")


@dataclass(frozen=True, slots=True)
class SecretInfo:
    """A tenant secret's public half: never its value."""

    tenant: str
    name: str
    version: int
    created_at: datetime
