"""Alembic environment for SMCP. Run only through smcp.store.migrate (no alembic.ini).

The caller hands over an open SQLAlchemy connection in config.attributes["connection"],
so migrations run on the very engine (and pragmas) the store uses.
"""

from __future__ import annotations

from alembic import context

from smcp.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("SMCP migrations run via smcp.store.migrate, which supplies a connection")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
