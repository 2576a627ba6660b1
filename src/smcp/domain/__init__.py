"""Plain models and errors shared by every plane. Imports nothing of smcp."""

from smcp.domain.errors import (
    BuildFailed,
    Conflict,
    InvalidBundle,
    InvalidSpec,
    NotFound,
    SmcpError,
)
from smcp.domain.models import ApiKey, Instance, InstanceState, LogLine, Principal, Revision, Server, Tenant
from smcp.domain.spec import RuntimeKind, ServerSpec, SharingMode, parse_spec

__all__ = [
    "ApiKey",
    "BuildFailed",
    "Conflict",
    "Instance",
    "InstanceState",
    "InvalidBundle",
    "InvalidSpec",
    "LogLine",
    "NotFound",
    "Principal",
    "Revision",
    "RuntimeKind",
    "Server",
    "ServerSpec",
    "SharingMode",
    "SmcpError",
    "Tenant",
    "parse_spec",
]
