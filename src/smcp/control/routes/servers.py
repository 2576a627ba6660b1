"""Deployments, servers, their revisions, instances and logs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status

from smcp.control import deploy as deploying
from smcp.control.auth import allow
from smcp.control.context import Context, get_context
from smcp.control.schemas import ERROR_RESPONSES, Deployment, InstanceOut, LogLineOut, RevisionOut, ServerOut, errors

router = APIRouter(tags=["servers"], responses=ERROR_RESPONSES)
Ctx = Annotated[Context, Depends(get_context)]

_BUNDLE_BODY = {
    "requestBody": {
        "required": True,
        "description": "The server bundle: a .tar.gz of a directory with smcp.toml at its root.",
        # Every media type read_bundle takes, application/gzip (the one to send) first.
        "content": {
            media_type: {"schema": {"type": "string", "format": "binary"}}
            for media_type in sorted(deploying.BUNDLE_MEDIA_TYPES, key=lambda t: t != "application/gzip")
        },
    }
}


@router.post(
    "/tenants/{tenant}/deployments",
    status_code=status.HTTP_201_CREATED,
    response_model=Deployment,
    openapi_extra=_BUNDLE_BODY,
    dependencies=[allow("servers.deploy")],
    responses=errors(
        (400, "Content-Length is not a number"),
        404,
        (409, "A concurrent deploy of the same server won"),
        (413, "The bundle is over max_bundle_bytes"),
        (415, "The body is not sent as a gzip bundle"),
        (422, "The bundle, its smcp.toml or its build is invalid, or a secret it names is not set"),
    ),
    summary="Deploy a bundle as a new live revision",
)
async def create_deployment(tenant: str, request: Request, ctx: Ctx) -> Deployment:
    # Fail fast on an unknown tenant before reading a body of up to max_bundle_bytes.
    await ctx.store.tenants.require(tenant)
    data = await deploying.read_bundle(request, ctx.settings.max_bundle_bytes)
    revision = await deploying.deploy(ctx, tenant, data)
    return Deployment(
        server=revision.server,
        revision=RevisionOut.of(revision),
        url=ctx.settings.server_url(tenant, revision.server),
    )


@router.get(
    "/tenants/{tenant}/servers",
    response_model=list[ServerOut],
    dependencies=[allow("servers.list")],
    responses=errors(404, 422),
)
async def list_servers(tenant: str, ctx: Ctx) -> list[ServerOut]:
    await ctx.store.tenants.require(tenant)
    servers = await ctx.store.servers.list(tenant)
    return [
        ServerOut.of(
            s, url=ctx.settings.server_url(tenant, s.name), instances=len(ctx.runtime.instances(tenant, s.name))
        )
        for s in servers
    ]


@router.get(
    "/tenants/{tenant}/servers/{server}",
    response_model=ServerOut,
    dependencies=[allow("servers.read")],
    responses=errors(404, 422),
)
async def get_server(tenant: str, server: str, ctx: Ctx) -> ServerOut:
    found = await ctx.store.servers.require(tenant, server)
    return ServerOut.of(
        found, url=ctx.settings.server_url(tenant, server), instances=len(ctx.runtime.instances(tenant, server))
    )


@router.delete(
    "/tenants/{tenant}/servers/{server}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    dependencies=[allow("servers.delete")],
    responses=errors(404, 422),
)
async def delete_server(tenant: str, server: str, ctx: Ctx) -> Response:
    await ctx.store.servers.require(tenant, server)
    # Stop first: rows go only once nothing runs that could still need them.
    await ctx.runtime.stop_server(tenant, server)
    await ctx.store.servers.delete(tenant, server)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/tenants/{tenant}/servers/{server}/revisions",
    response_model=list[RevisionOut],
    dependencies=[allow("servers.read")],
    responses=errors(404, 422),
)
async def list_revisions(tenant: str, server: str, ctx: Ctx) -> list[RevisionOut]:
    await ctx.store.servers.require(tenant, server)
    return [RevisionOut.of(r) for r in await ctx.store.servers.revisions(tenant, server)]


@router.get(
    "/tenants/{tenant}/servers/{server}/instances",
    response_model=list[InstanceOut],
    dependencies=[allow("servers.read")],
    responses=errors(404, 422),
)
async def list_instances(tenant: str, server: str, ctx: Ctx) -> list[InstanceOut]:
    await ctx.store.servers.require(tenant, server)
    return [InstanceOut.of(i) for i in ctx.runtime.instances(tenant, server)]


@router.get(
    "/tenants/{tenant}/servers/{server}/logs",
    response_model=list[LogLineOut],
    dependencies=[allow("servers.logs")],
    responses=errors(404, 422),
)
async def server_logs(
    tenant: str, server: str, ctx: Ctx, limit: Annotated[int, Query(ge=1, le=10_000)] = 200
) -> list[LogLineOut]:
    await ctx.store.servers.require(tenant, server)
    return [LogLineOut.of(line) for line in ctx.runtime.logs(tenant, server, limit=limit)]
