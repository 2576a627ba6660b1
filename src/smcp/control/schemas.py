"""Request and response bodies of the management API (they are its OpenAPI schemas)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from smcp.domain import ApiKey, Instance, LogLine, Revision, Server, Tenant

NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Health(BaseModel):
    status: str
    version: str


class Status(BaseModel):
    version: str
    base_url: str
    tenants: int
    servers: int
    instances: int


class TenantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="1-63 of a-z, 0-9 and '-', not starting with '-'")


class TenantOut(_Out):
    name: str
    created_at: datetime

    @classmethod
    def of(cls, tenant: Tenant) -> TenantOut:
        return cls(name=tenant.name, created_at=tenant.created_at)


ROLE_PATTERN = r"^(owner|admin|developer|viewer|auditor)$"


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="default", min_length=1, max_length=200)
    role: str = Field(default="viewer", pattern=ROLE_PATTERN, description="The key's tenant role")
    servers: list[Annotated[str, Field(pattern=NAME_PATTERN)]] | None = Field(
        default=None, max_length=100, description="Limit the key to these servers (default: all of the tenant's)"
    )


class KeyOut(_Out):
    id: str
    tenant: str
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None
    role: str = "viewer"
    servers: list[str] | None = None

    @classmethod
    def of(cls, key: ApiKey) -> KeyOut:
        return cls.model_validate(key)


class KeyCreated(KeyOut):
    token: str = Field(description="The API key. Shown only in this response; store it now.")


class RevisionOut(_Out):
    id: str
    number: int
    bundle_digest: str
    build_key: str | None
    spec: dict[str, Any]
    created_at: datetime

    @classmethod
    def of(cls, revision: Revision) -> RevisionOut:
        return cls(
            id=revision.id,
            number=revision.number,
            bundle_digest=revision.bundle_digest,
            build_key=revision.build_key,
            spec=revision.spec.to_json(),
            created_at=revision.created_at,
        )


class Deployment(BaseModel):
    server: str
    revision: RevisionOut
    url: str


class ServerOut(BaseModel):
    tenant: str
    name: str
    created_at: datetime
    url: str
    live_revision: RevisionOut | None
    instances: int

    @classmethod
    def of(cls, server: Server, *, url: str, instances: int) -> ServerOut:
        live = RevisionOut.of(server.live_revision) if server.live_revision else None
        return cls(
            tenant=server.tenant,
            name=server.name,
            created_at=server.created_at,
            url=url,
            live_revision=live,
            instances=instances,
        )


class InstanceOut(_Out):
    id: str
    tenant: str
    server: str
    revision: str
    state: str
    started_at: datetime
    pid: int | None = None
    restarts: int = 0
    sessions: int = 0
    exit_code: int | None = None

    @classmethod
    def of(cls, instance: Instance) -> InstanceOut:
        return cls(
            id=instance.id,
            tenant=instance.tenant,
            server=instance.server,
            revision=instance.revision,
            state=getattr(instance.state, "value", str(instance.state)),
            started_at=instance.started_at,
            pid=instance.pid,
            restarts=instance.restarts,
            sessions=instance.sessions,
            exit_code=instance.exit_code,
        )


class LogLineOut(_Out):
    at: datetime
    instance: str
    stream: str
    text: str

    @classmethod
    def of(cls, line: LogLine) -> LogLineOut:
        return cls.model_validate(line)


class ErrorBody(BaseModel):
    code: str
    message: str
    detail: Any = None


class Error(BaseModel):
    error: ErrorBody


# Documented on every authenticated route.
ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    401: {"model": Error, "description": "Missing or wrong admin token"},
    404: {"model": Error, "description": "No such tenant, server or key"},
    422: {"model": Error, "description": "Invalid input"},
}
