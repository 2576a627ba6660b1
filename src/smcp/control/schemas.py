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


# What each error status means in this API. An operation documents the statuses it can
# answer with (its own `errors(...)` plus its router's ERROR_RESPONSES), so that the
# OpenAPI document can be checked against the running API (tests/control/test_openapi_truth.py).
# Operations with parameters also list 422 where none can fail validation: FastAPI would
# otherwise document a 422 of its own shape, which this API never sends.
_ERROR_MEANINGS: dict[int, str] = {
    400: "The body is not UTF-8, so it cannot be JSON",
    401: "Missing or wrong bearer token",
    403: "The bearer may not do this (its role, its tenant or its servers)",
    404: "No such tenant, or no such thing in it",
    409: "Conflicts with what exists",
    413: "The body is over the size limit",
    415: "The body's Content-Type is not one this operation takes",
    422: "Invalid input",
}


def errors(*statuses: int | tuple[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for error statuses, each in the Error shape; a (status, text)
    pair says what that status means for the one operation."""
    out: dict[int | str, dict[str, Any]] = {}
    for entry in statuses:
        status, description = entry if isinstance(entry, tuple) else (entry, _ERROR_MEANINGS[entry])
        out[status] = {"model": Error, "description": description}
    return out


# Every authenticated operation can answer these; routers carry them for their routes.
ERROR_RESPONSES = errors(401, 403)
