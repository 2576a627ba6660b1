"""Secrets: tenant secrets, envelope-encrypted (values never stored in the clear).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "secrets",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant_id", sa.String(63), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        # nonce || AES-256-GCM(data key, value, aad = tenant, name, version)
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        # nonce || AES-256-GCM(key-encryption key, data key, aad = tenant, name, version, kek_version)
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.Column("kek_version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("tenant_id", "name", "version", name="uq_secrets_tenant_name_version"),
    )
    op.create_index("ix_secrets_kek_version", "secrets", ["kek_version"])


def downgrade() -> None:
    op.drop_index("ix_secrets_kek_version", table_name="secrets")
    op.drop_table("secrets")
