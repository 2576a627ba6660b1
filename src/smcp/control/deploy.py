"""Deploying a bundle: validate, store, build, then record and go live in one transaction.

Order matters. Everything that can fail on the tenant's input (archive, spec, build)
happens before any row is written, so a failed deploy leaves the previous revision
live and creates nothing. Running instances are not touched: sessions already open
finish on the revision they started on; new sessions get the new live revision.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request

from smcp.control.context import Context
from smcp.control.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from smcp.domain import InvalidBundle, Revision, parse_spec
from smcp.runtime import bundles

BUNDLE_MEDIA_TYPES = frozenset(
    {"application/gzip", "application/x-gzip", "application/x-tar+gzip", "application/octet-stream"}
)


async def read_bundle(request: Request, limit: int) -> bytes:
    """The request body, refusing more than `limit` bytes whatever Content-Length claims."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type and media_type not in BUNDLE_MEDIA_TYPES:
        raise UnsupportedMediaType(f"send the bundle as application/gzip, not {media_type!r}")
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise BadRequest("Content-Length is not a number") from None
        if size > limit:
            raise PayloadTooLarge(f"bundle is {size} bytes; the limit is {limit}", detail={"limit": limit})
    body = bytearray()
    # Chunked uploads have no Content-Length, so the limit is enforced while reading too.
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"bundle exceeds the limit of {limit} bytes", detail={"limit": limit})
    if not body:
        raise InvalidBundle("the request body is empty; send a .tar.gz bundle")
    return bytes(body)


async def deploy(ctx: Context, tenant: str, data: bytes) -> Revision:
    """Deploy `data` (a .tar.gz bundle) to `tenant`; returns the new live revision."""
    settings, store = ctx.settings, ctx.store
    await store.tenants.require(tenant)

    # Decompression is CPU work on hostile input: keep it off the event loop.
    info = await asyncio.to_thread(
        bundles.inspect,
        data,
        max_unpacked_bytes=settings.max_bundle_unpacked_bytes,
        max_entries=settings.max_bundle_entries,
    )
    spec = parse_spec(info.spec_text)
    if spec.secrets and ctx.vault is not None:
        # Before any build: a server whose secrets are missing could never start.
        await ctx.vault.require(tenant, [ref.name for ref in spec.secrets])

    async with ctx.deploy_locks[(tenant, spec.name)]:
        digest = await asyncio.to_thread(store.blobs.put, data)
        build_key = await ctx.runtime.prepare(tenant, spec, store.blobs.path(digest), digest)
        return await store.servers.create_revision(
            tenant, spec.name, spec, bundle_digest=digest, build_key=build_key, make_live=True
        )
