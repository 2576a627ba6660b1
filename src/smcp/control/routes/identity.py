"""Users (platform admin), tenant members with roles, and pre-registered OAuth clients."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Response, status
from pydantic import BaseModel, ConfigDict, Field

from smcp.auth import passwords, roles
from smcp.auth.errors import OAuthError
from smcp.auth.registration import (
    AUTH_METHODS,
    GRANT_TYPES,
    MAX_REDIRECT_URI_LENGTH,
    client_from_metadata,
    registration_response,
)
from smcp.control.auth import allow, authenticate
from smcp.control.context import Context, get_context
from smcp.control.errors import BadRequest, Forbidden
from smcp.control.schemas import ERROR_RESPONSES, NAME_PATTERN, ROLE_PATTERN, errors
from smcp.domain import Principal

router = APIRouter(responses=ERROR_RESPONSES)
Ctx = Annotated[Context, Depends(get_context)]
USER_PATTERN = r"^[a-z0-9][a-z0-9._@+-]{0,199}$"
UserName = Annotated[str, Path(pattern=USER_PATTERN)]


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    name: str = Field(pattern=USER_PATTERN, description="Login name: lower-case letters, digits and . _ @ + -")
    # Shorter than MIN_LENGTH is refused by check_strength with a 400 that names the rule;
    # the schema states the length that is accepted.
    password: str = Field(
        min_length=1,
        max_length=passwords.MAX_LENGTH,
        json_schema_extra={"minLength": passwords.MIN_LENGTH},
        description="Never returned or logged",
    )


class UserOut(BaseModel):
    id: str
    name: str
    created_at: datetime


class MemberSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str = Field(pattern=USER_PATTERN)
    role: str = Field(pattern=ROLE_PATTERN)


class MemberOut(BaseModel):
    tenant: str
    user: str
    role: str
    created_at: datetime


# The redirect URIs the admin API registers: what valid_redirect_uri accepts, less its
# lenient corners (whitespace and control characters urlsplit drops, userinfo, upper-case
# schemes, non-ASCII), so that this pattern (with the length limit) is the accepted set and
# can be documented. A private-use URI has no brackets: urlsplit refuses unbalanced ones
# after "//".
_URI_REST = r'[!-"$-~]*'  # printable ASCII but space and '#'
REDIRECT_URI_PATTERN = (
    r"^(?:https://[!$-.0-9;=A-Z_a-z~]+(?::[0-9]*)?(?:[/?]" + _URI_REST + ")?"
    r"|http://(?:localhost|127\.0\.0\.1|\[::1\])(?::[0-9]*)?(?:[/?]" + _URI_REST + ")?"
    r'|[a-z][a-z0-9+-]*(?:\.[a-z0-9+-]+)+:[!-"$-Z^-~]*)$'
)
_REDIRECT_URI = re.compile(REDIRECT_URI_PATTERN)


class ClientCreate(BaseModel):
    """RFC 7591 client metadata for a pre-registered client of this tenant."""

    model_config = ConfigDict(extra="forbid")

    client_name: str = Field(min_length=1, max_length=200)
    # The schema states what client_from_metadata accepts; what it refuses is a 400, as
    # dynamic registration answers (RFC 7591 §3.2.2).
    redirect_uris: list[
        Annotated[
            str,
            Field(
                json_schema_extra={"pattern": REDIRECT_URI_PATTERN, "maxLength": MAX_REDIRECT_URI_LENGTH},
                description="https, http to localhost/127.0.0.1/[::1], or a private-use scheme (com.example.app:/cb); "
                "no fragment",
            ),
        ]
    ] = Field(min_length=1, max_length=10)
    grant_types: list[str] = Field(
        default_factory=lambda: ["authorization_code", "refresh_token"],
        json_schema_extra={
            "items": {"enum": list(GRANT_TYPES)},
            # An empty list is RFC 7591's default, ["authorization_code"].
            "anyOf": [{"maxItems": 0}, {"contains": {"const": "authorization_code"}}],
        },
        description="authorization_code, optionally with refresh_token; [] means authorization_code alone",
    )
    token_endpoint_auth_method: str = Field(
        default="none",
        # "" is RFC 7591's default, client_secret_basic.
        json_schema_extra={"enum": [*AUTH_METHODS, ""]},
        description="none (a public client), client_secret_basic or client_secret_post; '' means client_secret_basic",
    )


@router.post("/users", status_code=status.HTTP_201_CREATED, response_model=UserOut, tags=["users"],
             dependencies=[allow("users.create")],
             responses=errors((400, "The body is not UTF-8, or the password is too weak"),
                              (409, "A user of that name exists"), 422))
async def create_user(body: UserCreate, ctx: Ctx) -> UserOut:
    weak = passwords.check_strength(body.password)
    if weak:
        raise BadRequest(weak)
    user = await ctx.store.users.create(body.name, passwords.hash_password(body.password))
    return UserOut(id=user.id, name=user.name, created_at=user.created_at)


@router.get("/users", response_model=list[UserOut], tags=["users"], dependencies=[allow("users.list")])
async def list_users(ctx: Ctx) -> list[UserOut]:
    return [UserOut(id=u.id, name=u.name, created_at=u.created_at) for u in await ctx.store.users.list()]


@router.get("/tenants/{tenant}/members", response_model=list[MemberOut], tags=["members"],
            dependencies=[allow("members.list")], responses=errors(404, 422))
async def list_members(tenant: str, ctx: Ctx) -> list[MemberOut]:
    await ctx.store.tenants.require(tenant)
    return [MemberOut(tenant=m.tenant, user=m.user, role=m.role, created_at=m.created_at)
            for m in await ctx.store.users.members(tenant)]


@router.put("/tenants/{tenant}/members", response_model=MemberOut, tags=["members"],
            dependencies=[allow("members.add")], responses=errors(400, (404, "No such tenant or user"), 422))
async def set_member(
    tenant: str, body: MemberSet, ctx: Ctx, principal: Annotated[Principal, Depends(authenticate)]
) -> MemberOut:
    """Add a user to the tenant with a role, or change their role."""
    if principal.kind != "admin" and not roles.may_grant(principal.role, body.role):
        raise Forbidden(f"a {principal.role} may not grant role {body.role!r}")
    m = await ctx.store.users.set_member(tenant, body.user, body.role)
    return MemberOut(tenant=m.tenant, user=m.user, role=m.role, created_at=m.created_at)


@router.delete("/tenants/{tenant}/members/{user}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response,
               tags=["members"], dependencies=[allow("members.remove")], responses=errors(404, 422))
async def remove_member(tenant: str, user: UserName, ctx: Ctx) -> Response:
    """Remove a member; every OAuth grant they gave for this tenant ends with it."""
    await ctx.store.users.remove_member(tenant, user)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/tenants/{tenant}/oauth-clients", status_code=status.HTTP_201_CREATED, tags=["oauth"],
             dependencies=[allow("clients.create")],
             responses=errors((400, "The body is not UTF-8, or the client metadata is refused"), 404, 422))
async def create_client(tenant: Annotated[str, Path(pattern=NAME_PATTERN)], body: ClientCreate, ctx: Ctx) -> dict[str, Any]:
    """Pre-register an OAuth client that may get tokens for this tenant's servers only.
    A confidential client's secret is in this response only."""
    await ctx.store.tenants.require(tenant)
    for uri in body.redirect_uris:
        if not _REDIRECT_URI.fullmatch(uri):
            raise BadRequest(
                f"redirect URI {uri!r} must be https, http on loopback, or a private-use scheme, "
                "in printable ASCII without a fragment"
            )
    try:
        client, secret = client_from_metadata(body.model_dump(), kind="registered", tenant=tenant)
    except OAuthError as exc:
        raise BadRequest(exc.description) from exc
    client = await ctx.store.oauth.create_client(client)
    return {**registration_response(client, secret), "tenant": tenant}


@router.get("/tenants/{tenant}/oauth-clients", tags=["oauth"], dependencies=[allow("clients.list")],
            responses=errors(404, 422))
async def list_clients(tenant: str, ctx: Ctx) -> list[dict[str, Any]]:
    await ctx.store.tenants.require(tenant)
    return [{**registration_response(c, None), "tenant": tenant} for c in await ctx.store.oauth.list_clients(tenant)]


@router.delete("/tenants/{tenant}/oauth-clients/{client_id}", status_code=status.HTTP_204_NO_CONTENT,
               response_class=Response, tags=["oauth"], dependencies=[allow("clients.delete")],
               responses=errors(404, 422))
async def delete_client(tenant: str, client_id: str, ctx: Ctx) -> Response:
    await ctx.store.oauth.delete_client(tenant, client_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
