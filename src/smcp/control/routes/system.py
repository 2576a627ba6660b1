"""Liveness and a whole-node summary."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

import smcp
from smcp.control.auth import allow
from smcp.control.context import Context, get_context
from smcp.control.schemas import ERROR_RESPONSES, Health, Status

router = APIRouter(tags=["system"])


@router.get("/health", response_model=Health, summary="Liveness (no authentication)")
async def health() -> Health:
    return Health(status="ok", version=smcp.__version__)


@router.get("/status", response_model=Status, responses=ERROR_RESPONSES, dependencies=[allow("status.read")])
async def status(ctx: Annotated[Context, Depends(get_context)]) -> Status:
    tenants = await ctx.store.tenants.list()
    instances = sum(len(ctx.runtime.instances(t.id)) for t in tenants)
    return Status(
        version=smcp.__version__,
        base_url=ctx.settings.base_url,
        tenants=len(tenants),
        servers=await ctx.store.servers.count(),
        instances=instances,
    )
