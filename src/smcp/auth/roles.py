"""Tenant roles and what each may do: policy as data, checked in one place.

Both planes ask `permits(role, action)`: the management API (control/auth.py) for
its routes, the gateway (gateway/authn.py) for `mcp.use`. The operator's admin token
is not a role: it is the platform super-admin and passes every check.
"""

from __future__ import annotations

from typing import Final

OWNER: Final = "owner"
ADMIN: Final = "admin"
DEVELOPER: Final = "developer"
VIEWER: Final = "viewer"
AUDITOR: Final = "auditor"

ROLES: Final = (OWNER, ADMIN, DEVELOPER, VIEWER, AUDITOR)

# Who may grant whom: a principal may create keys or memberships only with a role
# at or below its own rank. The auditor sits apart: only owners and admins grant it.
RANK: Final = {OWNER: 4, ADMIN: 3, DEVELOPER: 2, VIEWER: 1, AUDITOR: 1}

_READ = {"tenants.read", "servers.list", "servers.read"}
_USE = {"mcp.use"}
_LOGS = {"servers.logs", "audit.read"}
_BUILD = {"servers.deploy", "servers.delete", "secrets.list", "secrets.write"}
_MANAGE = {
    "keys.create",
    "keys.list",
    "keys.revoke",
    "members.list",
    "members.add",
    "members.remove",
    "clients.create",
    "clients.list",
    "clients.delete",
    "secrets.delete",
}

PERMISSIONS: Final[dict[str, frozenset[str]]] = {
    OWNER: frozenset(_READ | _USE | _LOGS | _BUILD | _MANAGE),
    ADMIN: frozenset(_READ | _USE | _LOGS | _BUILD | _MANAGE),
    DEVELOPER: frozenset(_READ | _USE | _LOGS | _BUILD),
    VIEWER: frozenset(_READ | _USE),
    # An auditor reads the audit trail and logs, and nothing else: not even the MCP endpoint.
    AUDITOR: frozenset(_LOGS),
}


def valid_role(role: str) -> bool:
    return role in PERMISSIONS


def permits(role: str | None, action: str) -> bool:
    return role is not None and action in PERMISSIONS.get(role, frozenset())


def may_grant(granter: str | None, role: str) -> bool:
    """Whether a principal with role `granter` may hand out `role` (to a key or a member)."""
    if granter is None or role not in RANK:
        return False
    if granter == OWNER:
        return True
    if granter == ADMIN:
        return role != OWNER
    return False
