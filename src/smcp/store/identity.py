"""Identity persistence: users, tenant memberships, and the OAuth authorization server's state.

Every state change that must not race (redeeming a code, rotating a refresh token,
creating a signing key) runs in one `db.write()` transaction, which on SQLite is
BEGIN IMMEDIATE: the second of two concurrent refreshes waits for the first to
commit and then sees its token already used. Codes and refresh tokens arrive here
already hashed; nothing in this module ever sees them in the clear.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from smcp.domain import Conflict, NotFound
from smcp.store import tables as t
from smcp.store.db import Database


@dataclass(frozen=True, slots=True)
class User:
    id: str
    name: str
    created_at: datetime
    disabled_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Membership:
    tenant: str
    user: str  # user name
    user_id: str
    role: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Client:
    client_id: str
    kind: str  # "registered" | "dynamic" | "metadata" (a client ID metadata document)
    client_name: str
    redirect_uris: tuple[str, ...]
    grant_types: tuple[str, ...]
    token_endpoint_auth_method: str
    tenant: str | None = None
    secret_hash: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Grant:
    id: str
    client_id: str
    user_id: str
    tenant: str
    resource: str
    scope: str
    revoked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class CodeRecord:
    grant: Grant
    redirect_uri: str
    code_challenge: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    alg: str
    # Sealed with the secrets key ring (smcp.auth.keyseal); rows from before that are a
    # plaintext JWK until their first load re-wraps them.
    private_jwk: str
    public_jwk: str
    created_at: datetime


class Outcome:
    """Why a code or refresh token was not honoured (the token endpoint maps all to invalid_grant)."""

    UNKNOWN = "unknown"
    EXPIRED = "expired"
    REVOKED = "revoked"
    REPLAYED = "replayed"  # a used code or refresh token came back: the family is revoked


def _grant(row: Any) -> Grant:
    return Grant(
        id=row.id,
        client_id=row.client_id,
        user_id=row.user_id,
        tenant=row.tenant_id,
        resource=row.resource,
        scope=row.scope,
        revoked_at=row.revoked_at,
    )


def _client(row: Any) -> Client:
    return Client(
        client_id=row.client_id,
        kind=row.kind,
        client_name=row.client_name,
        redirect_uris=tuple(row.redirect_uris or ()),
        grant_types=tuple(row.grant_types or ()),
        token_endpoint_auth_method=row.token_endpoint_auth_method,
        tenant=row.tenant_id,
        secret_hash=row.secret_hash,
        metadata=dict(row.client_metadata or {}),
        created_at=row.created_at,
    )


def new_id() -> str:
    return secrets.token_hex(8)


class UserRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, name: str, password_hash: str | None) -> User:
        name = name.lower()
        user = User(id=new_id(), name=name, created_at=t.utcnow())
        try:
            async with self._db.write() as conn:
                if await conn.scalar(sa.select(sa.literal(1)).where(t.users.c.name == name)):
                    raise Conflict(f"user {name!r} already exists")
                await conn.execute(
                    t.users.insert().values(
                        id=user.id, name=name, password_hash=password_hash, created_at=user.created_at
                    )
                )
        except IntegrityError as exc:
            raise Conflict(f"user {name!r} already exists") from exc
        return user

    async def credentials(self, name: str) -> tuple[User, str | None] | None:
        """The user and their password hash, for a login; None if unknown."""
        async with self._db.read() as conn:
            row = (await conn.execute(sa.select(t.users).where(t.users.c.name == name.lower()))).first()
        if row is None:
            return None
        return User(row.id, row.name, row.created_at, row.disabled_at), row.password_hash

    async def get(self, user_id: str) -> User | None:
        async with self._db.read() as conn:
            row = (await conn.execute(sa.select(t.users).where(t.users.c.id == user_id))).first()
        return User(row.id, row.name, row.created_at, row.disabled_at) if row else None

    async def require_by_name(self, name: str) -> User:
        found = await self.credentials(name)
        if found is None:
            raise NotFound(f"user {name!r} not found")
        return found[0]

    async def list(self) -> list[User]:
        async with self._db.read() as conn:
            rows = (await conn.execute(sa.select(t.users).order_by(t.users.c.name))).all()
        return [User(r.id, r.name, r.created_at, r.disabled_at) for r in rows]

    async def set_password(self, name: str, password_hash: str) -> None:
        async with self._db.write() as conn:
            result = await conn.execute(
                t.users.update().where(t.users.c.name == name.lower()).values(password_hash=password_hash)
            )
            if result.rowcount == 0:
                raise NotFound(f"user {name!r} not found")

    # -- memberships -------------------------------------------------------------------
    async def set_member(self, tenant: str, name: str, role: str) -> Membership:
        """Add `name` to `tenant` with `role`, or change their role."""
        now = t.utcnow()
        async with self._db.write() as conn:
            if not await conn.scalar(sa.select(sa.literal(1)).where(t.tenants.c.id == tenant)):
                raise NotFound(f"tenant {tenant!r} not found")
            user_id = await conn.scalar(sa.select(t.users.c.id).where(t.users.c.name == name.lower()))
            if user_id is None:
                raise NotFound(f"user {name!r} not found")
            where = (t.memberships.c.tenant_id == tenant) & (t.memberships.c.user_id == user_id)
            if await conn.scalar(sa.select(sa.literal(1)).where(where)):
                await conn.execute(t.memberships.update().where(where).values(role=role))
            else:
                await conn.execute(
                    t.memberships.insert().values(tenant_id=tenant, user_id=user_id, role=role, created_at=now)
                )
        return Membership(tenant=tenant, user=name.lower(), user_id=user_id, role=role, created_at=now)

    async def remove_member(self, tenant: str, name: str) -> None:
        async with self._db.write() as conn:
            user_id = await conn.scalar(sa.select(t.users.c.id).where(t.users.c.name == name.lower()))
            result = await conn.execute(
                t.memberships.delete().where(t.memberships.c.tenant_id == tenant, t.memberships.c.user_id == user_id)
            )
            if user_id is None or result.rowcount == 0:
                raise NotFound(f"user {name!r} is not a member of tenant {tenant!r}")
            # Leaving a tenant ends every OAuth grant the user gave for it.
            await conn.execute(
                t.oauth_grants.update()
                .where(
                    t.oauth_grants.c.user_id == user_id,
                    t.oauth_grants.c.tenant_id == tenant,
                    t.oauth_grants.c.revoked_at.is_(None),
                )
                .values(revoked_at=t.utcnow(), revoked_reason="membership removed")
            )

    async def members(self, tenant: str) -> list[Membership]:
        query = (
            sa.select(t.memberships, t.users.c.name)
            .join(t.users, t.users.c.id == t.memberships.c.user_id)
            .where(t.memberships.c.tenant_id == tenant)
            .order_by(t.users.c.name)
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [Membership(tenant, r.name, r.user_id, r.role, r.created_at) for r in rows]

    async def role_of(self, user_id: str, tenant: str) -> str | None:
        query = sa.select(t.memberships.c.role).where(
            t.memberships.c.user_id == user_id, t.memberships.c.tenant_id == tenant
        )
        async with self._db.read() as conn:
            return await conn.scalar(query)


class OAuthRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    # -- clients -------------------------------------------------------------------------
    async def create_client(self, client: Client) -> Client:
        created = t.utcnow()
        async with self._db.write() as conn:
            if client.tenant is not None and not await conn.scalar(
                sa.select(sa.literal(1)).where(t.tenants.c.id == client.tenant)
            ):
                raise NotFound(f"tenant {client.tenant!r} not found")
            await conn.execute(
                t.oauth_clients.insert().values(
                    client_id=client.client_id,
                    tenant_id=client.tenant,
                    kind=client.kind,
                    client_name=client.client_name,
                    secret_hash=client.secret_hash,
                    redirect_uris=list(client.redirect_uris),
                    grant_types=list(client.grant_types),
                    token_endpoint_auth_method=client.token_endpoint_auth_method,
                    client_metadata=client.metadata,
                    created_at=created,
                )
            )
        return dataclasses.replace(client, created_at=created)

    async def get_client(self, client_id: str) -> Client | None:
        async with self._db.read() as conn:
            row = (
                await conn.execute(sa.select(t.oauth_clients).where(t.oauth_clients.c.client_id == client_id))
            ).first()
        return _client(row) if row else None

    async def list_clients(self, tenant: str) -> list[Client]:
        query = sa.select(t.oauth_clients).where(t.oauth_clients.c.tenant_id == tenant).order_by(
            t.oauth_clients.c.created_at
        )
        async with self._db.read() as conn:
            return [_client(r) for r in (await conn.execute(query)).all()]

    async def delete_client(self, tenant: str, client_id: str) -> None:
        async with self._db.write() as conn:
            result = await conn.execute(
                t.oauth_clients.delete().where(
                    t.oauth_clients.c.client_id == client_id, t.oauth_clients.c.tenant_id == tenant
                )
            )
            if result.rowcount == 0:
                raise NotFound(f"client {client_id!r} not found in tenant {tenant!r}")
            await conn.execute(
                t.oauth_grants.update()
                .where(t.oauth_grants.c.client_id == client_id, t.oauth_grants.c.revoked_at.is_(None))
                .values(revoked_at=t.utcnow(), revoked_reason="client deleted")
            )

    # -- codes -----------------------------------------------------------------------------
    async def create_code(
        self,
        *,
        code_hash: str,
        client_id: str,
        user_id: str,
        tenant: str,
        resource: str,
        scope: str,
        redirect_uri: str,
        code_challenge: str,
        expires_at: datetime,
    ) -> str:
        """Record a consent (a new grant) and its authorization code; returns the grant id."""
        grant_id = new_id()
        now = t.utcnow()
        async with self._db.write() as conn:
            await conn.execute(
                t.oauth_grants.insert().values(
                    id=grant_id,
                    client_id=client_id,
                    user_id=user_id,
                    tenant_id=tenant,
                    resource=resource,
                    scope=scope,
                    created_at=now,
                )
            )
            await conn.execute(
                t.oauth_codes.insert().values(
                    code_hash=code_hash,
                    grant_id=grant_id,
                    redirect_uri=redirect_uri,
                    code_challenge=code_challenge,
                    created_at=now,
                    expires_at=expires_at,
                )
            )
        return grant_id

    async def redeem_code(
        self,
        code_hash: str,
        check: Callable[[CodeRecord], str | None],
        *,
        refresh_hash: str | None,
        refresh_expires_at: datetime,
    ) -> CodeRecord | str:
        """Spend a code exactly once. `check` sees the record first; its refusal leaves the
        code unspent (so a stranger holding it cannot burn it). A second use revokes the grant
        and everything issued from it. On success the first refresh token is stored too."""
        now = t.utcnow()
        query = (
            sa.select(t.oauth_codes, t.oauth_grants)
            .join(t.oauth_grants, t.oauth_grants.c.id == t.oauth_codes.c.grant_id)
            .where(t.oauth_codes.c.code_hash == code_hash)
        )
        async with self._db.write() as conn:
            row = (await conn.execute(query)).first()
            if row is None:
                return Outcome.UNKNOWN
            record = CodeRecord(_grant(row), row.redirect_uri, row.code_challenge, row.expires_at)
            if row.used_at is not None:
                await self._revoke(conn, record.grant.id, "authorization code replayed")
                return Outcome.REPLAYED
            if row.revoked_at is not None:
                return Outcome.REVOKED
            if row.expires_at <= now:
                return Outcome.EXPIRED
            refused = check(record)
            if refused is not None:
                return refused
            await conn.execute(t.oauth_codes.update().where(t.oauth_codes.c.code_hash == code_hash).values(used_at=now))
            if refresh_hash is not None:
                await conn.execute(
                    t.oauth_refresh_tokens.insert().values(
                        token_hash=refresh_hash, grant_id=record.grant.id, created_at=now, expires_at=refresh_expires_at
                    )
                )
        return record

    # -- refresh tokens ----------------------------------------------------------------------
    async def rotate_refresh(
        self,
        token_hash: str,
        check: Callable[[Grant], str | None],
        *,
        new_hash: str,
        new_expires_at: datetime,
    ) -> Grant | str:
        """Exchange a refresh token for its successor, once. A used token coming back means
        two parties hold it: the whole family (the grant) is revoked."""
        now = t.utcnow()
        query = (
            sa.select(t.oauth_refresh_tokens.c.used_at, t.oauth_refresh_tokens.c.expires_at, t.oauth_grants)
            .join(t.oauth_grants, t.oauth_grants.c.id == t.oauth_refresh_tokens.c.grant_id)
            .where(t.oauth_refresh_tokens.c.token_hash == token_hash)
        )
        async with self._db.write() as conn:
            row = (await conn.execute(query)).first()
            if row is None:
                return Outcome.UNKNOWN
            grant = _grant(row)
            if grant.revoked_at is not None:
                return Outcome.REVOKED
            if row.used_at is not None:
                await self._revoke(conn, grant.id, "refresh token reused")
                return Outcome.REPLAYED
            if row.expires_at <= now:
                return Outcome.EXPIRED
            refused = check(grant)
            if refused is not None:
                return refused
            await conn.execute(
                t.oauth_refresh_tokens.update()
                .where(t.oauth_refresh_tokens.c.token_hash == token_hash)
                .values(used_at=now)
            )
            await conn.execute(
                t.oauth_refresh_tokens.insert().values(
                    token_hash=new_hash, grant_id=grant.id, created_at=now, expires_at=new_expires_at
                )
            )
        return grant

    async def grant_for_refresh(self, token_hash: str) -> Grant | None:
        query = (
            sa.select(t.oauth_grants)
            .join(t.oauth_refresh_tokens, t.oauth_grants.c.id == t.oauth_refresh_tokens.c.grant_id)
            .where(t.oauth_refresh_tokens.c.token_hash == token_hash)
        )
        async with self._db.read() as conn:
            row = (await conn.execute(query)).first()
        return _grant(row) if row else None

    async def get_grant(self, grant_id: str) -> Grant | None:
        async with self._db.read() as conn:
            row = (await conn.execute(sa.select(t.oauth_grants).where(t.oauth_grants.c.id == grant_id))).first()
        return _grant(row) if row else None

    async def revoke_grant(self, grant_id: str, reason: str) -> None:
        async with self._db.write() as conn:
            await self._revoke(conn, grant_id, reason)

    @staticmethod
    async def _revoke(conn: Any, grant_id: str, reason: str) -> None:
        await conn.execute(
            t.oauth_grants.update()
            .where(t.oauth_grants.c.id == grant_id, t.oauth_grants.c.revoked_at.is_(None))
            .values(revoked_at=t.utcnow(), revoked_reason=reason)
        )

    # -- signing keys ---------------------------------------------------------------------------
    async def signing_keys(self) -> list[SigningKey]:
        query = sa.select(t.oauth_signing_keys).order_by(t.oauth_signing_keys.c.created_at.desc())
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [SigningKey(r.kid, r.alg, r.private_jwk, r.public_jwk, r.created_at) for r in rows]

    async def ensure_signing_key(
        self, *, not_before: datetime, make: Callable[[], SigningKey], drop_before: datetime
    ) -> None:
        """Create a key unless one newer than `not_before` exists; drop keys older than
        `drop_before` (no token they signed can still be valid). One writer decides, so
        nodes starting together do not each mint a key."""
        async with self._db.write() as conn:
            newest = await conn.scalar(sa.select(sa.func.max(t.oauth_signing_keys.c.created_at)))
            if newest is None or newest.replace(tzinfo=not_before.tzinfo) < not_before:
                key = make()
                await conn.execute(
                    t.oauth_signing_keys.insert().values(
                        kid=key.kid,
                        alg=key.alg,
                        private_jwk=key.private_jwk,
                        public_jwk=key.public_jwk,
                        created_at=key.created_at,
                    )
                )
            await conn.execute(t.oauth_signing_keys.delete().where(t.oauth_signing_keys.c.created_at < drop_before))

    async def replace_private_key(self, kid: str, *, old: str, new: str) -> bool:
        """Swap a key's stored private part (re-wrapped), only if nobody changed it meanwhile."""
        async with self._db.write() as conn:
            result = await conn.execute(
                t.oauth_signing_keys.update()
                .where(t.oauth_signing_keys.c.kid == kid, t.oauth_signing_keys.c.private_jwk == old)
                .values(private_jwk=new)
            )
        return bool(result.rowcount)
