"""Who may call the management API, and the one place that decides what they may do.

Today only the operator's admin token is accepted. Tenant members and scoped API
keys will arrive as more principals; `authorize` is the seam they will go through.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.params import Depends as DependsParam
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from smcp.control.context import Context, get_context
from smcp.control.errors import Forbidden, Unauthorized
from smcp.domain import Principal

ADMIN = Principal(kind="admin", subject="admin", tenant=None)

_bearer = HTTPBearer(auto_error=False, scheme_name="AdminToken", description="The operator's admin token")


async def authenticate(
    ctx: Annotated[Context, Depends(get_context)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    expected = ctx.settings.admin_token
    if credentials is None:
        raise Unauthorized("missing bearer token")
    # No configured token means nobody gets in: fail closed, never open.
    if not expected or not hmac.compare_digest(credentials.credentials.encode(), expected.encode()):
        raise Unauthorized("invalid bearer token")
    return ADMIN


def authorize(principal: Principal, action: str, tenant: str | None) -> None:
    """Raise Forbidden unless `principal` may perform `action` (on `tenant`, if any)."""
    if principal.kind == "admin":
        return
    raise Forbidden(f"not allowed to {action}")


def allow(action: str) -> DependsParam:
    """Route dependency: authenticate, then authorize `action` on the path's tenant."""

    async def _check(request: Request, principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        authorize(principal, action, request.path_params.get("tenant"))
        return principal

    return Depends(_check)
