"""Tenants and their API keys."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response, status

from smcp.auth import roles
from smcp.control.auth import allow, authenticate
from smcp.control.errors import Forbidden
from smcp.domain import Principal
from smcp.control.context import Context, get_context
from smcp.control.schemas import ERROR_RESPONSES, KeyCreate, KeyCreated, KeyOut, TenantCreate, TenantOut, errors

router = APIRouter(responses=ERROR_RESPONSES)
Ctx = Annotated[Context, Depends(get_context)]


@router.post(
    "/tenants",
    status_code=status.HTTP_201_CREATED,
    response_model=TenantOut,
    tags=["tenants"],
    dependencies=[allow("tenants.create")],
    responses=errors(400, (409, "A tenant of that name exists"), 422),
)
async def create_tenant(body: TenantCreate, ctx: Ctx) -> TenantOut:
    return TenantOut.of(await ctx.store.tenants.create(body.name))


@router.get(
    "/tenants", response_model=list[TenantOut], tags=["tenants"], dependencies=[allow("tenants.list")]
)
async def list_tenants(ctx: Ctx) -> list[TenantOut]:
    return [TenantOut.of(t) for t in await ctx.store.tenants.list()]


@router.get(
    "/tenants/{tenant}",
    response_model=TenantOut,
    tags=["tenants"],
    dependencies=[allow("tenants.read")],
    responses=errors(404, 422),
)
async def get_tenant(tenant: str, ctx: Ctx) -> TenantOut:
    return TenantOut.of(await ctx.store.tenants.require(tenant))


@router.post(
    "/tenants/{tenant}/keys",
    status_code=status.HTTP_201_CREATED,
    response_model=KeyCreated,
    tags=["keys"],
    dependencies=[allow("keys.create")],
    responses=errors(400, 404, 422),
)
async def create_key(
    tenant: str, body: KeyCreate, ctx: Ctx, principal: Annotated[Principal, Depends(authenticate)]
) -> KeyCreated:
    # Nobody hands out more than they hold: an admin key cannot mint an owner key.
    if principal.kind != "admin" and not roles.may_grant(principal.role, body.role):
        raise Forbidden(f"a {principal.role} may not create a key with role {body.role!r}")
    servers = tuple(body.servers) if body.servers is not None else None
    if principal.servers is not None and (servers is None or not set(servers) <= set(principal.servers)):
        raise Forbidden("a server-limited key may only create keys limited to the same servers")
    key, token = await ctx.store.api_keys.create(tenant, body.name, role=body.role, servers=servers)
    return KeyCreated(**KeyOut.of(key).model_dump(), token=token)


@router.get(
    "/tenants/{tenant}/keys",
    response_model=list[KeyOut],
    tags=["keys"],
    dependencies=[allow("keys.list")],
    responses=errors(404, 422),
)
async def list_keys(tenant: str, ctx: Ctx) -> list[KeyOut]:
    await ctx.store.tenants.require(tenant)
    return [KeyOut.of(k) for k in await ctx.store.api_keys.list(tenant)]


@router.delete(
    "/tenants/{tenant}/keys/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    tags=["keys"],
    dependencies=[allow("keys.revoke")],
    responses=errors(404, 422),
)
async def revoke_key(tenant: str, key_id: str, ctx: Ctx) -> Response:
    await ctx.store.api_keys.revoke(tenant, key_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
