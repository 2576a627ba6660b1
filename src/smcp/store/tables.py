"""The SQL schema as SQLAlchemy Core tables, used by the repositories for queries.

Migrations (store/migrations/versions) are the source of truth for the database;
this module must describe the same shape. Core rather than the ORM because the
repositories hand out frozen domain dataclasses, not live mapped objects.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

metadata = sa.MetaData()


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Stores naive UTC, returns aware UTC: SQLite keeps no zone, callers compare aware times."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use datetime.now(UTC)")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("id", sa.String(63), primary_key=True),
    # The tenant's number n; its sandboxes run as host uid sandbox_uid_base + n. Never reused.
    sa.Column("uid_index", sa.Integer(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("uid_index", name="uq_tenants_uid_index"),
)

# Monotonic counters (name → last value handed out); values are never given out twice,
# even after the row that took one is deleted.
counters = sa.Table(
    "counters",
    metadata,
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("value", sa.Integer(), nullable=False),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("tenant_id", sa.String(63), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("secret_hash", sa.String(64), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("revoked_at", UTCDateTime(), nullable=True),
    sa.Column("last_used_at", UTCDateTime(), nullable=True),
    # Migration 0003: the key's tenant role and the servers it is limited to (None: all).
    sa.Column("role", sa.String(16), nullable=False, server_default="viewer"),
    sa.Column("servers", sa.JSON(), nullable=True),
    sa.Index("ix_api_keys_tenant_id", "tenant_id"),
)

servers = sa.Table(
    "servers",
    metadata,
    sa.Column("tenant_id", sa.String(63), sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    # Circular with revisions.server: use_alter keeps metadata sortable; the migration
    # declares it inline because SQLite resolves foreign keys only when rows change.
    sa.Column(
        "live_revision_id",
        sa.String(32),
        sa.ForeignKey("revisions.id", use_alter=True, name="fk_servers_live_revision_id"),
        nullable=True,
    ),
)

revisions = sa.Table(
    "revisions",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("tenant_id", sa.String(63), nullable=False),
    sa.Column("server_name", sa.String(63), nullable=False),
    sa.Column("number", sa.Integer(), nullable=False),
    sa.Column("spec", sa.JSON(), nullable=False),
    sa.Column("bundle_digest", sa.String(64), nullable=False),
    sa.Column("build_key", sa.String(200), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(
        ["tenant_id", "server_name"],
        ["servers.tenant_id", "servers.name"],
        name="fk_revisions_server",
        ondelete="CASCADE",
    ),
    # The backstop against two deploys taking the same number.
    sa.UniqueConstraint("tenant_id", "server_name", "number", name="uq_revisions_server_number"),
)

# -- identity (migration 0003): users, tenant roles, OAuth authorization server state --------
# Codes and refresh tokens are stored only as SHA-256 hashes of 256-bit random values.

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),  # the login name, lower-cased
    sa.Column("password_hash", sa.Text(), nullable=True),  # argon2id; None: no local password
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("disabled_at", UTCDateTime(), nullable=True),
    sa.UniqueConstraint("name", name="uq_users_name"),
)

memberships = sa.Table(
    "memberships",
    metadata,
    sa.Column("tenant_id", sa.String(63), sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("user_id", sa.String(32), sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Index("ix_memberships_user_id", "user_id"),
)

oauth_clients = sa.Table(
    "oauth_clients",
    metadata,
    sa.Column("client_id", sa.String(255), primary_key=True),
    # Pre-registered clients belong to a tenant and get tokens only for its servers;
    # dynamically registered ones (RFC 7591) have none.
    sa.Column("tenant_id", sa.String(63), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=True),
    sa.Column("kind", sa.String(16), nullable=False),  # "registered" | "dynamic"
    sa.Column("client_name", sa.String(200), nullable=False),
    sa.Column("secret_hash", sa.String(64), nullable=True),
    sa.Column("redirect_uris", sa.JSON(), nullable=False),
    sa.Column("grant_types", sa.JSON(), nullable=False),
    sa.Column("token_endpoint_auth_method", sa.String(32), nullable=False),
    sa.Column("client_metadata", sa.JSON(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

# A grant is one user's consent for one client to one resource: the family every
# code, refresh token and access token of that consent belongs to.
oauth_grants = sa.Table(
    "oauth_grants",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("client_id", sa.String(2048), nullable=False),
    sa.Column("user_id", sa.String(32), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("tenant_id", sa.String(63), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    sa.Column("resource", sa.String(2048), nullable=False),
    sa.Column("scope", sa.String(1000), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("revoked_at", UTCDateTime(), nullable=True),
    sa.Column("revoked_reason", sa.String(200), nullable=True),
)

oauth_codes = sa.Table(
    "oauth_codes",
    metadata,
    sa.Column("code_hash", sa.String(64), primary_key=True),
    sa.Column("grant_id", sa.String(32), sa.ForeignKey("oauth_grants.id", ondelete="CASCADE"), nullable=False),
    sa.Column("redirect_uri", sa.Text(), nullable=False),
    sa.Column("code_challenge", sa.String(128), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    sa.Column("used_at", UTCDateTime(), nullable=True),
)

oauth_refresh_tokens = sa.Table(
    "oauth_refresh_tokens",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("grant_id", sa.String(32), sa.ForeignKey("oauth_grants.id", ondelete="CASCADE"), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    sa.Column("used_at", UTCDateTime(), nullable=True),
    sa.Index("ix_oauth_refresh_tokens_grant_id", "grant_id"),
)

oauth_signing_keys = sa.Table(
    "oauth_signing_keys",
    metadata,
    sa.Column("kid", sa.String(64), primary_key=True),
    sa.Column("alg", sa.String(16), nullable=False),
    sa.Column("private_jwk", sa.Text(), nullable=False),
    sa.Column("public_jwk", sa.Text(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

# -- upstream OpenID Connect login (migration 0004) ------------------------------------------
# Which upstream identity (issuer, sub) is which SMCP user. A user has at most one subject
# per issuer, so an email address reassigned at the provider cannot take over a linked user.
user_identities = sa.Table(
    "user_identities",
    metadata,
    sa.Column("issuer", sa.String(1024), primary_key=True),
    sa.Column("subject", sa.String(255), primary_key=True),
    sa.Column("user_id", sa.String(32), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("email", sa.String(320), nullable=True),  # as last seen, for operators
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("last_login_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("issuer", "user_id", name="uq_user_identities_issuer_user"),
    sa.Index("ix_user_identities_user_id", "user_id"),
)

# Upstream logins in flight: what the callback needs, keyed by a hash of `state`. Each row
# is taken (deleted) by the first callback that presents its state, so it works once.
oidc_logins = sa.Table(
    "oidc_logins",
    metadata,
    sa.Column("state_hash", sa.String(64), primary_key=True),
    sa.Column("browser_hash", sa.String(64), nullable=False),  # the browser-binding cookie, hashed
    sa.Column("nonce", sa.String(128), nullable=False),
    sa.Column("code_verifier", sa.String(128), nullable=False),
    sa.Column("request", sa.Text(), nullable=False),  # the signed SMCP authorization request
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    sa.Index("ix_oidc_logins_expires_at", "expires_at"),
)

# -- secrets (migration 0002): envelope-encrypted tenant secrets; see smcp.secrets -----------
secrets = sa.Table(
    "secrets",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("tenant_id", sa.String(63), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
    sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
    sa.Column("kek_version", sa.Integer(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("tenant_id", "name", "version", name="uq_secrets_tenant_name_version"),
    sa.Index("ix_secrets_kek_version", "kek_version"),
)

# -- ended sessions (migration 0005): session ids a client deleted; see store/sessions.py ----
ended_sessions = sa.Table(
    "ended_sessions",
    metadata,
    sa.Column("id_hash", sa.String(64), primary_key=True),  # sha256 of the sealed id
    sa.Column("expires_at", UTCDateTime(), nullable=False),  # when the id itself expires
    sa.Index("ix_ended_sessions_expires_at", "expires_at"),
)
