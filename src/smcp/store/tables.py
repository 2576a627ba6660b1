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
