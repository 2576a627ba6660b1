"""Who may call the management API, and the one place that decides what they may do.

Two kinds of bearer are accepted: the operator's admin token (the platform
super-admin, allowed everything) and tenant API keys, which act with their tenant
role (smcp.auth.roles) on their own tenant only. `authorize` is the one decision.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.params import Depends as DependsParam
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from smcp.auth import roles
from smcp.control.context import Context, get_context
from smcp.control.errors import Forbidden, Unauthorized
from smcp.domain import Principal

ADMIN = Principal(kind="admin", subject="admin", tenant=None)

_bearer = HTTPBearer(
    auto_error=False, scheme_name="Bearer", description="The operator's admin token, or a tenant API key (smcp_…)"
)


async def authenticate(
    ctx: Annotated[Context, Depends(get_context)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    expected = ctx.settings.admin_token
    if credentials is None:
        raise Unauthorized("missing bearer token")
    # No configured token means nobody gets in: fail closed, never open.
    if expected and hmac.compare_digest(credentials.credentials.encode(), expected.encode()):
        return ADMIN
    principal = await ctx.store.api_keys.authenticate(credentials.credentials)
    if principal is None:
        raise Unauthorized("invalid bearer token")
    return principal


def authorize(principal: Principal, action: str, tenant: str | None) -> None:
    """Raise Forbidden unless `principal` may perform `action` (on `tenant`, if any)."""
    if principal.kind == "admin":
        return
    # Tenant principals act only inside their tenant; platform-wide actions (no tenant)
    # are the admin's alone.
    if tenant is None or principal.tenant != tenant or not roles.permits(principal.role, action):
        raise Forbidden(f"not allowed to {action}" + (f" in tenant {tenant!r}" if tenant else ""))


def allow(action: str) -> DependsParam:
    """Route dependency: authenticate, then authorize `action` on the path's tenant."""

    async def _check(request: Request, principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        authorize(principal, action, request.path_params.get("tenant"))
        server = request.path_params.get("server")
        if server is not None and principal.servers is not None and server not in principal.servers:
            raise Forbidden(f"this key is not allowed on server {server!r}")
        return principal

    return Depends(_check)
