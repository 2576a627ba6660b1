"""Tenant secrets (write-only values) and the platform's key ring.

A value goes in with PUT and never comes back out: responses carry the name, the
version and when it was set. Servers receive values only inside their sandboxes.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response, status
from pydantic import BaseModel, ConfigDict, Field, model_validator

from smcp.control.auth import allow
from smcp.control.context import Context, get_context
from smcp.control.schemas import ERROR_RESPONSES, errors
from smcp.domain.models import SecretInfo
from smcp.secrets import InvalidSecret, SecretVault

router = APIRouter(responses=ERROR_RESPONSES)
Ctx = Annotated[Context, Depends(get_context)]

SECRET_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
SecretName = Annotated[str, Path(pattern=SECRET_NAME_PATTERN, description="Secret name: A-Z, a-z, 0-9 and '_'")]


# Padded standard base64 (RFC 4648 §4) of at least one byte, so that the documented form
# is the accepted one: b64decode(validate=True) alone also takes stray '=' ("AAAA=").
BASE64_PATTERN = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{4}|[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)$"


class SecretPut(BaseModel):
    """Exactly one of `value` (UTF-8 text) or `value_base64` (any bytes), not empty. The
    value may be at most max_secret_bytes (64 KiB by default) long; a longer one is a 413."""

    model_config = ConfigDict(
        extra="forbid",
        hide_input_in_errors=True,
        # The rule `_one` enforces, stated in the schema clients and fuzzers read: exactly
        # one of the two is a string (null counts as absent).
        json_schema_extra={
            "oneOf": [
                {"required": ["value"], "properties": {"value": {"type": "string"}}},
                {"required": ["value_base64"], "properties": {"value_base64": {"type": "string"}}},
            ]
        },
    )

    value: str | None = Field(default=None, min_length=1, description="The value as text. Never returned by any endpoint.")
    value_base64: str | None = Field(
        default=None, pattern=BASE64_PATTERN, description="The value as padded base64, for binary values."
    )

    @model_validator(mode="after")
    def _one(self) -> SecretPut:
        if (self.value is None) == (self.value_base64 is None):
            raise ValueError("give exactly one of value or value_base64")
        return self

    def data(self) -> bytes:
        if self.value is not None:
            return self.value.encode("utf-8")
        try:
            return base64.b64decode(self.value_base64 or "", validate=True)
        except (binascii.Error, ValueError):
            raise InvalidSecret("value_base64 is not valid base64") from None


class SecretOut(BaseModel):
    name: str
    version: int
    created_at: datetime

    @classmethod
    def of(cls, info: SecretInfo) -> SecretOut:
        return cls(name=info.name, version=info.version, created_at=info.created_at)


class KeyRingOut(BaseModel):
    source: str
    writable: bool
    active: int
    versions: list[int]
    data_keys: dict[int, int] = Field(description="Stored data keys wrapped by each KEK version")


class RotationOut(BaseModel):
    active: int
    added: int | None
    rewrapped: int
    retired: list[int]
    versions: list[int]


def _vault(ctx: Context) -> SecretVault:
    assert ctx.vault is not None, "create_control_app always provides a vault"
    return ctx.vault


@router.put(
    "/tenants/{tenant}/secrets/{name}",
    response_model=SecretOut,
    tags=["secrets"],
    dependencies=[allow("secrets.write")],
    responses={
        200: {"description": "A new version of an existing secret"},
        201: {"model": SecretOut, "description": "The secret's first version"},
        **errors(
            400,
            404,
            (409, "The tenant has as many secrets as it may"),
            (413, "The value is over max_secret_bytes"),
            (422, "Invalid input: the name, or not exactly one non-empty value"),
        ),
    },
    summary="Set a secret's value (a new version); the value is never returned",
)
async def put_secret(tenant: str, name: SecretName, body: SecretPut, ctx: Ctx, response: Response) -> SecretOut:
    await ctx.store.tenants.require(tenant)
    info = await _vault(ctx).set(tenant, name, body.data())
    response.status_code = status.HTTP_201_CREATED if info.version == 1 else status.HTTP_200_OK
    return SecretOut.of(info)


@router.get(
    "/tenants/{tenant}/secrets",
    response_model=list[SecretOut],
    tags=["secrets"],
    dependencies=[allow("secrets.list")],
    responses=errors(404, 422),
    summary="List a tenant's secrets: names, versions, dates; never values",
)
async def list_secrets(tenant: str, ctx: Ctx) -> list[SecretOut]:
    await ctx.store.tenants.require(tenant)
    return [SecretOut.of(s) for s in await _vault(ctx).list(tenant)]


@router.delete(
    "/tenants/{tenant}/secrets/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    tags=["secrets"],
    dependencies=[allow("secrets.delete")],
    responses=errors(404, 422),
    summary="Delete a secret (running instances keep the value they started with)",
)
async def delete_secret(tenant: str, name: SecretName, ctx: Ctx) -> Response:
    await ctx.store.tenants.require(tenant)
    await _vault(ctx).delete(tenant, name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/keyring", response_model=KeyRingOut, tags=["keyring"], dependencies=[allow("keyring.read")],
    summary="The key ring: KEK versions and how many data keys each wraps",
)
async def keyring_status(ctx: Ctx) -> KeyRingOut:
    s = await _vault(ctx).status()
    return KeyRingOut(source=s.source, writable=s.writable, active=s.active, versions=s.versions, data_keys=s.data_keys)


@router.post(
    "/keyring/rotate", response_model=RotationOut, tags=["keyring"], dependencies=[allow("keyring.rotate")],
    responses=errors((409, "The key ring cannot take a new key here (it is not a writable file)")),
    summary="Add a new KEK, re-wrap every data key under it, retire the old KEKs",
)
async def keyring_rotate(ctx: Ctx) -> RotationOut:
    r = await _vault(ctx).rotate()
    return RotationOut(active=r.active, added=r.added, rewrapped=r.rewrapped, retired=r.retired, versions=r.versions)
