"""Sessions a client ended (DELETE), remembered by every node until their ids expire.

A sealed session id stays decodable after its session ends, and any node holding the
sealing key could reopen it: this table is how a node that never saw the DELETE (or
the same node after a restart) knows not to. Only a hash of the id is kept.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

import sqlalchemy as sa

from smcp.store import tables as t
from smcp.store.db import Database


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class EndedSessionRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, session_id: str, expires_at: datetime) -> None:
        now = t.utcnow()
        async with self._db.write() as conn:
            # Rows die with the traffic that makes them: no timer needed.
            await conn.execute(t.ended_sessions.delete().where(t.ended_sessions.c.expires_at <= now))
            exists = (
                await conn.execute(sa.select(t.ended_sessions.c.id_hash).where(t.ended_sessions.c.id_hash == _digest(session_id)))
            ).first()
            if exists is None:
                await conn.execute(t.ended_sessions.insert().values(id_hash=_digest(session_id), expires_at=expires_at))

    async def ended(self, session_id: str) -> bool:
        async with self._db.read() as conn:
            row = (
                await conn.execute(
                    sa.select(t.ended_sessions.c.expires_at).where(t.ended_sessions.c.id_hash == _digest(session_id))
                )
            ).first()
        return row is not None and row.expires_at > t.utcnow()
