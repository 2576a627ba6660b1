"""Upstream OpenID Connect login state: identity links and logins in flight.

A link says which SMCP user an upstream identity (issuer, sub) is. It is decided and
written in one `db.write()` transaction with the lookups it depends on, so two first
logins racing cannot leave two links, and a refusal leaves nothing behind. Logins in
flight are taken (deleted) by the callback that presents their state: single use.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from smcp.store import tables as t
from smcp.store.db import Database
from smcp.store.identity import User, new_id


@dataclass(frozen=True, slots=True)
class PendingLogin:
    state_hash: str
    browser_hash: str
    nonce: str
    code_verifier: str
    request: str  # the signed SMCP authorization request the login belongs to
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Link:
    issuer: str
    subject: str
    user_id: str
    email: str | None


class LoginMissing(StrEnum):
    UNKNOWN = "unknown"  # never started, already used, or swept after expiry
    OTHER_BROWSER = "other_browser"  # the browser-binding cookie does not match


class Refusal(StrEnum):
    """Why an upstream identity got no user."""

    UNKNOWN = "unknown"  # no link, no user by that name, and provisioning is off
    TAKEN = "taken"  # the user by that name is already linked to another subject of this issuer
    NO_NAME = "no_name"  # no link and no usable name to match or provision with
    DISABLED = "disabled"  # the user is disabled: nothing is linked or updated


class OidcRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    # -- logins in flight ---------------------------------------------------------------
    async def save_login(self, login: PendingLogin) -> None:
        now = t.utcnow()
        async with self._db.write() as conn:
            # Abandoned logins are swept here rather than by a timer: rows die with the
            # traffic that makes them.
            await conn.execute(t.oidc_logins.delete().where(t.oidc_logins.c.expires_at <= now))
            await conn.execute(
                t.oidc_logins.insert().values(
                    state_hash=login.state_hash,
                    browser_hash=login.browser_hash,
                    nonce=login.nonce,
                    code_verifier=login.code_verifier,
                    request=login.request,
                    created_at=now,
                    expires_at=login.expires_at,
                )
            )

    async def take_login(self, state_hash: str, browser_hash: str) -> PendingLogin | LoginMissing:
        """The login with this state, removed so no second callback can use it (an expired one
        too). Presented by another browser, it is left alone: a stranger who learns a state
        can neither use it nor burn it."""
        async with self._db.write() as conn:
            row = (
                await conn.execute(sa.select(t.oidc_logins).where(t.oidc_logins.c.state_hash == state_hash))
            ).first()
            if row is None:
                return LoginMissing.UNKNOWN
            if not hmac.compare_digest(row.browser_hash, browser_hash):
                return LoginMissing.OTHER_BROWSER
            await conn.execute(t.oidc_logins.delete().where(t.oidc_logins.c.state_hash == state_hash))
        return PendingLogin(row.state_hash, row.browser_hash, row.nonce, row.code_verifier, row.request, row.expires_at)

    # -- links --------------------------------------------------------------------------
    async def resolve(
        self, issuer: str, subject: str, *, email: str | None, name: str | None, provision: bool
    ) -> User | Refusal:
        """The user for (issuer, subject): by its link; else the user called `name`, linked
        now; else, if `provision`, a new user called `name` (no password), linked now."""
        for _ in range(2):
            try:
                return await self._resolve(issuer, subject, email=email, name=name, provision=provision)
            except IntegrityError:
                # A concurrent first login linked or created the same row first; ours rolled
                # back whole (nothing half-written), and a second look finds theirs.
                continue
        return Refusal.TAKEN

    async def _resolve(
        self, issuer: str, subject: str, *, email: str | None, name: str | None, provision: bool
    ) -> User | Refusal:
        now = t.utcnow()
        async with self._db.write() as conn:
            found = await self._linked_user(conn, issuer, subject)
            if found is not None:
                if found.disabled_at is not None:
                    return Refusal.DISABLED
                await conn.execute(
                    t.user_identities.update()
                    .where(t.user_identities.c.issuer == issuer, t.user_identities.c.subject == subject)
                    .values(last_login_at=now, email=email)
                )
                return found
            if name is None:
                return Refusal.NO_NAME
            row = (await conn.execute(sa.select(t.users).where(t.users.c.name == name.lower()))).first()
            if row is not None:
                user = User(row.id, row.name, row.created_at, row.disabled_at)
                if user.disabled_at is not None:
                    return Refusal.DISABLED
                taken = await conn.scalar(
                    sa.select(sa.literal(1)).where(
                        t.user_identities.c.issuer == issuer, t.user_identities.c.user_id == user.id
                    )
                )
                if taken:
                    return Refusal.TAKEN
            elif provision:
                user = User(id=new_id(), name=name.lower(), created_at=now)
                await conn.execute(
                    t.users.insert().values(id=user.id, name=user.name, password_hash=None, created_at=now)
                )
            else:
                return Refusal.UNKNOWN
            await conn.execute(
                t.user_identities.insert().values(
                    issuer=issuer, subject=subject, user_id=user.id, email=email, created_at=now, last_login_at=now
                )
            )
            return user

    @staticmethod
    async def _linked_user(conn: AsyncConnection, issuer: str, subject: str) -> User | None:
        query = (
            sa.select(t.users)
            .join(t.user_identities, t.user_identities.c.user_id == t.users.c.id)
            .where(t.user_identities.c.issuer == issuer, t.user_identities.c.subject == subject)
        )
        row = (await conn.execute(query)).first()
        return User(row.id, row.name, row.created_at, row.disabled_at) if row else None

    async def links_of(self, user_id: str) -> list[Link]:
        query = sa.select(t.user_identities).where(t.user_identities.c.user_id == user_id)
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [Link(r.issuer, r.subject, r.user_id, r.email) for r in rows]

    async def link_count(self) -> int:
        async with self._db.read() as conn:
            return int(await conn.scalar(sa.select(sa.func.count()).select_from(t.user_identities)) or 0)
