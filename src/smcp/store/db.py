"""The async engine, its SQLite pragmas, transaction modes and programmatic migrations.

SQLite is run with WAL (readers never block the one writer), foreign keys on, and a
busy timeout so a second writer waits instead of failing. The sqlite3 driver's
legacy transaction handling is switched off and SQLAlchemy emits BEGIN itself, so
a write transaction can take the write lock up front (BEGIN IMMEDIATE): two deploys
of one server then serialise cleanly instead of both reading the same max(number).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
BUSY_TIMEOUT_MS = 10_000

# Execution option naming how a transaction begins on SQLite (ignored elsewhere).
_TX = "smcp_tx"
_IMMEDIATE = "immediate"
_DEFERRED = "deferred"
_NONE = "none"  # a single statement is atomic on its own; skip BEGIN/ROLLBACK round trips


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    engine = create_async_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        _install_sqlite_hooks(engine)
    return engine


def _install_sqlite_hooks(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            # WAL + NORMAL is durable across application crashes; only an OS crash can
            # lose the last commits, never corrupt the file.
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(_TX, _DEFERRED)
        if mode == _IMMEDIATE:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        elif mode == _DEFERRED:
            conn.exec_driver_sql("BEGIN")


class Database:
    """An engine plus the three ways the repositories touch it."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """For exactly one SELECT: no explicit transaction on SQLite (the hot path)."""
        async with self.engine.connect() as conn:
            await conn.execution_options(**{_TX: _NONE})
            yield conn

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[AsyncConnection]:
        """Several SELECTs that must agree with each other."""
        async with self.engine.connect() as conn:
            await conn.execution_options(**{_TX: _DEFERRED})
            async with conn.begin():
                yield conn

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A read-modify-write transaction; holds the write lock from its first statement."""
        async with self.engine.connect() as conn:
            await conn.execution_options(**{_TX: _IMMEDIATE})
            async with conn.begin():
                yield conn

    async def dispose(self) -> None:
        await self.engine.dispose()


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


async def migrate(db: Database, revision: str = "head") -> None:
    """Upgrade the schema to `revision` (idempotent: at head this is a no-op)."""

    def _upgrade(sync_conn: Connection) -> None:
        cfg = alembic_config()
        cfg.attributes["connection"] = sync_conn
        command.upgrade(cfg, revision)

    async with db.write() as conn:
        await conn.run_sync(_upgrade)


async def current_revision(db: Database) -> str | None:
    def _current(sync_conn: Connection) -> str | None:
        return MigrationContext.configure(sync_conn).get_current_revision()

    async with db.snapshot() as conn:
        return await conn.run_sync(_current)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()
