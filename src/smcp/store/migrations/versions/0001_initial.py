"""Initial schema: counters, tenants, api_keys, servers, revisions.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    # SQLite cannot add a constraint to an existing table but accepts a foreign key to a
    # table that does not exist yet; other databases need it the other way round.
    inline_fk = op.get_bind().dialect.name == "sqlite"
    counters = op.create_table(
        "counters",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("value", sa.Integer(), nullable=False),
    )
    op.bulk_insert(counters, [{"name": "tenant_uid_index", "value": 0}])
    op.create_table(
        "tenants",
        sa.Column("id", sa.String(63), primary_key=True),
        sa.Column("uid_index", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("uid_index", name="uq_tenants_uid_index"),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant_id", sa.String(63), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.Column("last_used_at", sa.DateTime(), nullable=True),
    )
    op.create_index("ix_api_keys_tenant_id", "api_keys", ["tenant_id"])
    op.create_table(
        "servers",
        sa.Column("tenant_id", sa.String(63), sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("live_revision_id", sa.String(32), nullable=True),
        *(
            [sa.ForeignKeyConstraint(["live_revision_id"], ["revisions.id"], name="fk_servers_live_revision_id")]
            if inline_fk
            else []
        ),
    )
    op.create_table(
        "revisions",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant_id", sa.String(63), nullable=False),
        sa.Column("server_name", sa.String(63), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("bundle_digest", sa.String(64), nullable=False),
        sa.Column("build_key", sa.String(200), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id", "server_name"],
            ["servers.tenant_id", "servers.name"],
            name="fk_revisions_server",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("tenant_id", "server_name", "number", name="uq_revisions_server_number"),
    )
    if not inline_fk:
        op.create_foreign_key("fk_servers_live_revision_id", "servers", "revisions", ["live_revision_id"], ["id"])


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint("fk_servers_live_revision_id", "servers", type_="foreignkey")
    op.drop_table("revisions")
    op.drop_table("servers")
    op.drop_index("ix_api_keys_tenant_id", table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_table("tenants")
    op.drop_table("counters")
